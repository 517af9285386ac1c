/*
 * Run state of the VM, with QEMU's names, and the requests that change it.
 */
#ifndef SYSEMU_RUNSTATE_H
#define SYSEMU_RUNSTATE_H

#include "qemu/osdep.h"

typedef enum RunState {
    RUN_STATE_DEBUG,
    RUN_STATE_INMIGRATE,
    RUN_STATE_INTERNAL_ERROR,
    RUN_STATE_IO_ERROR,
    RUN_STATE_PAUSED,
    RUN_STATE_POSTMIGRATE,
    RUN_STATE_PRELAUNCH,
    RUN_STATE_FINISH_MIGRATE,
    RUN_STATE_RESTORE_VM,
    RUN_STATE_RUNNING,
    RUN_STATE_SAVE_VM,
    RUN_STATE_SHUTDOWN,
    RUN_STATE_SUSPENDED,
    RUN_STATE_WATCHDOG,
    RUN_STATE_GUEST_PANICKED,
    RUN_STATE_COLO,
    RUN_STATE__MAX
} RunState;

typedef enum ShutdownCause {
    SHUTDOWN_CAUSE_NONE,
    SHUTDOWN_CAUSE_HOST_ERROR,
    SHUTDOWN_CAUSE_HOST_QMP_QUIT,
    SHUTDOWN_CAUSE_HOST_QMP_SYSTEM_RESET,
    SHUTDOWN_CAUSE_HOST_SIGNAL,
    SHUTDOWN_CAUSE_GUEST_SHUTDOWN,
    SHUTDOWN_CAUSE_GUEST_RESET,
    SHUTDOWN_CAUSE_GUEST_PANIC,
} ShutdownCause;

const char *RunState_str(RunState s);
bool runstate_parse(const char *name, RunState *out);
const char *ShutdownCause_str(ShutdownCause c);

RunState runstate_get(void);
bool runstate_is_running(void);
void runstate_set(RunState s);

/* false with -S: the VM starts paused (prelaunch) until "cont". */
extern bool autostart;
/* -no-shutdown: a guest power-off stops the VM instead of ending ferry. */
extern bool no_shutdown;
/* -no-reboot: a reset request becomes a shutdown request. */
extern bool no_reboot;

/*
 * Stop the vCPUs synchronously and enter state s; emits STOP if the VM was
 * running.  Safe from any thread except a vCPU thread.
 */
void vm_stop(RunState s);
/* Start the vCPUs, enter RUNNING, emit RESUME.  Any non-vCPU thread. */
void vm_start(void);

/*
 * Asynchronous requests, from vCPU threads or QMP: handled in the main loop.
 */
void qemu_system_shutdown_request(ShutdownCause cause);
void qemu_system_reset_request(ShutdownCause cause);

/* Called for every state change, in the thread that changed it. */
typedef void (*VMChangeStateHandler)(void *opaque, bool running, RunState s);
void qemu_add_vm_change_state_handler(VMChangeStateHandler cb, void *opaque);
/*
 * Remove the first handler registered with this cb and opaque.  A change
 * already under way may still call it once (handlers run from a copy), so
 * the caller frees opaque only when no change can be in progress.
 */
void qemu_del_vm_change_state_handler(VMChangeStateHandler cb, void *opaque);

#endif

/*
 * Run state, vm_stop/vm_start, and shutdown/reset requests.
 *
 * Requests can come from vCPU threads, which must never wait for the main
 * loop (it may be pausing them), so they are only queued here and carried
 * out by an idle callback in the main thread.
 */
#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "qemu/thread.h"
#include "sysemu/runstate.h"
#include "sysemu/sysemu.h"
#include "sysemu/cpus.h"
#include "hw/machine.h"
#include "monitor/qmp.h"

bool autostart = true;
bool no_shutdown;
bool no_reboot;

static RunState current_runstate = RUN_STATE_PRELAUNCH;
/* Serialises vm_stop, vm_start and resets against each other. */
static QemuMutex vm_lock = QEMU_MUTEX_INITIALIZER;

typedef struct ChangeHandler {
    VMChangeStateHandler cb;
    void *opaque;
} ChangeHandler;
static QemuMutex handlers_lock = QEMU_MUTEX_INITIALIZER;
static GArray *change_handlers;

static const char *const runstate_names[RUN_STATE__MAX] = {
    [RUN_STATE_DEBUG] = "debug",
    [RUN_STATE_INMIGRATE] = "inmigrate",
    [RUN_STATE_INTERNAL_ERROR] = "internal-error",
    [RUN_STATE_IO_ERROR] = "io-error",
    [RUN_STATE_PAUSED] = "paused",
    [RUN_STATE_POSTMIGRATE] = "postmigrate",
    [RUN_STATE_PRELAUNCH] = "prelaunch",
    [RUN_STATE_FINISH_MIGRATE] = "finish-migrate",
    [RUN_STATE_RESTORE_VM] = "restore-vm",
    [RUN_STATE_RUNNING] = "running",
    [RUN_STATE_SAVE_VM] = "save-vm",
    [RUN_STATE_SHUTDOWN] = "shutdown",
    [RUN_STATE_SUSPENDED] = "suspended",
    [RUN_STATE_WATCHDOG] = "watchdog",
    [RUN_STATE_GUEST_PANICKED] = "guest-panicked",
    [RUN_STATE_COLO] = "colo",
};

const char *RunState_str(RunState s)
{
    if ((unsigned)s >= RUN_STATE__MAX) {
        return "unknown";
    }
    return runstate_names[s];
}

bool runstate_parse(const char *name, RunState *out)
{
    int i;

    for (i = 0; name && i < RUN_STATE__MAX; i++) {
        if (!strcmp(name, runstate_names[i])) {
            *out = i;
            return true;
        }
    }
    return false;
}

const char *ShutdownCause_str(ShutdownCause c)
{
    switch (c) {
    case SHUTDOWN_CAUSE_NONE:
        return "none";
    case SHUTDOWN_CAUSE_HOST_ERROR:
        return "host-error";
    case SHUTDOWN_CAUSE_HOST_QMP_QUIT:
        return "host-qmp-quit";
    case SHUTDOWN_CAUSE_HOST_QMP_SYSTEM_RESET:
        return "host-qmp-system-reset";
    case SHUTDOWN_CAUSE_HOST_SIGNAL:
        return "host-signal";
    case SHUTDOWN_CAUSE_GUEST_SHUTDOWN:
        return "guest-shutdown";
    case SHUTDOWN_CAUSE_GUEST_RESET:
        return "guest-reset";
    case SHUTDOWN_CAUSE_GUEST_PANIC:
        return "guest-panic";
    }
    return "none";
}

RunState runstate_get(void)
{
    return qatomic_load_acquire(&current_runstate);
}

bool runstate_is_running(void)
{
    return runstate_get() == RUN_STATE_RUNNING;
}

void runstate_set(RunState s)
{
    if ((unsigned)s >= RUN_STATE__MAX) {
        return;
    }
    qatomic_store_release(&current_runstate, s);
}

void qemu_add_vm_change_state_handler(VMChangeStateHandler cb, void *opaque)
{
    ChangeHandler h = { .cb = cb, .opaque = opaque };

    qemu_mutex_lock(&handlers_lock);
    if (!change_handlers) {
        change_handlers = g_array_new(FALSE, FALSE, sizeof(ChangeHandler));
    }
    g_array_append_val(change_handlers, h);
    qemu_mutex_unlock(&handlers_lock);
}

void qemu_del_vm_change_state_handler(VMChangeStateHandler cb, void *opaque)
{
    qemu_mutex_lock(&handlers_lock);
    for (guint i = 0; change_handlers && i < change_handlers->len; i++) {
        ChangeHandler *h = &g_array_index(change_handlers, ChangeHandler, i);

        if (h->cb == cb && h->opaque == opaque) {
            g_array_remove_index(change_handlers, i);
            break;
        }
    }
    qemu_mutex_unlock(&handlers_lock);
}

static void vm_state_notify(bool running, RunState s)
{
    g_autoptr(GArray) snap = NULL;
    guint i;

    /* Call a copy so handlers may register more handlers. */
    qemu_mutex_lock(&handlers_lock);
    if (change_handlers) {
        snap = g_array_copy(change_handlers);
    }
    qemu_mutex_unlock(&handlers_lock);
    for (i = 0; snap && i < snap->len; i++) {
        ChangeHandler *h = &g_array_index(snap, ChangeHandler, i);
        h->cb(h->opaque, running, s);
    }
}

/* Returns whether the VM was running. */
static bool do_vm_stop(RunState s, bool send_stop)
{
    bool was_running;

    qemu_mutex_lock(&vm_lock);
    was_running = runstate_is_running();
    if (was_running) {
        pause_all_vcpus();
    }
    if (runstate_get() != s) {
        runstate_set(s);
        vm_state_notify(false, s);
    }
    qemu_mutex_unlock(&vm_lock);
    if (was_running && send_stop) {
        qmp_event_emit("STOP", NULL);
    }
    return was_running;
}

void vm_stop(RunState s)
{
    do_vm_stop(s, true);
}

void vm_start(void)
{
    qemu_mutex_lock(&vm_lock);
    if (runstate_is_running()) {
        qemu_mutex_unlock(&vm_lock);
        return;
    }
    runstate_set(RUN_STATE_RUNNING);
    vm_state_notify(true, RUN_STATE_RUNNING);
    resume_all_vcpus();
    qemu_mutex_unlock(&vm_lock);
    qmp_event_emit("RESUME", NULL);
}

static bool cause_is_guest(ShutdownCause cause)
{
    return cause == SHUTDOWN_CAUSE_GUEST_SHUTDOWN ||
           cause == SHUTDOWN_CAUSE_GUEST_RESET ||
           cause == SHUTDOWN_CAUSE_GUEST_PANIC;
}

static JsonObject *cause_event_data(ShutdownCause cause)
{
    JsonObject *data = json_object_new();

    json_object_set_boolean_member(data, "guest", cause_is_guest(cause));
    json_object_set_string_member(data, "reason", ShutdownCause_str(cause));
    return data;
}

/* Set by the first shutdown request until it has been carried out. */
static gint shutdown_requested;

static gboolean shutdown_cb(gpointer opaque)
{
    ShutdownCause cause = GPOINTER_TO_INT(opaque);

    qmp_event_emit("SHUTDOWN", cause_event_data(cause));
    /*
     * -no-shutdown, as QEMU: a power-off (or a reset turned into one by
     * -no-reboot) only stops the VM, so the management can still collect
     * it; the host's own requests (quit, a signal) end the process.
     */
    if (no_shutdown && cause != SHUTDOWN_CAUSE_HOST_QMP_QUIT &&
        cause != SHUTDOWN_CAUSE_HOST_SIGNAL) {
        vm_stop(RUN_STATE_SHUTDOWN);
        qatomic_set(&shutdown_requested, 0);
        return G_SOURCE_REMOVE;
    }
    /* As QEMU on exit: vCPUs stop without a STOP event. */
    do_vm_stop(RUN_STATE_SHUTDOWN, false);
    qemu_main_loop_quit();
    return G_SOURCE_REMOVE;
}

void qemu_system_shutdown_request(ShutdownCause cause)
{
    /* Only the first request counts; later ones would emit duplicates. */
    if (!(qatomic_cmpxchg(&shutdown_requested, 0, 1) == 0)) {
        return;
    }
    /* An idle source, never a direct call: a QMP reply must go out first. */
    g_idle_add(shutdown_cb, GINT_TO_POINTER(cause));
}

/* Coalesces reset requests (several vCPUs may fault at once). */
static gint reset_pending;

static gboolean reset_cb(gpointer opaque)
{
    ShutdownCause cause = GPOINTER_TO_INT(opaque);
    bool running;

    qatomic_mb_set(&reset_pending, 0);

    qemu_mutex_lock(&vm_lock);
    running = runstate_is_running();
    if (running) {
        pause_all_vcpus();
    }
    if (current_machine_class && current_machine_class->reset &&
        current_machine) {
        current_machine_class->reset(current_machine);
    }
    if (running) {
        resume_all_vcpus();
    } else if (runstate_get() == RUN_STATE_SHUTDOWN ||
               runstate_get() == RUN_STATE_INTERNAL_ERROR ||
               runstate_get() == RUN_STATE_GUEST_PANICKED) {
        /* As QEMU: a reset is what makes such a VM startable again. */
        runstate_set(RUN_STATE_PRELAUNCH);
    }
    qemu_mutex_unlock(&vm_lock);
    qmp_event_emit("RESET", cause_event_data(cause));
    return G_SOURCE_REMOVE;
}

void qemu_system_reset_request(ShutdownCause cause)
{
    if (no_reboot) {
        /* -no-reboot: a reset ends the VM instead, reason kept. */
        qemu_system_shutdown_request(cause);
        return;
    }
    if (!(qatomic_cmpxchg(&reset_pending, 0, 1) == 0)) {
        return;
    }
    g_idle_add(reset_cb, GINT_TO_POINTER(cause));
}

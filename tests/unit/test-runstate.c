/*
 * Run state names, vm_stop/vm_start transitions, change handlers, and the
 * shutdown/reset requests carried out by the main loop.  No vCPUs exist,
 * so pausing and resuming them does nothing.
 */
#include "qemu/osdep.h"
#include "sysemu/runstate.h"
#include "sysemu/sysemu.h"
#include "hw/machine.h"

typedef struct Seen {
    int calls;
    bool running;
    RunState state;
} Seen;

static void on_change(void *opaque, bool running, RunState s)
{
    Seen *seen = opaque;

    seen->calls++;
    seen->running = running;
    seen->state = s;
}

static int resets;
static void fake_reset(MachineState *ms)
{
    resets++;
}

static void test_names(void)
{
    static const char *const names[] = {
        "debug", "inmigrate", "internal-error", "io-error", "paused",
        "postmigrate", "prelaunch", "finish-migrate", "restore-vm",
        "running", "save-vm", "shutdown", "suspended", "watchdog",
        "guest-panicked", "colo",
    };
    RunState s;
    int i;

    g_assert_cmpint(ARRAY_SIZE(names), ==, RUN_STATE__MAX);
    for (i = 0; i < RUN_STATE__MAX; i++) {
        g_assert_cmpstr(RunState_str(i), ==, names[i]);
        g_assert_true(runstate_parse(names[i], &s));
        g_assert_cmpint(s, ==, i);
    }
    g_assert_false(runstate_parse("Running", &s));
    g_assert_false(runstate_parse("", &s));
    g_assert_cmpstr(ShutdownCause_str(SHUTDOWN_CAUSE_HOST_QMP_QUIT), ==,
                    "host-qmp-quit");
    g_assert_cmpstr(ShutdownCause_str(SHUTDOWN_CAUSE_HOST_SIGNAL), ==,
                    "host-signal");
    g_assert_cmpstr(ShutdownCause_str(SHUTDOWN_CAUSE_GUEST_SHUTDOWN), ==,
                    "guest-shutdown");
}

static Seen seen;

static void test_start_stop(void)
{
    g_assert_cmpint(runstate_get(), ==, RUN_STATE_PRELAUNCH);
    g_assert_false(runstate_is_running());
    qemu_add_vm_change_state_handler(on_change, &seen);

    vm_start();
    g_assert_true(runstate_is_running());
    g_assert_cmpint(seen.calls, ==, 1);
    g_assert_true(seen.running);
    g_assert_cmpint(seen.state, ==, RUN_STATE_RUNNING);
    vm_start();                         /* already running: nothing */
    g_assert_cmpint(seen.calls, ==, 1);

    vm_stop(RUN_STATE_PAUSED);
    g_assert_cmpint(runstate_get(), ==, RUN_STATE_PAUSED);
    g_assert_cmpint(seen.calls, ==, 2);
    g_assert_false(seen.running);
    g_assert_cmpint(seen.state, ==, RUN_STATE_PAUSED);
    vm_stop(RUN_STATE_PAUSED);          /* no change: no notification */
    g_assert_cmpint(seen.calls, ==, 2);
    vm_stop(RUN_STATE_POSTMIGRATE);     /* stopped -> other stopped state */
    g_assert_cmpint(runstate_get(), ==, RUN_STATE_POSTMIGRATE);
    g_assert_cmpint(seen.calls, ==, 3);

    runstate_set(RUN_STATE__MAX);       /* invalid: ignored */
    g_assert_cmpint(runstate_get(), ==, RUN_STATE_POSTMIGRATE);
    vm_start();
    g_assert_true(runstate_is_running());
}

static void test_reset(void)
{
    static MachineState ms;
    static const MachineClass mc = { .name = "fake", .reset = fake_reset };

    current_machine = &ms;
    current_machine_class = &mc;
    resets = 0;
    /* Requests pile up but are carried out once, in the main loop. */
    qemu_system_reset_request(SHUTDOWN_CAUSE_GUEST_RESET);
    qemu_system_reset_request(SHUTDOWN_CAUSE_GUEST_RESET);
    g_assert_cmpint(resets, ==, 0);
    while (g_main_context_iteration(NULL, FALSE)) {
    }
    g_assert_cmpint(resets, ==, 1);
    g_assert_true(runstate_is_running());
    qemu_system_reset_request(SHUTDOWN_CAUSE_HOST_QMP_SYSTEM_RESET);
    while (g_main_context_iteration(NULL, FALSE)) {
    }
    g_assert_cmpint(resets, ==, 2);
}

static gpointer request_shutdown(gpointer opaque)
{
    g_usleep(50000);
    qemu_system_shutdown_request(SHUTDOWN_CAUSE_GUEST_SHUTDOWN);
    qemu_system_shutdown_request(SHUTDOWN_CAUSE_HOST_SIGNAL);
    return NULL;
}

static gboolean stop_loop(gpointer opaque)
{
    qemu_main_loop_quit();
    return G_SOURCE_REMOVE;
}

/*
 * -no-shutdown: a guest power-off stops the VM in "shutdown" and ferry
 * lives on; a reset makes it startable again, and a second power-off is
 * honoured too.  (The host's own requests still end it: test_shutdown.)
 */
static void test_no_shutdown(void)
{
    no_shutdown = true;
    for (int round = 0; round < 2; round++) {
        vm_start();
        g_assert_true(runstate_is_running());
        qemu_system_shutdown_request(SHUTDOWN_CAUSE_GUEST_SHUTDOWN);
        /* The loop must still be there to run this: nothing quit it. */
        g_timeout_add(100, stop_loop, NULL);
        qemu_main_loop_run();
        g_assert_cmpint(runstate_get(), ==, RUN_STATE_SHUTDOWN);
        qemu_system_reset_request(SHUTDOWN_CAUSE_HOST_QMP_SYSTEM_RESET);
        while (g_main_context_iteration(NULL, FALSE)) {
        }
        g_assert_cmpint(runstate_get(), ==, RUN_STATE_PRELAUNCH);
    }
    /* -no-reboot as well: a reset request powers off, and so pauses. */
    no_reboot = true;
    vm_start();
    qemu_system_reset_request(SHUTDOWN_CAUSE_GUEST_RESET);
    g_timeout_add(100, stop_loop, NULL);
    qemu_main_loop_run();
    g_assert_cmpint(runstate_get(), ==, RUN_STATE_SHUTDOWN);
    no_reboot = false;
    no_shutdown = false;
    qemu_system_reset_request(SHUTDOWN_CAUSE_HOST_QMP_SYSTEM_RESET);
    while (g_main_context_iteration(NULL, FALSE)) {
    }
    vm_start();
}

/* A request from another thread makes the main loop return. */
static void test_shutdown(void)
{
    GThread *t = g_thread_new("req", request_shutdown, NULL);
    int calls = seen.calls;

    qemu_main_loop_run();
    g_thread_join(t);
    g_assert_cmpint(runstate_get(), ==, RUN_STATE_SHUTDOWN);
    g_assert_cmpint(seen.calls, ==, calls + 1);
    g_assert_false(seen.running);
    g_assert_cmpint(seen.state, ==, RUN_STATE_SHUTDOWN);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/runstate/names", test_names);
    g_test_add_func("/runstate/start-stop", test_start_stop);
    g_test_add_func("/runstate/reset", test_reset);
    g_test_add_func("/runstate/no-shutdown", test_no_shutdown);
    g_test_add_func("/runstate/shutdown", test_shutdown);
    return g_test_run();
}

/*
 * ferry: parse the command line, build the machine, run the main loop.
 */
#include "qemu/osdep.h"
#include "qemu/rcu.h"
#include "sysemu/sysemu.h"
#include "sysemu/runstate.h"
#include "sysemu/cpus.h"
#include "exec/memory.h"
#include "hw/machine.h"
#include "hw/dirtier.h"
#include "monitor/qmp.h"
#include "migration/misc.h"
#include "qemu/trace.h"
#include "chardev/char.h"
#include "sysemu/kvm.h"
#include <fcntl.h>
#include <sys/wait.h>

/* Write end of the pipe the daemonizing parent waits on; -1 if none. */
static int daemon_ready_fd = -1;
static char *pidfile_written;

/*
 * Fork; the parent waits until the child reports readiness (one byte 0) or
 * failure (pipe closed / non-zero), and exits with the matching status.
 */
static void os_daemonize(void)
{
    int fds[2];
    pid_t pid;
    char status = 1;

    if (pipe2(fds, O_CLOEXEC) < 0) {
        error_report("-daemonize: cannot create pipe: %s", g_strerror(errno));
        exit(1);
    }
    pid = fork();
    if (pid < 0) {
        error_report("-daemonize: cannot fork: %s", g_strerror(errno));
        exit(1);
    }
    if (pid > 0) {
        close(fds[1]);
        while (read(fds[0], &status, 1) < 0 && errno == EINTR) {
        }
        _exit(status == 0 ? 0 : 1);
    }
    close(fds[0]);
    daemon_ready_fd = fds[1];
    setsid();
}

/* The child is ready: release the parent, detach from the terminal. */
static void os_daemonize_done(void)
{
    char ok = 0;
    int null_fd;

    if (daemon_ready_fd < 0) {
        return;
    }
    null_fd = open("/dev/null", O_RDWR);
    if (null_fd >= 0) {
        dup2(null_fd, STDIN_FILENO);
        dup2(null_fd, STDOUT_FILENO);
        dup2(null_fd, STDERR_FILENO);
        if (null_fd > STDERR_FILENO) {
            close(null_fd);
        }
    }
    if (write(daemon_ready_fd, &ok, 1) != 1) {
        /* The parent is gone; nothing left to tell. */
    }
    close(daemon_ready_fd);
    daemon_ready_fd = -1;
}

static bool write_pidfile(const char *path, GError **errp)
{
    g_autofree char *text = g_strdup_printf("%d\n", (int)getpid());

    if (!g_file_set_contents(path, text, -1, errp)) {
        g_prefix_error(errp, "-pidfile: ");
        return false;
    }
    pidfile_written = g_strdup(path);
    return true;
}

static void remove_pidfile(void)
{
    if (pidfile_written) {
        unlink(pidfile_written);
        g_clear_pointer(&pidfile_written, g_free);
    }
}

static G_GNUC_NORETURN void fatal(GError *err)
{
    error_report_err(err);
    remove_pidfile();
    exit(1);
}

/* Every -object backend becomes a RAMBlock named by its id. */
static bool create_ram(MachineState *ms, const MachineClass *mc,
                       GError **errp)
{
    static const RAMBackendConfig anon = { .type = RAM_BACKEND_ANON };
    guint i;

    for (i = 0; i < ms->backends->len; i++) {
        MemoryBackend *be = g_ptr_array_index(ms->backends, i);

        be->block = qemu_ram_alloc(be->id, be->size, &be->cfg, errp);
        if (!be->block) {
            return false;
        }
        if (ms->memory_backend && !strcmp(be->id, ms->memory_backend)) {
            ms->ram = be->block;
        }
    }
    if (!ms->ram) {
        ms->ram = qemu_ram_alloc(mc->default_ram_id, ms->ram_size, &anon,
                                 errp);
    }
    return ms->ram != NULL;
}

static bool load_loader_blobs(MachineState *ms, GError **errp)
{
    guint i;

    for (i = 0; i < ms->loaders->len; i++) {
        LoaderDevice *ld = g_ptr_array_index(ms->loaders, i);
        g_autofree char *data = NULL;
        gsize len = 0;
        void *host;

        if (!g_file_get_contents(ld->file, &data, &len, errp)) {
            g_prefix_error(errp, "-device loader: ");
            return false;
        }
        host = guest_phys_to_host(ld->addr, len);
        if (!host) {
            error_setg(errp, "-device loader: '%s' (%zu bytes) does not fit "
                       "in guest RAM at 0x%" PRIx64, ld->file, (size_t)len,
                       ld->addr);
            return false;
        }
        memcpy(host, data, len);
    }
    return true;
}

static bool start_qmp(VMOptions *opts, GError **errp)
{
    guint i;

    for (i = 0; i < opts->qmp_specs->len; i++) {
        const char *spec = g_ptr_array_index(opts->qmp_specs, i);

        if (!qmp_server_start(spec, errp)) {
            g_prefix_error(errp, "-qmp %s: ", spec);
            return false;
        }
    }
    return true;
}

/* Let queued events (SHUTDOWN) reach the clients before we close. */
static void flush_main_context(void)
{
    int i;

    for (i = 0; i < 100 && g_main_context_iteration(NULL, FALSE); i++) {
    }
}

/* -trace: the file first, so the patterns' first lines land in it. */
static bool apply_trace_options(VMOptions *opts, GError **errp)
{
    guint i;

    if (opts->trace_file && !trace_set_file(opts->trace_file, errp)) {
        g_prefix_error(errp, "-trace: ");
        return false;
    }
    for (i = 0; i < opts->trace_patterns->len; i++) {
        trace_enable_patterns(g_ptr_array_index(opts->trace_patterns, i));
    }
    return true;
}

int main(int argc, char **argv)
{
    VMOptions opts;
    const MachineClass *mc;
    MachineState *ms;
    GError *err = NULL;
    Dirtier *dirtier = NULL;

    rcu_register_thread();
    /* Before anything that may trace; -trace below refines it. */
    if (!trace_init_from_env(&err)) {
        fatal(err);
    }
    if (!qemu_parse_options(argc, argv, &opts, &err)) {
        fatal(err);
    }
    if (opts.show_help || opts.show_version || opts.machine_help) {
        if (opts.show_help) {
            qemu_print_help(stdout);
        } else if (opts.show_version) {
            qemu_print_version(stdout);
        } else {
            machine_print_types(stdout);
        }
        qemu_free_options(&opts);
        return 0;
    }
    ms = &opts.machine;
    mc = machine_find_class(ms->type);
    if (!mc) {
        error_report("unsupported machine type '%s'", ms->type);
        error_report("use -machine help to list supported machines");
        return 1;
    }
    qemu_apply_options(&opts);
    error_set_timestamps(opts.msg_timestamp);
    if (!apply_trace_options(&opts, &err)) {
        fatal(err);
    }
    autostart = !opts.start_paused;
    no_shutdown = opts.no_shutdown;
    no_reboot = opts.no_reboot;
    if (mc->needs_vcpus && ms->accel_tcg && !ms->accel_kvm) {
        error_report("machine '%s' needs KVM: ferry has no instruction "
                     "emulator, so -accel tcg only runs machines without "
                     "vCPUs (none, x-ram)", mc->name);
        return 1;
    }
    if (mc->needs_vcpus) {
        ms->accel_kvm = true;
    }
    if (ms->dirtier && mc->needs_vcpus) {
        /* Before the machine: pc would fail first on a host without KVM. */
        error_report("-device x-dirtier: x-dirtier needs a machine without "
                     "vCPUs: its writes would escape KVM's dirty log");
        return 1;
    }

    /* Fork before any thread exists. */
    if (opts.daemonize) {
        os_daemonize();
    }
    if (opts.pidfile && !write_pidfile(opts.pidfile, &err)) {
        fatal(err);
    }

    current_machine = ms;
    current_machine_class = mc;
    if (!create_ram(ms, mc, &err) || !mc->init(ms, &err) ||
        !load_loader_blobs(ms, &err)) {
        fatal(err);
    }
    if (ms->dirtier && kvm_enabled()) {
        /* One dirty log per VM: KVM's would replace the software one. */
        error_report("-device x-dirtier: cannot be used with -accel kvm "
                     "(its software dirty log replaces KVM's)");
        remove_pidfile();
        return 1;
    }
    if (ms->dirtier) {
        dirtier = dirtier_create(ms->dirtier, mc->needs_vcpus, &err);
        if (!dirtier) {
            g_prefix_error(&err, "-device ");
            fatal(err);
        }
    }
    qemu_init_signal_handlers();
    qmp_register_core_commands();
    chardev_register_qmp();
    migration_register_qmp();
    dirtier_register_qmp();
    migration_set_uuid(opts.uuid_bytes);
    ram_mig_init();
    if (!start_qmp(&opts, &err)) {
        fatal(err);
    }

    if (opts.incoming) {
        runstate_set(RUN_STATE_INMIGRATE);
        if (!migration_incoming_start(opts.incoming, &err)) {
            g_prefix_error(&err, "-incoming %s: ", opts.incoming);
            fatal(err);
        }
    } else if (autostart) {
        vm_start();
    } else {
        runstate_set(RUN_STATE_PRELAUNCH);
    }
    os_daemonize_done();

    qemu_main_loop_run();

    pause_all_vcpus();
    dirtier_destroy(dirtier);
    flush_main_context();
    qmp_server_shutdown();
    remove_pidfile();
    current_machine = NULL;
    qemu_free_options(&opts);
    return 0;
}

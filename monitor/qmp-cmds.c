/*
 * Core QMP commands that act on the VM: run state, reset, quit, names,
 * vCPUs and guest memory dumps.  The protocol commands (qmp_capabilities,
 * query-version, query-commands) live in qmp.c.
 */
#include "qemu/osdep.h"
#include "monitor/qmp.h"
#include "qemu/rcu.h"
#include "qemu/thread.h"
#include "sysemu/runstate.h"
#include "sysemu/cpus.h"
#include "exec/memory.h"
#include "hw/machine.h"
#include "migration/misc.h"

#include <fcntl.h>

static const char *const no_args[] = { NULL };

static JsonNode *node_take_object(JsonObject *obj)
{
    JsonNode *node = json_node_new(JSON_NODE_OBJECT);

    json_node_take_object(node, obj);
    return node;
}

static bool qmp_query_status(JsonObject *args, JsonNode **ret, GError **errp)
{
    JsonObject *res;

    if (!qmp_args_check_known(args, no_args, errp)) {
        return false;
    }
    res = json_object_new();
    json_object_set_string_member(res, "status", RunState_str(runstate_get()));
    json_object_set_boolean_member(res, "singlestep", false);
    json_object_set_boolean_member(res, "running", runstate_is_running());
    *ret = node_take_object(res);
    return true;
}

static bool qmp_stop(JsonObject *args, JsonNode **ret, GError **errp)
{
    if (!qmp_args_check_known(args, no_args, errp)) {
        return false;
    }
    if (runstate_get() == RUN_STATE_INMIGRATE) {
        /* Nothing runs yet: just do not start when the migration ends. */
        autostart = false;
    } else if (runstate_is_running()) {
        vm_stop(RUN_STATE_PAUSED);
    }
    return true;
}

static bool qmp_cont(JsonObject *args, JsonNode **ret, GError **errp)
{
    if (!qmp_args_check_known(args, no_args, errp)) {
        return false;
    }
    switch (runstate_get()) {
    case RUN_STATE_INTERNAL_ERROR:
    case RUN_STATE_SHUTDOWN:
    case RUN_STATE_GUEST_PANICKED:
        error_setg(errp, "Resetting the Virtual Machine is required");
        return false;
    case RUN_STATE_FINISH_MIGRATE:
        error_setg(errp, "Migration is not finalized yet");
        return false;
    case RUN_STATE_SUSPENDED:
        /* Only a guest wakeup leaves this state; QEMU ignores cont. */
        return true;
    case RUN_STATE_INMIGRATE:
        /* Start once the incoming migration completes. */
        autostart = true;
        return true;
    case RUN_STATE_RUNNING:
        return true;
    default:
        /* paused, prelaunch, postmigrate, debug, io-error, ... */
        migration_postcopy_failure_reset();
        vm_start();
        return true;
    }
}

static bool qmp_system_reset(JsonObject *args, JsonNode **ret, GError **errp)
{
    if (!qmp_args_check_known(args, no_args, errp)) {
        return false;
    }
    qemu_system_reset_request(SHUTDOWN_CAUSE_HOST_QMP_SYSTEM_RESET);
    return true;
}

static gboolean quit_later(gpointer opaque)
{
    qemu_system_shutdown_request(SHUTDOWN_CAUSE_HOST_QMP_QUIT);
    return G_SOURCE_REMOVE;
}

static bool qmp_quit(JsonObject *args, JsonNode **ret, GError **errp)
{
    if (!qmp_args_check_known(args, no_args, errp)) {
        return false;
    }
    /* From the main loop, after this command's reply has been queued. */
    g_idle_add(quit_later, NULL);
    return true;
}

static bool qmp_query_name(JsonObject *args, JsonNode **ret, GError **errp)
{
    JsonObject *res;

    if (!qmp_args_check_known(args, no_args, errp)) {
        return false;
    }
    res = json_object_new();
    if (current_machine && current_machine->name) {
        json_object_set_string_member(res, "name", current_machine->name);
    }
    *ret = node_take_object(res);
    return true;
}

static JsonObject *cpu_info(int index, CPUState *cpu)
{
    JsonObject *info = json_object_new();
    JsonObject *props = json_object_new();
    g_autofree char *path =
        g_strdup_printf("/machine/unattached/device[%d]", index);

    /* -smp N is N sockets of one core of one thread, as in QEMU. */
    json_object_set_int_member(props, "core-id", 0);
    json_object_set_int_member(props, "thread-id", 0);
    json_object_set_int_member(props, "socket-id", index);

    json_object_set_int_member(info, "cpu-index", index);
    json_object_set_string_member(info, "qom-path", path);
    json_object_set_int_member(info, "thread-id", cpu_thread_id(cpu));
    json_object_set_string_member(info, "target", "x86_64");
    json_object_set_object_member(info, "props", props);
    return info;
}

static bool qmp_query_cpus_fast(JsonObject *args, JsonNode **ret,
                                GError **errp)
{
    JsonArray *list;
    int n;

    if (!qmp_args_check_known(args, no_args, errp)) {
        return false;
    }
    list = json_array_new();
    n = cpu_count();
    for (int i = 0; i < n; i++) {
        CPUState *cpu = qemu_get_cpu(i);

        if (cpu) {
            json_array_add_object_element(list, cpu_info(cpu_index(cpu), cpu));
        }
    }
    *ret = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(*ret, list);
    return true;
}

/* Length of the RAM run starting at gpa within one mapping, or 0. */
static uint64_t ram_run_at(hwaddr gpa)
{
    size_t count;
    const MemoryMapping *maps = memory_mappings(&count);

    for (size_t i = 0; i < count; i++) {
        if (gpa >= maps[i].gpa && gpa - maps[i].gpa < maps[i].size) {
            return maps[i].size - (gpa - maps[i].gpa);
        }
    }
    return 0;
}

/* Every byte of [addr, addr+size) must be RAM: check before writing. */
static bool pmem_range_check(uint64_t addr, uint64_t size, GError **errp)
{
    uint64_t done = 0;

    if (size && addr + size - 1 < addr) {
        error_setg(errp, "Invalid parameter 'val': range 0x%" PRIx64
                   " + 0x%" PRIx64 " wraps around", addr, size);
        return false;
    }
    while (done < size) {
        uint64_t run = ram_run_at(addr + done);

        if (!run) {
            error_setg(errp, "Invalid parameter 'val': guest-physical "
                       "address 0x%" PRIx64 " is not RAM", addr + done);
            return false;
        }
        done += MIN(run, size - done);
    }
    return true;
}

static bool write_full(int fd, const uint8_t *buf, size_t len,
                       const char *filename, GError **errp)
{
    while (len) {
        ssize_t n = write(fd, buf, len);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            error_setg_errno(errp, errno, "Error writing to '%s'", filename);
            return false;
        }
        buf += n;
        len -= n;
    }
    return true;
}

static bool pmem_dump(int fd, uint64_t addr, uint64_t size,
                      const char *filename, GError **errp)
{
    /* Bounded chunks: one write() of gigabytes helps nobody. */
    const uint64_t max_chunk = 16 * 1024 * 1024;
    uint64_t done = 0;

    while (done < size) {
        hwaddr gpa = addr + done;
        uint64_t len = MIN(MIN(ram_run_at(gpa), size - done), max_chunk);
        void *host = len ? guest_phys_to_host(gpa, len) : NULL;

        if (!host) {
            error_setg(errp, "Invalid parameter 'val': guest-physical "
                       "address 0x%" PRIx64 " is not RAM", gpa);
            return false;
        }
        if (!write_full(fd, host, len, filename, errp)) {
            return false;
        }
        done += len;
    }
    return true;
}

/*
 * pmemsave copies guest RAM, which in postcopy may fault on a page not
 * received yet, and stay blocked through a whole pause: so the copy runs
 * in its own thread and the reply is deferred, keeping the main loop
 * (other clients, migrate-recover's listener, out-of-band commands) alive.
 */
typedef struct PmemsaveJob {
    QemuThread thread;
    QmpDeferred *reply;
    int fd;
    uint64_t addr, size;
    char *filename;
    GError *err;
} PmemsaveJob;

static gboolean pmemsave_done_bh(gpointer opaque)
{
    PmemsaveJob *job = opaque;

    qemu_thread_join(&job->thread);
    if (close(job->fd) < 0 && !job->err) {
        error_setg_errno(&job->err, errno, "Error writing to '%s'",
                         job->filename);
    }
    qmp_deferred_return(job->reply, NULL, job->err);
    g_free(job->filename);
    g_free(job);
    return G_SOURCE_REMOVE;
}

static void *pmemsave_thread(void *opaque)
{
    PmemsaveJob *job = opaque;

    rcu_read_lock();
    pmem_dump(job->fd, job->addr, job->size, job->filename, &job->err);
    rcu_read_unlock();
    g_idle_add(pmemsave_done_bh, job);
    return NULL;
}

static bool qmp_pmemsave(JsonObject *args, JsonNode **ret, GError **errp)
{
    static const char *const known[] = { "val", "size", "filename", NULL };
    uint64_t addr, size;
    const char *filename;
    PmemsaveJob *job;
    int fd;

    if (!qmp_args_check_known(args, known, errp) ||
        !qmp_arg_uint(args, "val", true, &addr, errp) ||
        !qmp_arg_uint(args, "size", true, &size, errp) ||
        !qmp_arg_str(args, "filename", true, &filename, errp) ||
        !pmem_range_check(addr, size, errp)) {
        return false;
    }
    fd = open(filename, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Could not open '%s'", filename);
        return false;
    }
    job = g_new0(PmemsaveJob, 1);
    job->fd = fd;
    job->addr = addr;
    job->size = size;
    job->filename = g_strdup(filename);
    job->reply = qmp_defer();
    if (!qemu_thread_create(&job->thread, "qmp/pmemsave", pmemsave_thread,
                            job, errp)) {
        /* qmp_handle_request drops the deferral when we fail. */
        close(fd);
        g_free(job->filename);
        g_free(job);
        return false;
    }
    return true;
}

void qmp_register_core_commands(void)
{
    qmp_register_command("query-status", qmp_query_status);
    qmp_register_command("stop", qmp_stop);
    qmp_register_command("cont", qmp_cont);
    qmp_register_command("system_reset", qmp_system_reset);
    qmp_register_command("quit", qmp_quit);
    qmp_register_command("query-name", qmp_query_name);
    qmp_register_command("query-cpus-fast", qmp_query_cpus_fast);
    qmp_register_command("pmemsave", qmp_pmemsave);
    qmp_register_introspect_commands();
}

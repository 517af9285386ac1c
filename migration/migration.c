/*
 * The migration state machine.
 *
 * Source: "migrate" starts the live_migration thread, which writes the
 * header, opens the return path when wanted, runs the live handlers' setup,
 * iterates until the pending estimate fits in bandwidth x downtime-limit
 * (and, while passes keep shrinking, a little beyond: see Convergence),
 * then stops the VM and completes.  Cancel moves to "cancelling" and shuts
 * the channel down so that blocked I/O returns; the thread notices and
 * cleans up.  A failed or cancelled migration leaves the VM as it found it.
 *
 * Destination: -incoming URI (or migrate-incoming after -incoming defer)
 * listens, accepts one connection and runs the loader thread.
 *
 * Statuses change only by compare-and-swap, so the thread and QMP (cancel)
 * never overwrite each other's transition.
 */
#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "qemu/thread.h"
#include "migration/migration.h"
#include "migration/multifd.h"
#include "migration/switch-policy.h"
#include "migration/options.h"
#include "migration/misc.h"
#include "migration/ram.h"
#include "migration/savevm.h"
#include "migration/qemu-file.h"
#include "migration/channel.h"
#include "migration/postcopy-ram.h"
#include "exec/ramblock.h"
#include "qemu/rcu.h"
#include "monitor/qmp.h"
#include "sysemu/runstate.h"
#include "trace/trace-migration.h"

static const char *const status_names[MIGRATION_STATUS__MAX] = {
    [MIGRATION_STATUS_NONE] = "none",
    [MIGRATION_STATUS_SETUP] = "setup",
    [MIGRATION_STATUS_CANCELLING] = "cancelling",
    [MIGRATION_STATUS_CANCELLED] = "cancelled",
    [MIGRATION_STATUS_ACTIVE] = "active",
    [MIGRATION_STATUS_POSTCOPY_ACTIVE] = "postcopy-active",
    [MIGRATION_STATUS_POSTCOPY_PAUSED] = "postcopy-paused",
    [MIGRATION_STATUS_POSTCOPY_RECOVER] = "postcopy-recover",
    [MIGRATION_STATUS_COMPLETED] = "completed",
    [MIGRATION_STATUS_FAILED] = "failed",
    [MIGRATION_STATUS_COLO] = "colo",
    [MIGRATION_STATUS_PRE_SWITCHOVER] = "pre-switchover",
    [MIGRATION_STATUS_DEVICE] = "device",
    [MIGRATION_STATUS_WAIT_UNPLUG] = "wait-unplug",
};

/* The process's migration objects (see migration_object_init). */
static MigrationState *current_migration;
static MigrationIncomingState *current_incoming;

static int64_t now_ms(void)
{
    return g_get_monotonic_time() / 1000;
}

const char *MigrationStatus_str(MigrationStatus s)
{
    if ((unsigned)s >= MIGRATION_STATUS__MAX) {
        return "invalid";
    }
    return status_names[s];
}

bool migration_status_parse(const char *name, MigrationStatus *out)
{
    for (int i = 0; i < MIGRATION_STATUS__MAX; i++) {
        if (g_str_equal(name, status_names[i])) {
            *out = i;
            return true;
        }
    }
    return false;
}

MigrationState *migration_state_new(void)
{
    MigrationState *s = g_new0(MigrationState, 1);

    migrate_params_init(&s->parameters);
    qemu_mutex_init(&s->qemu_file_lock);
    qemu_mutex_init(&s->pause_lock);
    qemu_cond_init(&s->pause_cond);
    qemu_mutex_init(&s->error_lock);
    qemu_cond_init(&s->rp_cond);
    qemu_mutex_init(&s->stats_lock);
    s->ram = ram_state_new();
    return s;
}

/* Only for an object whose threads have ended. */
void migration_state_free(MigrationState *s)
{
    if (!s) {
        return;
    }
    ram_state_free(s->ram);
    migrate_params_free(&s->parameters);
    g_free(s->error_desc);
    g_clear_error(&s->rp_error);
    qemu_mutex_destroy(&s->qemu_file_lock);
    qemu_mutex_destroy(&s->pause_lock);
    qemu_cond_destroy(&s->pause_cond);
    qemu_mutex_destroy(&s->error_lock);
    qemu_cond_destroy(&s->rp_cond);
    qemu_mutex_destroy(&s->stats_lock);
    g_free(s);
}

MigrationIncomingState *migration_incoming_state_new(void)
{
    MigrationIncomingState *mis = g_new0(MigrationIncomingState, 1);

    qemu_mutex_init(&mis->error_lock);
    qemu_mutex_init(&mis->file_lock);
    mis->ram_load = ram_load_state_new();
    mis->postcopy = postcopy_incoming_state_new();
    return mis;
}

void migration_incoming_state_free(MigrationIncomingState *mis)
{
    if (!mis) {
        return;
    }
    postcopy_incoming_state_free(mis->postcopy);
    multifd_recv_free(mis->multifd);
    ram_load_state_free(mis->ram_load);
    migration_listener_free(mis->listener);
    g_free(mis->listen_uri);
    g_free(mis->error_desc);
    qemu_mutex_destroy(&mis->error_lock);
    qemu_mutex_destroy(&mis->file_lock);
    g_free(mis);
}

/*
 * Created on first use, which is the main thread at start-up (or a test),
 * before any migration thread exists.
 */
static void migration_object_init(void)
{
    static gsize done;

    if (g_once_init_enter(&done)) {
        current_migration = migration_state_new();
        current_incoming = migration_incoming_state_new();
        g_once_init_leave(&done, 1);
    }
}

MigrationState *migrate_get_current(void)
{
    migration_object_init();
    return current_migration;
}

MigrationIncomingState *migration_incoming_get_current(void)
{
    migration_object_init();
    return current_incoming;
}

/* ---------------------------------------------------------------------- */
/* Status */

MigrationStatus migrate_get_state(const MigrationStatus *state)
{
    return qatomic_mb_read(state);
}

bool migrate_set_state(MigrationStatus *state, MigrationStatus old,
                       MigrationStatus new_state)
{
    MigrationStatus expected = old;

    if (!(qatomic_cmpxchg(state, expected, new_state) == expected)) {
        return false;
    }
    trace_migrate_set_state(MigrationStatus_str(new_state));
    if (migrate_events()) {
        qapi_event_send_migration(new_state);
    }
    return true;
}

static bool status_is_terminal_or_none(MigrationStatus st)
{
    return st == MIGRATION_STATUS_NONE ||
           st == MIGRATION_STATUS_COMPLETED ||
           st == MIGRATION_STATUS_FAILED ||
           st == MIGRATION_STATUS_CANCELLED;
}

bool migration_is_idle(const MigrationState *s)
{
    return status_is_terminal_or_none(migrate_get_state(&s->status));
}

bool migration_is_active(const MigrationState *s)
{
    return !migration_is_idle(s);
}

bool migration_is_running_any(void)
{
    MigrationStatus in = migrate_get_state(
        &migration_incoming_get_current()->status);

    return migration_is_active(migrate_get_current()) ||
           !status_is_terminal_or_none(in);
}

/* ---------------------------------------------------------------------- */
/* Errors */

static void set_error_desc(QemuMutex *lock, char **desc, const GError *err)
{
    qemu_mutex_lock(lock);
    if (!*desc && err) {
        *desc = g_strdup(err->message);
    }
    qemu_mutex_unlock(lock);
}

void migrate_set_error(MigrationState *s, const GError *err)
{
    set_error_desc(&s->error_lock, &s->error_desc, err);
}

void migration_incoming_set_error(MigrationIncomingState *mis,
                                  const GError *err)
{
    set_error_desc(&mis->error_lock, &mis->error_desc, err);
}

static char *dup_error_desc(QemuMutex *lock, char *const *desc)
{
    char *r;

    qemu_mutex_lock(lock);
    r = g_strdup(*desc);
    qemu_mutex_unlock(lock);
    return r;
}

char *migrate_get_error_desc(MigrationState *s)
{
    return dup_error_desc(&s->error_lock, &s->error_desc);
}

char *migration_incoming_get_error_desc(MigrationIncomingState *mis)
{
    return dup_error_desc(&mis->error_lock, &mis->error_desc);
}

/* ETIMEDOUT on a TCP stream is x-net-timeout at work. */
void migration_explain_net_timeout(QEMUFile *f, GError **err)
{
    if (f && err && *err && qemu_file_get_error(f) == -ETIMEDOUT) {
        g_prefix_error(err, "no sign of life from the peer within "
                       "x-net-timeout (%" PRIu64 " ms): ",
                       migrate_net_timeout());
    }
}

/* ---------------------------------------------------------------------- */
/* Source: return path */

/* A page request: queue it for the migration thread (postcopy). */
static bool rp_req_pages(MigrationState *s, const RPMessage *msg,
                         char last_block[256], GError **errp)
{
    uint64_t start;
    uint32_t len;
    char id[256];

    if (!rp_message_get_req_pages(msg, &start, &len, id, errp)) {
        return false;
    }
    if (id[0]) {
        g_strlcpy(last_block, id, 256);
    } else if (!last_block[0]) {
        error_setg(errp, "page request without a block name and no "
                   "previous block");
        return false;
    }
    trace_migrate_handle_rp_req_pages(last_block, start, len);
    if (!migrate_postcopy_ram()) {
        return true;    /* a hint only, nothing to serve it with */
    }
    return ram_postcopy_queue_request(s->ram, last_block, start, len, errp);
}

/* A RECV_BITMAP reply (recovery): rebuild that block's dirty map. */
static bool rp_recv_bitmap(MigrationState *s, const RPMessage *msg,
                           GError **errp)
{
    char id[256];
    bool expected;

    if (!rp_message_get_recv_bitmap(msg, id, errp)) {
        return false;
    }
    trace_source_return_path_thread_recv_bitmap(id);
    qemu_mutex_lock(&s->error_lock);
    expected = s->rp_bitmaps_pending > 0;
    qemu_mutex_unlock(&s->error_lock);
    if (!expected ||
        migrate_get_state(&s->status) != MIGRATION_STATUS_POSTCOPY_RECOVER) {
        error_setg(errp, "RECV_BITMAP reply for '%s' that was not asked "
                   "for (status %s)", id,
                   MigrationStatus_str(migrate_get_state(&s->status)));
        return false;
    }
    if (!ram_postcopy_recv_bitmap(s->ram, s->rp_file, id, errp)) {
        return false;
    }
    qemu_mutex_lock(&s->error_lock);
    s->rp_bitmaps_pending--;
    qemu_cond_broadcast(&s->rp_cond);
    qemu_mutex_unlock(&s->error_lock);
    return true;
}

static bool rp_resume_ack(MigrationState *s, const RPMessage *msg,
                          GError **errp)
{
    uint32_t v = rp_message_get_u32(msg);

    trace_source_return_path_thread_resume_ack(v);
    if (v != MIGRATION_RESUME_ACK_VALUE ||
        migrate_get_state(&s->status) != MIGRATION_STATUS_POSTCOPY_RECOVER) {
        error_setg(errp, "unexpected RESUME_ACK(%u) in status %s", v,
                   MigrationStatus_str(migrate_get_state(&s->status)));
        return false;
    }
    qemu_mutex_lock(&s->error_lock);
    s->rp_resume_ack = true;
    qemu_cond_broadcast(&s->rp_cond);
    qemu_mutex_unlock(&s->error_lock);
    return true;
}

static void *source_return_path_thread(void *opaque)
{
    MigrationState *s = opaque;
    GError *err = NULL;
    RPMessage msg;
    char last_block[256] = "";
    bool failed = false;

    trace_source_return_path_thread_entry();
    for (;;) {
        trace_source_return_path_thread_loop_top();
        if (source_return_path_read(s->rp_file, &msg, &err) < 0) {
            break;
        }
        switch (msg.type) {
        case MIG_RP_MSG_SHUT:
            s->rp_shut_value = rp_message_get_u32(&msg);
            trace_source_return_path_thread_shut(s->rp_shut_value);
            qatomic_mb_set(&s->rp_shut_received, true);
            if (s->rp_shut_value) {
                error_setg(&err, "Destination reported an error on "
                           "shutdown (SHUT %u)", s->rp_shut_value);
            }
            goto out;
        case MIG_RP_MSG_PONG:
            trace_source_return_path_thread_pong(rp_message_get_u32(&msg));
            break;
        case MIG_RP_MSG_REQ_PAGES:
        case MIG_RP_MSG_REQ_PAGES_ID:
            if (!rp_req_pages(s, &msg, last_block, &err)) {
                goto out;
            }
            break;
        case MIG_RP_MSG_RECV_BITMAP:
            if (!rp_recv_bitmap(s, &msg, &err)) {
                goto out;
            }
            break;
        case MIG_RP_MSG_RESUME_ACK:
            if (!rp_resume_ack(s, &msg, &err)) {
                goto out;
            }
            break;
        default:
            error_setg(&err, "Unexpected return-path message type %u",
                       msg.type);
            goto out;
        }
    }
out:
    migration_explain_net_timeout(s->rp_file, &err);
    if (err) {
        trace_source_return_path_thread_bad_end(err->message);
    }
    qemu_mutex_lock(&s->error_lock);
    /* Errors after a cancel are the cancel's own doing. */
    if (err && !s->rp_error &&
        migrate_get_state(&s->status) != MIGRATION_STATUS_CANCELLING) {
        g_prefix_error(&err, "Return path: ");
        s->rp_error = g_steal_pointer(&err);
        /* A broken link (not a bad message): postcopy pauses on it. */
        s->rp_error_io = qemu_file_get_error(s->rp_file) != 0;
        failed = true;
    }
    s->rp_thread_done = true;
    qemu_cond_broadcast(&s->rp_cond);
    qemu_mutex_unlock(&s->error_lock);
    g_clear_error(&err);
    if (failed) {
        /*
         * The migration thread may be blocked writing to a destination
         * that stopped reading (a flood of page requests does exactly
         * that): shut the stream down so the write returns and the thread
         * sees rp_error, as a cancel does.
         */
        qemu_mutex_lock(&s->qemu_file_lock);
        if (s->to_dst_file) {
            qatomic_mb_set(&s->rp_shut_stream, true);
            qemu_file_shutdown(s->to_dst_file);
        }
        multifd_send_shutdown(s->multifd);
        qemu_mutex_unlock(&s->qemu_file_lock);
    }
    trace_source_return_path_thread_end();
    return NULL;
}

static bool rp_has_error(MigrationState *s)
{
    bool r;

    qemu_mutex_lock(&s->error_lock);
    r = s->rp_error != NULL;
    qemu_mutex_unlock(&s->error_lock);
    return r;
}

static bool open_return_path(MigrationState *s, GError **errp)
{
    trace_open_return_path_on_source();
    s->rp_file = qemu_file_get_return_path(s->to_dst_file);
    if (!s->rp_file) {
        error_setg(errp, "Unable to open the return path: the channel "
                   "cannot carry one");
        return false;
    }
    if (!qemu_thread_create(&s->rp_thread, "return path",
                            source_return_path_thread, s, errp)) {
        qemu_fclose(s->rp_file);
        s->rp_file = NULL;
        return false;
    }
    s->rp_thread_done = false;
    s->rp_thread_running = true;
    return true;
}

static void close_return_path(MigrationState *s)
{
    if (s->rp_thread_running) {
        trace_await_return_path_close_on_source_joining();
        qemu_thread_join(&s->rp_thread);
        s->rp_thread_running = false;
    }
    if (s->rp_file) {
        qemu_fclose(s->rp_file);
        s->rp_file = NULL;
    }
}

/* ---------------------------------------------------------------------- */
/* Source: the channels */

/* Blocked writes and reads on both channels return at once. */
static void migration_shutdown_channels(MigrationState *s)
{
    qemu_mutex_lock(&s->qemu_file_lock);
    if (s->to_dst_file) {
        qemu_file_shutdown(s->to_dst_file);
    }
    if (s->postcopy_qemufile_src) {
        qemu_file_shutdown(s->postcopy_qemufile_src);
    }
    multifd_send_shutdown(s->multifd);
    qemu_mutex_unlock(&s->qemu_file_lock);
}

/* The multifd channels, after the last page (migration thread). */
static bool multifd_connect(MigrationState *s, const char *uri,
                            GError **errp)
{
    MultiFDSendState *m;

    if (!migrate_multifd()) {
        return true;
    }
    m = multifd_send_setup(uri, migrate_multifd_channels(), s->uuid, errp);
    if (!m) {
        return false;
    }
    qemu_mutex_lock(&s->qemu_file_lock);
    s->multifd = m;
    qemu_mutex_unlock(&s->qemu_file_lock);
    ram_set_multifd(s->ram, m);
    return true;
}

static void multifd_close(MigrationState *s)
{
    MultiFDSendState *m;

    ram_set_multifd(s->ram, NULL);
    qemu_mutex_lock(&s->qemu_file_lock);
    m = s->multifd;
    s->multifd = NULL;
    qemu_mutex_unlock(&s->qemu_file_lock);
    multifd_send_cleanup(m);
}

/* Close the main channel (the migration thread's, at its end or a pause). */
static void migration_close_main_channel(MigrationState *s)
{
    QEMUFile *f;

    qemu_mutex_lock(&s->qemu_file_lock);
    f = s->to_dst_file;
    s->to_dst_file = NULL;
    qemu_mutex_unlock(&s->qemu_file_lock);
    if (f) {
        qemu_fclose(f);
    }
}

/* ---------------------------------------------------------------------- */
/* Source: the migration thread */

typedef struct MigrationThreadArgs {
    char *uri;
} MigrationThreadArgs;

static bool status_is(MigrationState *s, MigrationStatus st)
{
    return migrate_get_state(&s->status) == st;
}

/* Move to FAILED from whatever non-terminal status we are in. */
static void migrate_fail(MigrationState *s, const GError *err)
{
    MigrationStatus cur;

    trace_migrate_fd_error(err->message);
    migrate_set_error(s, err);
    do {
        cur = migrate_get_state(&s->status);
        if (status_is_terminal_or_none(cur) ||
            cur == MIGRATION_STATUS_CANCELLING) {
            return;
        }
    } while (!migrate_set_state(&s->status, cur, MIGRATION_STATUS_FAILED));
}

/*
 * A destination that refuses the stream closes the socket: our next write
 * fails (EPIPE) a moment before the return-path thread reads the EOF or
 * SHUT(1) that says why.  Give it that moment, so the error names the
 * destination's verdict rather than the broken pipe.
 */
/* How long a failed write waits for the destination's verdict. */
#define RP_VERDICT_WAIT_US (500 * 1000)

static void wait_for_rp_verdict(MigrationState *s)
{
    int64_t deadline;

    if (!s->rp_thread_running || !s->to_dst_file ||
        !qemu_file_get_error(s->to_dst_file) ||
        migrate_get_state(&s->status) == MIGRATION_STATUS_CANCELLING) {
        return;
    }
    deadline = g_get_monotonic_time() + RP_VERDICT_WAIT_US;
    qemu_mutex_lock(&s->error_lock);
    while (!s->rp_error && !s->rp_thread_done &&
           qemu_cond_wait_until(&s->rp_cond, &s->error_lock, deadline)) {
    }
    qemu_mutex_unlock(&s->error_lock);
}

/* The return path's error (the destination's word), or the stream's. */
static void collect_error(MigrationState *s, GError **errp)
{
    wait_for_rp_verdict(s);
    qemu_mutex_lock(&s->error_lock);
    if (s->rp_error && errp && !*errp) {
        *errp = g_error_copy(s->rp_error);
    }
    qemu_mutex_unlock(&s->error_lock);
    if (s->to_dst_file && errp && !*errp) {
        qemu_file_get_error_obj(s->to_dst_file, errp);
        migration_explain_net_timeout(s->to_dst_file, errp);
    }
    if (errp && !*errp) {
        error_setg(errp, "Migration stream error");
    }
}

/* At the end: total time and the average rate over the whole migration. */
static void stats_set_final(MigrationState *s)
{
    RAMCounters rc;

    ram_counters_get(s->ram, &rc);
    qemu_mutex_lock(&s->stats_lock);
    s->stats.total_time = now_ms() - s->stats.start_time;
    if (s->stats.total_time > 0) {
        s->stats.mbps = rc.transferred * 8.0 / 1000.0 / s->stats.total_time;
    }
    qemu_mutex_unlock(&s->stats_lock);
}

void migration_stats_get(MigrationState *s, MigrationStats *out)
{
    qemu_mutex_lock(&s->stats_lock);
    *out = s->stats;
    qemu_mutex_unlock(&s->stats_lock);
}

/*
 * pause-before-switchover: with the VM stopped, wait in pre-switchover
 * for migrate-continue (or a cancel), then go on in state next.  Both the
 * end of precopy and the switch to postcopy pause here, as in QEMU.
 */
static bool wait_pre_switchover(MigrationState *s, MigrationStatus *cur,
                                MigrationStatus next)
{
    if (!migrate_pause_before_switchover()) {
        return true;
    }
    if (!migrate_set_state(&s->status, *cur,
                           MIGRATION_STATUS_PRE_SWITCHOVER)) {
        return false;
    }
    qemu_mutex_lock(&s->pause_lock);
    while (!s->pause_released && status_is(s, MIGRATION_STATUS_PRE_SWITCHOVER)) {
        qemu_cond_wait(&s->pause_cond, &s->pause_lock);
    }
    s->pause_released = false;
    qemu_mutex_unlock(&s->pause_lock);
    if (!migrate_set_state(&s->status, MIGRATION_STATUS_PRE_SWITCHOVER,
                           next)) {
        return false;
    }
    *cur = next;
    return true;
}

/* Stop the VM, send what is left, wait for the destination's SHUT. */
static bool migration_completion(MigrationState *s, GError **errp)
{
    MigrationStatus cur = MIGRATION_STATUS_ACTIVE;
    int64_t stop_start = now_ms();
    int ret;

    global_state_store();
    s->runstate_before = runstate_get();
    s->vm_was_running = runstate_is_running();
    vm_stop(RUN_STATE_FINISH_MIGRATE);
    s->vm_stopped_by_us = true;
    trace_migration_completion_vm_stop();

    if (!wait_pre_switchover(s, &cur, MIGRATION_STATUS_DEVICE)) {
        return false;
    }
    ram_set_downtime_phase(s->ram, true);
    ret = qemu_savevm_state_complete_precopy(s->to_dst_file, false, true);
    if (ret >= 0) {
        ret = qemu_fflush(s->to_dst_file);
    }
    if (ret < 0) {
        collect_error(s, errp);
        return false;
    }
    if (s->rp_thread_running) {
        /* The destination answers SHUT once the load is finished. */
        close_return_path(s);
        if (!s->rp_shut_received || rp_has_error(s)) {
            collect_error(s, errp);
            if (!s->rp_shut_received) {
                g_clear_error(errp);
                error_setg(errp, "The destination closed the return path "
                           "without reporting success");
                qemu_mutex_lock(&s->error_lock);
                if (s->rp_error) {
                    g_clear_error(errp);
                    *errp = g_error_copy(s->rp_error);
                }
                qemu_mutex_unlock(&s->error_lock);
            }
            return false;
        }
    }
    qemu_mutex_lock(&s->stats_lock);
    s->stats.downtime = now_ms() - stop_start;
    qemu_mutex_unlock(&s->stats_lock);
    stats_set_final(s);
    if (!migrate_set_state(&s->status, cur, MIGRATION_STATUS_COMPLETED)) {
        return false;
    }
    return true;
}

/* Bytes/ms over the window since the last measurement, and thresholds. */
typedef struct BandwidthWindow {
    int64_t start_ms;
    uint64_t start_bytes;
} BandwidthWindow;

static void update_bandwidth(MigrationState *s, BandwidthWindow *w,
                             uint64_t pending)
{
    int64_t now = now_ms();
    int64_t elapsed = now - w->start_ms;
    uint64_t bytes = qemu_file_transferred(s->to_dst_file);

    if (elapsed < BUFFER_DELAY_MS) {
        return;
    }
    qemu_mutex_lock(&s->stats_lock);
    s->stats.bandwidth = (double)(bytes - w->start_bytes) / elapsed;
    s->stats.mbps = s->stats.bandwidth * 1000.0 * 8 / 1e6;
    if (s->stats.bandwidth > 0) {
        s->stats.expected_downtime = (int64_t)(pending / s->stats.bandwidth);
    }
    qemu_mutex_unlock(&s->stats_lock);
    trace_migrate_transferred(bytes - w->start_bytes, elapsed, pending);
    w->start_ms = now;
    w->start_bytes = bytes;
}

static uint64_t pending_total(bool exact)
{
    uint64_t must = 0, can = 0;

    if (exact) {
        qemu_savevm_state_pending_exact(&must, &can);
        trace_migrate_pending_exact(must + can, must, can);
    } else {
        qemu_savevm_state_pending_estimate(&must, &can);
        trace_migrate_pending_estimate(must + can, must, can);
    }
    return must + can;
}

/* ---------------------------------------------------------------------- */
/* Source: postcopy */

/*
 * postcopy-preempt (QEMU 7.1/7.2 way): the second connection to the same
 * address, right after the main one, so that the destination (which
 * counts connections) sees main first.  It carries no header.
 */
static bool postcopy_preempt_connect(MigrationState *s, const char *uri,
                                     GError **errp)
{
    QIOChannel *ioc = NULL;
    QEMUFile *f;

    if (!migrate_postcopy_preempt()) {
        return true;
    }
    if (!migration_channel_is_socket_uri(uri)) {
        error_setg(errp, "Postcopy preempt is not supported as current "
                   "migration stream does not support multi-channels.");
        return false;
    }
    if (!migration_channel_connect(uri, &ioc, errp)) {
        g_prefix_error(errp, "postcopy-preempt channel: ");
        return false;
    }
    f = qemu_file_new_output(ioc);
    qio_channel_unref(ioc);
    qemu_mutex_lock(&s->qemu_file_lock);
    s->postcopy_qemufile_src = f;
    qemu_mutex_unlock(&s->qemu_file_lock);
    return true;
}

/* From the switch (or a resume) on, urgent pages take the preempt channel. */
static void postcopy_preempt_activate(MigrationState *s)
{
    if (s->postcopy_qemufile_src) {
        migration_channel_tune_postcopy(
            qemu_file_get_ioc(s->postcopy_qemufile_src), true);
        ram_postcopy_set_preempt_file(s->ram, s->postcopy_qemufile_src);
    }
}

static void postcopy_preempt_close(MigrationState *s)
{
    QEMUFile *f;

    ram_postcopy_set_preempt_file(s->ram, NULL);
    qemu_mutex_lock(&s->qemu_file_lock);
    f = s->postcopy_qemufile_src;
    s->postcopy_qemufile_src = NULL;
    qemu_mutex_unlock(&s->qemu_file_lock);
    if (f) {
        qemu_fclose(f);
    }
}


/*
 * LISTEN, the device sections, PING 3, RUN, built in memory and sent as
 * one PACKAGED blob: the destination's listen thread takes over the
 * stream right after it.
 */
static bool postcopy_send_package(MigrationState *s, GError **errp)
{
    QIOChannel *bioc = qio_channel_new_buffer();
    QEMUFile *fb = qemu_file_new_output(bioc);
    const uint8_t *data;
    size_t len;
    int ret;

    qemu_savevm_send_postcopy_listen(fb);
    ret = qemu_savevm_state_complete_precopy_non_iterable(fb, true, false);
    if (ret >= 0) {
        qemu_savevm_send_ping(fb, 3);
        trace_postcopy_start_set_run();
        qemu_savevm_send_postcopy_run(fb);
        ret = qemu_fflush(fb);
    }
    if (ret < 0) {
        qemu_file_get_error_obj(fb, errp);
        if (errp && !*errp) {
            error_setg(errp, "postcopy: building the device package failed");
        }
        qemu_fclose(fb);
        qio_channel_unref(bioc);
        return false;
    }
    data = qio_channel_buffer_data(bioc, &len);
    /* From here the destination may run the guest: no way back. */
    s->postcopy_after_devices = true;
    ret = qemu_savevm_send_packaged(s->to_dst_file, data, len);
    qemu_fclose(fb);
    qio_channel_unref(bioc);
    if (ret < 0) {
        collect_error(s, errp);
        return false;
    }
    return true;
}

/* The switch: stop, discards, package; then the postcopy phase. */
static bool postcopy_start(MigrationState *s, GError **errp)
{
    QEMUFile *f = s->to_dst_file;
    int64_t stop_start = now_ms();
    MigrationStatus cur = MIGRATION_STATUS_ACTIVE;

    trace_postcopy_start();
    /* With a pause, postcopy-active comes after migrate-continue. */
    if (!migrate_pause_before_switchover() &&
        !migrate_set_state(&s->status, MIGRATION_STATUS_ACTIVE,
                           MIGRATION_STATUS_POSTCOPY_ACTIVE)) {
        return false;
    }
    global_state_store();
    s->runstate_before = runstate_get();
    s->vm_was_running = runstate_is_running();
    vm_stop(RUN_STATE_FINISH_MIGRATE);
    s->vm_stopped_by_us = true;
    if (!wait_pre_switchover(s, &cur, MIGRATION_STATUS_POSTCOPY_ACTIVE)) {
        return false;
    }
    ram_set_downtime_phase(s->ram, true);

    if (qemu_savevm_state_complete_precopy_iterable(f, true) < 0) {
        collect_error(s, errp);
        return false;
    }
    if (!ram_postcopy_send_discard_bitmap(s->ram, f, errp)) {
        return false;
    }
    qemu_savevm_send_ping(f, 2);
    if (!postcopy_send_package(s, errp)) {
        return false;
    }
    qemu_savevm_send_ping(f, 4);
    if (qemu_fflush(f) < 0) {
        collect_error(s, errp);
        return false;
    }
    qemu_mutex_lock(&s->stats_lock);
    s->stats.downtime = now_ms() - stop_start;
    qemu_mutex_unlock(&s->stats_lock);
    /* ram paces background pages itself; urgent ones must never wait. */
    qemu_file_set_rate_limit(f, 0);
    ram_set_postcopy_phase(s->ram, true);
    migration_channel_tune_postcopy(qemu_file_get_ioc(f), true);
    postcopy_preempt_activate(s);
    return true;
}

/* Why postcopy failed for good: the VM here stays stopped. */
static void postcopy_error(MigrationState *s, GError *cause, GError **errp)
{
    if (s->postcopy_after_devices) {
        qatomic_mb_set(&s->postcopy_failed, true);
        error_setg(errp, "postcopy: %s (the VM stays stopped here: the "
                   "destination may have run it, so this copy is stale)",
                   cause->message);
    } else {
        error_setg(errp, "postcopy: %s", cause->message);
    }
}

/*
 * Send the rest of RAM on the current channel (urgent pages first), then
 * the end, and wait for the destination's SHUT.  False with errp on any
 * failure: the caller decides between a pause and the end.
 */
static bool postcopy_run_channel(MigrationState *s, GError **errp)
{
    QEMUFile *f = s->to_dst_file;
    int ret;

    while (status_is(s, MIGRATION_STATUS_POSTCOPY_ACTIVE)) {
        if (rp_has_error(s)) {
            collect_error(s, errp);
            return false;
        }
        ret = qemu_savevm_state_iterate(f, true);
        if (ret < 0 || qemu_file_get_error(f)) {
            collect_error(s, errp);
            return false;
        }
        if (ret == 1) {
            break;
        }
    }
    if (!status_is(s, MIGRATION_STATUS_POSTCOPY_ACTIVE)) {
        error_setg(errp, "status changed to %s",
                   MigrationStatus_str(migrate_get_state(&s->status)));
        return false;
    }
    trace_migration_completion_postcopy_end();
    ret = qemu_savevm_state_complete_postcopy(f);
    if (ret >= 0) {
        ret = qemu_fflush(f);
    }
    if (ret >= 0 && ram_postcopy_preempt_finish(s->ram) < 0) {
        qemu_file_get_error_obj(s->postcopy_qemufile_src, errp);
        return false;
    }
    if (ret < 0) {
        collect_error(s, errp);
        return false;
    }
    /* The destination answers SHUT when its listen thread is done. */
    close_return_path(s);
    if (!s->rp_shut_received || rp_has_error(s)) {
        if (!rp_has_error(s)) {
            error_setg(errp, "the destination closed the return path "
                       "without reporting success");
            return false;
        }
        collect_error(s, errp);
        return false;
    }
    return true;
}

/*
 * A broken link can be recovered from; a destination that spoke nonsense
 * or reported a failure cannot.
 */
static bool postcopy_can_pause(MigrationState *s)
{
    bool rp_said_no;
    bool link_broke;

    if (!status_is(s, MIGRATION_STATUS_POSTCOPY_ACTIVE) ||
        !s->postcopy_after_devices) {
        return false;
    }
    qemu_mutex_lock(&s->error_lock);
    /* A bad message, or SHUT(1): the destination's own verdict. */
    rp_said_no = s->rp_error && !s->rp_error_io;
    link_broke = s->rp_error_io;
    qemu_mutex_unlock(&s->error_lock);
    if ((s->to_dst_file && qemu_file_get_error(s->to_dst_file)) ||
        (s->postcopy_qemufile_src &&
         qemu_file_get_error(s->postcopy_qemufile_src))) {
        link_broke = true;
    }
    return link_broke && !rp_said_no;
}

static void pause_stats_begin(MigrationState *s)
{
    qemu_mutex_lock(&s->stats_lock);
    s->stats.postcopy_pauses++;
    s->stats.paused_since = now_ms();
    qemu_mutex_unlock(&s->stats_lock);
}

static void pause_stats_end(MigrationState *s)
{
    qemu_mutex_lock(&s->stats_lock);
    if (s->stats.paused_since) {
        s->stats.postcopy_paused_ms += now_ms() - s->stats.paused_since;
        s->stats.paused_since = 0;
    }
    qemu_mutex_unlock(&s->stats_lock);
}

void migration_source_pause_stats(MigrationState *s, uint64_t *pauses,
                                  int64_t *paused_ms)
{
    qemu_mutex_lock(&s->stats_lock);
    *pauses = s->stats.postcopy_pauses;
    *paused_ms = s->stats.postcopy_paused_ms;
    if (s->stats.paused_since) {
        *paused_ms += now_ms() - s->stats.paused_since;
    }
    qemu_mutex_unlock(&s->stats_lock);
}

/* Drop the channel and the return-path thread; the RAM state stays. */
static void postcopy_drop_channel(MigrationState *s)
{
    migration_shutdown_channels(s);
    close_return_path(s);
    postcopy_preempt_close(s);
    migration_close_main_channel(s);
    qemu_mutex_lock(&s->error_lock);
    g_clear_error(&s->rp_error);
    s->rp_error_io = false;
    s->rp_thread_done = false;
    s->rp_bitmaps_pending = 0;
    s->rp_resume_ack = false;
    qemu_mutex_unlock(&s->error_lock);
    qatomic_mb_set(&s->rp_shut_stream, false);
    s->rp_shut_received = false;
    s->rp_shut_value = 0;
}

/* postcopy-paused until "migrate" with resume gives a new URI. */
static char *postcopy_pause(MigrationState *s, const char *why)
{
    MigrationStatus cur = migrate_get_state(&s->status);
    char *uri;

    trace_postcopy_pause_source(why);
    warn_report("postcopy paused: %s; waiting for a recovery (migrate "
                "with resume)", why);
    migrate_set_state(&s->status, cur, MIGRATION_STATUS_POSTCOPY_PAUSED);
    postcopy_drop_channel(s);
    qemu_mutex_lock(&s->pause_lock);
    while (!s->resume_uri) {
        qemu_cond_wait(&s->pause_cond, &s->pause_lock);
    }
    uri = s->resume_uri;
    s->resume_uri = NULL;
    qemu_mutex_unlock(&s->pause_lock);
    trace_postcopy_pause_source_continued(uri);
    return uri;
}

/* Wait (error_lock held) until done() or the return path ended. */
static bool rp_wait(MigrationState *s, bool (*done)(MigrationState *s))
{
    while (!done(s) && !s->rp_thread_done) {
        qemu_cond_wait(&s->rp_cond, &s->error_lock);
    }
    return done(s);
}

static bool bitmaps_done(MigrationState *s)
{
    return s->rp_bitmaps_pending == 0;
}

static bool resume_acked(MigrationState *s)
{
    return s->rp_resume_ack;
}

static bool rp_wait_for(MigrationState *s, bool (*done)(MigrationState *s),
                        const char *what, GError **errp)
{
    bool ok;

    qemu_mutex_lock(&s->error_lock);
    ok = rp_wait(s, done);
    qemu_mutex_unlock(&s->error_lock);
    if (!ok) {
        collect_error(s, errp);
        g_prefix_error(errp, "waiting for %s: ", what);
    }
    return ok;
}

/* Ask for every block's received map: its reply is our new dirty map. */
static bool postcopy_send_recv_bitmaps(MigrationState *s, GError **errp)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    RAMBlock *rb;

    rcu_read_lock();
    RAMBLOCK_FOREACH_MIGRATABLE(rb) {
        g_ptr_array_add(names, g_strdup(rb->idstr));
    }
    rcu_read_unlock();
    qemu_mutex_lock(&s->error_lock);
    s->rp_bitmaps_pending = names->len;
    qemu_mutex_unlock(&s->error_lock);
    for (guint i = 0; i < names->len; i++) {
        if (qemu_savevm_send_recv_bitmap(s->to_dst_file,
                                         names->pdata[i]) < 0) {
            collect_error(s, errp);
            return false;
        }
    }
    return true;
}

/*
 * The recovery handshake on a new channel (QEMU's order): RECV_BITMAP for
 * every block, all replies, RESUME, RESUME_ACK; then postcopy goes on.
 */
static bool postcopy_do_resume(MigrationState *s, const char *uri,
                               GError **errp)
{
    QIOChannel *ioc = NULL;
    QEMUFile *f;

    if (!migrate_set_state(&s->status, MIGRATION_STATUS_POSTCOPY_PAUSED,
                           MIGRATION_STATUS_POSTCOPY_RECOVER)) {
        error_setg(errp, "status changed while paused");
        return false;
    }
    if (!migration_channel_connect(uri, &ioc, errp)) {
        return false;
    }
    f = qemu_file_new_output(ioc);
    qio_channel_unref(ioc);
    qemu_mutex_lock(&s->qemu_file_lock);
    s->to_dst_file = f;
    qemu_mutex_unlock(&s->qemu_file_lock);
    if (!postcopy_preempt_connect(s, uri, errp) ||
        !open_return_path(s, errp) ||
        !postcopy_send_recv_bitmaps(s, errp) ||
        !rp_wait_for(s, bitmaps_done, "the received bitmaps", errp)) {
        return false;
    }
    ram_postcopy_resume_prepare(s->ram);
    if (qemu_savevm_send_postcopy_resume(f) < 0) {
        collect_error(s, errp);
        return false;
    }
    if (!rp_wait_for(s, resume_acked, "RESUME_ACK", errp)) {
        return false;
    }
    qemu_file_set_rate_limit(f, 0);
    migration_channel_tune_postcopy(qemu_file_get_ioc(f), true);
    postcopy_preempt_activate(s);
    if (!migrate_set_state(&s->status, MIGRATION_STATUS_POSTCOPY_RECOVER,
                           MIGRATION_STATUS_POSTCOPY_ACTIVE)) {
        error_setg(errp, "status changed during the recovery");
        return false;
    }
    pause_stats_end(s);
    trace_postcopy_resume_source_done();
    return true;
}

/* Pause, and try each recovery the operator starts until one works. */
static void postcopy_pause_until_resumed(MigrationState *s, GError *cause)
{
    g_autofree char *why = g_strdup(cause->message);

    pause_stats_begin(s);
    for (;;) {
        g_autofree char *uri = postcopy_pause(s, why);
        GError *err = NULL;

        if (postcopy_do_resume(s, uri, &err)) {
            return;
        }
        g_free(why);
        why = g_strdup_printf("recovery over %s failed: %s", uri,
                              err->message);
        g_error_free(err);
    }
}

/* After the switch: send the rest, pausing through broken links. */
static bool postcopy_iterate_loop(MigrationState *s, GError **errp)
{
    for (;;) {
        GError *err = NULL;

        if (postcopy_run_channel(s, &err)) {
            stats_set_final(s);
            return migrate_set_state(&s->status,
                                     MIGRATION_STATUS_POSTCOPY_ACTIVE,
                                     MIGRATION_STATUS_COMPLETED);
        }
        if (!postcopy_can_pause(s)) {
            postcopy_error(s, err, errp);
            g_error_free(err);
            return false;
        }
        if (!strstr(err->message, "x-net-timeout")) {
            migration_explain_net_timeout(s->to_dst_file, &err);
        }
        postcopy_pause_until_resumed(s, err);
        g_error_free(err);
    }
}

bool migrate_start_postcopy(GError **errp)
{
    MigrationState *s = migrate_get_current();

    if (!migrate_postcopy_ram()) {
        error_setg(errp, "Enable postcopy with migrate_set_capability before "
                   "the start of migration");
        return false;
    }
    if (migrate_get_state(&s->status) == MIGRATION_STATUS_NONE) {
        error_setg(errp, "Postcopy must be started after migration has been "
                   "started");
        return false;
    }
    qatomic_mb_set(&s->start_postcopy, true);
    return true;
}

/*
 * Once the rest fits in the downtime limit we may stop the VM, but while
 * the passes keep shrinking it is better to send the rest live: those
 * pages cross the wire either way, and only what is left at the stop
 * counts as downtime (for an idle guest, the tail of the first pass; for a
 * busy one, what it dirtied during the last pass).  So a fitting rest is
 * sent live to the end of its pass, then the next sync decides again.  We
 * stop when the rest is small (FLOOR_DIV of the threshold), when a pass no
 * longer halves it (the guest dirties about as fast as we send), or after
 * MAX_EXTRA passes.
 */
#define CONVERGE_FLOOR_DIV 32
#define CONVERGE_MAX_EXTRA 4

typedef struct Convergence {
    uint64_t last_fit;          /* exact rest at the previous fitting sync */
    unsigned extra;             /* passes sent live after the first fit */
    bool finishing;             /* sending a fitting pass to its end */
} Convergence;

/* The exact rest fits in the limit: stop now, or finish the pass live? */
static bool converge_stop_now(Convergence *c, uint64_t pending,
                              uint64_t threshold)
{
    if (pending == 0 || pending <= threshold / CONVERGE_FLOOR_DIV ||
        c->extra >= CONVERGE_MAX_EXTRA ||
        (c->last_fit && pending * 2 > c->last_fit)) {
        return true;
    }
    c->last_fit = pending;
    c->extra++;
    c->finishing = true;
    return false;
}

/*
 * x-auto-postcopy: sample the dirty rate while precopy runs and ask for
 * the switch (as migrate-start-postcopy would) once precopy is predicted
 * not to converge.  False only on a dirty-log error.
 */
static bool auto_switch_step(MigrationState *s, SwitchPolicy *policy,
                             uint64_t threshold, GError **errp)
{
    double bandwidth = s->stats.bandwidth * 1000.0;   /* bytes/ms -> /s */

    if (!migrate_x_auto_postcopy() || !migrate_postcopy_ram() ||
        qatomic_mb_read(&s->start_postcopy)) {
        return true;
    }
    if (!switch_policy_step(policy, s->ram, bandwidth, threshold, errp)) {
        return !(errp && *errp);
    }
    qemu_mutex_lock(&s->stats_lock);
    s->stats.auto_switch = true;
    s->stats.auto_switch_dirty_rate = policy->last.dirty_rate;
    s->stats.auto_switch_bandwidth = bandwidth;
    s->stats.auto_switch_ms = now_ms() - s->stats.start_time;
    qemu_mutex_unlock(&s->stats_lock);
    trace_migration_auto_switch(policy->last.dirty_rate, bandwidth);
    qatomic_mb_set(&s->start_postcopy, true);
    return true;
}

/* Iterate until the rest fits in the downtime; then complete. */
static bool migration_iterate_loop(MigrationState *s, GError **errp)
{
    QEMUFile *f = s->to_dst_file;
    BandwidthWindow w = { now_ms(), qemu_file_transferred(f) };
    uint64_t rate = migrate_max_bandwidth();
    Convergence conv = { 0 };
    SwitchPolicy policy = { 0 };

    qemu_file_set_rate_limit(f, rate);
    while (status_is(s, MIGRATION_STATUS_ACTIVE)) {
        uint64_t threshold = s->stats.bandwidth * migrate_downtime_limit();
        uint64_t pending = pending_total(false);
        int ret;

        if (rp_has_error(s)) {
            collect_error(s, errp);
            return false;
        }
        if (migrate_max_bandwidth() != rate) {
            rate = migrate_max_bandwidth();
            qemu_file_set_rate_limit(f, rate);
        }
        if (!auto_switch_step(s, &policy, threshold, errp)) {
            return false;
        }
        if (pending && pending >= threshold && migrate_postcopy_ram() &&
            qatomic_mb_read(&s->start_postcopy)) {
            trace_migration_postcopy_switch(pending, threshold);
            if (!postcopy_start(s, errp)) {
                if (errp && !*errp) {
                    collect_error(s, errp);
                }
                return false;
            }
            return postcopy_iterate_loop(s, errp);
        }
        if (conv.finishing && pending > 0) {
            /* Inside a fitting pass: no sync until its end. */
        } else if (pending == 0 || pending < threshold) {
            /*
             * The estimate knows nothing of what the guest dirtied since
             * the last sync (at the end of a pass it is 0): ask for the
             * exact figure, or a busy guest would stop with all of that
             * still to send.
             */
            pending = pending_total(true);
            conv.finishing = false;
            if ((pending == 0 || pending < threshold) &&
                converge_stop_now(&conv, pending, threshold)) {
                trace_migration_completion_decision(pending, threshold);
                return migration_completion(s, errp);
            }
        }
        ret = qemu_savevm_state_iterate(f, false);
        if (ret < 0 || qemu_file_get_error(f)) {
            collect_error(s, errp);
            return false;
        }
        update_bandwidth(s, &w, pending);
        if (qemu_file_rate_limit(f)) {
            trace_migration_rate_limit_pre();
            qemu_file_rate_limit_wait(f);
            trace_migration_rate_limit_post();
        }
    }
    /* Cancelled (or failed by someone else): not an error of ours. */
    return false;
}

static bool migration_run(MigrationState *s, const char *uri, GError **errp)
{
    QIOChannel *ioc = NULL;
    int64_t setup_start = now_ms();

    if (!migration_channel_connect(uri, &ioc, errp)) {
        return false;
    }
    qemu_mutex_lock(&s->qemu_file_lock);
    s->to_dst_file = qemu_file_new_output(ioc);
    qemu_mutex_unlock(&s->qemu_file_lock);
    qio_channel_unref(ioc);
    if (!postcopy_preempt_connect(s, uri, errp) ||
        !multifd_connect(s, uri, errp) ||
        !status_is(s, MIGRATION_STATUS_SETUP)) {
        return false;
    }

    qemu_savevm_state_header(s->to_dst_file);
    if (migrate_return_path() || migrate_postcopy_ram()) {
        if (!open_return_path(s, errp)) {
            return false;
        }
        qemu_savevm_send_open_return_path(s->to_dst_file);
        qemu_savevm_send_ping(s->to_dst_file, 1);
    }
    if (migrate_postcopy_ram()) {
        qemu_savevm_send_postcopy_advise(s->to_dst_file);
    }
    if (qemu_savevm_state_setup(s->to_dst_file, errp) < 0) {
        if (errp && !*errp) {
            collect_error(s, errp);
        }
        return false;
    }
    qemu_mutex_lock(&s->stats_lock);
    s->stats.setup_time = now_ms() - setup_start;
    qemu_mutex_unlock(&s->stats_lock);
    trace_migration_thread_setup_complete();
    if (!migrate_set_state(&s->status, MIGRATION_STATUS_SETUP,
                           MIGRATION_STATUS_ACTIVE)) {
        return false;
    }
    return migration_iterate_loop(s, errp);
}

/* Put the VM back the way migration found it. */
static void restore_vm(MigrationState *s)
{
    /*
     * After the postcopy package the destination may run it: stay off,
     * in postmigrate (as after a migration), where "cont" is the
     * operator's explicit choice.
     */
    if (s->vm_stopped_by_us && s->postcopy_after_devices) {
        runstate_set(RUN_STATE_POSTMIGRATE);
        return;
    }
    if (!s->vm_stopped_by_us) {
        return;
    }
    s->vm_stopped_by_us = false;
    ram_set_downtime_phase(s->ram, false);
    if (s->vm_was_running) {
        vm_start();
    } else {
        runstate_set(s->runstate_before);
    }
}

static void migration_cleanup(MigrationState *s, bool ok)
{
    trace_migrate_fd_cleanup(ok);
    qemu_savevm_state_cleanup();
    /* Wake a return-path reader blocked on the socket. */
    migration_shutdown_channels(s);
    close_return_path(s);
    postcopy_preempt_close(s);
    multifd_close(s);
    migration_close_main_channel(s);
    if (ok) {
        runstate_set(RUN_STATE_POSTMIGRATE);
    } else {
        restore_vm(s);
    }
}

/*
 * When the return-path thread shut the stream down because the
 * destination reported an error (or went away), the stream error the
 * migration thread saw since ("shut down") is only a consequence: the
 * destination's word is the one to report.
 */
static void prefer_rp_error(MigrationState *s, GError **errp)
{
    if (!*errp || !qatomic_mb_read(&s->rp_shut_stream)) {
        return;
    }
    qemu_mutex_lock(&s->error_lock);
    /* Keep a message that already carries it (with more context). */
    if (s->rp_error && !strstr((*errp)->message, s->rp_error->message)) {
        g_clear_error(errp);
        *errp = g_error_copy(s->rp_error);
    }
    qemu_mutex_unlock(&s->error_lock);
}

/*
 * A finished migration thread is joined from the main loop, which owns
 * MigrationState's thread handle (migrate_start joins there too).
 */
static gboolean migration_thread_reap_bh(gpointer opaque)
{
    MigrationState *s = opaque;

    if (s->thread_running) {
        qemu_thread_join(&s->thread);
        s->thread_running = false;
    }
    return G_SOURCE_REMOVE;
}

static void *migration_thread(void *opaque)
{
    MigrationThreadArgs *args = opaque;
    MigrationState *s = migrate_get_current();
    GError *err = NULL;
    bool ok = migration_run(s, args->uri, &err);

    prefer_rp_error(s, &err);

    trace_migration_thread_after_loop(ok);
    if (!ok) {
        qemu_mutex_lock(&s->stats_lock);
        s->stats.total_time = now_ms() - s->stats.start_time;
        qemu_mutex_unlock(&s->stats_lock);
    }
    /*
     * Clean up first (the VM runs again, or sits in postmigrate), then
     * say "failed": whoever sees that status sees the VM as it stays.
     */
    migration_cleanup(s, ok);
    if (!ok && err) {
        migrate_fail(s, err);
    } else if (!ok && !status_is(s, MIGRATION_STATUS_CANCELLING) &&
               !status_is(s, MIGRATION_STATUS_COMPLETED)) {
        GError *e = NULL;

        error_setg(&e, "Migration was aborted");
        migrate_fail(s, e);
        g_error_free(e);
    }
    /* Last: once cancelled/completed shows, a new migrate may start. */
    migrate_set_state(&s->status, MIGRATION_STATUS_CANCELLING,
                      MIGRATION_STATUS_CANCELLED);
    if (err) {
        g_error_free(err);
    }
    g_free(args->uri);
    g_free(args);
    g_idle_add(migration_thread_reap_bh, s);
    return NULL;
}

static bool uri_scheme_known(const char *uri)
{
    static const char *const schemes[] = {
        "tcp:", "unix:", "exec:", "fd:", "file:", NULL
    };

    for (int i = 0; schemes[i]; i++) {
        if (g_str_has_prefix(uri, schemes[i])) {
            return true;
        }
    }
    return false;
}

static void migration_reset_stats(MigrationState *s)
{
    qemu_mutex_lock(&s->stats_lock);
    s->stats = (MigrationStats) {
        .start_time = now_ms(),
        .expected_downtime = migrate_downtime_limit(),
    };
    qemu_mutex_unlock(&s->stats_lock);
    s->vm_stopped_by_us = false;
    s->rp_shut_received = false;
    qatomic_mb_set(&s->rp_shut_stream, false);
    s->rp_shut_value = 0;
    s->pause_released = false;
    qatomic_mb_set(&s->start_postcopy, false);
    s->postcopy_after_devices = false;
    qemu_mutex_lock(&s->pause_lock);
    g_clear_pointer(&s->resume_uri, g_free);
    qemu_mutex_unlock(&s->pause_lock);
    qemu_mutex_lock(&s->error_lock);
    s->rp_error_io = false;
    s->rp_bitmaps_pending = 0;
    s->rp_resume_ack = false;
    g_clear_pointer(&s->error_desc, g_free);
    g_clear_error(&s->rp_error);
    qemu_mutex_unlock(&s->error_lock);
}

/* The sections every migration carries; registering twice is harmless. */
static void migration_sections_init(void)
{
    migration_register_core_sections();
    ram_mig_init();
    postcopy_ram_init();
}

/* migrate with resume: hand the new URI to the paused migration thread. */
static bool migrate_resume(MigrationState *s, const char *uri, GError **errp)
{
    if (!status_is(s, MIGRATION_STATUS_POSTCOPY_PAUSED)) {
        error_setg(errp, "Cannot resume if there is no paused migration");
        return false;
    }
    if (!uri_scheme_known(uri)) {
        error_setg(errp, "Parameter 'uri' expects a valid migration "
                   "protocol");
        return false;
    }
    trace_migrate_resume(uri);
    qemu_mutex_lock(&s->pause_lock);
    if (s->resume_uri) {
        qemu_mutex_unlock(&s->pause_lock);
        error_setg(errp, "A recovery is being started already");
        return false;
    }
    s->resume_uri = g_strdup(uri);
    qemu_cond_broadcast(&s->pause_cond);
    qemu_mutex_unlock(&s->pause_lock);
    return true;
}

void migration_set_uuid(const uint8_t uuid[UUID_LEN])
{
    memcpy(migrate_get_current()->uuid, uuid, UUID_LEN);
    memcpy(migration_incoming_get_current()->uuid, uuid, UUID_LEN);
}

void migration_postcopy_failure_reset(void)
{
    qatomic_mb_set(&migrate_get_current()->postcopy_failed, false);
}

bool migrate_start(const char *uri, bool resume, GError **errp)
{
    MigrationState *s = migrate_get_current();
    MigrationThreadArgs *args;
    MigrationStatus old = migrate_get_state(&s->status);

    if (resume) {
        return migrate_resume(s, uri, errp);
    }
    if (old == MIGRATION_STATUS_POSTCOPY_PAUSED ||
        old == MIGRATION_STATUS_POSTCOPY_RECOVER) {
        error_setg(errp, "The postcopy migration is paused: recover it "
                   "with migrate and resume=true");
        return false;
    }
    if (qatomic_mb_read(&s->postcopy_failed)) {
        error_setg(errp, "This VM's postcopy migration failed after the "
                   "destination could run it: its RAM here is stale.  Run "
                   "'cont' to declare this copy the live one before "
                   "migrating it again");
        return false;
    }
    if (!status_is_terminal_or_none(old)) {
        error_setg(errp, "There's a migration process in progress");
        return false;
    }
    if (!status_is_terminal_or_none(
            migrate_get_state(&migration_incoming_get_current()->status)) ||
        runstate_get() == RUN_STATE_INMIGRATE) {
        error_setg(errp, "Guest is waiting for an incoming migration");
        return false;
    }
    if (!uri_scheme_known(uri)) {
        error_setg(errp, "Parameter 'uri' expects a valid migration "
                   "protocol");
        return false;
    }
    if (!migrate_multifd_check(errp)) {
        return false;
    }
    if (s->thread_running) {
        qemu_thread_join(&s->thread);
        s->thread_running = false;
    }
    trace_migrate_start(uri);
    migration_sections_init();
    migration_reset_stats(s);
    if (!migrate_set_state(&s->status, old, MIGRATION_STATUS_SETUP)) {
        error_setg(errp, "There's a migration process in progress");
        return false;
    }
    args = g_new0(MigrationThreadArgs, 1);
    args->uri = g_strdup(uri);
    if (!qemu_thread_create(&s->thread, "live_migration", migration_thread,
                            args, errp)) {
        migrate_fail(s, *errp);
        g_free(args->uri);
        g_free(args);
        return false;
    }
    s->thread_running = true;
    return true;
}

static bool status_in_postcopy(MigrationStatus st)
{
    return st == MIGRATION_STATUS_POSTCOPY_ACTIVE ||
           st == MIGRATION_STATUS_POSTCOPY_PAUSED ||
           st == MIGRATION_STATUS_POSTCOPY_RECOVER;
}

static void refuse_postcopy_cancel(const char *side, MigrationStatus st,
                                   GError **errp)
{
    trace_migrate_cancel_refused(side);
    error_setg(errp, "migrate_cancel is refused in %s (%s): the guest's "
               "RAM is split between source and destination, so it would "
               "run nowhere", MigrationStatus_str(st), side);
}

static bool incoming_cancel(MigrationIncomingState *mis, GError **errp);

bool migrate_cancel(GError **errp)
{
    MigrationState *s = migrate_get_current();
    MigrationIncomingState *mis = migration_incoming_get_current();
    MigrationStatus cur;

    trace_migrate_fd_cancel();
    cur = migrate_get_state(&mis->status);
    if (!status_is_terminal_or_none(cur)) {
        return incoming_cancel(mis, errp);
    }
    do {
        cur = migrate_get_state(&s->status);
        if (status_is_terminal_or_none(cur) ||
            cur == MIGRATION_STATUS_CANCELLING) {
            return true;
        }
        if (status_in_postcopy(cur)) {
            refuse_postcopy_cancel("source", cur, errp);
            return false;
        }
    } while (!migrate_set_state(&s->status, cur,
                                MIGRATION_STATUS_CANCELLING));

    migration_shutdown_channels(s);
    qemu_mutex_lock(&s->pause_lock);
    qemu_cond_broadcast(&s->pause_cond);
    qemu_mutex_unlock(&s->pause_lock);
    return true;
}

bool migrate_pause(GError **errp)
{
    MigrationState *s = migrate_get_current();
    MigrationIncomingState *mis = migration_incoming_get_current();
    MigrationStatus in = migrate_get_state(&mis->status);
    MigrationStatus out = migrate_get_state(&s->status);

    if (in == MIGRATION_STATUS_POSTCOPY_ACTIVE ||
        in == MIGRATION_STATUS_POSTCOPY_RECOVER) {
        trace_migrate_pause("destination");
        postcopy_incoming_pause_request(mis);
        return true;
    }
    if (out != MIGRATION_STATUS_POSTCOPY_ACTIVE &&
        out != MIGRATION_STATUS_POSTCOPY_RECOVER) {
        error_setg(errp, "migrate-pause is currently only supported during "
                   "postcopy-active state");
        return false;
    }
    /* The migration thread's next write fails, and it pauses. */
    trace_migrate_pause("source");
    qemu_mutex_lock(&s->qemu_file_lock);
    if (s->to_dst_file) {
        qemu_file_shutdown(s->to_dst_file);
    }
    qemu_mutex_unlock(&s->qemu_file_lock);
    return true;
}

bool migrate_continue(MigrationStatus state, GError **errp)
{
    MigrationState *s = migrate_get_current();
    MigrationStatus cur = migrate_get_state(&s->status);

    if (cur != state) {
        error_setg(errp, "Migration not in expected state: %s",
                   MigrationStatus_str(cur));
        return false;
    }
    qemu_mutex_lock(&s->pause_lock);
    s->pause_released = true;
    qemu_cond_broadcast(&s->pause_cond);
    qemu_mutex_unlock(&s->pause_lock);
    return true;
}

/* ---------------------------------------------------------------------- */
/* Destination */

/*
 * The one place that decides the process's fate after a failed incoming
 * migration, in the main loop: as QEMU does, a destination whose load
 * failed has nothing to run, and exits.
 */
/* How long the exit waits for a loader thread that is about to return. */
#define INCOMING_FATAL_JOIN_WAIT_US (G_USEC_PER_SEC)

static gboolean incoming_fatal_bh(gpointer opaque)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    int64_t deadline = g_get_monotonic_time() + INCOMING_FATAL_JOIN_WAIT_US;

    /*
     * The loader thread that failed returns right after saying so: join
     * it rather than leave it behind.  One blocked elsewhere (a failed
     * fault thread leaves it waiting for the stream) is not waited for.
     */
    while (mis->thread_running && !qatomic_read(&mis->thread_finished) &&
           g_get_monotonic_time() < deadline) {
        g_usleep(1000);
    }
    if (mis->thread_running && qatomic_read(&mis->thread_finished)) {
        qemu_thread_join(&mis->thread);
        mis->thread_running = false;
    }
    multifd_recv_stop(mis->multifd);
    /* The failure was reported once already (migration_incoming_fail). */
    exit(1);
    return G_SOURCE_REMOVE;
}

void migration_incoming_fail(LoadVMContext *ctx, GError *err)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    MigrationStatus cur;

    trace_migration_incoming_fail(err->message);
    migration_incoming_set_error(mis, err);
    do {
        cur = migrate_get_state(&mis->status);
    } while (!status_is_terminal_or_none(cur) &&
             !migrate_set_state(&mis->status, cur, MIGRATION_STATUS_FAILED));
    if (ctx && ctx->to_src) {
        migrate_send_rp_shut(ctx, 1);
    }
    multifd_recv_shutdown(mis->multifd);
    error_report("load of migration failed: %s", err->message);
    g_error_free(err);
    g_idle_add(incoming_fatal_bh, NULL);
}

void migration_incoming_pause_stats(MigrationIncomingState *mis,
                                    uint64_t *pauses, int64_t *paused_ms)
{
    qemu_mutex_lock(&mis->error_lock);
    *pauses = mis->postcopy_pauses;
    *paused_ms = mis->postcopy_paused_ms;
    if (mis->paused_since) {
        *paused_ms += now_ms() - mis->paused_since;
    }
    qemu_mutex_unlock(&mis->error_lock);
}

bool migration_incoming_close_cancel_gate(MigrationIncomingState *mis)
{
    int old = qatomic_cmpxchg(&mis->cancel_gate, MIGRATION_CANCEL_GATE_OPEN,
                              MIGRATION_CANCEL_GATE_CLOSED);

    return old != MIGRATION_CANCEL_GATE_CANCELLED;
}

/*
 * migrate_cancel on the destination (main thread).  QEMU 7.2 ignores it
 * there, leaving a stalled incoming migration with no way out but kill;
 * ferry ends a precopy load: the loader's blocked read returns once the
 * stream is shut down, and the loader finishes the job (incoming_thread).
 */
static bool incoming_cancel(MigrationIncomingState *mis, GError **errp)
{
    g_autoptr(GError) why = NULL;
    MigrationStatus cur = migrate_get_state(&mis->status);

    error_setg(&why, "cancelled by migrate_cancel");
    trace_migration_incoming_cancel(MigrationStatus_str(cur));
    switch (cur) {
    case MIGRATION_STATUS_SETUP:
        /* Listening, nobody connected yet (accepting runs on this thread). */
        migration_listener_free(mis->listener);
        mis->listener = NULL;
        migration_incoming_set_error(mis, why);
        migrate_set_state(&mis->status, cur, MIGRATION_STATUS_CANCELLED);
        return true;
    case MIGRATION_STATUS_ACTIVE:
        break;
    case MIGRATION_STATUS_CANCELLING:
        return true;
    case MIGRATION_STATUS_POSTCOPY_ACTIVE:
    case MIGRATION_STATUS_POSTCOPY_PAUSED:
    case MIGRATION_STATUS_POSTCOPY_RECOVER:
        refuse_postcopy_cancel("destination", cur, errp);
        return false;
    default:
        error_setg(errp, "migrate_cancel: incoming migration in state %s "
                   "cannot be cancelled", MigrationStatus_str(cur));
        return false;
    }
    qemu_mutex_lock(&mis->file_lock);
    if (qatomic_cmpxchg(&mis->cancel_gate, MIGRATION_CANCEL_GATE_OPEN,
                        MIGRATION_CANCEL_GATE_CANCELLED) !=
        MIGRATION_CANCEL_GATE_OPEN) {
        qemu_mutex_unlock(&mis->file_lock);
        /* The loader got there first: postcopy listening, or loaded. */
        if (postcopy_state_get(mis) >= POSTCOPY_INCOMING_LISTENING) {
            refuse_postcopy_cancel("destination",
                                   MIGRATION_STATUS_POSTCOPY_ACTIVE, errp);
        } else {
            error_setg(errp, "migrate_cancel: too late, the incoming "
                       "migration has been loaded");
        }
        return false;
    }
    /* The error first: the loader reports it instead of its read error. */
    migration_incoming_set_error(mis, why);
    migrate_set_state(&mis->status, MIGRATION_STATUS_ACTIVE,
                      MIGRATION_STATUS_CANCELLING);
    if (mis->from_src_file) {
        qemu_file_shutdown(mis->from_src_file);
    }
    /* A loader waiting at a RAM EOS for the channels gives up too. */
    multifd_recv_shutdown(mis->multifd);
    qemu_mutex_unlock(&mis->file_lock);
    return true;
}

/*
 * The loader after a migrate_cancel won: nothing was started, so the
 * process stays up (QMP answers, status "cancelled") with the guest in
 * "inmigrate" for good; the management application quits it.
 */
static void incoming_cancelled(MigrationIncomingState *mis,
                               LoadVMContext *ctx)
{
    trace_migration_incoming_cancelled();
    postcopy_incoming_preempt_close(mis);
    migrate_set_state(&mis->status, MIGRATION_STATUS_CANCELLING,
                      MIGRATION_STATUS_CANCELLED);
    error_report("incoming migration cancelled by migrate_cancel; the "
                 "guest will not run");
    loadvm_context_destroy(ctx);
    qemu_mutex_lock(&mis->file_lock);
    qemu_fclose(mis->from_src_file);
    mis->from_src_file = NULL;
    qemu_mutex_unlock(&mis->file_lock);
}


/* Start the guest if the source ran it (or sent no state), else pause. */
static void incoming_start_vm(void)
{
    RunState rs;
    bool have = global_state_received_runstate(&rs);

    if (!have || rs == RUN_STATE_RUNNING) {
        if (autostart) {
            vm_start();
        } else {
            runstate_set(RUN_STATE_PAUSED);
        }
    } else {
        runstate_set(rs);
    }
}

/* The loader thread ended: join it from the main loop, which created it. */
static gboolean incoming_thread_reap_bh(gpointer opaque)
{
    MigrationIncomingState *mis = opaque;

    if (mis->thread_running) {
        qemu_thread_join(&mis->thread);
        mis->thread_running = false;
    }
    /* Nobody waits on the channels any more. */
    multifd_recv_free(mis->multifd);
    mis->multifd = NULL;
    return G_SOURCE_REMOVE;
}

static void incoming_thread_run(MigrationIncomingState *mis)
{
    LoadVMContext ctx;
    GError *err = NULL;
    int ret;

    loadvm_context_init(&ctx, mis->from_src_file);
    ctx.opaque = mis;
    ret = qemu_loadvm_state(mis->from_src_file, &ctx, &err);
    trace_process_incoming_migration_end(ret,
        postcopy_state_str(postcopy_state_get(mis)));
    if (ret < 0 && qatomic_read(&mis->cancel_gate) ==
        MIGRATION_CANCEL_GATE_CANCELLED) {
        /* The shutdown's read error is the cancel's doing, not news. */
        g_clear_error(&err);
        incoming_cancelled(mis, &ctx);
        g_idle_add(incoming_thread_reap_bh, mis);
        return;
    }
    if (ret < 0) {
        if (!err) {
            error_setg(&err, "load failed");
        }
        migration_explain_net_timeout(mis->from_src_file, &err);
        /* The process exits from the main loop (incoming_fatal_bh). */
        migration_incoming_fail(&ctx, err);
        if (ctx.postcopy_listening) {
            /* The listen thread uses ctx (our stack): outlive it. */
            postcopy_incoming_main_done(mis);
            postcopy_incoming_wait(mis);
        }
        loadvm_context_destroy(&ctx);
        qemu_mutex_lock(&mis->file_lock);
        qemu_fclose(mis->from_src_file);
        mis->from_src_file = NULL;
        qemu_mutex_unlock(&mis->file_lock);
        return;
    }
    if (ctx.postcopy_listening) {
        /* The listen thread finishes the job (SHUT, completed). */
        trace_process_incoming_migration_postcopy_end_main();
        postcopy_incoming_main_done(mis);
        postcopy_incoming_wait(mis);
        loadvm_context_destroy(&ctx);
        qemu_fclose(mis->from_src_file);
        mis->from_src_file = NULL;
        g_idle_add(incoming_thread_reap_bh, mis);
        return;
    }
    /* The point of no return: a cancel from here on is refused. */
    if (!migration_incoming_close_cancel_gate(mis)) {
        incoming_cancelled(mis, &ctx);
        g_idle_add(incoming_thread_reap_bh, mis);
        return;
    }
    postcopy_incoming_preempt_close(mis);
    incoming_start_vm();
    migrate_set_state(&mis->status, MIGRATION_STATUS_ACTIVE,
                      MIGRATION_STATUS_COMPLETED);
    if (ctx.to_src) {
        migrate_send_rp_shut(&ctx, 0);
    }
    loadvm_context_destroy(&ctx);
    qemu_fclose(mis->from_src_file);
    mis->from_src_file = NULL;
    g_idle_add(incoming_thread_reap_bh, mis);
    return;
}

static void *incoming_thread(void *opaque)
{
    MigrationIncomingState *mis = opaque;

    incoming_thread_run(mis);
    /* A failed load exits from the main loop, which joins us first. */
    qatomic_set(&mis->thread_finished, true);
    return NULL;
}

/* Every channel is there: the loader thread reads the main stream. */
static void incoming_start_loader(MigrationIncomingState *mis)
{
    GError *err = NULL;

    migrate_set_state(&mis->status, MIGRATION_STATUS_SETUP,
                      MIGRATION_STATUS_ACTIVE);
    qatomic_set(&mis->thread_finished, false);
    if (!qemu_thread_create(&mis->thread, "mig/dst/main", incoming_thread,
                            mis, &err)) {
        migration_incoming_fail(NULL, err);
        return;
    }
    mis->thread_running = true;
}

static void incoming_accept(QIOChannel *ioc, void *opaque)
{
    MigrationIncomingState *mis = opaque;
    GError *err = NULL;

    QEMUFile *f;

    trace_migration_incoming_accept(qio_channel_get_name(ioc));
    if (mis->from_src_file && mis->multifd) {
        /* After main, every connection is a multifd channel (QEMU 7.2). */
        if (!multifd_recv_new_channel(mis->multifd, ioc, &err)) {
            migration_incoming_fail(NULL, err);
        }
        return;
    }
    f = qemu_file_new_input(ioc);
    qio_channel_unref(ioc);
    if (!qemu_file_set_blocking(f, true, &err)) {
        qemu_fclose(f);
        migration_incoming_fail(NULL, err);
        return;
    }
    if (mis->from_src_file) {
        /* QEMU 7.1/7.2: the second connection is the preempt channel. */
        postcopy_incoming_set_preempt_channel(mis, f);
    } else {
        qemu_mutex_lock(&mis->file_lock);
        mis->from_src_file = f;
        qemu_mutex_unlock(&mis->file_lock);
        if (migrate_postcopy_preempt()) {
            return;     /* as QEMU 7.2: load once both channels exist */
        }
        /*
         * One channel only: nobody else may connect.  multifd's channels
         * still come (the listener closes after the last one); the
         * loader starts now and waits for them at the first RAM EOS.
         */
        if (!mis->multifd) {
            migration_listener_cancel(mis->listener);
        }
    }
    incoming_start_loader(mis);
}

static bool incoming_listen(MigrationIncomingState *mis, const char *uri,
                            GError **errp)
{
    unsigned nconn = migration_channel_is_socket_uri(uri) ? 2 : 1;

    if (!migrate_multifd_check(errp)) {
        return false;
    }
    migration_sections_init();
    postcopy_incoming_reset(mis);
    migration_listener_free(mis->listener);
    multifd_recv_free(mis->multifd);
    mis->multifd = NULL;
    if (migrate_multifd()) {
        /* main, then the channels; a non-socket URI is refused below */
        nconn = 1 + migrate_multifd_channels();
        mis->multifd = multifd_recv_new(migrate_multifd_channels(),
                                        mis->uuid,
                                        ram_load_dense(mis->ram_load));
    }
    /* A second connection is the preempt channel (if that is on by then). */
    mis->listener = migration_channel_listen(uri, nconn, incoming_accept,
                                             mis, errp);
    if (!mis->listener) {
        return false;
    }
    mis->have_listen = true;
    g_free(mis->listen_uri);
    mis->listen_uri = g_strdup(uri);
    runstate_set(RUN_STATE_INMIGRATE);
    /* QEMU reports "setup" here even without the events capability. */
    qatomic_mb_set(&mis->status, MIGRATION_STATUS_SETUP);
    trace_migrate_set_state(MigrationStatus_str(MIGRATION_STATUS_SETUP));
    qapi_event_send_migration(MIGRATION_STATUS_SETUP);
    return true;
}

/* The first connection to migrate-recover's listener: the new channel. */
static void recover_accept(QIOChannel *ioc, void *opaque)
{
    MigrationIncomingState *mis = opaque;
    QEMUFile *f = qemu_file_new_input(ioc);
    GError *err = NULL;

    trace_migration_incoming_recover_accept(qio_channel_get_name(ioc));
    qio_channel_unref(ioc);
    if (++mis->recover_accepted == (migrate_postcopy_preempt() ? 2 : 1)) {
        mis->recover_listening = false;
    }
    if (!qemu_file_set_blocking(f, true, &err)) {
        warn_report("postcopy recovery: %s", err->message);
        g_error_free(err);
        qemu_fclose(f);
        return;
    }
    postcopy_incoming_recover_channel(mis, f);
}

bool migrate_recover(const char *uri, GError **errp)
{
    MigrationIncomingState *mis = migration_incoming_get_current();

    if (migrate_get_state(&mis->status) !=
        MIGRATION_STATUS_POSTCOPY_PAUSED) {
        error_setg(errp, "Migrate recover can only be run when postcopy "
                   "is paused.");
        return false;
    }
    if (mis->recover_listening) {
        error_setg(errp, "Migrate recovery is triggered already");
        return false;
    }
    trace_migrate_recover(uri);
    migration_listener_free(mis->listener);
    mis->listener = migration_channel_listen(
        uri, migrate_postcopy_preempt() ? 2 : 1, recover_accept, mis, errp);
    if (!mis->listener) {
        return false;
    }
    mis->recover_listening = true;
    mis->recover_accepted = 0;
    g_free(mis->listen_uri);
    mis->listen_uri = g_strdup(uri);
    /* As QEMU: "setup" is announced while the status stays paused. */
    qapi_event_send_migration(MIGRATION_STATUS_SETUP);
    return true;
}

bool migration_incoming_start(const char *uri, GError **errp)
{
    MigrationIncomingState *mis = migration_incoming_get_current();

    if (g_str_equal(uri, "defer")) {
        mis->deferred = true;
        runstate_set(RUN_STATE_INMIGRATE);
        return true;
    }
    return incoming_listen(mis, uri, errp);
}

bool migrate_incoming_qmp(const char *uri, GError **errp)
{
    MigrationIncomingState *mis = migration_incoming_get_current();

    if (!mis->deferred) {
        error_setg(errp, "'-incoming' was not specified on the command "
                   "line");
        return false;
    }
    if (mis->have_listen) {
        error_setg(errp, "The incoming migration has already been started");
        return false;
    }
    return incoming_listen(mis, uri, errp);
}


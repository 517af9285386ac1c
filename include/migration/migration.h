/*
 * Migration state: the source's MigrationState, the destination's
 * MigrationIncomingState and their statuses (QEMU's names); capabilities
 * and parameters are in options.h.  Used by the migration/ files only;
 * the rest of the VMM sees include/migration/misc.h.
 */
#ifndef MIGRATION_MIGRATION_H
#define MIGRATION_MIGRATION_H

#include "qemu/osdep.h"
#include "qemu/thread.h"
#include "qemu/uuid.h"
#include "migration/options.h"
#include <json-glib/json-glib.h>

typedef struct MigrationListener MigrationListener;

typedef struct QEMUFile QEMUFile;
typedef struct LoadVMContext LoadVMContext;
typedef struct RAMState RAMState;
typedef struct RAMLoadState RAMLoadState;
typedef struct PostcopyIncomingState PostcopyIncomingState;
typedef struct MultiFDSendState MultiFDSendState;
typedef struct MultiFDRecvState MultiFDRecvState;

/* QEMU 7.2 MigrationStatus, in QAPI order (the strings are the contract). */
typedef enum MigrationStatus {
    MIGRATION_STATUS_NONE,
    MIGRATION_STATUS_SETUP,
    MIGRATION_STATUS_CANCELLING,
    MIGRATION_STATUS_CANCELLED,
    MIGRATION_STATUS_ACTIVE,
    MIGRATION_STATUS_POSTCOPY_ACTIVE,
    MIGRATION_STATUS_POSTCOPY_PAUSED,
    MIGRATION_STATUS_POSTCOPY_RECOVER,
    MIGRATION_STATUS_COMPLETED,
    MIGRATION_STATUS_FAILED,
    MIGRATION_STATUS_COLO,
    MIGRATION_STATUS_PRE_SWITCHOVER,
    MIGRATION_STATUS_DEVICE,
    MIGRATION_STATUS_WAIT_UNPLUG,
    MIGRATION_STATUS__MAX
} MigrationStatus;

const char *MigrationStatus_str(MigrationStatus s);
/* false if name is not a status name */
bool migration_status_parse(const char *name, MigrationStatus *out);

/* The source's times (ms, monotonic clock) and rates. */
typedef struct MigrationStats {
    int64_t start_time;
    int64_t setup_time;
    int64_t total_time;
    int64_t downtime;
    int64_t expected_downtime;
    double mbps;
    double bandwidth;                   /* bytes/ms over the last window */
    /* Postcopy recovery: pauses so far and the time spent in them. */
    uint64_t postcopy_pauses;
    int64_t postcopy_paused_ms;         /* finished pauses */
    int64_t paused_since;               /* 0 unless paused now */
    /* x-auto-postcopy: when it asked for the switch, and why. */
    bool auto_switch;
    int64_t auto_switch_ms;             /* since the start */
    double auto_switch_dirty_rate;      /* bytes/s, estimated */
    double auto_switch_bandwidth;       /* bytes/s, measured */
} MigrationStats;

/*
 * The source side of a migration: everything an outgoing migration owns.
 * One object lives for the whole process (migrate_get_current()); each
 * "migrate" resets its per-migration parts.  Threads: the main thread
 * (QMP) starts, cancels and queries; the migration thread ("live_migration")
 * runs it; the return-path thread reads the destination's messages.
 */
typedef struct MigrationState {
    MigrationStatus status;             /* atomic; see migrate_set_state */
    QemuThread thread;
    bool thread_running;                /* thread created, not yet joined */
    /*
     * to_dst_file is created and closed by the migration thread and shut
     * down by cancel from the main thread: both under qemu_file_lock.
     */
    QemuMutex qemu_file_lock;
    QEMUFile *to_dst_file;
    /* postcopy-preempt's second channel (qemu_file_lock as to_dst_file) */
    QEMUFile *postcopy_qemufile_src;
    /* multifd's channels and threads (qemu_file_lock as to_dst_file) */
    MultiFDSendState *multifd;
    /* The VM's -uuid (zero if none), which multifd channels carry. */
    uint8_t uuid[UUID_LEN];
    QEMUFile *rp_file;                  /* return path (reads from dst) */
    QemuThread rp_thread;
    bool rp_thread_running;
    bool rp_shut_received;
    uint32_t rp_shut_value;
    /* rp_error and rp_thread_done are under error_lock; rp_cond says so */
    GError *rp_error;                   /* set once by the RP thread */
    bool rp_thread_done;
    /* The return-path thread shut to_dst_file down after its error. */
    bool rp_shut_stream;
    /*
     * Postcopy recovery (error_lock, rp_cond): rp_error is the link's
     * failure (a pause), not the destination's word; RECV_BITMAP replies
     * still awaited; RESUME_ACK seen.
     */
    bool rp_error_io;
    unsigned rp_bitmaps_pending;
    bool rp_resume_ack;
    QemuCond rp_cond;

    bool capabilities[MIGRATION_CAPABILITY__MAX];
    MigrationParameters parameters;     /* see options.h */

    /* Whether the VM ran when migration started (restored on failure). */
    bool vm_was_running;
    int runstate_before;                /* RunState when we stopped it */
    bool vm_stopped_by_us;

    /*
     * pause-before-switchover: signalled by migrate-continue; and a
     * paused postcopy: resume_uri set by "migrate" with resume.
     */
    QemuMutex pause_lock;
    QemuCond pause_cond;
    bool pause_released;
    char *resume_uri;

    /*
     * Written by the migration thread (and by migrate_start before it
     * exists) under stats_lock; query-migrate reads a snapshot.
     */
    QemuMutex stats_lock;
    MigrationStats stats;

    QemuMutex error_lock;
    char *error_desc;                   /* first error, for query-migrate */

    /* migrate-start-postcopy was called: switch when it makes sense. */
    bool start_postcopy;                /* atomic */
    /* The postcopy package (with RUN) went out: the source cannot resume. */
    bool postcopy_after_devices;
    /*
     * A postcopy failed after that point: this VM's RAM is stale, and a
     * new (non-resume) migrate is refused until "cont" (atomic).
     */
    bool postcopy_failed;

    /* RAM: bitmaps, page search, urgent queue, counters (ram.c). */
    RAMState *ram;
} MigrationState;

/*
 * The destination side: the channel(s), the loader threads and their
 * state.  Threads: the main thread (QMP, accept), the loader thread
 * ("mig/dst/main"), and in postcopy the listen thread and the fault thread
 * (postcopy-ram.c), each with what it owns documented in docs/threads.md.
 */
typedef struct MigrationIncomingState {
    MigrationStatus status;             /* atomic; see migrate_set_state */
    QEMUFile *from_src_file;            /* main stream */
    QEMUFile *to_src_file;              /* return path */
    QemuThread thread;
    bool thread_running;
    bool thread_finished;               /* atomic: the loader returned */
    bool deferred;                      /* -incoming defer */
    bool have_listen;                   /* migrate-incoming used once */
    char *listen_uri;                   /* for query-migrate socket-address */
    MigrationListener *listener;        /* tcp/unix/exec/file/fd, or NULL */
    bool recover_listening;             /* migrate-recover waits (main) */
    unsigned recover_accepted;          /* connections it took so far */
    QemuMutex error_lock;
    char *error_desc;
    /*
     * migrate_cancel against the loader finishing (MIGRATION_CANCEL_GATE_*,
     * atomic): whoever moves it from OPEN first wins.  The loader closes
     * it when the load is complete or postcopy starts listening; a cancel
     * marks it cancelled, then shuts from_src_file down.
     */
    int cancel_gate;
    /* Held by a cancel's shutdown and by the loader's close of the file. */
    QemuMutex file_lock;

    /* The RAM loader's per-channel state (ram.c). */
    RAMLoadState *ram_load;
    /*
     * multifd's receiving channels: made by migrate-incoming, filled by
     * accept (main thread), waited on by the loader at each RAM EOS, freed
     * by the main thread once the loader is gone.
     */
    MultiFDRecvState *multifd;
    uint8_t uuid[UUID_LEN];             /* the VM's -uuid, for multifd */
    /* Postcopy: state machine, userfaultfd, threads, statistics. */
    PostcopyIncomingState *postcopy;
    /* Postcopy recovery: pauses so far and time paused (error_lock). */
    uint64_t postcopy_pauses;
    int64_t postcopy_paused_ms;
    int64_t paused_since;
} MigrationIncomingState;

enum {
    MIGRATION_CANCEL_GATE_OPEN,
    MIGRATION_CANCEL_GATE_CANCELLED,
    MIGRATION_CANCEL_GATE_CLOSED,
};

/*
 * The destination's point of no return for migrate_cancel (a finished
 * load, or POSTCOPY_LISTEN): false if a cancel came first, and the caller
 * must then give up with "cancelled by migrate_cancel".
 */
bool migration_incoming_close_cancel_gate(MigrationIncomingState *mis);

/*
 * Constructors: the program makes one of each at start-up (the current
 * objects); tests make their own the same way.
 */
MigrationState *migration_state_new(void);
void migration_state_free(MigrationState *s);
MigrationIncomingState *migration_incoming_state_new(void);
void migration_incoming_state_free(MigrationIncomingState *mis);

/* The process's current outgoing and incoming migration objects. */
MigrationState *migrate_get_current(void);
MigrationIncomingState *migration_incoming_get_current(void);

/*
 * Atomically move *state from old to new; emits the MIGRATION event when
 * the events capability is on.  Returns false if *state was not old.
 */
bool migrate_set_state(MigrationStatus *state, MigrationStatus old,
                       MigrationStatus new_state);
MigrationStatus migrate_get_state(const MigrationStatus *state);
/* True while a source migration runs (setup .. pre-completion). */
bool migration_is_active(const MigrationState *s);
/* True if a new migration may start (none, completed, failed, cancelled). */
bool migration_is_idle(const MigrationState *s);

/* Record the first error of a migration (for error-desc). */
void migrate_set_error(MigrationState *s, const GError *err);
void migration_incoming_set_error(MigrationIncomingState *mis,
                                  const GError *err);
/* A consistent copy of the source's times and rates (any thread). */
void migration_stats_get(MigrationState *s, MigrationStats *out);
/* A copy of the first error (NULL if none); g_free it. */
char *migrate_get_error_desc(MigrationState *s);
char *migration_incoming_get_error_desc(MigrationIncomingState *mis);

/* Events (migration-qmp.c builds them), sent only with "events" on. */
void qapi_event_send_migration(MigrationStatus status);
void qapi_event_send_migration_pass(uint64_t pass);

/* QMP entry points shared with migration-qmp.c */
/*
 * migrate; with resume, only in postcopy-paused: reconnect to uri and
 * recover.  A source whose postcopy failed refuses a plain migrate.
 */
bool migrate_start(const char *uri, bool resume, GError **errp);
/* migrate-pause (either side): only in postcopy-active or -recover. */
bool migrate_pause(GError **errp);
/* migrate-recover (destination): only in postcopy-paused. */
bool migrate_recover(const char *uri, GError **errp);
/*
 * QMP migrate_cancel.  Source: cancels a migration before postcopy.
 * Destination: ends an incoming precopy (listening or loading) with status
 * cancelled; the process stays up with the guest never started.  Refused
 * in postcopy-active on either side: the guest would run nowhere.
 */
bool migrate_cancel(GError **errp);
bool migrate_continue(MigrationStatus state, GError **errp);
/* QMP migrate-start-postcopy: sets the flag the migration thread acts on. */
bool migrate_start_postcopy(GError **errp);
/*
 * Fail the incoming migration from any thread: record err (taken), status
 * failed, SHUT(1) on the return path if ctx has one, print.  The process
 * then exits from the main loop (incoming_fatal_bh), not from the thread:
 * the caller returns.
 */
void migration_incoming_fail(LoadVMContext *ctx, GError *err);
/*
 * If f failed because x-net-timeout's keepalive or TCP_USER_TIMEOUT gave
 * up on the peer (ETIMEDOUT), say so in *err: otherwise the user sees only
 * "Connection timed out" after a mysteriously long wait.
 */
void migration_explain_net_timeout(QEMUFile *f, GError **err);
/* Both sides' query-migrate pause figures (ms). */
void migration_incoming_pause_stats(MigrationIncomingState *mis,
                                    uint64_t *pauses, int64_t *paused_ms);
void migration_source_pause_stats(MigrationState *s, uint64_t *pauses,
                                  int64_t *paused_ms);
bool migrate_incoming_qmp(const char *uri, GError **errp);
bool migration_is_running_any(void);

#endif

/*
 * Postcopy RAM, destination side: the postcopy state machine, the host
 * check, userfaultfd registration, the fault thread, page placement and
 * the fault statistics (blocktime, latency).
 */
#ifndef MIGRATION_POSTCOPY_RAM_H
#define MIGRATION_POSTCOPY_RAM_H

#include "qemu/osdep.h"
#include "exec/ramblock.h"

/* The destination's postcopy state; the numbers appear in messages. */
typedef enum PostcopyState {
    POSTCOPY_INCOMING_NONE = 0,
    POSTCOPY_INCOMING_ADVISE,
    POSTCOPY_INCOMING_DISCARD,
    POSTCOPY_INCOMING_LISTENING,
    POSTCOPY_INCOMING_RUNNING,
    POSTCOPY_INCOMING_END,
} PostcopyState;

typedef struct MigrationIncomingState MigrationIncomingState;
/*
 * The destination's postcopy machinery (userfaultfd, fault and listen
 * threads, per-block request maps, statistics); one per
 * MigrationIncomingState (mis->postcopy).
 */
typedef struct PostcopyIncomingState PostcopyIncomingState;

PostcopyIncomingState *postcopy_incoming_state_new(void);
void postcopy_incoming_state_free(PostcopyIncomingState *pis);

const char *postcopy_state_str(PostcopyState s);
PostcopyState postcopy_state_get(MigrationIncomingState *mis);
/* Unconditional: reset at the start of an incoming migration (and tests). */
void postcopy_state_set(MigrationIncomingState *mis, PostcopyState s);
/* Compare-and-swap transition; false if the state was not old. */
bool postcopy_state_cas(MigrationIncomingState *mis, PostcopyState old,
                        PostcopyState new_state);
/* LISTENING or RUNNING: RAM records are placed with userfaultfd. */
bool postcopy_is_running(MigrationIncomingState *mis);

/*
 * Can this host do postcopy?  userfaultfd syscall, API handshake, a test
 * area registered in MISSING mode offering WAKE/COPY/ZEROPAGE, target page
 * <= host page.  The error names the failing step.  *features (optional)
 * gets the features the kernel offers.
 */
bool postcopy_ram_supported_by_host(uint64_t *features, GError **errp);

/* Register the POSTCOPY_* command handlers with savevm (idempotent). */
void postcopy_ram_init(void);
/* Forget everything of a previous incoming migration. */
void postcopy_incoming_reset(MigrationIncomingState *mis);
/*
 * The incoming (main) loader returned after POSTCOPY_RUN: the listen
 * thread may now finish.  Then wait for the listen thread (it sends SHUT
 * and sets "completed").
 */
void postcopy_incoming_main_done(MigrationIncomingState *mis);
void postcopy_incoming_wait(MigrationIncomingState *mis);

/*
 * Recovery.  pause_request (migrate-pause, or a failed page request):
 * shut the main stream down, so that the listen thread pauses.
 * recover_channel: the connection migrate-recover accepted, for the
 * paused listen thread (closed if nobody is paused).
 */
void postcopy_incoming_pause_request(MigrationIncomingState *mis);
typedef struct QEMUFile QEMUFile;
void postcopy_incoming_recover_channel(MigrationIncomingState *mis,
                                       QEMUFile *f);
/*
 * postcopy-preempt: the second connection of an incoming migration; its
 * loader thread starts at POSTCOPY_LISTEN and ends at the channel's EOS.
 */
void postcopy_incoming_set_preempt_channel(MigrationIncomingState *mis,
                                           QEMUFile *f);
/* An incoming migration that ended without postcopy: close the channel. */
void postcopy_incoming_preempt_close(MigrationIncomingState *mis);

/*
 * Place a whole host page of rb at offset (aligned to rb->page_size)
 * atomically: UFFDIO_COPY from `from`, or a zero page.  Marks it received,
 * drops it from the requested set, records the fault latency.  An already
 * present page (EEXIST) is an error naming block and offset.
 */
bool postcopy_place_page(MigrationIncomingState *mis, RAMBlock *rb,
                         ram_addr_t offset, const void *from, GError **errp);
bool postcopy_place_page_zero(MigrationIncomingState *mis, RAMBlock *rb,
                              ram_addr_t offset, GError **errp);

/*
 * The in-flight set (requested host pages) of the fault thread.  mark
 * returns false if the host page was already requested.
 */
bool postcopy_request_mark(MigrationIncomingState *mis, RAMBlock *rb,
                           ram_addr_t offset);
bool postcopy_request_pending(MigrationIncomingState *mis, RAMBlock *rb,
                              ram_addr_t offset);

/*
 * Page placement without userfaultfd, for fuzzing and tests: place()
 * copies a whole host page of rb at offset (from is never NULL) and
 * returns 0 or an errno (EEXIST: already there).  With it, LISTEN
 * registers nothing and starts no thread: once qemu_loadvm_state()
 * returned after RUN, the caller runs the listen loop itself with
 * postcopy_incoming_listen_sync() (the page records after the package,
 * to EOF; SHUT; completed).  No recovery: a failure is final.
 */
typedef struct PostcopyPlacementOps {
    int (*place)(RAMBlock *rb, ram_addr_t offset, const void *from);
} PostcopyPlacementOps;
void postcopy_incoming_set_placement(MigrationIncomingState *mis,
                                     const PostcopyPlacementOps *ops);
typedef struct LoadVMContext LoadVMContext;
bool postcopy_incoming_listen_sync(LoadVMContext *ctx, GError **errp);

/* Latency histogram buckets: [2^N, 2^(N+1)) us, N = 0..23 */
#define POSTCOPY_LATENCY_BUCKETS 24
/* Faults kept for x-postcopy-recent-faults (docs/postcopy.md) */
#define POSTCOPY_FAULT_RING 4096

/* The destination's fault statistics, for query-migrate. */
typedef struct PostcopyStatsInfo {
    bool blocktime;                 /* postcopy-blocktime was on */
    uint64_t blocktime_ms;          /* all vCPUs blocked at once */
    int nvcpus;
    uint64_t *vcpu_blocktime_ms;    /* nvcpus entries */
    bool did_postcopy;              /* the fields below are meaningful */
    uint64_t faults;                /* page requests sent */
    uint64_t latency_max_us;
    uint64_t latency_p50_us;
    uint64_t latency_p99_us;
    uint64_t histogram[POSTCOPY_LATENCY_BUCKETS];
    /* the last recent_count faults, oldest first (ring, <= 4096) */
    guint recent_count;
    uint64_t *recent_offset;        /* host page offset in its RAMBlock */
    int64_t *recent_age_us;         /* how long before this snapshot */
} PostcopyStatsInfo;

void postcopy_stats_get(MigrationIncomingState *mis, PostcopyStatsInfo *out);
void postcopy_stats_info_clear(PostcopyStatsInfo *info);

#endif

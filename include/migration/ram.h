/*
 * The "ram" live section: dirty bitmaps, page search, page sending and
 * loading, and the counters query-migrate reports.
 */
#ifndef MIGRATION_RAM_H
#define MIGRATION_RAM_H

#include "qemu/osdep.h"
#include "exec/ramblock.h"

typedef struct QEMUFile QEMUFile;

/* RAM record flags: the low bits of each record's be64 header word. */
#define RAM_SAVE_FLAG_FULL      0x001   /* obsolete, never valid */
#define RAM_SAVE_FLAG_ZERO      0x002
#define RAM_SAVE_FLAG_MEM_SIZE  0x004
#define RAM_SAVE_FLAG_PAGE      0x008
#define RAM_SAVE_FLAG_EOS       0x010
#define RAM_SAVE_FLAG_CONTINUE  0x020
#define RAM_SAVE_FLAG_XBZRLE    0x040
#define RAM_SAVE_FLAG_HOOK      0x080
#define RAM_SAVE_FLAG_COMPRESS  0x100

#define RAM_SECTION_IDSTR "ram"
#define RAM_SECTION_VERSION 4

/*
 * The source's RAM migration state.  One RAMState belongs to each
 * MigrationState for its whole life (ram_state_new at creation): bitmaps
 * and queues are set up per migration by ram_save_setup and dropped by
 * ram_save_cleanup, but the object and its counters stay, so that
 * query-migrate (main thread) never races with the migration thread
 * freeing it.
 */
typedef struct RAMState RAMState;

RAMState *ram_state_new(void);
void ram_state_free(RAMState *rs);

/* Counters of the current (or last) outgoing migration. */
typedef struct RAMCounters {
    uint64_t transferred;       /* bytes put in the stream by ram */
    uint64_t duplicate;         /* zero pages sent */
    uint64_t normal;            /* full pages sent */
    uint64_t multifd_bytes;     /* of transferred, on multifd channels */
    uint64_t precopy_bytes;
    uint64_t downtime_bytes;
    uint64_t postcopy_bytes;
    uint64_t postcopy_requests;
    uint64_t dirty_sync_count;
    uint64_t dirty_pages_rate;  /* pages/s over the last sync period */
    uint64_t pages_per_second;
    uint64_t remaining;         /* bytes still dirty */
    uint64_t total;             /* bytes of migratable RAM */
} RAMCounters;

/* Snapshot of the counters (any thread). */
void ram_counters_get(RAMState *rs, RAMCounters *out);
/* Remaining dirty bytes, the convergence estimate (any thread). */
uint64_t ram_bytes_remaining(RAMState *rs);

/*
 * The migration phase ram is in, for the downtime/postcopy byte split:
 * true once the VM is stopped for completion.
 */
void ram_set_downtime_phase(RAMState *rs, bool in_downtime);

/*
 * Save side (source), called by the migration thread through the "ram"
 * section handlers: setup writes the block list, iterate sends dirty
 * pages until the rate limit or ~50 ms, complete sends everything left
 * after a final sync; all end with EOS.  iterate returns 1 when nothing
 * was dirty any more, 0 if there is more, -1 on error.
 */
bool ram_save_setup(RAMState *rs, QEMUFile *f, GError **errp);
int ram_save_iterate(RAMState *rs, QEMUFile *f, GError **errp);
bool ram_save_complete(RAMState *rs, QEMUFile *f, GError **errp);
/*
 * Remaining dirty bytes; when that is below max_size the dirty log is
 * synced first, since the estimate may be stale close to the end.
 */
uint64_t ram_save_pending(RAMState *rs, uint64_t max_size);
void ram_save_cleanup(RAMState *rs);

/*
 * Load side (destination).  The loader's state lives in the
 * MigrationIncomingState (mis->ram_load): one RAMLoadChannel per channel
 * that carries RAM records, each with the block of its last record (for
 * CONTINUE) and its half-gathered postcopy host page.  After
 * POSTCOPY_LISTEN only the listen thread's stream (and the preempt
 * channel) may carry RAM: records from anywhere else, such as the
 * PACKAGED blob, are refused.
 */
typedef struct MigrationIncomingState MigrationIncomingState;
typedef struct RAMLoadState RAMLoadState;

RAMLoadState *ram_load_state_new(void);
void ram_load_state_free(RAMLoadState *rls);
/* Its dense-data advisor, which multifd's receivers use too. */
struct RAMDenseAdvisor *ram_load_dense(RAMLoadState *rls);
bool ram_load_setup(MigrationIncomingState *mis, GError **errp);
bool ram_load(MigrationIncomingState *mis, QEMUFile *f, int version_id,
              GError **errp);
void ram_load_cleanup(MigrationIncomingState *mis);
/* POSTCOPY_ADVISE seen: the block list then carries host page sizes. */
void ram_load_set_postcopy_advised(MigrationIncomingState *mis,
                                   bool advised);
/*
 * postcopy-preempt: the preempt channel's loader (raw page records, its
 * own last block and temporary page) until EOS (true) or an error.
 */
bool ram_load_postcopy_preempt(MigrationIncomingState *mis, QEMUFile *f,
                               GError **errp);
/*
 * Postcopy recovery: drop half-gathered host pages (their target pages
 * come again) and each channel's last block.
 */
void ram_load_discard_tmp_pages(MigrationIncomingState *mis);

/* ---- Postcopy, source side ---- */

/* Receives one POSTCOPY_RAM_DISCARD worth of ranges (bytes in the block). */
typedef int (*RamDiscardSendFn)(void *opaque, const char *idstr, uint16_t n,
                                const uint64_t *start, const uint64_t *length);
/*
 * At the switch, for one block: round the pages left to send (dirty or
 * never sent) out to whole host pages (a host page with anything left is
 * sent again whole), and emit exactly those as discard runs, at most
 * MAX_DISCARDS_PER_COMMAND per call of fn: after LISTEN the destination
 * then holds none of the pages still to come (no EEXIST), and every page
 * it holds is final.  Returns the number of ranges, or -1 when fn failed.
 */
long ram_postcopy_block_discard(RAMState *rs, RAMBlock *rb,
                                RamDiscardSendFn fn, void *opaque);
/*
 * The switch: final dirty sync, discards for every block, page search
 * restarted (the next record names its block).
 */
bool ram_postcopy_send_discard_bitmap(RAMState *rs, QEMUFile *f,
                                      GError **errp);
/*
 * From now on ram_save_iterate is in postcopy mode: urgent pages first,
 * background pages limited to max-postcopy-bandwidth, bytes counted as
 * postcopy-bytes.
 */
void ram_set_postcopy_phase(RAMState *rs, bool on);
/*
 * Most page requests queued and not served yet.  A real destination has
 * about one outstanding request per faulting thread (vCPUs, plus the
 * kernel's and its own readahead); thousands mean a broken or hostile
 * peer, and the migration fails instead of the queue growing.
 */
#define RAM_POSTCOPY_MAX_REQUESTS 4096

/*
 * A page request from the return path (idstr: its block).  Validates the
 * block, the alignment to its host page size and the range.  A request
 * for pages all sent already is dropped; one that overlaps or touches
 * the newest queued request of the same block is merged into it; beyond
 * RAM_POSTCOPY_MAX_REQUESTS queued requests it fails ("destination sent
 * more than N outstanding page requests").
 */
bool ram_postcopy_queue_request(RAMState *rs, const char *idstr,
                                uint64_t start, uint64_t len, GError **errp);
/*
 * Postcopy recovery: read one RECV_BITMAP reply's data from the return
 * path (size, little-endian map, end marker; every part checked) and
 * make "everything the destination does not hold" the block's dirty map.
 */
bool ram_postcopy_recv_bitmap(RAMState *rs, QEMUFile *rp, const char *idstr,
                              GError **errp);
/*
 * Before POSTCOPY_RESUME: forget queued requests (the destination sends
 * its outstanding ones again) and the page search position; the next
 * record names its block.
 */
void ram_postcopy_resume_prepare(RAMState *rs);
/*
 * postcopy-preempt: the second channel urgent pages go on from now on
 * (NULL: none), and its end (EOS, flushed) at completion.  Migration
 * thread only.
 */
void ram_postcopy_set_preempt_file(RAMState *rs, QEMUFile *f);
/*
 * A dirty-log sync in the middle of a pass, to sample the dirty rate (the
 * automatic switch): *newly gets the pages that turned dirty, *clean_before
 * the pages that were clean just before.  Not a pass: dirty-sync-count and
 * the MIGRATION_PASS event are left alone.
 */
bool ram_dirty_sample(RAMState *rs, uint64_t *newly, uint64_t *clean_before,
                      GError **errp);
/* Target pages of migratable RAM, and how many are dirty now. */
uint64_t ram_total_pages(RAMState *rs);
uint64_t ram_dirty_pages(RAMState *rs);
/* multifd channels for the pages of the next migration (NULL: none). */
typedef struct MultiFDSendState MultiFDSendState;
void ram_set_multifd(RAMState *rs, MultiFDSendState *multifd);
int ram_postcopy_preempt_finish(RAMState *rs);
/* Number of queued requests not served yet. */
unsigned ram_postcopy_queue_length(RAMState *rs);

/*
 * Dirty bitmap sync over all migratable blocks; bumps dirty-sync-count,
 * emits MIGRATION_PASS with the events capability.
 */
bool migration_bitmap_sync(RAMState *rs, GError **errp);

/* Page-size-aware search position (see ram.c). */
typedef struct PageSearchStatus {
    RAMBlock *block;
    unsigned long page;         /* target page index within block */
    bool complete_round;        /* wrapped past the starting block */
    bool host_page_sending;     /* inside a host page: do not leave it */
    unsigned long host_page_start;  /* [start, end) in target pages */
    unsigned long host_page_end;
} PageSearchStatus;

#endif

/*
 * The "ram" live section: dirty bitmaps, page search, page sending and
 * loading, and the counters query-migrate reports.
 */
#ifndef MIGRATION_RAM_H
#define MIGRATION_RAM_H

#include "qemu/osdep.h"
#include "exec/ramblock.h"
#include <json-glib/json-glib.h>

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

/* Counters of the current (or last) outgoing migration. */
typedef struct RAMCounters {
    uint64_t transferred;       /* bytes put in the stream by ram */
    uint64_t duplicate;         /* zero pages sent */
    uint64_t normal;            /* full pages sent */
    uint64_t precopy_bytes;
    uint64_t downtime_bytes;
    uint64_t postcopy_bytes;
    uint64_t postcopy_requests;
    uint64_t dirty_sync_count;
    uint64_t dirty_pages_rate;  /* pages/s over the last sync period */
    uint64_t pages_per_second;
    uint64_t remaining;         /* bytes still dirty */
} RAMCounters;

/* Snapshot of the counters (thread-safe). */
void ram_counters_get(RAMCounters *out);
/* Fill the query-migrate "ram" object. */
void ram_fill_query(JsonObject *ram, double mbps);
/* Remaining dirty bytes, the convergence estimate. */
uint64_t ram_bytes_remaining(void);

/*
 * The migration phase ram is in, for the downtime/postcopy byte split:
 * true once the VM is stopped for completion.
 */
void ram_set_downtime_phase(bool in_downtime);

/*
 * Section handlers.  Save side (source): setup writes the block list,
 * iterate sends dirty pages until the rate limit or ~50 ms, complete sends
 * everything left after a final sync; all end with EOS.  iterate returns
 * 1 when nothing was dirty any more, 0 if there is more, -1 on error.
 */
bool ram_save_setup(QEMUFile *f, GError **errp);
int ram_save_iterate(QEMUFile *f, GError **errp);
bool ram_save_complete(QEMUFile *f, GError **errp);
/*
 * Remaining dirty bytes; when that is below max_size the dirty log is
 * synced first, since the estimate may be stale close to the end.
 */
uint64_t ram_save_pending(uint64_t max_size);
void ram_save_cleanup(void);

/* Load side (destination). */
bool ram_load_setup(GError **errp);
bool ram_load(QEMUFile *f, int version_id, GError **errp);
void ram_load_cleanup(void);
/* POSTCOPY_ADVISE seen: the block list then carries host page sizes. */
void ram_load_set_postcopy_advised(bool advised);

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
long ram_postcopy_block_discard(RAMBlock *rb, RamDiscardSendFn fn,
                                void *opaque);
/*
 * The switch: final dirty sync, discards for every block, page search
 * restarted (the next record names its block).
 */
bool ram_postcopy_send_discard_bitmap(QEMUFile *f, GError **errp);
/*
 * From now on ram_save_iterate is in postcopy mode: urgent pages first,
 * background pages limited to max-postcopy-bandwidth, bytes counted as
 * postcopy-bytes.
 */
void ram_set_postcopy_phase(bool on);
/*
 * A page request from the return path (idstr: its block).  Validates the
 * block, the alignment to its host page size and the range.
 */
bool ram_postcopy_queue_request(const char *idstr, uint64_t start,
                                uint64_t len, GError **errp);
/* Number of queued requests not served yet. */
unsigned ram_postcopy_queue_length(void);

/*
 * Dirty bitmap sync over all migratable blocks; bumps dirty-sync-count,
 * emits MIGRATION_PASS with the events capability.  Exposed for tests.
 */
bool migration_bitmap_sync(GError **errp);

/* Hooks for tests: page-size-aware search on a block. */
typedef struct PageSearchStatus {
    RAMBlock *block;
    unsigned long page;         /* target page index within block */
    bool complete_round;        /* wrapped past the starting block */
    bool host_page_sending;     /* inside a host page: do not leave it */
    unsigned long host_page_start;  /* [start, end) in target pages */
    unsigned long host_page_end;
} PageSearchStatus;

/*
 * Callback used by tests (and later postcopy) to observe every page the
 * sender puts in the stream: block and target page index.
 */
typedef void (*RamPageSentHook)(RAMBlock *rb, unsigned long page, void *op);
void ram_set_page_sent_hook(RamPageSentHook hook, void *opaque);

#endif

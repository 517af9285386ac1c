/*
 * RAM migration: the "ram" live section.
 *
 * Source: one dirty bitmap per migratable RAMBlock (rb->bmap, one bit per
 * target page), refreshed from the accelerator's dirty log by
 * migration_bitmap_sync().  The page search walks the bitmaps a word at a
 * time from where it stopped last, and once it finds a dirty target page it
 * sends every dirty target page of the enclosing host page before moving on
 * (postcopy must place whole host pages).  The next page to send is chosen
 * by ram_find_next_page(): the urgent queue (postcopy page requests) would
 * go first, then the background scan.
 *
 * Destination: ram_load() parses MEM_SIZE / ZERO / PAGE / EOS records with
 * every offset and length checked, and marks loaded pages in
 * rb->receivedmap.
 */
#include "qemu/osdep.h"
#include "qemu/thread.h"
#include "qemu/bitmap.h"
#include "qemu/cutils.h"
#include "qemu/rcu.h"
#include "exec/ramblock.h"
#include "exec/memory.h"
#include "migration/migration.h"
#include "migration/qemu-file.h"
#include "migration/ram.h"
#include "migration/savevm.h"
#include "migration/postcopy-ram.h"
#include "migration/multifd.h"
#include "migration/ram-dense.h"
#include "trace/trace-migration.h"

/* An iteration stops after this long even if the rate limit allows more. */
#define RAM_ITERATE_MAX_WAIT_MS 50
/*
 * Postcopy: background data is pushed to the socket every this many bytes
 * so that an urgent page never queues behind much of it in our buffer.
 */
#define POSTCOPY_FLUSH_BYTES (64 * 1024)
/*
 * Postcopy: after an urgent page this much of what follows it goes out
 * at once, whatever the background budget (the bytes still count against
 * it: the debt is paid in later slices).  A guest that reads sequentially
 * then faults once per window instead of once per page.
 */
#define POSTCOPY_READAHEAD_BYTES (1024 * 1024)
/* Readahead beyond the budget stops at this much debt (paid back later). */
#define POSTCOPY_READAHEAD_MAX_DEBT (8 * 1024 * 1024)

/* A page request from the destination: [start, start+len) in rb. */
typedef struct RAMRequest {
    RAMBlock *rb;
    uint64_t start;
    uint64_t len;
} RAMRequest;

struct RAMState {
    /* Set up for a migration: between ram_save_setup and cleanup. */
    bool active;
    /* Where the background scan resumes. */
    RAMBlock *last_seen_block;
    unsigned long last_page;
    /* Block of the last record written: the next may use CONTINUE. */
    RAMBlock *last_sent_block;
    /* Dirty target pages over all bitmaps (protected by bitmap_mutex). */
    uint64_t migration_dirty_pages;
    QemuMutex bitmap_mutex;
    /* Dirty-rate bookkeeping between syncs. */
    int64_t time_last_bitmap_sync;      /* ms */
    uint64_t num_dirty_pages_period;
    uint64_t pages_at_last_sync;        /* duplicate + normal then */
    bool in_downtime;
    bool in_postcopy;
    /* The last host page came from the urgent queue. */
    bool last_was_urgent;
    /*
     * postcopy-preempt: urgent host pages go on this second channel (set
     * by the migration thread at the switch, NULL otherwise); on_preempt
     * says which channel the last record went to.
     */
    QEMUFile *preempt_file;
    bool on_preempt;
    /*
     * multifd: full pages of precopy go to these channels (set by the
     * migration thread before ram_save_setup, NULL otherwise).
     */
    MultiFDSendState *multifd;

    /* Postcopy: page requests (RAMRequest) from the return-path thread. */
    QemuMutex req_lock;
    QemuCond req_cond;                     /* signalled when one is queued */
    GQueue requests;
    /* Postcopy background budget, per BUFFER_DELAY_MS slice. */
    int64_t pc_slice_start;             /* us */
    uint64_t pc_slice_bytes;
    /* Postcopy readahead: the scan is in [.., ra_end) of ra_block. */
    RAMBlock *ra_block;
    unsigned long ra_end;               /* target page index */

    /* query-migrate's figures; read by the main thread at any time. */
    QemuMutex counters_lock;
    RAMCounters counters;
};

static int64_t now_ms(void)
{
    return g_get_monotonic_time() / 1000;
}

static unsigned long ramblock_pages(const RAMBlock *rb)
{
    return rb->used_length >> TARGET_PAGE_BITS;
}

/* Target pages per host page of rb (1 for ordinary anonymous memory). */
static unsigned long ramblock_host_page_pages(const RAMBlock *rb)
{
    size_t ps = rb->page_size ? rb->page_size : TARGET_PAGE_SIZE;
    return MAX(ps >> TARGET_PAGE_BITS, 1);
}

RAMState *ram_state_new(void)
{
    RAMState *rs = g_new0(RAMState, 1);

    qemu_mutex_init(&rs->bitmap_mutex);
    qemu_mutex_init(&rs->req_lock);
    qemu_cond_init(&rs->req_cond);
    g_queue_init(&rs->requests);
    qemu_mutex_init(&rs->counters_lock);
    return rs;
}

static void requests_clear(RAMState *rs);

void ram_state_free(RAMState *rs)
{
    if (!rs) {
        return;
    }
    ram_save_cleanup(rs);
    requests_clear(rs);
    qemu_mutex_destroy(&rs->req_lock);
    qemu_cond_destroy(&rs->req_cond);
    qemu_mutex_destroy(&rs->bitmap_mutex);
    qemu_mutex_destroy(&rs->counters_lock);
    g_free(rs);
}

/* ---------------------------------------------------------------------- */
/* Counters */

void ram_counters_get(RAMState *rs, RAMCounters *out)
{
    qemu_mutex_lock(&rs->counters_lock);
    *out = rs->counters;
    qemu_mutex_unlock(&rs->counters_lock);
    out->remaining = ram_bytes_remaining(rs);
    out->total = ram_bytes_total();
}

/* Called with counters_lock held: split bytes by migration phase. */
static void counters_add_phase_bytes(RAMState *rs, uint64_t bytes)
{
    rs->counters.transferred += bytes;
    if (rs->in_postcopy) {
        rs->counters.postcopy_bytes += bytes;
    } else if (rs->in_downtime) {
        rs->counters.downtime_bytes += bytes;
    } else {
        rs->counters.precopy_bytes += bytes;
    }
}

static void counters_add_page(RAMState *rs, bool zero, uint64_t bytes)
{
    qemu_mutex_lock(&rs->counters_lock);
    if (zero) {
        rs->counters.duplicate++;
    } else {
        rs->counters.normal++;
    }
    counters_add_phase_bytes(rs, bytes);
    qemu_mutex_unlock(&rs->counters_lock);
}

static void counters_add_bytes(RAMState *rs, uint64_t bytes)
{
    qemu_mutex_lock(&rs->counters_lock);
    counters_add_phase_bytes(rs, bytes);
    qemu_mutex_unlock(&rs->counters_lock);
}

uint64_t ram_bytes_remaining(RAMState *rs)
{
    uint64_t pages;

    qemu_mutex_lock(&rs->bitmap_mutex);
    pages = rs->migration_dirty_pages;
    qemu_mutex_unlock(&rs->bitmap_mutex);
    return pages << TARGET_PAGE_BITS;
}

void ram_set_downtime_phase(RAMState *rs, bool in_downtime)
{
    qemu_mutex_lock(&rs->counters_lock);
    rs->in_downtime = in_downtime;
    qemu_mutex_unlock(&rs->counters_lock);
}

void ram_set_postcopy_phase(RAMState *rs, bool on)
{
    trace_ram_set_postcopy_phase(on);
    qemu_mutex_lock(&rs->counters_lock);
    rs->in_postcopy = on;
    rs->in_downtime = false;
    qemu_mutex_unlock(&rs->counters_lock);
    rs->pc_slice_start = g_get_monotonic_time();
    rs->pc_slice_bytes = 0;
}

/* ---------------------------------------------------------------------- */
/* Bitmaps */

/* The blocks (migratable or all), collected for use outside RCU. */
static GPtrArray *ram_blocks_snapshot(bool migratable_only)
{
    GPtrArray *blocks = g_ptr_array_new();
    RAMBlock *rb;

    rcu_read_lock();
    RAMBLOCK_FOREACH(rb) {
        if (!migratable_only || (rb->flags & RAM_MIGRATABLE)) {
            g_ptr_array_add(blocks, rb);
        }
    }
    rcu_read_unlock();
    return blocks;
}


/* Publish a new map in *slot and free the old one after a grace period. */
static void bitmap_replace(unsigned long **slot, unsigned long *map)
{
    unsigned long *old = *slot;

    rcu_assign_pointer(*slot, map);
    if (old) {
        synchronize_rcu();
        g_free(old);
    }
}

static void ram_bitmaps_alloc(RAMState *rs, bool with_unsent)
{
    RAMBlock *rb;

    rcu_read_lock();
    RAMBLOCK_FOREACH_MIGRATABLE(rb) {
        unsigned long n = ramblock_pages(rb);

        rb->bmap = bitmap_new_full(n);
        rb->unsentmap = with_unsent ? bitmap_new_full(n) : NULL;
        rs->migration_dirty_pages += n;
    }
    rcu_read_unlock();
}

/* Not called inside an RCU read section: it waits for readers. */
static void ram_bitmaps_free(void)
{
    GPtrArray *blocks = ram_blocks_snapshot(false);

    for (guint i = 0; i < blocks->len; i++) {
        RAMBlock *rb = blocks->pdata[i];

        bitmap_replace(&rb->bmap, NULL);
        bitmap_replace(&rb->unsentmap, NULL);
    }
    g_ptr_array_free(blocks, true);
}

static void update_dirty_rate(RAMState *rs)
{
    int64_t now = now_ms();
    int64_t elapsed = now - rs->time_last_bitmap_sync;
    RAMCounters c;

    if (elapsed < 1) {
        elapsed = 1;
    }
    ram_counters_get(rs, &c);
    qemu_mutex_lock(&rs->counters_lock);
    rs->counters.dirty_pages_rate =
        rs->num_dirty_pages_period * 1000 / elapsed;
    rs->counters.pages_per_second =
        (c.duplicate + c.normal - rs->pages_at_last_sync) * 1000 / elapsed;
    qemu_mutex_unlock(&rs->counters_lock);
    rs->pages_at_last_sync = c.duplicate + c.normal;
    rs->num_dirty_pages_period = 0;
    rs->time_last_bitmap_sync = now;
}

/* Pull the dirty log into the bitmaps; *found: pages newly dirty. */
static bool bitmap_sync(RAMState *rs, uint64_t *found, GError **errp)
{
    RAMBlock *rb;
    bool ok = true;

    *found = 0;
    if (!rs->active) {
        error_setg(errp, "RAM migration is not set up");
        return false;
    }
    trace_migration_bitmap_sync_start();
    qemu_mutex_lock(&rs->bitmap_mutex);
    rcu_read_lock();
    RAMBLOCK_FOREACH_MIGRATABLE(rb) {
        uint64_t newly = 0;

        if (!rb->bmap) {
            continue;
        }
        if (!ramblock_sync_dirty_bitmap(rb, rb->bmap, &newly, errp)) {
            ok = false;
            break;
        }
        rs->migration_dirty_pages += newly;
        rs->num_dirty_pages_period += newly;
        *found += newly;
    }
    rcu_read_unlock();
    qemu_mutex_unlock(&rs->bitmap_mutex);
    return ok;
}

bool ram_dirty_sample(RAMState *rs, uint64_t *newly, uint64_t *clean_before,
                      GError **errp)
{
    *clean_before = ram_total_pages(rs) - ram_dirty_pages(rs);
    if (!bitmap_sync(rs, newly, errp)) {
        return false;
    }
    trace_ram_dirty_sample(*newly, *clean_before);
    return true;
}

uint64_t ram_total_pages(RAMState *rs)
{
    return ram_bytes_total() >> TARGET_PAGE_BITS;
}

uint64_t ram_dirty_pages(RAMState *rs)
{
    uint64_t n;

    qemu_mutex_lock(&rs->bitmap_mutex);
    n = rs->migration_dirty_pages;
    qemu_mutex_unlock(&rs->bitmap_mutex);
    return n;
}

bool migration_bitmap_sync(RAMState *rs, GError **errp)
{
    uint64_t pass;
    uint64_t found;

    if (!bitmap_sync(rs, &found, errp)) {
        return false;
    }

    qemu_mutex_lock(&rs->counters_lock);
    pass = ++rs->counters.dirty_sync_count;
    qemu_mutex_unlock(&rs->counters_lock);
    update_dirty_rate(rs);
    trace_migration_bitmap_sync_end(found);
    if (migrate_events()) {
        qapi_event_send_migration_pass(pass);
    }
    return true;
}

/* ---------------------------------------------------------------------- */
/* Page search */

static RAMBlock *first_migratable_block(void)
{
    RAMBlock *rb;

    RAMBLOCK_FOREACH_MIGRATABLE(rb) {
        if (rb->bmap) {
            return rb;
        }
    }
    return NULL;
}

/* The migratable block after rb, wrapping to the first one. */
static RAMBlock *next_migratable_block(RAMBlock *rb)
{
    struct cds_list_head *pos = rcu_dereference(rb->next.next);

    while (pos != &ram_list.blocks) {
        RAMBlock *n = cds_list_entry(pos, RAMBlock, next);

        if ((n->flags & RAM_MIGRATABLE) && n->bmap) {
            return n;
        }
        pos = rcu_dereference(pos->next);
    }
    return first_migratable_block();
}

/*
 * Advance pss to the next dirty target page, starting at pss->page in
 * pss->block and going round all blocks once.  False when nothing is dirty.
 */
static bool pss_find_dirty(PageSearchStatus *pss)
{
    RAMBlock *start = pss->block;
    unsigned long start_page = pss->page;

    for (;;) {
        unsigned long *bmap = rcu_dereference(pss->block->bmap);
        unsigned long npages = ramblock_pages(pss->block);
        unsigned long limit = npages;

        if (pss->complete_round && pss->block == start) {
            limit = MIN(start_page, npages);
        }
        if (bmap && pss->page < limit) {
            pss->page = find_next_bit(bmap, limit, pss->page);
            if (pss->page < limit) {
                return true;
            }
        }
        if (pss->complete_round && pss->block == start) {
            return false;
        }
        pss->block = next_migratable_block(pss->block);
        pss->page = 0;
        if (!pss->block) {
            return false;
        }
        if (pss->block == start) {
            pss->complete_round = true;
        }
    }
}

/* Enter the host page holding pss->page: the sender stays inside it. */
static void pss_host_page_prepare(PageSearchStatus *pss)
{
    unsigned long hp = ramblock_host_page_pages(pss->block);
    unsigned long npages = ramblock_pages(pss->block);

    pss->host_page_sending = true;
    pss->host_page_start = QEMU_ALIGN_DOWN(pss->page, hp);
    pss->host_page_end = MIN(pss->host_page_start + hp, npages);
}

static bool pss_within_range(const PageSearchStatus *pss)
{
    return pss->host_page_sending &&
           pss->page >= pss->host_page_start &&
           pss->page < pss->host_page_end;
}

/* Leave the host page; the scan resumes right after it. */
static void pss_host_page_finish(PageSearchStatus *pss)
{
    pss->page = pss->host_page_end;
    pss->host_page_sending = false;
}

/*
 * The first target page still to send in [start, start+len) of rb, or
 * false when the destination has it all already (a requested page that
 * was sent in the meantime is skipped, never sent twice).
 */
static bool request_next_page(RAMRequest *req, unsigned long *page)
{
    unsigned long *bmap = rcu_dereference(req->rb->bmap);
    unsigned long first = req->start >> TARGET_PAGE_BITS;
    unsigned long end = (req->start + req->len) >> TARGET_PAGE_BITS;

    if (!bmap) {
        return false;
    }
    *page = find_next_bit(bmap, end, first);
    return *page < end;
}

/*
 * Urgent pages requested by the destination go before the background
 * scan.  pss is set to the first unsent target page of the oldest
 * request; the caller sends its whole host page.
 */
static bool get_queued_page(RAMState *rs, PageSearchStatus *pss)
{
    bool found = false;

    qemu_mutex_lock(&rs->req_lock);
    while (!found && !g_queue_is_empty(&rs->requests)) {
        RAMRequest *req = g_queue_peek_head(&rs->requests);
        unsigned long page;

        if (request_next_page(req, &page)) {
            unsigned long hp = ramblock_host_page_pages(req->rb);
            uint64_t hp_end = (uint64_t)QEMU_ALIGN_DOWN(page, hp) + hp;
            uint64_t end = req->start + req->len;

            pss->block = req->rb;
            pss->page = page;
            pss->complete_round = false;
            found = true;
            trace_get_queued_page(req->rb->idstr,
                                  (uint64_t)page << TARGET_PAGE_BITS, page);
            /* The host page is about to go; keep the rest of the range. */
            req->start = MIN(hp_end << TARGET_PAGE_BITS, end);
            req->len = end - req->start;
            if (req->len) {
                continue;
            }
        } else {
            /* Everything it asks for was sent since: nothing to do. */
            trace_get_queued_page_not_dirty(req->rb->idstr, req->start,
                                            req->len);
        }
        g_free(g_queue_pop_head(&rs->requests));
    }
    qemu_mutex_unlock(&rs->req_lock);
    rs->last_was_urgent = found;
    return found;
}

static void requests_clear(RAMState *rs)
{
    qemu_mutex_lock(&rs->req_lock);
    while (!g_queue_is_empty(&rs->requests)) {
        g_free(g_queue_pop_head(&rs->requests));
    }
    qemu_mutex_unlock(&rs->req_lock);
}

unsigned ram_postcopy_queue_length(RAMState *rs)
{
    unsigned n;

    qemu_mutex_lock(&rs->req_lock);
    n = g_queue_get_length(&rs->requests);
    qemu_mutex_unlock(&rs->req_lock);
    return n;
}

/*
 * True when every target page of [start, start+len) in rb was sent (its
 * dirty bit is clear), so a request for it would be dropped by
 * get_queued_page() anyway.  False without a bitmap: the caller's
 * "not set up" check then refuses the request.
 */
static bool request_all_sent(RAMState *rs, RAMBlock *rb, uint64_t start,
                             uint64_t len)
{
    unsigned long first = start >> TARGET_PAGE_BITS;
    unsigned long end = (start + len) >> TARGET_PAGE_BITS;
    unsigned long *bmap;
    bool all_sent = false;

    rcu_read_lock();
    bmap = rcu_dereference(rb->bmap);
    if (bmap) {
        /* The migration thread clears bits under bitmap_mutex. */
        qemu_mutex_lock(&rs->bitmap_mutex);
        all_sent = find_next_bit(bmap, end, first) >= end;
        qemu_mutex_unlock(&rs->bitmap_mutex);
    }
    rcu_read_unlock();
    return all_sent;
}

/*
 * Fold [start, start+len) of rb into the newest queued request when they
 * touch (same block, overlapping or adjacent): a destination reading
 * sequentially, or repeating itself, then costs one entry.  req_lock held.
 */
static bool request_merge_tail(RAMState *rs, RAMBlock *rb, uint64_t start,
                               uint64_t len)
{
    RAMRequest *tail = g_queue_peek_tail(&rs->requests);
    uint64_t end = start + len;
    uint64_t tail_end;

    if (!tail || tail->rb != rb) {
        return false;
    }
    tail_end = tail->start + tail->len;
    if (start > tail_end || end < tail->start) {
        return false;
    }
    tail->start = MIN(tail->start, start);
    tail->len = MAX(tail_end, end) - tail->start;
    trace_ram_postcopy_request_merged(rb->idstr, tail->start, tail->len);
    return true;
}

bool ram_postcopy_queue_request(RAMState *rs, const char *idstr,
                                uint64_t start, uint64_t len, GError **errp)
{
    RAMRequest *req;
    RAMBlock *rb;
    unsigned queued;

    trace_ram_save_queue_pages(idstr, start, len);
    rcu_read_lock();
    rb = qemu_ram_block_by_name(idstr);
    rcu_read_unlock();
    /* RAMBlocks of a running migration are not freed (no hot-unplug). */
    if (!rb || !(rb->flags & RAM_MIGRATABLE)) {
        error_setg(errp, "page request for unknown RAMBlock '%s'", idstr);
        return false;
    }
    if (!len || !QEMU_IS_ALIGNED(start, rb->page_size) ||
        !QEMU_IS_ALIGNED(len, rb->page_size)) {
        error_setg(errp, "page request for '%s' at 0x%" PRIx64 "+0x%" PRIx64
                   " is not aligned to its page size 0x%zx", idstr, start,
                   len, rb->page_size);
        return false;
    }
    if (start >= rb->used_length || len > rb->used_length - start) {
        error_setg(errp, "page request for '%s' at 0x%" PRIx64 "+0x%" PRIx64
                   " is beyond its used length 0x%" PRIx64, idstr, start, len,
                   (uint64_t)rb->used_length);
        return false;
    }
    qemu_mutex_lock(&rs->counters_lock);
    rs->counters.postcopy_requests++;
    qemu_mutex_unlock(&rs->counters_lock);
    /*
     * Pages the destination has been sent already (it may ask again after
     * a fault raced with the page's arrival) need no queue entry.  A page
     * cannot become dirty again in postcopy: the VM is stopped here.
     */
    if (request_all_sent(rs, rb, start, len)) {
        trace_ram_postcopy_request_sent_already(idstr, start, len);
        return true;
    }
    qemu_mutex_lock(&rs->req_lock);
    if (!rs->active) {
        qemu_mutex_unlock(&rs->req_lock);
        error_setg(errp, "page request for '%s' but RAM migration is not "
                   "set up", idstr);
        return false;
    }
    if (request_merge_tail(rs, rb, start, len)) {
        qemu_cond_broadcast(&rs->req_cond);
        qemu_mutex_unlock(&rs->req_lock);
        return true;
    }
    queued = g_queue_get_length(&rs->requests);
    if (queued >= RAM_POSTCOPY_MAX_REQUESTS) {
        qemu_mutex_unlock(&rs->req_lock);
        /* Growing without bound is what a hostile peer wants; stop here. */
        trace_ram_postcopy_request_overflow(idstr, start, len, queued);
        error_setg(errp, "destination sent more than %u outstanding page "
                   "requests (last for '%s' at 0x%" PRIx64 "+0x%" PRIx64 ")",
                   RAM_POSTCOPY_MAX_REQUESTS, idstr, start, len);
        return false;
    }
    req = g_new(RAMRequest, 1);
    req->rb = rb;
    req->start = start;
    req->len = len;
    g_queue_push_tail(&rs->requests, req);
    qemu_cond_broadcast(&rs->req_cond);
    qemu_mutex_unlock(&rs->req_lock);
    return true;
}

/* Pick the next page to send: urgent queue first, then the scan. */
static bool ram_find_next_page(RAMState *rs, PageSearchStatus *pss)
{
    if (get_queued_page(rs, pss)) {
        return true;
    }
    pss->block = rs->last_seen_block;
    pss->page = rs->last_page;
    pss->complete_round = false;
    if (!pss->block) {
        pss->block = first_migratable_block();
        pss->page = 0;
        if (!pss->block) {
            return false;
        }
    }
    return pss_find_dirty(pss);
}

/* ---------------------------------------------------------------------- */
/* Sending */

/* Header word, plus the block id unless it is the same as last time. */
static uint64_t save_page_header(RAMState *rs, QEMUFile *f, RAMBlock *rb,
                                 uint64_t offset_flags)
{
    size_t len;

    if (rb == rs->last_sent_block) {
        qemu_put_be64(f, offset_flags | RAM_SAVE_FLAG_CONTINUE);
        return 8;
    }
    qemu_put_be64(f, offset_flags);
    len = strlen(rb->idstr);
    qemu_put_byte(f, len);
    qemu_put_buffer(f, (const uint8_t *)rb->idstr, len);
    rs->last_sent_block = rb;
    return 8 + 1 + len;
}

/* Clear the page's dirty bit; false if it was not dirty. */
static bool ram_clear_dirty(RAMState *rs, RAMBlock *rb, unsigned long page)
{
    unsigned long *bmap = rcu_dereference(rb->bmap);
    bool was_dirty;

    qemu_mutex_lock(&rs->bitmap_mutex);
    was_dirty = bmap && test_and_clear_bit_atomic(page, bmap);
    if (was_dirty) {
        rs->migration_dirty_pages--;
    }
    qemu_mutex_unlock(&rs->bitmap_mutex);
    return was_dirty;
}

/* A full page on a multifd channel; false (and f failed) if they failed. */
static bool ram_save_multifd_page(RAMState *rs, QEMUFile *f, RAMBlock *rb,
                                  ram_addr_t offset)
{
    uint64_t bytes = multifd_queue_page(rs->multifd, rb, offset);

    if (!bytes) {
        GError *err = NULL;
        uint64_t ignored;

        /* The sync reports the channels' error. */
        multifd_send_sync(rs->multifd, &ignored, &err);
        qemu_file_set_error_obj(f, -EIO, err);
        return false;
    }
    qemu_file_acct_other_channel(f, bytes);
    qemu_mutex_lock(&rs->counters_lock);
    rs->counters.multifd_bytes += bytes;
    rs->counters.normal++;
    counters_add_phase_bytes(rs, bytes);
    qemu_mutex_unlock(&rs->counters_lock);
    return true;
}

static void ram_save_target_page(RAMState *rs, QEMUFile *f, RAMBlock *rb,
                                 unsigned long page)
{
    ram_addr_t offset = (ram_addr_t)page << TARGET_PAGE_BITS;
    uint8_t *p = ramblock_ptr(rb, offset);
    unsigned long *unsent = rcu_dereference(rb->unsentmap);
    uint64_t bytes;
    bool zero = buffer_is_zero(p, TARGET_PAGE_SIZE);

    trace_ram_save_page(rb->idstr, offset, zero);
    if (zero) {
        bytes = save_page_header(rs, f, rb, offset | RAM_SAVE_FLAG_ZERO);
        qemu_put_byte(f, 0);
        bytes += 1;
    } else if (rs->multifd && !rs->in_postcopy) {
        if (ram_save_multifd_page(rs, f, rb, offset) && unsent) {
            clear_bit_atomic(page, unsent);
        }
        return;
    } else {
        bytes = save_page_header(rs, f, rb, offset | RAM_SAVE_FLAG_PAGE);
        /* Guest memory goes straight into the iovec: no copy. */
        qemu_put_buffer_async(f, p, TARGET_PAGE_SIZE);
        bytes += TARGET_PAGE_SIZE;
    }
    if (unsent) {
        clear_bit_atomic(page, unsent);
    }
    counters_add_page(rs, zero, bytes);
}

/* Send every dirty target page of the host page holding pss->page. */
static int ram_save_host_page(RAMState *rs, QEMUFile *f,
                              PageSearchStatus *pss)
{
    unsigned long *bmap = rcu_dereference(pss->block->bmap);
    int pages = 0;

    pss_host_page_prepare(pss);
    pss->page = pss->host_page_start;
    while (bmap) {
        pss->page = find_next_bit(bmap, pss->host_page_end, pss->page);
        if (!pss_within_range(pss)) {
            break;
        }
        if (ram_clear_dirty(rs, pss->block, pss->page)) {
            ram_save_target_page(rs, f, pss->block, pss->page);
            pages++;
        }
        pss->page++;
    }
    pss_host_page_finish(pss);
    return pages;
}

/*
 * Find the next dirty host page and send it.  Returns the number of target
 * pages sent (0 when nothing is dirty), or -1 on a stream error.
 */
/*
 * With postcopy-preempt, urgent host pages go on the preempt channel and
 * the rest on the main one.  A record after a switch names its block
 * again: the other side keeps a "last block" per channel (QEMU's rule).
 */
static QEMUFile *ram_channel_for(RAMState *rs, QEMUFile *main_f, bool urgent)
{
    bool preempt = urgent && rs->preempt_file;

    if (preempt != rs->on_preempt) {
        rs->on_preempt = preempt;
        rs->last_sent_block = NULL;
        trace_ram_postcopy_preempt_switch(preempt);
    }
    return preempt ? rs->preempt_file : main_f;
}

static int ram_find_and_save_block(RAMState *rs, QEMUFile *f)
{
    PageSearchStatus pss = { 0 };
    QEMUFile *out;
    int pages;

    if (!ram_find_next_page(rs, &pss)) {
        return 0;
    }
    out = ram_channel_for(rs, f, rs->last_was_urgent);
    pages = ram_save_host_page(rs, out, &pss);
    rs->last_seen_block = pss.block;
    rs->last_page = pss.page;
    if (qemu_file_get_error(out)) {
        return -1;
    }
    return pages;
}

void ram_postcopy_set_preempt_file(RAMState *rs, QEMUFile *f)
{
    rs->preempt_file = f;
    rs->on_preempt = false;
    rs->last_sent_block = NULL;
}

int ram_postcopy_preempt_finish(RAMState *rs)
{
    if (!rs->preempt_file) {
        return 0;
    }
    /* EOS ends the destination's preempt loader (QEMU 7.1/7.2). */
    qemu_put_be64(rs->preempt_file, RAM_SAVE_FLAG_EOS);
    return qemu_fflush(rs->preempt_file);
}

/* Bytes written so far on both channels. */
static uint64_t ram_channels_transferred(RAMState *rs, QEMUFile *f)
{
    return qemu_file_transferred(f) +
           (rs->preempt_file ? qemu_file_transferred(rs->preempt_file) : 0);
}

/*
 * multifd: everything queued, then a SYNC on every channel, before each
 * RAM EOS; the destination waits for those at the EOS.  Pages being read
 * by the channels stay under the caller's RCU read lock until this returns.
 *
 * After the switch no page goes to the channels, but the SYNCs go on: a
 * QEMU 7.2 destination waits for them at every EOS.  Losing the channels
 * then costs no page, so it must not cost the migration either (a ferry
 * destination stops waiting for them at LISTEN): they are dropped.
 */
static void ram_multifd_sync(RAMState *rs, QEMUFile *f)
{
    GError *err = NULL;
    uint64_t bytes;

    if (!rs->multifd || qemu_file_get_error(f)) {
        return;
    }
    if (!multifd_send_sync(rs->multifd, &bytes, &err)) {
        if (rs->in_postcopy) {
            trace_ram_multifd_dropped_in_postcopy(err->message);
            g_error_free(err);
            rs->multifd = NULL;
            return;
        }
        qemu_file_set_error_obj(f, -EIO, err);
        return;
    }
    qemu_file_acct_other_channel(f, bytes);
    qemu_mutex_lock(&rs->counters_lock);
    rs->counters.multifd_bytes += bytes;
    counters_add_phase_bytes(rs, bytes);
    qemu_mutex_unlock(&rs->counters_lock);
}

void ram_set_multifd(RAMState *rs, MultiFDSendState *multifd)
{
    rs->multifd = multifd;
}

static void put_eos(RAMState *rs, QEMUFile *f)
{
    ram_multifd_sync(rs, f);
    qemu_put_be64(f, RAM_SAVE_FLAG_EOS);
    counters_add_bytes(rs, 8);
    if (rs->multifd) {
        /*
         * The destination's channels wait at their SYNC until its loader
         * reads this EOS: held back in our buffer, it would leave the next
         * pages blocked on full channel sockets for good.
         */
        qemu_fflush(f);
    }
}

/* Forget everything of a previous migration but the object itself. */
static void ram_state_reset(RAMState *rs)
{
    requests_clear(rs);
    rs->last_seen_block = NULL;
    rs->last_page = 0;
    rs->last_sent_block = NULL;
    rs->migration_dirty_pages = 0;
    rs->num_dirty_pages_period = 0;
    rs->pages_at_last_sync = 0;
    rs->last_was_urgent = false;
    rs->pc_slice_start = 0;
    rs->pc_slice_bytes = 0;
    rs->ra_block = NULL;
    rs->ra_end = 0;
    qemu_mutex_lock(&rs->counters_lock);
    memset(&rs->counters, 0, sizeof(rs->counters));
    rs->in_downtime = false;
    rs->in_postcopy = false;
    qemu_mutex_unlock(&rs->counters_lock);
}

bool ram_save_setup(RAMState *rs, QEMUFile *f, GError **errp)
{
    RAMBlock *rb;
    bool postcopy = migrate_postcopy_ram();
    uint64_t bytes = 8;
    uint64_t total;

    ram_save_cleanup(rs);
    ram_state_reset(rs);
    qemu_mutex_lock(&rs->bitmap_mutex);
    ram_bitmaps_alloc(rs, postcopy);
    qemu_mutex_unlock(&rs->bitmap_mutex);
    rs->time_last_bitmap_sync = now_ms();
    qemu_mutex_lock(&rs->req_lock);
    rs->active = true;
    qemu_mutex_unlock(&rs->req_lock);

    if (!memory_global_dirty_log_start(errp)) {
        ram_save_cleanup(rs);
        return false;
    }
    /* The first sync re-arms the log; every page is dirty already. */
    if (!migration_bitmap_sync(rs, errp)) {
        ram_save_cleanup(rs);
        return false;
    }

    total = ram_bytes_total();
    trace_ram_save_setup(total);
    qemu_put_be64(f, total | RAM_SAVE_FLAG_MEM_SIZE);
    rcu_read_lock();
    RAMBLOCK_FOREACH_MIGRATABLE(rb) {
        qemu_put_counted_string(f, rb->idstr);
        qemu_put_be64(f, rb->used_length);
        bytes += 1 + strlen(rb->idstr) + 8;
        if (postcopy && rb->page_size != TARGET_PAGE_SIZE) {
            qemu_put_be64(f, rb->page_size);
            bytes += 8;
        }
    }
    rcu_read_unlock();
    counters_add_bytes(rs, bytes);
    put_eos(rs, f);
    return qemu_file_get_error_obj(f, errp) == 0;
}

/* Background bytes allowed per slice after the switch (0: unlimited). */
static uint64_t postcopy_slice_budget(void)
{
    uint64_t bw = migrate_max_postcopy_bandwidth();

    return bw ? MAX(bw / (1000 / BUFFER_DELAY_MS), 1) : 0;
}

/*
 * The background budget of this slice is used up: wait until the slice
 * ends or a page request arrives, whichever comes first.
 */
static void postcopy_wait_budget(RAMState *rs)
{
    int64_t slice_end = rs->pc_slice_start + BUFFER_DELAY_MS * 1000;

    qemu_mutex_lock(&rs->req_lock);
    while (g_queue_is_empty(&rs->requests) &&
           g_get_monotonic_time() < slice_end) {
        qemu_cond_wait_until(&rs->req_cond, &rs->req_lock, slice_end);
    }
    qemu_mutex_unlock(&rs->req_lock);
}

/*
 * A token bucket: pc_slice_bytes is what was sent (urgent pages and
 * readahead included) and not yet paid for by elapsed slices, so the
 * average stays at max-postcopy-bandwidth even though urgent pages never
 * wait; the background scan pays for them.
 */
static bool postcopy_budget_left(RAMState *rs)
{
    uint64_t budget = postcopy_slice_budget();
    int64_t now = g_get_monotonic_time();
    int64_t slices = (now - rs->pc_slice_start) / (BUFFER_DELAY_MS * 1000);

    if (slices > 0) {
        rs->pc_slice_start = now;
        if (!budget || (uint64_t)slices > rs->pc_slice_bytes / budget) {
            rs->pc_slice_bytes = 0;
        } else {
            rs->pc_slice_bytes -= budget * slices;
        }
    }
    return !budget || rs->pc_slice_bytes < budget;
}

/* An urgent host page just went: open the readahead window after it. */
static void postcopy_readahead_open(RAMState *rs)
{
    RAMBlock *rb = rs->last_seen_block;
    unsigned long win;

    if (!rb) {
        return;
    }
    win = MAX(POSTCOPY_READAHEAD_BYTES, rb->page_size) >> TARGET_PAGE_BITS;
    rs->ra_block = rb;
    rs->ra_end = MIN(rs->last_page + win, ramblock_pages(rb));
}

/*
 * The background scan resumes inside the readahead window, and the debt
 * stays bounded: a guest faulting all over its RAM must not turn every
 * request into a megabyte beyond max-postcopy-bandwidth for long.
 */
static bool postcopy_readahead_active(RAMState *rs)
{
    return rs->ra_block && rs->ra_block == rs->last_seen_block &&
           rs->last_page < rs->ra_end &&
           rs->pc_slice_bytes < postcopy_slice_budget() +
                                POSTCOPY_READAHEAD_MAX_DEBT;
}

static bool requests_pending(RAMState *rs)
{
    bool r;

    qemu_mutex_lock(&rs->req_lock);
    r = !g_queue_is_empty(&rs->requests);
    qemu_mutex_unlock(&rs->req_lock);
    return r;
}

/*
 * After the switch: the urgent queue is looked at before every host page,
 * urgent pages never wait for the bandwidth limit and are pushed out at
 * once, followed by a readahead window; everything is charged to the
 * max-postcopy-bandwidth bucket, which the background scan waits for
 * (f itself is unlimited).
 */
static int ram_save_iterate_postcopy(RAMState *rs, QEMUFile *f)
{
    int64_t t0 = now_ms();
    uint64_t unflushed = 0;
    int done = 0;

    for (;;) {
        uint64_t before = ram_channels_transferred(rs, f);
        int pages;

        if (!requests_pending(rs) && !postcopy_budget_left(rs) &&
            !postcopy_readahead_active(rs)) {
            if (now_ms() - t0 > RAM_ITERATE_MAX_WAIT_MS) {
                break;
            }
            qemu_fflush(f);
            unflushed = 0;
            postcopy_wait_budget(rs);
            continue;
        }
        pages = ram_find_and_save_block(rs, f);
        if (pages < 0) {
            break;
        }
        if (pages == 0) {
            done = 1;
            break;
        }
        rs->pc_slice_bytes += ram_channels_transferred(rs, f) - before;
        if (rs->last_was_urgent) {
            /* The faulting vCPU waits for exactly this. */
            qemu_fflush(rs->on_preempt ? rs->preempt_file : f);
            if (!rs->on_preempt) {
                unflushed = 0;
            }
            postcopy_readahead_open(rs);
        } else {
            unflushed += qemu_file_transferred(f) - before;
            if (!postcopy_readahead_active(rs)) {
                rs->ra_block = NULL;
            }
            if (unflushed >= POSTCOPY_FLUSH_BYTES) {
                qemu_fflush(f);
                unflushed = 0;
            }
        }
        if (qemu_file_get_error(f) ||
            (rs->preempt_file && qemu_file_get_error(rs->preempt_file)) ||
            now_ms() - t0 > RAM_ITERATE_MAX_WAIT_MS) {
            break;
        }
    }
    return done;
}

int ram_save_iterate(RAMState *rs, QEMUFile *f, GError **errp)
{
    int64_t t0 = now_ms();
    int done = 0;
    unsigned int i = 0;

    if (!rs->active) {
        error_setg(errp, "RAM migration is not set up");
        return -1;
    }
    if (rs->in_postcopy) {
        rcu_read_lock();
        done = ram_save_iterate_postcopy(rs, f);
        rcu_read_unlock();
        /* The section's records end on the main channel. */
        ram_channel_for(rs, f, false);
        put_eos(rs, f);
        qemu_fflush(f);
        if (rs->preempt_file &&
            qemu_file_get_error_obj(rs->preempt_file, errp)) {
            return -1;
        }
        return qemu_file_get_error_obj(f, errp) ? -1 : done;
    }
    rcu_read_lock();
    while (!qemu_file_rate_limit(f)) {
        int pages = ram_find_and_save_block(rs, f);

        if (pages < 0) {
            break;
        }
        if (pages == 0) {
            done = 1;
            break;
        }
        /* Reading the clock every page would cost more than it saves. */
        if ((++i & 63) == 0 && now_ms() - t0 > RAM_ITERATE_MAX_WAIT_MS) {
            break;
        }
    }
    put_eos(rs, f);
    rcu_read_unlock();
    if (qemu_file_get_error_obj(f, errp)) {
        return -1;
    }
    return done;
}

bool ram_save_complete(RAMState *rs, QEMUFile *f, GError **errp)
{
    trace_ram_save_complete(rs->in_postcopy);
    if (!rs->active) {
        error_setg(errp, "RAM migration is not set up");
        return false;
    }
    /*
     * After the switch the VM is stopped and the bitmap is exact: a sync
     * could only add pages the destination already holds.
     */
    if (!rs->in_postcopy && !migration_bitmap_sync(rs, errp)) {
        return false;
    }
    rcu_read_lock();
    for (;;) {
        int pages = ram_find_and_save_block(rs, f);

        if (pages <= 0) {
            break;
        }
    }
    ram_channel_for(rs, f, false);
    put_eos(rs, f);
    rcu_read_unlock();
    if (rs->preempt_file && qemu_fflush(rs->preempt_file) < 0) {
        qemu_file_get_error_obj(rs->preempt_file, errp);
        return false;
    }
    return qemu_file_get_error_obj(f, errp) == 0;
}

/* ---------------------------------------------------------------------- */
/* Postcopy switch: discards */

typedef struct DiscardBatch {
    RAMBlock *rb;
    RamDiscardSendFn fn;
    void *opaque;
    uint16_t n;
    uint64_t start[MAX_DISCARDS_PER_COMMAND];
    uint64_t length[MAX_DISCARDS_PER_COMMAND];
    long total;
    unsigned cmds;              /* DISCARD commands sent */
    bool failed;
} DiscardBatch;

static void discard_flush(DiscardBatch *b)
{
    if (b->n && !b->failed) {
        b->cmds++;
        if (b->fn(b->opaque, b->rb->idstr, b->n, b->start, b->length) < 0) {
            b->failed = true;
        }
    }
    b->n = 0;
}

/* Queue the target pages [first, end) as one range. */
static void discard_add(DiscardBatch *b, unsigned long first,
                        unsigned long end)
{
    b->start[b->n] = (uint64_t)first << TARGET_PAGE_BITS;
    b->length[b->n] = (uint64_t)(end - first) << TARGET_PAGE_BITS;
    trace_postcopy_discard_send_range(b->rb->idstr, b->start[b->n],
                                      b->length[b->n]);
    b->n++;
    b->total++;
    if (b->n == MAX_DISCARDS_PER_COMMAND) {
        discard_flush(b);
    }
}

/*
 * Host pages with anything left to send become wholly "to send" (they are
 * placed atomically) and wholly discarded.  Returns the number of target
 * pages added to bmap.
 */
static unsigned long discard_chunk(RAMBlock *rb, unsigned long *bmap,
                                   unsigned long *disc)
{
    unsigned long npages = ramblock_pages(rb);
    unsigned long hp = ramblock_host_page_pages(rb);
    unsigned long added = 0;
    unsigned long page = find_first_bit(bmap, npages);

    while (page < npages) {
        unsigned long first = QEMU_ALIGN_DOWN(page, hp);
        unsigned long end = MIN(first + hp, npages);
        unsigned long n = end - first;
        added += n - bitmap_count_one_range(bmap, first, n);
        bitmap_set(bmap, first, n);
        /*
         * Never-sent pages are discarded too (as QEMU 7.2 does): the
         * destination may hold them although we never sent them (a
         * transparent huge page filled around a neighbour, a zero page
         * mapped by a read), and placing over them would fail (EEXIST).
         */
        bitmap_set(disc, first, n);
        page = find_next_bit(bmap, npages, end);
    }
    return added;
}

long ram_postcopy_block_discard(RAMState *rs, RAMBlock *rb,
                                RamDiscardSendFn fn, void *opaque)
{
    unsigned long *bmap = rb->bmap;
    unsigned long npages = ramblock_pages(rb);
    unsigned long *disc;
    unsigned long page, added;
    DiscardBatch b = { .rb = rb, .fn = fn, .opaque = opaque };

    if (!bmap) {
        return 0;
    }
    disc = bitmap_new(npages);
    qemu_mutex_lock(&rs->bitmap_mutex);
    if (ramblock_host_page_pages(rb) == 1) {
        /*
         * Target page == host page: nothing to widen, the dirty map is
         * the discard map.  A word-wise copy instead of a per-page walk
         * (all of a 1 GiB block can be dirty here, inside the downtime).
         */
        bitmap_copy(disc, bmap, npages);
        added = 0;
    } else {
        added = discard_chunk(rb, bmap, disc);
    }
    rs->migration_dirty_pages += added;
    qemu_mutex_unlock(&rs->bitmap_mutex);
    page = find_first_bit(disc, npages);
    while (page < npages) {
        unsigned long end = find_next_zero_bit(disc, npages, page);

        discard_add(&b, page, end);
        page = find_next_bit(disc, npages, end);
    }
    discard_flush(&b);
    trace_postcopy_discard_send_finish(rb->idstr, b.total, b.cmds);
    g_free(disc);
    return b.failed ? -1 : b.total;
}

typedef struct DiscardSendCtx {
    RAMState *rs;
    QEMUFile *f;
} DiscardSendCtx;

static int discard_send_cmd(void *opaque, const char *idstr, uint16_t n,
                            const uint64_t *start, const uint64_t *length)
{
    DiscardSendCtx *c = opaque;
    uint64_t bytes = 1 + 2 + 2 + 3 + strlen(idstr) + 16 * n;

    counters_add_bytes(c->rs, bytes);
    return qemu_savevm_send_postcopy_ram_discard(c->f, idstr, n, start,
                                                 length);
}

bool ram_postcopy_send_discard_bitmap(RAMState *rs, QEMUFile *f,
                                      GError **errp)
{
    DiscardSendCtx ctx = { .rs = rs, .f = f };
    GPtrArray *blocks;
    bool ok = true;

    trace_ram_postcopy_send_discard_bitmap();
    if (!rs->active) {
        error_setg(errp, "RAM migration is not set up");
        return false;
    }
    if (!migration_bitmap_sync(rs, errp)) {
        return false;
    }
    /* Restart the scan; the first postcopy record names its block. */
    rs->last_seen_block = NULL;
    rs->last_page = 0;
    rs->last_sent_block = NULL;
    blocks = ram_blocks_snapshot(true);
    rcu_read_lock();
    for (guint i = 0; ok && i < blocks->len; i++) {
        RAMBlock *rb = blocks->pdata[i];
        if (ram_postcopy_block_discard(rs, rb, discard_send_cmd, &ctx) < 0) {
            ok = false;
        }
    }
    rcu_read_unlock();
    g_ptr_array_free(blocks, true);
    if (!ok || qemu_file_get_error(f)) {
        qemu_file_get_error_obj(f, errp);
        if (errp && !*errp) {
            error_setg(errp, "postcopy: sending the discard commands failed");
        }
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------------- */
/* Postcopy recovery, source side */

/* Bytes of rb's RECV_BITMAP data: one bit per target page, in u64s. */
static uint64_t recv_bitmap_size(RAMBlock *rb)
{
    return DIV_ROUND_UP(ramblock_pages(rb), 64) * 8;
}

/*
 * The destination's received map becomes our dirty map: everything it
 * does not hold is sent again, whole host pages (it drops half-built
 * ones, and places only whole ones).
 */
static void recv_bitmap_apply(RAMState *rs, RAMBlock *rb,
                              const unsigned long *recv)
{
    unsigned long n = ramblock_pages(rb);
    unsigned long hp = ramblock_host_page_pages(rb);
    unsigned long *dirty = bitmap_new(n);
    unsigned long *old;
    unsigned long before, after;

    for (unsigned long p = 0; p < n; p += hp) {
        unsigned long len = MIN(hp, n - p);

        if (find_next_zero_bit(recv, p + len, p) < p + len) {
            bitmap_set(dirty, p, len);
        }
    }
    after = bitmap_count_one(dirty, n);
    qemu_mutex_lock(&rs->bitmap_mutex);
    old = rb->bmap;
    before = old ? bitmap_count_one(old, n) : 0;
    rs->migration_dirty_pages += after;
    rs->migration_dirty_pages -= MIN(before, rs->migration_dirty_pages);
    qemu_mutex_unlock(&rs->bitmap_mutex);
    trace_ram_dirty_bitmap_reload(rb->idstr, before, after);
    bitmap_replace(&rb->bmap, dirty);
}

bool ram_postcopy_recv_bitmap(RAMState *rs, QEMUFile *rp, const char *idstr,
                              GError **errp)
{
    g_autofree uint64_t *words = NULL;
    g_autofree unsigned long *recv = NULL;
    uint64_t size, want, end, nwords;
    RAMBlock *rb;

    rcu_read_lock();
    rb = qemu_ram_block_by_name(idstr);
    rcu_read_unlock();
    if (!rb || !(rb->flags & RAM_MIGRATABLE) || !rs->active) {
        error_setg(errp, "RECV_BITMAP reply for unknown RAMBlock '%s'", idstr);
        return false;
    }
    want = recv_bitmap_size(rb);
    size = qemu_get_be64(rp);
    if (qemu_file_get_error_obj(rp, errp)) {
        return false;
    }
    if (size != want) {
        error_setg(errp, "RECV_BITMAP reply for '%s': %" PRIu64 " bytes of "
                   "bitmap, expected %" PRIu64 " (%lu pages): the blocks "
                   "differ", idstr, size, want, ramblock_pages(rb));
        return false;
    }
    nwords = size / 8;
    words = g_new(uint64_t, nwords);
    if (qemu_get_buffer(rp, (uint8_t *)words, size) != size) {
        qemu_file_get_error_obj(rp, errp);
        if (errp && !*errp) {
            error_setg(errp, "RECV_BITMAP reply for '%s': short bitmap",
                       idstr);
        }
        return false;
    }
    end = qemu_get_be64(rp);
    if (qemu_file_get_error_obj(rp, errp)) {
        return false;
    }
    if (end != RECV_BITMAP_ENDING) {
        error_setg(errp, "RECV_BITMAP reply for '%s': bad end marker 0x%016"
                   PRIx64, idstr, end);
        return false;
    }
    recv = bitmap_new(nwords * 64);
    for (uint64_t i = 0; i < nwords; i++) {
        uint64_t w = GUINT64_FROM_LE(words[i]);

        for (unsigned k = 0; k < 64 / BITS_PER_LONG; k++) {
            recv[i * (64 / BITS_PER_LONG) + k] =
                (unsigned long)(w >> (k * BITS_PER_LONG));
        }
    }
    recv_bitmap_apply(rs, rb, recv);
    return true;
}

void ram_postcopy_resume_prepare(RAMState *rs)
{
    /* The destination asks again for what it still waits for. */
    requests_clear(rs);
    rs->last_seen_block = NULL;
    rs->last_page = 0;
    rs->last_sent_block = NULL;
    rs->last_was_urgent = false;
    rs->pc_slice_start = 0;
    rs->pc_slice_bytes = 0;
    rs->ra_block = NULL;
    rs->ra_end = 0;
    rs->on_preempt = false;
}

uint64_t ram_save_pending(RAMState *rs, uint64_t max_size)
{
    uint64_t remaining = ram_bytes_remaining(rs);

    /* Close to the end: refresh, the estimate may be stale. */
    if (rs->active && remaining < max_size) {
        GError *err = NULL;

        if (!migration_bitmap_sync(rs, &err)) {
            g_error_free(err);
        }
        remaining = ram_bytes_remaining(rs);
    }
    return remaining;
}

void ram_save_cleanup(RAMState *rs)
{
    bool was_active;

    qemu_mutex_lock(&rs->req_lock);
    was_active = rs->active;
    rs->active = false;
    qemu_mutex_unlock(&rs->req_lock);
    if (!was_active) {
        return;
    }
    trace_ram_save_cleanup();
    memory_global_dirty_log_stop();
    ram_bitmaps_free();
    requests_clear(rs);
}

/* ---------------------------------------------------------------------- */
/* Loading */

/*
 * Postcopy placement: the target pages of one host page are gathered in a
 * temporary page and placed together, atomically, with userfaultfd.
 */
typedef struct PostcopyTmpPage {
    uint8_t *buf;
    size_t size;
    RAMBlock *rb;               /* host page being gathered */
    ram_addr_t host_offset;
    unsigned long got;          /* target pages gathered so far */
    bool all_zero;
} PostcopyTmpPage;

/*
 * The channels that may carry RAM records.  Each has its own "previous
 * block" (CONTINUE refers to the last record of the same channel) and its
 * own temporary page, because they are read by different threads.
 */
typedef enum RAMChannel {
    RAM_CHANNEL_PRECOPY,        /* the main stream */
    RAM_CHANNEL_POSTCOPY,       /* the postcopy-preempt channel */
    RAM_CHANNEL_MAX,
} RAMChannel;

typedef struct RAMLoadChannel {
    RAMBlock *last_block;
    PostcopyTmpPage tmp;
    RAMDenseTracker dense;
} RAMLoadChannel;

struct RAMLoadState {
    bool postcopy_advised;
    RAMDenseAdvisor *dense;
    RAMLoadChannel ch[RAM_CHANNEL_MAX];
};

RAMLoadState *ram_load_state_new(void)
{
    RAMLoadState *rls = g_new0(RAMLoadState, 1);

    rls->dense = ram_dense_new();
    return rls;
}

RAMDenseAdvisor *ram_load_dense(RAMLoadState *rls)
{
    return rls->dense;
}

static void ram_load_channels_reset(RAMLoadState *rls)
{
    for (int i = 0; i < RAM_CHANNEL_MAX; i++) {
        free(rls->ch[i].tmp.buf);
        memset(&rls->ch[i], 0, sizeof(rls->ch[i]));
    }
}

void ram_load_state_free(RAMLoadState *rls)
{
    if (rls) {
        ram_load_channels_reset(rls);
        ram_dense_free(rls->dense);
        g_free(rls);
    }
}

void ram_load_set_postcopy_advised(MigrationIncomingState *mis,
                                   bool advised)
{
    mis->ram_load->postcopy_advised = advised;
}

void ram_load_discard_tmp_pages(MigrationIncomingState *mis)
{
    for (int i = 0; i < RAM_CHANNEL_MAX; i++) {
        mis->ram_load->ch[i].tmp.got = 0;
        /* A new channel names its block first; CONTINUE before is bad. */
        mis->ram_load->ch[i].last_block = NULL;
    }
}

bool ram_load_setup(MigrationIncomingState *mis, GError **errp)
{
    GPtrArray *blocks = ram_blocks_snapshot(true);

    ram_load_channels_reset(mis->ram_load);
    ram_dense_reset(mis->ram_load->dense);
    for (guint i = 0; i < blocks->len; i++) {
        RAMBlock *rb = blocks->pdata[i];

        bitmap_replace(&rb->receivedmap, bitmap_new(ramblock_pages(rb)));
        bitmap_replace(&rb->zeromap, qemu_ram_untouched_map(rb));
    }
    /*
     * The load writes pages one at a time, all over RAM, and leaves the
     * zero pages untouched: with huge pages every first write would
     * allocate and clear 2 MiB, zero pages included (4x the destination's
     * CPU for a mostly-zero guest on a nested host; docs/performance.md).
     */
    qemu_ram_advise_huge(false);
    g_ptr_array_free(blocks, true);
    return true;
}

void ram_load_cleanup(MigrationIncomingState *mis)
{
    GPtrArray *blocks = ram_blocks_snapshot(false);

    /* No multifd channel may still be placing pages (or marking them). */
    multifd_recv_stop(mis->multifd);
    ram_load_channels_reset(mis->ram_load);
    ram_dense_reset(mis->ram_load->dense);
    for (guint i = 0; i < blocks->len; i++) {
        RAMBlock *rb = blocks->pdata[i];

        bitmap_replace(&rb->receivedmap, NULL);
        bitmap_replace(&rb->zeromap, NULL);
    }
    /* The guest runs on: khugepaged may merge its pages from now on. */
    qemu_ram_advise_huge(true);
    g_ptr_array_free(blocks, true);
}

static bool read_block_list(RAMLoadState *rls, QEMUFile *f, uint64_t total,
                            GError **errp)
{
    uint64_t ours = ram_bytes_total();

    if (total != ours) {
        error_setg(errp, "RAM size mismatch: the stream carries %" PRIu64
                   " bytes of RAM, this VM has %" PRIu64, total, ours);
        return false;
    }
    while (total > 0) {
        char id[256];
        uint64_t len;
        RAMBlock *rb;

        if (!qemu_get_counted_string(f, id)) {
            error_setg(errp, "Bad RAMBlock name in the block list");
            return false;
        }
        len = qemu_get_be64(f);
        if (qemu_file_get_error_obj(f, errp)) {
            return false;
        }
        rb = qemu_ram_block_by_name(id);
        if (!rb || !(rb->flags & RAM_MIGRATABLE)) {
            error_setg(errp, "Unknown ramblock \"%s\", cannot accept "
                       "migration", id);
            return false;
        }
        if (len != rb->used_length) {
            error_setg(errp, "Length mismatch: %s: stream 0x%" PRIx64
                       " != local 0x%" PRIx64, id, len,
                       (uint64_t)rb->used_length);
            return false;
        }
        if (rls->postcopy_advised && migrate_postcopy_ram() &&
            rb->page_size != TARGET_PAGE_SIZE) {
            uint64_t remote = qemu_get_be64(f);

            if (remote != rb->page_size) {
                error_setg(errp, "RAMBlock %s: page size mismatch: "
                           "stream 0x%" PRIx64 " != local 0x%zx", id,
                           remote, rb->page_size);
                return false;
            }
        }
        if (len > total) {
            error_setg(errp, "RAMBlock %s (0x%" PRIx64 " bytes) exceeds "
                       "the announced RAM size", id, len);
            return false;
        }
        total -= len;
    }
    return qemu_file_get_error_obj(f, errp) == 0;
}

/* The block a ZERO/PAGE record refers to, checking the offset. */
static RAMBlock *load_block(RAMLoadChannel *ch, QEMUFile *f, uint64_t flags,
                            uint64_t offset, GError **errp)
{
    RAMBlock *rb;

    if (flags & RAM_SAVE_FLAG_CONTINUE) {
        rb = ch->last_block;
        if (!rb) {
            error_setg(errp, "RAM page record with CONTINUE but no "
                       "previous block");
            return NULL;
        }
    } else {
        char id[256];

        if (!qemu_get_counted_string(f, id)) {
            qemu_file_get_error_obj(f, errp);
            if (errp && !*errp) {
                error_setg(errp, "Bad RAMBlock name in a page record");
            }
            return NULL;
        }
        rb = qemu_ram_block_by_name(id);
        if (!rb || !(rb->flags & RAM_MIGRATABLE)) {
            error_setg(errp, "Unknown ramblock \"%s\", cannot accept "
                       "migration", id);
            return NULL;
        }
    }
    if (!QEMU_IS_ALIGNED(offset, TARGET_PAGE_SIZE) ||
        !offset_in_ramblock(rb, offset) ||
        rb->used_length - offset < TARGET_PAGE_SIZE) {
        error_setg(errp, "Illegal RAM offset 0x%" PRIx64 " in block \"%s\" "
                   "(used length 0x%" PRIx64 ")", offset, rb->idstr,
                   (uint64_t)rb->used_length);
        return NULL;
    }
    ch->last_block = rb;
    return rb;
}

static void mark_received(RAMBlock *rb, uint64_t offset)
{
    unsigned long *map = rcu_dereference(rb->receivedmap);

    if (map) {
        set_bit_atomic(offset >> TARGET_PAGE_BITS, map);
    }
}

/* Untouched since the load began, and not received since: zero. */
static bool page_known_zero(RAMBlock *rb, uint64_t offset)
{
    unsigned long *zero = rcu_dereference(rb->zeromap);
    unsigned long *received = rcu_dereference(rb->receivedmap);
    unsigned long page = offset >> TARGET_PAGE_BITS;

    return zero && test_bit(page, zero) &&
           !(received && test_bit_atomic(page, received));
}

static bool load_page(RAMLoadState *rls, RAMLoadChannel *ch, QEMUFile *f,
                      uint64_t flags, uint64_t offset, GError **errp)
{
    RAMBlock *rb = load_block(ch, f, flags, offset, errp);
    uint8_t *host;

    if (!rb) {
        return false;
    }
    trace_ram_load_loop(rb->idstr, offset, flags);
    host = ramblock_ptr(rb, offset);
    if (flags & RAM_SAVE_FLAG_ZERO) {
        int fill = qemu_get_byte(f);

        if (qemu_file_get_error_obj(f, errp)) {
            return false;
        }
        /*
         * Writing zeros to an untouched page would allocate it, and even
         * reading it faults in the zero page: skip the pages known zero.
         */
        if (fill != 0 || (!page_known_zero(rb, offset) &&
                          !buffer_is_zero(host, TARGET_PAGE_SIZE))) {
            memset(host, fill, TARGET_PAGE_SIZE);
        }
    } else {
        ram_dense_track_page(rls->dense, &ch->dense, rb, offset);
        if (qemu_get_buffer(f, host, TARGET_PAGE_SIZE) != TARGET_PAGE_SIZE) {
            qemu_file_get_error_obj(f, errp);
            if (errp && !*errp) {
                error_setg(errp, "Short RAM page in block \"%s\"", rb->idstr);
            }
            return false;
        }
    }
    mark_received(rb, offset);
    return true;
}

static bool postcopy_tmp_prepare(PostcopyTmpPage *tmp, RAMBlock *rb,
                                 ram_addr_t host_offset, GError **errp)
{
    size_t size = MAX(rb->page_size, (size_t)TARGET_PAGE_SIZE);

    if (tmp->size < size) {
        void *p;

        free(tmp->buf);
        tmp->buf = NULL;
        tmp->size = 0;
        if (posix_memalign(&p, size, size)) {
            error_setg(errp, "postcopy: cannot allocate a %zu byte "
                       "temporary page", size);
            return false;
        }
        tmp->buf = p;
        tmp->size = size;
    }
    tmp->rb = rb;
    tmp->host_offset = host_offset;
    tmp->got = 0;
    tmp->all_zero = true;
    return true;
}

static bool load_page_postcopy(MigrationIncomingState *mis,
                               RAMLoadChannel *ch, QEMUFile *f,
                               uint64_t flags, uint64_t offset,
                               GError **errp)
{
    PostcopyTmpPage *tmp = &ch->tmp;
    RAMBlock *rb = load_block(ch, f, flags, offset, errp);
    size_t hps;
    ram_addr_t hp_off;
    unsigned long need;
    uint8_t *dst;
    const uint8_t *src;

    if (!rb) {
        return false;
    }
    hps = MAX(rb->page_size, (size_t)TARGET_PAGE_SIZE);
    hp_off = QEMU_ALIGN_DOWN(offset, hps);
    need = hps >> TARGET_PAGE_BITS;
    if (tmp->got == 0) {
        if (!postcopy_tmp_prepare(tmp, rb, hp_off, errp)) {
            return false;
        }
    } else if (tmp->rb != rb || tmp->host_offset != hp_off) {
        error_setg(errp, "postcopy: non-same host page: page 0x%" PRIx64
                   " of \"%s\" arrived while host page 0x%" PRIx64 " of "
                   "\"%s\" has %lu of %lu target pages", offset, rb->idstr,
                   (uint64_t)tmp->host_offset, tmp->rb->idstr,
                   tmp->got, need);
        return false;
    }
    if (offset != hp_off + (tmp->got << TARGET_PAGE_BITS)) {
        error_setg(errp, "postcopy: page 0x%" PRIx64 " of \"%s\" out of "
                   "order in its host page (expected 0x%" PRIx64 ")", offset,
                   rb->idstr, (uint64_t)(hp_off +
                                         (tmp->got << TARGET_PAGE_BITS)));
        return false;
    }
    dst = tmp->buf + (offset - hp_off);
    src = tmp->buf;
    if (flags & RAM_SAVE_FLAG_ZERO) {
        int fill = qemu_get_byte(f);

        memset(dst, fill, TARGET_PAGE_SIZE);
        if (fill) {
            tmp->all_zero = false;
        }
    } else {
        uint8_t *p = dst;

        /* A 4 KiB host page is placed straight from the stream buffer. */
        if (need == 1) {
            if (qemu_get_buffer_in_place(f, &p, TARGET_PAGE_SIZE) !=
                TARGET_PAGE_SIZE) {
                p = NULL;
            }
            src = p;
        } else if (qemu_get_buffer(f, dst, TARGET_PAGE_SIZE) !=
                   TARGET_PAGE_SIZE) {
            p = NULL;
        }
        if (!p) {
            qemu_file_get_error_obj(f, errp);
            if (errp && !*errp) {
                error_setg(errp, "Short RAM page in block \"%s\"",
                           rb->idstr);
            }
            return false;
        }
        tmp->all_zero = false;
    }
    if (qemu_file_get_error_obj(f, errp)) {
        return false;
    }
    if (++tmp->got < need) {
        return true;
    }
    tmp->got = 0;
    if (tmp->all_zero) {
        return postcopy_place_page_zero(mis, rb, hp_off, errp);
    }
    return postcopy_place_page(mis, rb, hp_off, src, errp);
}

static bool ram_load_postcopy(MigrationIncomingState *mis,
                              RAMLoadChannel *ch, QEMUFile *f,
                              GError **errp)
{
    for (;;) {
        uint64_t word = qemu_get_be64(f);
        uint64_t offset = word & TARGET_PAGE_MASK;
        uint64_t flags = word & ~TARGET_PAGE_MASK;

        if (qemu_file_get_error_obj(f, errp)) {
            return false;
        }
        trace_ram_load_postcopy_loop((int)(ch - mis->ram_load->ch), offset,
                                     flags);
        switch (flags) {
        case RAM_SAVE_FLAG_ZERO:
        case RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE:
        case RAM_SAVE_FLAG_PAGE:
        case RAM_SAVE_FLAG_PAGE | RAM_SAVE_FLAG_CONTINUE:
            if (!load_page_postcopy(mis, ch, f, flags, offset, errp)) {
                return false;
            }
            break;
        case RAM_SAVE_FLAG_EOS:
            if (offset) {
                error_setg(errp, "RAM EOS record with offset 0x%" PRIx64,
                           offset);
                return false;
            }
            return true;
        case RAM_SAVE_FLAG_MEM_SIZE:
            error_setg(errp, "postcopy: MEM_SIZE record after "
                       "POSTCOPY_LISTEN");
            return false;
        default:
            if (flags & RAM_SAVE_FLAG_XBZRLE) {
                error_setg(errp, "postcopy: XBZRLE page 0x%" PRIx64 " "
                           "cannot be placed atomically", offset);
            } else {
                error_setg(errp, "postcopy: unknown combination of "
                           "migration flags: 0x%" PRIx64 " (record 0x%016"
                           PRIx64 ")", flags, word);
            }
            return false;
        }
    }
}

bool ram_load_postcopy_preempt(MigrationIncomingState *mis, QEMUFile *f,
                               GError **errp)
{
    bool ok;

    rcu_read_lock();
    ok = ram_load_postcopy(mis, &mis->ram_load->ch[RAM_CHANNEL_POSTCOPY], f,
                           errp);
    rcu_read_unlock();
    return ok;
}

/*
 * Which channel f is.  Once postcopy listens, the listen thread reads the
 * main stream and places pages: RAM from any other file (the PACKAGED
 * blob the main loader is still reading) would race with it over the
 * channel's state and could overwrite placed pages, so it is refused.
 */
static RAMLoadChannel *load_channel(MigrationIncomingState *mis, QEMUFile *f,
                                    bool postcopy, GError **errp)
{
    if (!postcopy) {
        return &mis->ram_load->ch[RAM_CHANNEL_PRECOPY];
    }
    if (f == mis->from_src_file) {
        return &mis->ram_load->ch[RAM_CHANNEL_PRECOPY];
    }
    error_setg(errp, "postcopy: RAM records after POSTCOPY_LISTEN must "
               "come on the main stream, not inside the PACKAGED blob");
    return NULL;
}

bool ram_load(MigrationIncomingState *mis, QEMUFile *f, int version_id,
              GError **errp)
{
    bool postcopy = postcopy_is_running(mis);
    RAMLoadChannel *ch;
    bool ok = true;

    if (version_id != RAM_SECTION_VERSION) {
        error_setg(errp, "Unsupported RAM section version %d (want %d)",
                   version_id, RAM_SECTION_VERSION);
        return false;
    }
    ch = load_channel(mis, f, postcopy, errp);
    if (!ch) {
        return false;
    }
    if (postcopy) {
        rcu_read_lock();
        ok = ram_load_postcopy(mis, ch, f, errp);
        rcu_read_unlock();
        trace_ram_load_complete(ok ? 0 : -1);
        return ok;
    }
    ram_dense_enable(mis->ram_load->dense, !mis->ram_load->postcopy_advised);
    rcu_read_lock();
    while (ok) {
        uint64_t word = qemu_get_be64(f);
        uint64_t offset = word & TARGET_PAGE_MASK;
        uint64_t flags = word & ~TARGET_PAGE_MASK;

        if (qemu_file_get_error_obj(f, errp)) {
            ok = false;
            break;
        }
        switch (flags) {
        case RAM_SAVE_FLAG_MEM_SIZE:
            ok = read_block_list(mis->ram_load, f, offset, errp);
            break;
        case RAM_SAVE_FLAG_ZERO:
        case RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE:
        case RAM_SAVE_FLAG_PAGE:
        case RAM_SAVE_FLAG_PAGE | RAM_SAVE_FLAG_CONTINUE:
            ok = load_page(mis->ram_load, ch, f, flags, offset, errp);
            break;
        case RAM_SAVE_FLAG_EOS:
            if (offset) {
                error_setg(errp, "RAM EOS record with offset 0x%" PRIx64,
                           offset);
                ok = false;
            } else if (mis->multifd) {
                /* Everything sent before this EOS is in place after it. */
                ok = multifd_recv_sync(mis->multifd, qemu_file_get_ioc(f),
                                       migrate_net_timeout(), errp);
            }
            goto out;
        default:
            error_setg(errp, "Unknown combination of migration flags: 0x%"
                       PRIx64 " (record 0x%016" PRIx64 ")", flags, word);
            ok = false;
            break;
        }
    }
out:
    rcu_read_unlock();
    trace_ram_load_complete(ok ? 0 : -1);
    return ok;
}

/* ---------------------------------------------------------------------- */
/* Registration with savevm */

/*
 * The section handlers are registered once for the process; they act on
 * the current outgoing or incoming migration object.
 */
static RAMState *src_ram(void)
{
    return migrate_get_current()->ram;
}

/* Hand a GError to the file, where savevm picks up the message. */
static int ram_fail(QEMUFile *f, GError *err)
{
    qemu_file_set_error_obj(f, -EINVAL, err);
    return -EINVAL;
}

static int ram_h_save_setup(QEMUFile *f, void *opaque)
{
    GError *err = NULL;

    return ram_save_setup(src_ram(), f, &err) ? 0 : ram_fail(f, err);
}

static int ram_h_save_iterate(QEMUFile *f, void *opaque)
{
    GError *err = NULL;
    int ret = ram_save_iterate(src_ram(), f, &err);

    return ret < 0 ? ram_fail(f, err) : ret;
}

static int ram_h_save_complete(QEMUFile *f, void *opaque)
{
    GError *err = NULL;

    return ram_save_complete(src_ram(), f, &err) ? 0 : ram_fail(f, err);
}

static void ram_h_pending(uint64_t remaining, uint64_t *must_precopy,
                          uint64_t *can_postcopy)
{
    if (migrate_postcopy_ram()) {
        *can_postcopy += remaining;
    } else {
        *must_precopy += remaining;
    }
}

static void ram_h_pending_estimate(void *opaque, uint64_t *must_precopy,
                                   uint64_t *can_postcopy)
{
    ram_h_pending(ram_bytes_remaining(src_ram()), must_precopy,
                  can_postcopy);
}

static void ram_h_pending_exact(void *opaque, uint64_t *must_precopy,
                                uint64_t *can_postcopy)
{
    ram_h_pending(ram_save_pending(src_ram(), UINT64_MAX), must_precopy,
                  can_postcopy);
}

static void ram_h_save_cleanup(void *opaque)
{
    ram_save_cleanup(src_ram());
}

static bool ram_h_has_postcopy(void *opaque)
{
    return migrate_postcopy_ram();
}

static int ram_h_load_setup(QEMUFile *f, void *opaque)
{
    GError *err = NULL;

    return ram_load_setup(migration_incoming_get_current(), &err) ?
           0 : ram_fail(f, err);
}

static int ram_h_load_state(QEMUFile *f, void *opaque, int version_id)
{
    GError *err = NULL;

    return ram_load(migration_incoming_get_current(), f, version_id, &err) ?
           0 : ram_fail(f, err);
}

static int ram_h_load_cleanup(void *opaque)
{
    ram_load_cleanup(migration_incoming_get_current());
    return 0;
}

static const SaveVMHandlers ram_handlers = {
    .save_setup = ram_h_save_setup,
    .save_live_iterate = ram_h_save_iterate,
    .save_live_complete_precopy = ram_h_save_complete,
    .save_live_complete_postcopy = ram_h_save_complete,
    .state_pending_estimate = ram_h_pending_estimate,
    .state_pending_exact = ram_h_pending_exact,
    .save_cleanup = ram_h_save_cleanup,
    .has_postcopy = ram_h_has_postcopy,
    .load_setup = ram_h_load_setup,
    .load_state = ram_h_load_state,
    .load_cleanup = ram_h_load_cleanup,
};

void ram_mig_init(void)
{
    /* -EEXIST on a second call is fine: the handlers are static. */
    register_savevm_live(RAM_SECTION_IDSTR, 0, RAM_SECTION_VERSION,
                         &ram_handlers, NULL);
}

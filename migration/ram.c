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
#include "qemu/bitmap.h"
#include "qemu/cutils.h"
#include "qemu/rcu.h"
#include "exec/ramblock.h"
#include "exec/memory.h"
#include "migration/migration.h"
#include "migration/qemu-file.h"
#include "migration/ram.h"
#include "migration/savevm.h"
#include "monitor/qmp.h"

/* An iteration stops after this long even if the rate limit allows more. */
#define RAM_ITERATE_MAX_WAIT_MS 50

typedef struct RAMState {
    /* Where the background scan resumes. */
    RAMBlock *last_seen_block;
    unsigned long last_page;
    /* Block of the last record written: the next may use CONTINUE. */
    RAMBlock *last_sent_block;
    /* Dirty target pages over all bitmaps (protected by bitmap_mutex). */
    uint64_t migration_dirty_pages;
    GMutex bitmap_mutex;
    /* Dirty-rate bookkeeping between syncs. */
    int64_t time_last_bitmap_sync;      /* ms */
    uint64_t num_dirty_pages_period;
    uint64_t pages_at_last_sync;        /* duplicate + normal then */
    bool in_downtime;
} RAMState;

static RAMState *ram_state;
/* Guards the ram_state pointer against readers in other threads. */
static GMutex ram_state_lock;
static GMutex counters_lock;
static RAMCounters ram_counters;
static RamPageSentHook page_sent_hook;
static void *page_sent_opaque;

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

void ram_set_page_sent_hook(RamPageSentHook hook, void *opaque)
{
    page_sent_hook = hook;
    page_sent_opaque = opaque;
}

/* ---------------------------------------------------------------------- */
/* Counters */

void ram_counters_get(RAMCounters *out)
{
    g_mutex_lock(&counters_lock);
    *out = ram_counters;
    g_mutex_unlock(&counters_lock);
    out->remaining = ram_bytes_remaining();
}

static void counters_add_page(bool zero, uint64_t bytes, bool downtime)
{
    g_mutex_lock(&counters_lock);
    if (zero) {
        ram_counters.duplicate++;
    } else {
        ram_counters.normal++;
    }
    ram_counters.transferred += bytes;
    if (downtime) {
        ram_counters.downtime_bytes += bytes;
    } else {
        ram_counters.precopy_bytes += bytes;
    }
    g_mutex_unlock(&counters_lock);
}

static void counters_add_bytes(uint64_t bytes)
{
    bool downtime = ram_state && ram_state->in_downtime;

    g_mutex_lock(&counters_lock);
    ram_counters.transferred += bytes;
    if (downtime) {
        ram_counters.downtime_bytes += bytes;
    } else {
        ram_counters.precopy_bytes += bytes;
    }
    g_mutex_unlock(&counters_lock);
}

uint64_t ram_bytes_remaining(void)
{
    uint64_t pages = 0;

    /* QMP asks from the main thread while the migration thread may free. */
    g_mutex_lock(&ram_state_lock);
    if (ram_state) {
        g_mutex_lock(&ram_state->bitmap_mutex);
        pages = ram_state->migration_dirty_pages;
        g_mutex_unlock(&ram_state->bitmap_mutex);
    }
    g_mutex_unlock(&ram_state_lock);
    return pages << TARGET_PAGE_BITS;
}

void ram_set_downtime_phase(bool in_downtime)
{
    if (ram_state) {
        ram_state->in_downtime = in_downtime;
    }
}

void ram_fill_query(JsonObject *ram, double mbps)
{
    RAMCounters c;

    ram_counters_get(&c);
    json_object_set_int_member(ram, "transferred", c.transferred);
    json_object_set_int_member(ram, "remaining", c.remaining);
    json_object_set_int_member(ram, "total", ram_bytes_total());
    json_object_set_int_member(ram, "duplicate", c.duplicate);
    json_object_set_int_member(ram, "skipped", 0);
    json_object_set_int_member(ram, "normal", c.normal);
    json_object_set_int_member(ram, "normal-bytes",
                               c.normal << TARGET_PAGE_BITS);
    json_object_set_int_member(ram, "dirty-pages-rate", c.dirty_pages_rate);
    json_object_set_double_member(ram, "mbps", mbps);
    json_object_set_int_member(ram, "dirty-sync-count", c.dirty_sync_count);
    json_object_set_int_member(ram, "postcopy-requests",
                               c.postcopy_requests);
    json_object_set_int_member(ram, "page-size", TARGET_PAGE_SIZE);
    json_object_set_int_member(ram, "multifd-bytes", 0);
    json_object_set_int_member(ram, "pages-per-second", c.pages_per_second);
    json_object_set_int_member(ram, "precopy-bytes", c.precopy_bytes);
    json_object_set_int_member(ram, "downtime-bytes", c.downtime_bytes);
    json_object_set_int_member(ram, "postcopy-bytes", c.postcopy_bytes);
    json_object_set_int_member(ram, "dirty-sync-missed-zero-copy", 0);
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

static void emit_pass_event(uint64_t pass)
{
    JsonObject *data;

    if (!migrate_use_events()) {
        return;
    }
    data = json_object_new();
    json_object_set_int_member(data, "pass", pass);
    qmp_event_emit("MIGRATION_PASS", data);
}

static void update_dirty_rate(RAMState *rs)
{
    int64_t now = now_ms();
    int64_t elapsed = now - rs->time_last_bitmap_sync;
    RAMCounters c;

    if (elapsed < 1) {
        elapsed = 1;
    }
    ram_counters_get(&c);
    g_mutex_lock(&counters_lock);
    ram_counters.dirty_pages_rate =
        rs->num_dirty_pages_period * 1000 / elapsed;
    ram_counters.pages_per_second =
        (c.duplicate + c.normal - rs->pages_at_last_sync) * 1000 / elapsed;
    g_mutex_unlock(&counters_lock);
    rs->pages_at_last_sync = c.duplicate + c.normal;
    rs->num_dirty_pages_period = 0;
    rs->time_last_bitmap_sync = now;
}

bool migration_bitmap_sync(GError **errp)
{
    RAMState *rs = ram_state;
    RAMBlock *rb;
    uint64_t pass;
    bool ok = true;

    if (!rs) {
        error_setg(errp, "RAM migration is not set up");
        return false;
    }
    g_mutex_lock(&rs->bitmap_mutex);
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
    }
    rcu_read_unlock();
    g_mutex_unlock(&rs->bitmap_mutex);
    if (!ok) {
        return false;
    }

    g_mutex_lock(&counters_lock);
    pass = ++ram_counters.dirty_sync_count;
    g_mutex_unlock(&counters_lock);
    update_dirty_rate(rs);
    emit_pass_event(pass);
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
 * Urgent pages requested by the destination (postcopy) would be taken
 * here before the background scan; precopy has none.
 */
static bool get_queued_page(RAMState *rs, PageSearchStatus *pss)
{
    return false;
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

    g_mutex_lock(&rs->bitmap_mutex);
    was_dirty = bmap && test_and_clear_bit_atomic(page, bmap);
    if (was_dirty) {
        rs->migration_dirty_pages--;
    }
    g_mutex_unlock(&rs->bitmap_mutex);
    return was_dirty;
}

static void ram_save_target_page(RAMState *rs, QEMUFile *f, RAMBlock *rb,
                                 unsigned long page)
{
    ram_addr_t offset = (ram_addr_t)page << TARGET_PAGE_BITS;
    uint8_t *p = ramblock_ptr(rb, offset);
    unsigned long *unsent = rcu_dereference(rb->unsentmap);
    uint64_t bytes;
    bool zero = buffer_is_zero(p, TARGET_PAGE_SIZE);

    if (zero) {
        bytes = save_page_header(rs, f, rb, offset | RAM_SAVE_FLAG_ZERO);
        qemu_put_byte(f, 0);
        bytes += 1;
    } else {
        bytes = save_page_header(rs, f, rb, offset | RAM_SAVE_FLAG_PAGE);
        /* Guest memory goes straight into the iovec: no copy. */
        qemu_put_buffer_async(f, p, TARGET_PAGE_SIZE);
        bytes += TARGET_PAGE_SIZE;
    }
    if (unsent) {
        clear_bit_atomic(page, unsent);
    }
    counters_add_page(zero, bytes, rs->in_downtime);
    if (page_sent_hook) {
        page_sent_hook(rb, page, page_sent_opaque);
    }
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
static int ram_find_and_save_block(RAMState *rs, QEMUFile *f)
{
    PageSearchStatus pss = { 0 };
    int pages;

    if (!ram_find_next_page(rs, &pss)) {
        return 0;
    }
    pages = ram_save_host_page(rs, f, &pss);
    rs->last_seen_block = pss.block;
    rs->last_page = pss.page;
    if (qemu_file_get_error(f)) {
        return -1;
    }
    return pages;
}

static void put_eos(QEMUFile *f)
{
    qemu_put_be64(f, RAM_SAVE_FLAG_EOS);
    counters_add_bytes(8);
}

bool ram_save_setup(QEMUFile *f, GError **errp)
{
    RAMState *rs;
    RAMBlock *rb;
    bool postcopy = migrate_postcopy_ram();
    uint64_t bytes = 8;

    if (ram_state) {
        ram_save_cleanup();
    }
    rs = g_new0(RAMState, 1);
    g_mutex_init(&rs->bitmap_mutex);
    g_mutex_lock(&counters_lock);
    memset(&ram_counters, 0, sizeof(ram_counters));
    g_mutex_unlock(&counters_lock);
    ram_bitmaps_alloc(rs, postcopy);
    rs->time_last_bitmap_sync = now_ms();
    g_mutex_lock(&ram_state_lock);
    ram_state = rs;
    g_mutex_unlock(&ram_state_lock);

    if (!memory_global_dirty_log_start(errp)) {
        ram_save_cleanup();
        return false;
    }
    /* The first sync re-arms the log; every page is dirty already. */
    if (!migration_bitmap_sync(errp)) {
        ram_save_cleanup();
        return false;
    }

    qemu_put_be64(f, ram_bytes_total() | RAM_SAVE_FLAG_MEM_SIZE);
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
    counters_add_bytes(bytes);
    put_eos(f);
    return qemu_file_get_error_obj(f, errp) == 0;
}

int ram_save_iterate(QEMUFile *f, GError **errp)
{
    RAMState *rs = ram_state;
    int64_t t0 = now_ms();
    int done = 0;
    unsigned int i = 0;

    if (!rs) {
        error_setg(errp, "RAM migration is not set up");
        return -1;
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
    rcu_read_unlock();
    put_eos(f);
    if (qemu_file_get_error_obj(f, errp)) {
        return -1;
    }
    return done;
}

bool ram_save_complete(QEMUFile *f, GError **errp)
{
    RAMState *rs = ram_state;

    if (!rs) {
        error_setg(errp, "RAM migration is not set up");
        return false;
    }
    if (!migration_bitmap_sync(errp)) {
        return false;
    }
    rcu_read_lock();
    for (;;) {
        int pages = ram_find_and_save_block(rs, f);

        if (pages <= 0) {
            break;
        }
    }
    rcu_read_unlock();
    put_eos(f);
    return qemu_file_get_error_obj(f, errp) == 0;
}

uint64_t ram_save_pending(uint64_t max_size)
{
    uint64_t remaining = ram_bytes_remaining();

    /* Close to the end: refresh, the estimate may be stale. */
    if (ram_state && remaining < max_size) {
        GError *err = NULL;

        if (!migration_bitmap_sync(&err)) {
            g_error_free(err);
        }
        remaining = ram_bytes_remaining();
    }
    return remaining;
}

void ram_save_cleanup(void)
{
    RAMState *rs = ram_state;

    if (!rs) {
        return;
    }
    memory_global_dirty_log_stop();
    ram_bitmaps_free();
    g_mutex_lock(&ram_state_lock);
    ram_state = NULL;
    g_mutex_unlock(&ram_state_lock);
    g_mutex_clear(&rs->bitmap_mutex);
    g_free(rs);
}

/* ---------------------------------------------------------------------- */
/* Loading */

/* Block of the previous record: CONTINUE refers to it, across sections. */
static RAMBlock *load_last_block;
static bool load_postcopy_advised;

void ram_load_set_postcopy_advised(bool advised)
{
    load_postcopy_advised = advised;
}

bool ram_load_setup(GError **errp)
{
    GPtrArray *blocks = ram_blocks_snapshot(true);

    load_last_block = NULL;
    for (guint i = 0; i < blocks->len; i++) {
        RAMBlock *rb = blocks->pdata[i];

        bitmap_replace(&rb->receivedmap, bitmap_new(ramblock_pages(rb)));
    }
    g_ptr_array_free(blocks, true);
    return true;
}

void ram_load_cleanup(void)
{
    GPtrArray *blocks = ram_blocks_snapshot(false);

    load_last_block = NULL;
    for (guint i = 0; i < blocks->len; i++) {
        RAMBlock *rb = blocks->pdata[i];

        bitmap_replace(&rb->receivedmap, NULL);
    }
    g_ptr_array_free(blocks, true);
}

static bool read_block_list(QEMUFile *f, uint64_t total, GError **errp)
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
        if (load_postcopy_advised && migrate_postcopy_ram() &&
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
static RAMBlock *load_block(QEMUFile *f, uint64_t flags, uint64_t offset,
                            GError **errp)
{
    RAMBlock *rb;

    if (flags & RAM_SAVE_FLAG_CONTINUE) {
        rb = load_last_block;
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
    load_last_block = rb;
    return rb;
}

static void mark_received(RAMBlock *rb, uint64_t offset)
{
    unsigned long *map = rcu_dereference(rb->receivedmap);

    if (map) {
        set_bit_atomic(offset >> TARGET_PAGE_BITS, map);
    }
}

static bool load_page(QEMUFile *f, uint64_t flags, uint64_t offset,
                      GError **errp)
{
    RAMBlock *rb = load_block(f, flags, offset, errp);
    uint8_t *host;

    if (!rb) {
        return false;
    }
    host = ramblock_ptr(rb, offset);
    if (flags & RAM_SAVE_FLAG_ZERO) {
        int fill = qemu_get_byte(f);

        if (qemu_file_get_error_obj(f, errp)) {
            return false;
        }
        /* Writing zeros to an untouched page would allocate it. */
        if (fill != 0 || !buffer_is_zero(host, TARGET_PAGE_SIZE)) {
            memset(host, fill, TARGET_PAGE_SIZE);
        }
    } else {
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

bool ram_load(QEMUFile *f, int version_id, GError **errp)
{
    bool ok = true;

    if (version_id != RAM_SECTION_VERSION) {
        error_setg(errp, "Unsupported RAM section version %d (want %d)",
                   version_id, RAM_SECTION_VERSION);
        return false;
    }
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
            ok = read_block_list(f, offset, errp);
            break;
        case RAM_SAVE_FLAG_ZERO:
        case RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE:
        case RAM_SAVE_FLAG_PAGE:
        case RAM_SAVE_FLAG_PAGE | RAM_SAVE_FLAG_CONTINUE:
            ok = load_page(f, flags, offset, errp);
            break;
        case RAM_SAVE_FLAG_EOS:
            if (offset) {
                error_setg(errp, "RAM EOS record with offset 0x%" PRIx64,
                           offset);
                ok = false;
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
    return ok;
}

/* ---------------------------------------------------------------------- */
/* Registration with savevm */

/* Hand a GError to the file, where savevm picks up the message. */
static int ram_fail(QEMUFile *f, GError *err)
{
    qemu_file_set_error_obj(f, -EINVAL, err);
    return -EINVAL;
}

static int ram_h_save_setup(QEMUFile *f, void *opaque)
{
    GError *err = NULL;

    return ram_save_setup(f, &err) ? 0 : ram_fail(f, err);
}

static int ram_h_save_iterate(QEMUFile *f, void *opaque)
{
    GError *err = NULL;
    int ret = ram_save_iterate(f, &err);

    return ret < 0 ? ram_fail(f, err) : ret;
}

static int ram_h_save_complete(QEMUFile *f, void *opaque)
{
    GError *err = NULL;

    return ram_save_complete(f, &err) ? 0 : ram_fail(f, err);
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
    ram_h_pending(ram_bytes_remaining(), must_precopy, can_postcopy);
}

static void ram_h_pending_exact(void *opaque, uint64_t *must_precopy,
                                uint64_t *can_postcopy)
{
    ram_h_pending(ram_save_pending(UINT64_MAX), must_precopy, can_postcopy);
}

static void ram_h_save_cleanup(void *opaque)
{
    ram_save_cleanup();
}

static bool ram_h_has_postcopy(void *opaque)
{
    return migrate_postcopy_ram();
}

static int ram_h_load_setup(QEMUFile *f, void *opaque)
{
    GError *err = NULL;

    return ram_load_setup(&err) ? 0 : ram_fail(f, err);
}

static int ram_h_load_state(QEMUFile *f, void *opaque, int version_id)
{
    GError *err = NULL;

    return ram_load(f, version_id, &err) ? 0 : ram_fail(f, err);
}

static int ram_h_load_cleanup(void *opaque)
{
    ram_load_cleanup();
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

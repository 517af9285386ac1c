/*
 * Dense data into huge pages on the destination (see ram-dense.h).
 */
#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "qemu/bitmap.h"
#include "qemu/rcu.h"
#include "qemu/thread.h"
#include "exec/ramblock.h"
#include "migration/ram-dense.h"
#include "trace/trace-migration.h"

struct RAMDenseAdvisor {
    bool on;                    /* atomic: read without the lock */
    QemuMutex lock;
    /* under lock: RAMBlock * -> bitmap of its advised regions */
    GHashTable *advised;
    unsigned runs;
};

RAMDenseAdvisor *ram_dense_new(void)
{
    RAMDenseAdvisor *d = g_new0(RAMDenseAdvisor, 1);

    qemu_mutex_init(&d->lock);
    d->advised = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    return d;
}

void ram_dense_free(RAMDenseAdvisor *d)
{
    if (d) {
        g_hash_table_destroy(d->advised);
        qemu_mutex_destroy(&d->lock);
        g_free(d);
    }
}

void ram_dense_enable(RAMDenseAdvisor *d, bool on)
{
    qatomic_set(&d->on, on);
}

void ram_dense_reset(RAMDenseAdvisor *d)
{
    qemu_mutex_lock(&d->lock);
    qatomic_set(&d->on, false);
    g_hash_table_remove_all(d->advised);
    d->runs = 0;
    qemu_mutex_unlock(&d->lock);
}

/*
 * Untouched when the load began and nothing received since.  The words
 * are read atomically: multifd's receivers set received bits meanwhile
 * (a region being written by one may still be advised by another, which
 * costs nothing: pages already there keep the region small).
 */
static bool region_untouched(RAMBlock *rb, uint64_t region)
{
    unsigned long *zero = rcu_dereference(rb->zeromap);
    unsigned long *received = rcu_dereference(rb->receivedmap);
    uint64_t first = region * RAM_DENSE_REGION_PAGES;

    if (!zero || !received ||
        first + RAM_DENSE_REGION_PAGES >
        rb->used_length / TARGET_PAGE_SIZE) {
        return false;
    }
    for (uint64_t w = BIT_WORD(first);
         w < BIT_WORD(first + RAM_DENSE_REGION_PAGES); w++) {
        if (~zero[w] || qatomic_read(&received[w])) {
            return false;
        }
    }
    return true;
}

/* Called with d->lock held: the bitmap of rb's advised regions. */
static unsigned long *advised_map_locked(RAMDenseAdvisor *d, RAMBlock *rb)
{
    unsigned long *map = g_hash_table_lookup(d->advised, rb);

    if (!map) {
        map = bitmap_new(DIV_ROUND_UP(rb->used_length, RAM_THP_SIZE));
        g_hash_table_insert(d->advised, rb, map);
    }
    return map;
}

bool ram_dense_advise(RAMDenseAdvisor *d, RAMBlock *rb, uint64_t region)
{
    unsigned long *map;
    int joins;
    bool ok = false;

    if (!qatomic_read(&d->on) || !region_untouched(rb, region)) {
        return false;
    }
    qemu_mutex_lock(&d->lock);
    map = advised_map_locked(d, rb);
    if (test_bit(region, map)) {
        goto out;
    }
    /* Next to an advised region it extends a run; between two, joins. */
    joins = (region > 0 && test_bit(region - 1, map)) +
            ((region + 1) * RAM_THP_SIZE < rb->used_length &&
             test_bit(region + 1, map));
    if (!joins && d->runs >= RAM_DENSE_MAX_RUNS) {
        goto out;
    }
    if (qemu_ram_advise_huge_region(rb, region * RAM_THP_SIZE)) {
        set_bit(region, map);
        d->runs = d->runs + 1 - joins;
        ok = true;
        trace_ram_load_dense_region(rb->idstr, region * RAM_THP_SIZE,
                                    d->runs);
    }
out:
    qemu_mutex_unlock(&d->lock);
    return ok;
}

void ram_dense_track_page(RAMDenseAdvisor *d, RAMDenseTracker *t,
                          RAMBlock *rb, uint64_t offset)
{
    uint64_t region = offset / RAM_THP_SIZE;
    bool after_dense;

    if (t->block == rb && t->region == region) {
        t->pages++;
        return;
    }
    after_dense = t->block == rb && region == t->region + 1 &&
                  t->pages >= RAM_DENSE_MIN_PAGES;
    t->block = rb;
    t->region = region;
    t->pages = 1;
    if (after_dense) {
        ram_dense_advise(d, rb, region);
    }
}

void ram_dense_packet(RAMDenseAdvisor *d, RAMBlock *rb,
                      const uint64_t *offsets, unsigned n)
{
    uint64_t lo = UINT64_MAX, hi = 0;

    if (!d || !n || !qatomic_read(&d->on)) {
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        lo = MIN(lo, offsets[i]);
        hi = MAX(hi, offsets[i]);
    }
    /* half of the pages in the span or more: dense */
    if ((hi - lo) / TARGET_PAGE_SIZE + 1 > 2 * (uint64_t)n) {
        return;
    }
    for (uint64_t r = lo / RAM_THP_SIZE; r <= hi / RAM_THP_SIZE; r++) {
        ram_dense_advise(d, rb, r);
    }
}

/*
 * The destination's dense-data advisor (migration/ram-dense.c): which
 * regions it advises huge, from multifd packets and from the main
 * stream's order, and the cap on runs of advised regions.
 */
#include "qemu/osdep.h"
#include "qemu/bitmap.h"
#include "qemu/rcu.h"
#include "exec/ramblock.h"
#include "migration/ram-dense.h"
#include "vm-flags.h"

#define REGION RAM_THP_SIZE
#define PAGES_PER_REGION RAM_DENSE_REGION_PAGES

/* A block whose pages the load would see as untouched, none received. */
static RAMBlock *block_new(const char *name, uint64_t regions)
{
    RAMBlock *rb = qemu_ram_alloc(name, regions * REGION, NULL, NULL);
    unsigned long pages = regions * PAGES_PER_REGION;

    g_assert_nonnull(rb);
    rb->zeromap = bitmap_new(pages);
    bitmap_set(rb->zeromap, 0, pages);
    rb->receivedmap = bitmap_new(pages);
    return rb;
}

static void block_free(RAMBlock *rb)
{
    g_free(rb->zeromap);
    rb->zeromap = NULL;
    g_free(rb->receivedmap);
    rb->receivedmap = NULL;
    qemu_ram_free(rb);
}

static bool huge_at(RAMBlock *rb, uint64_t region)
{
    return vm_advised_huge(rb->host + region * REGION);
}

static bool thp_available(void)
{
    RAMBlock *rb = qemu_ram_alloc("probe", REGION, NULL, NULL);
    bool ok = qemu_ram_advise_huge_region(rb, 0);

    qemu_ram_free(rb);
    if (!ok) {
        g_test_skip("no transparent huge pages here (madvise refused)");
    }
    return ok;
}

/* Offsets of n pages from first, one every step pages. */
static void offsets(uint64_t *out, uint64_t first, unsigned n,
                    unsigned step)
{
    for (unsigned i = 0; i < n; i++) {
        out[i] = first + (uint64_t)i * step * TARGET_PAGE_SIZE;
    }
}

/*
 * A packet with at least half of the pages of its span advises the
 * regions it covers; a sparser one, a disabled advisor, a touched or
 * received region do not.
 */
static void test_packet(void)
{
    RAMDenseAdvisor *d = ram_dense_new();
    RAMBlock *rb;
    uint64_t off[128];

    if (!thp_available()) {
        ram_dense_free(d);
        return;
    }
    rb = block_new("tp", 8);
    qemu_ram_advise_huge(false);
    offsets(off, 0, 128, 1);
    ram_dense_packet(d, rb, off, 128);
    g_assert_false(huge_at(rb, 0));             /* not enabled yet */
    ram_dense_packet(NULL, rb, off, 128);       /* no advisor: nothing */
    ram_dense_enable(d, true);
    ram_dense_packet(d, rb, off, 128);
    g_assert_true(huge_at(rb, 0));
    /* spanning two regions: both */
    offsets(off, 3 * REGION - 64 * TARGET_PAGE_SIZE, 128, 1);
    ram_dense_packet(d, rb, off, 128);
    g_assert_true(huge_at(rb, 2));
    g_assert_true(huge_at(rb, 3));
    /* one page in two: still dense */
    offsets(off, 4 * REGION, 128, 2);
    ram_dense_packet(d, rb, off, 128);
    g_assert_true(huge_at(rb, 4));
    /* one page in three: sparse */
    offsets(off, 5 * REGION, 128, 3);
    ram_dense_packet(d, rb, off, 128);
    g_assert_false(huge_at(rb, 5));
    /* a region with a page received, and one touched before the load */
    set_bit(6 * PAGES_PER_REGION + 7, rb->receivedmap);
    clear_bit(7 * PAGES_PER_REGION + 500, rb->zeromap);
    offsets(off, 6 * REGION, 128, 1);
    ram_dense_packet(d, rb, off, 128);
    offsets(off, 7 * REGION, 128, 1);
    ram_dense_packet(d, rb, off, 128);
    g_assert_false(huge_at(rb, 6));
    g_assert_false(huge_at(rb, 7));
    /* reset: off, and forgets */
    ram_dense_reset(d);
    g_assert_false(ram_dense_advise(d, rb, 1));
    qemu_ram_advise_huge(true);
    block_free(rb);
    ram_dense_free(d);
}

/* The main stream: after a region half written, the next one. */
static void test_track(void)
{
    RAMDenseAdvisor *d = ram_dense_new();
    RAMDenseTracker t = { 0 };
    RAMBlock *rb, *other;

    if (!thp_available()) {
        ram_dense_free(d);
        return;
    }
    rb = block_new("tt", 6);
    other = block_new("to", 2);
    qemu_ram_advise_huge(false);
    ram_dense_enable(d, true);
    /* region 0: half its pages, exactly the threshold */
    for (unsigned i = 0; i < RAM_DENSE_MIN_PAGES; i++) {
        ram_dense_track_page(d, &t, rb, (uint64_t)i * 2 * TARGET_PAGE_SIZE);
    }
    g_assert_false(huge_at(rb, 0));
    ram_dense_track_page(d, &t, rb, REGION);
    g_assert_true(huge_at(rb, 1));
    /* region 1 gets one page only: region 2 stays small */
    ram_dense_track_page(d, &t, rb, 2 * REGION);
    g_assert_false(huge_at(rb, 2));
    /* region 2 filled, then a jump over region 3: no neighbour, no advice */
    for (unsigned i = 1; i < PAGES_PER_REGION; i++) {
        ram_dense_track_page(d, &t, rb, 2 * REGION + i * TARGET_PAGE_SIZE);
    }
    ram_dense_track_page(d, &t, rb, 4 * REGION);
    g_assert_false(huge_at(rb, 4));
    /* another block's region 1 does not follow this block's region 0 */
    t = (RAMDenseTracker) { 0 };
    for (unsigned i = 0; i < PAGES_PER_REGION; i++) {
        ram_dense_track_page(d, &t, rb, (uint64_t)i * TARGET_PAGE_SIZE);
    }
    ram_dense_track_page(d, &t, other, REGION);
    g_assert_false(huge_at(other, 1));
    qemu_ram_advise_huge(true);
    block_free(other);
    block_free(rb);
    ram_dense_free(d);
}

/*
 * Runs of advised regions are capped; a region next to a run extends it
 * and one between two runs joins them, which the cap allows.
 */
static void test_runs_cap(void)
{
    uint64_t regions = 2 * RAM_DENSE_MAX_RUNS + 8;
    RAMDenseAdvisor *d = ram_dense_new();
    RAMBlock *rb;

    if (!thp_available()) {
        ram_dense_free(d);
        return;
    }
    rb = block_new("tc", regions);
    qemu_ram_advise_huge(false);
    ram_dense_enable(d, true);
    for (uint64_t r = 0; r < RAM_DENSE_MAX_RUNS; r++) {
        g_assert_true(ram_dense_advise(d, rb, 2 * r));
    }
    /* an isolated region would be a new run */
    g_assert_false(ram_dense_advise(d, rb, 2 * RAM_DENSE_MAX_RUNS + 2));
    /* a neighbour of the last run extends it */
    g_assert_true(ram_dense_advise(d, rb, 2 * RAM_DENSE_MAX_RUNS - 1));
    /* joining runs 0 and 1 frees one run */
    g_assert_true(ram_dense_advise(d, rb, 1));
    g_assert_true(ram_dense_advise(d, rb, 2 * RAM_DENSE_MAX_RUNS + 2));
    g_assert_false(ram_dense_advise(d, rb, 2 * RAM_DENSE_MAX_RUNS + 5));
    /* advised once only */
    g_assert_false(ram_dense_advise(d, rb, 0));
    qemu_ram_advise_huge(true);
    block_free(rb);
    ram_dense_free(d);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    rcu_register_thread();
    g_test_add_func("/ram-dense/packet", test_packet);
    g_test_add_func("/ram-dense/track", test_track);
    g_test_add_func("/ram-dense/runs-cap", test_runs_cap);
    return g_test_run();
}

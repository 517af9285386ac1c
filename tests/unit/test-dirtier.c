/*
 * x-dirtier (hw/dirtier.c): the page format and its checker, the software
 * dirty log under a concurrent writer and harvester, and the device
 * itself driven by vm_start/vm_stop with a simulated migration.
 *
 * The property every test below checks is migration's: a harvester that
 * copies each page whose bit it took ends with a copy equal to the
 * writer's memory, whatever the interleaving, once the writer stopped
 * and one last harvest ran.
 */
#include "qemu/osdep.h"
#include "qemu/bitmap.h"
#include "qemu/rcu.h"
#include "qemu/thread.h"
#include "qemu/atomic.h"
#include "qemu/cutils.h"
#include "exec/memory.h"
#include "exec/ramblock.h"
#include "sysemu/runstate.h"
#include "hw/dirtier.h"

#define PAGE TARGET_PAGE_SIZE

/* ---- page format ---- */

static void test_page_format(void)
{
    g_autofree uint64_t *page = g_malloc(PAGE);
    g_autoptr(GError) err = NULL;
    uint64_t gen = 0;

    /*
     * Known answer, computed by tests/functional/dirtier.py: the C writer
     * and the Python checker must agree on every bit of the format.
     */
    g_assert_cmphex(dirtier_fill_seed(0x5000, 7), ==, 0xe55ca8525b59ad9cULL);
    dirtier_fill_page(page, 0x5000, 7);
    g_assert_cmphex(GUINT64_FROM_LE(page[0]), ==, DIRTIER_MAGIC);
    g_assert_cmpmem(page, 8, "FRRYDIRT", 8);
    g_assert_cmphex(GUINT64_FROM_LE(page[1]), ==, 0x5000);
    g_assert_cmpuint(GUINT64_FROM_LE(page[2]), ==, 7);
    g_assert_cmphex(GUINT64_FROM_LE(page[3]), ==, 0xde75ec72016285c9ULL);
    g_assert_cmphex(GUINT64_FROM_LE(page[4]), ==, 0xac32a63f75fd7a11ULL);
    g_assert_cmphex(GUINT64_FROM_LE(page[511]), ==, 0xe9edcae81cfabc7fULL);

    g_assert_true(dirtier_check_page(page, 0x5000, &gen, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(gen, ==, 7);

    /* Misplaced: the right page at the wrong address. */
    g_assert_false(dirtier_check_page(page, 0x6000, &gen, &err));
    g_assert_nonnull(strstr(err->message, "misplaced"));
    g_clear_error(&err);

    /* Torn: half of another generation. */
    {
        g_autofree uint64_t *other = g_malloc(PAGE);

        dirtier_fill_page(other, 0x5000, 8);
        memcpy(page + 256, other + 256, PAGE / 2);
        g_assert_false(dirtier_check_page(page, 0x5000, &gen, &err));
        g_assert_nonnull(strstr(err->message, "word 256"));
        g_clear_error(&err);
    }

    /* One flipped bit anywhere in the fill. */
    dirtier_fill_page(page, 0x5000, 7);
    ((uint8_t *)page)[PAGE - 1] ^= 0x10;
    g_assert_false(dirtier_check_page(page, 0x5000, &gen, &err));
    g_clear_error(&err);

    /* Not a dirtier page at all. */
    memset(page, 0, PAGE);
    g_assert_false(dirtier_check_page(page, 0x5000, &gen, &err));
    g_assert_nonnull(strstr(err->message, "magic"));
    g_clear_error(&err);

    /* Generation 0 is never written (the counter starts at 0). */
    dirtier_fill_page(page, 0x5000, 0);
    g_assert_false(dirtier_check_page(page, 0x5000, &gen, &err));
    g_clear_error(&err);
}

/* ---- the software log: one writer, one harvester ---- */

#define LOG_PAGES 1000          /* not a multiple of the word size */
#define LOG_WRITES 60000

typedef struct LogTest {
    SoftDirtyLog log;
    uint8_t *mem;               /* the writer's "guest RAM" */
    uint8_t *shadow;            /* what the harvester copied */
    unsigned long *written;     /* pages the writer wrote (writer only) */
    unsigned long *harvested;   /* union of harvested bits (harvester) */
    uint64_t gens[LOG_PAGES];   /* writer only */
    int done;                   /* atomic: the writer finished */
    uint64_t syncs;
} LogTest;

static void *log_writer(void *opaque)
{
    LogTest *t = opaque;
    uint64_t s = 0x1234567;

    for (uint64_t i = 1; i <= LOG_WRITES; i++) {
        uint64_t page;

        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        /* Some pages often, most rarely: hot pages race with harvests. */
        page = (i & 1) ? s % 8 : s % LOG_PAGES;
        dirtier_fill_page(t->mem + page * PAGE, page * PAGE, i);
        soft_dirty_log_mark(&t->log, page);
        set_bit(page, t->written);
        t->gens[page] = i;
    }
    qatomic_store_release(&t->done, 1);
    return NULL;
}

/* Harvest into bmap and "send" what it holds, as migration does. */
static void harvest_and_copy(LogTest *t, unsigned long *bmap)
{
    uint64_t before = bitmap_count_one(bmap, LOG_PAGES);
    uint64_t newly = soft_dirty_log_harvest(&t->log, bmap);
    unsigned long p;

    g_assert_cmpuint(bitmap_count_one(bmap, LOG_PAGES), ==, before + newly);
    bitmap_or(t->harvested, t->harvested, bmap, LOG_PAGES);
    for (p = find_first_bit(bmap, LOG_PAGES); p < LOG_PAGES;
         p = find_next_bit(bmap, LOG_PAGES, p + 1)) {
        memcpy(t->shadow + p * PAGE, t->mem + p * PAGE, PAGE);
        clear_bit(p, bmap);
    }
    t->syncs++;
}

static void *log_harvester(void *opaque)
{
    LogTest *t = opaque;
    g_autofree unsigned long *bmap = bitmap_new(LOG_PAGES);

    while (!qatomic_load_acquire(&t->done)) {
        harvest_and_copy(t, bmap);
    }
    /* The final sync, after the writer stopped (vm_stop, then sync). */
    harvest_and_copy(t, bmap);
    return NULL;
}

static void test_log_concurrent(void)
{
    LogTest *t = g_new0(LogTest, 1);
    QemuThread w, h;
    g_autoptr(GError) err = NULL;

    soft_dirty_log_init(&t->log, LOG_PAGES);
    t->mem = g_malloc0(LOG_PAGES * PAGE);
    t->shadow = g_malloc0(LOG_PAGES * PAGE);
    t->written = bitmap_new(LOG_PAGES);
    t->harvested = bitmap_new(LOG_PAGES);

    g_assert_true(qemu_thread_create(&h, "test/harvest", log_harvester, t,
                                     &err));
    g_assert_true(qemu_thread_create(&w, "test/write", log_writer, t, &err));
    qemu_thread_join(&w);
    qemu_thread_join(&h);

    g_test_message("%" PRIu64 " harvests during %d writes", t->syncs,
                   LOG_WRITES);
    g_assert_cmpuint(t->syncs, >, 1);
    /* The union of what was harvested is exactly what was written. */
    g_assert_true(bitmap_equal(t->harvested, t->written, LOG_PAGES));
    /* And the copies made from it are the writer's final memory. */
    for (uint64_t p = 0; p < LOG_PAGES; p++) {
        uint64_t gen = 0;

        if (memcmp(t->shadow + p * PAGE, t->mem + p * PAGE, PAGE)) {
            g_error("page %" PRIu64 ": copy differs from memory (lost "
                    "dirty bit)", p);
        }
        if (test_bit(p, t->written)) {
            g_assert_true(dirtier_check_page(t->shadow + p * PAGE, p * PAGE,
                                             &gen, &err));
            g_assert_cmpuint(gen, ==, t->gens[p]);
        }
    }
    /* Nothing left over once harvested. */
    {
        g_autofree unsigned long *bmap = bitmap_new(LOG_PAGES);

        g_assert_cmpuint(soft_dirty_log_harvest(&t->log, bmap), ==, 0);
        g_assert_true(bitmap_empty(bmap, LOG_PAGES));
    }
    soft_dirty_log_destroy(&t->log);
    g_free(t->mem);
    g_free(t->shadow);
    g_free(t->written);
    g_free(t->harvested);
    g_free(t);
}

/*
 * Marks only, each page exactly once, so that a single lost mark shows in
 * the union (a page written again would hide it).  Consecutive marks fall
 * in the same word, where a harvest that read and cleared in two steps
 * would drop the ones in between.
 */
#define MARK_PAGES (1 << 21)

typedef struct MarkTest {
    SoftDirtyLog log;
    unsigned long *harvested;
    int done;                   /* atomic */
    uint64_t newly;
} MarkTest;

static void *mark_writer(void *opaque)
{
    MarkTest *t = opaque;

    for (uint64_t p = 0; p < MARK_PAGES; p++) {
        soft_dirty_log_mark(&t->log, p);
    }
    qatomic_store_release(&t->done, 1);
    return NULL;
}

static void *mark_harvester(void *opaque)
{
    MarkTest *t = opaque;
    bool last = false;

    while (!last) {
        last = qatomic_load_acquire(&t->done);
        t->newly += soft_dirty_log_harvest(&t->log, t->harvested);
    }
    return NULL;
}

static void test_log_marks_once(void)
{
    /* A lost mark needs an unlucky interleaving: give it a few rounds. */
    for (int round = 0; round < 5; round++) {
        MarkTest t = { 0 };
        QemuThread w, h;
        g_autoptr(GError) err = NULL;

        soft_dirty_log_init(&t.log, MARK_PAGES);
        t.harvested = bitmap_new(MARK_PAGES);
        g_assert_true(qemu_thread_create(&h, "test/harvest", mark_harvester, &t,
                                         &err));
        g_assert_true(qemu_thread_create(&w, "test/mark", mark_writer, &t, &err));
        qemu_thread_join(&w);
        qemu_thread_join(&h);
        /* Every mark harvested exactly once (newly counts no page twice). */
        g_assert_cmpuint(t.newly, ==, MARK_PAGES);
        g_assert_true(bitmap_full(t.harvested, MARK_PAGES));
        soft_dirty_log_destroy(&t.log);
        g_free(t.harvested);
    }
}

/* ---- the device, with vm_start/vm_stop and a simulated migration ---- */

#define RAM_SIZE (8 << 20)
#define REGION_ADDR (1 << 20)
#define REGION_SIZE (4 << 20)

static RAMBlock *ram;

/* Copy every page the dirty log reports into shadow (one "pass"). */
static uint64_t sync_and_copy(unsigned long *bmap, uint8_t *shadow)
{
    unsigned long n = RAM_SIZE / PAGE, p;
    uint64_t newly = 0, copied = 0;
    g_autoptr(GError) err = NULL;

    g_assert_true(ramblock_sync_dirty_bitmap(ram, bmap, &newly, &err));
    for (p = find_first_bit(bmap, n); p < n; p = find_next_bit(bmap, n, p + 1)) {
        memcpy(shadow + p * PAGE, ram->host + p * PAGE, PAGE);
        clear_bit(p, bmap);
        copied++;
    }
    return copied;
}

static void test_device(void)
{
    DirtierConfig cfg = {
        .rate = 64 << 20, .size = REGION_SIZE, .addr = REGION_ADDR,
        .seed = 42, .pattern = DIRTIER_PATTERN_RANDOM,
    };
    DirtierConfig bad = cfg;
    g_autofree unsigned long *bmap = bitmap_new_full(RAM_SIZE / PAGE);
    g_autofree uint8_t *shadow = g_malloc0(RAM_SIZE);
    g_autoptr(GError) err = NULL;
    DirtierInfo a, b, c;
    Dirtier *d;
    uint64_t passes = 0, gen, ctl;

    bad.addr = RAM_SIZE - PAGE;
    g_assert_null(dirtier_create(&bad, false, &err));
    g_assert_nonnull(strstr(err->message, "not inside guest RAM"));
    g_clear_error(&err);
    g_assert_null(dirtier_create(&cfg, true, &err));
    g_assert_nonnull(strstr(err->message, "without vCPUs"));
    g_clear_error(&err);

    d = dirtier_create(&cfg, false, &err);
    g_assert_no_error(err);
    g_assert_null(dirtier_create(&cfg, false, &err));
    g_clear_error(&err);

    /* Not running: nothing written. */
    g_usleep(20000);
    dirtier_get_info(d, &a);
    g_assert_cmpuint(a.pages_written, ==, 0);
    g_assert_false(a.running);

    g_assert_true(memory_global_dirty_log_start(&err));
    vm_start();
    /*
     * Precopy passes while it writes, back to back so that syncs land
     * inside page writes: the first copies everything.
     */
    for (int64_t end = g_get_monotonic_time() + 300000;
         g_get_monotonic_time() < end; passes++) {
        sync_and_copy(bmap, shadow);
    }
    /* Completion: stop (waits for the park), then the last sync. */
    vm_stop(RUN_STATE_FINISH_MIGRATE);
    dirtier_get_info(d, &b);
    sync_and_copy(bmap, shadow);
    memory_global_dirty_log_stop();
    g_assert_false(b.running);
    /* 64 MiB/s for 0.3 s is ~4800 pages: allow a slow, shared host. */
    g_assert_cmpuint(b.pages_written, >, 500);
    g_test_message("%" PRIu64 " pages in %" PRIu64 " passes",
                   b.pages_written, passes);
    if (memcmp(shadow, ram->host, RAM_SIZE)) {
        for (uint64_t p = 0; p < RAM_SIZE / PAGE; p++) {
            if (memcmp(shadow + p * PAGE, ram->host + p * PAGE, PAGE)) {
                g_error("page 0x%" PRIx64 " changed after its last copy "
                        "(a write escaped the dirty log)", (uint64_t)(p * PAGE));
            }
        }
    }
    /* The counter in RAM is the generation, and no page is newer. */
    memcpy(&ctl, ram->host + REGION_ADDR, 8);
    g_assert_cmpuint(GUINT64_FROM_LE(ctl), ==, b.generation);
    g_assert_cmpuint(b.generation, ==, b.pages_written);
    for (uint64_t off = PAGE; off < REGION_SIZE; off += PAGE) {
        uint8_t *p = ram->host + REGION_ADDR + off;

        if (!buffer_is_zero(p, PAGE)) {
            g_assert_true(dirtier_check_page(p, REGION_ADDR + off, &gen,
                                             &err));
            g_assert_cmpuint(gen, <=, b.generation);
        }
    }
    /* Outside the region nothing was touched. */
    g_assert_true(buffer_is_zero(ram->host, REGION_ADDR));
    g_assert_true(buffer_is_zero(ram->host + REGION_ADDR + REGION_SIZE,
                                 RAM_SIZE - REGION_ADDR - REGION_SIZE));

    /* Stopped means stopped. */
    g_usleep(50000);
    dirtier_get_info(d, &c);
    g_assert_cmpuint(c.pages_written, ==, b.pages_written);

    /* A restart reads the counter from RAM (as a destination would). */
    ctl = GUINT64_TO_LE(1000000);
    memcpy(ram->host + REGION_ADDR, &ctl, 8);
    vm_start();
    while (dirtier_get_info(d, &c), c.pages_written < b.pages_written + 10) {
        g_usleep(1000);
    }
    vm_stop(RUN_STATE_PAUSED);
    dirtier_get_info(d, &c);
    g_assert_cmpuint(c.generation, ==,
                     1000000 + c.pages_written - b.pages_written);
    dirtier_destroy(d);
}

int main(int argc, char **argv)
{
    g_autoptr(GError) err = NULL;
    int ret;

    g_test_init(&argc, &argv, NULL);
    rcu_register_thread();
    ram = qemu_ram_alloc("ram", RAM_SIZE, NULL, &err);
    g_assert_no_error(err);
    g_assert_true(memory_map_ram(0, ram, 0, RAM_SIZE, &err));

    g_test_add_func("/dirtier/page-format", test_page_format);
    g_test_add_func("/dirtier/log-concurrent", test_log_concurrent);
    g_test_add_func("/dirtier/log-marks-once", test_log_marks_once);
    g_test_add_func("/dirtier/device", test_device);
    ret = g_test_run();
    rcu_unregister_thread();
    return ret;
}

/*
 * Unit tests for the test guest's RAM checker: synthetic dumps that look
 * like what the guest leaves behind, good and deliberately broken.
 */
#include "qemu/osdep.h"
#include "ramcheck.h"

#define BASE 0x400000ULL
#define PAGES 64

typedef struct Dump {
    uint8_t *ram;
    uint64_t base, len;
    GuestParams p;
} Dump;

static void fill_page(Dump *d, uint64_t addr, uint64_t sweep,
                      unsigned from, unsigned to)
{
    uint64_t w = sweep ? guest_pattern(sweep, addr, d->p.seed) : 0;
    uint8_t *page = d->ram + (addr - d->base);

    w = GUINT64_TO_LE(w);
    for (unsigned i = from; i < to; i++) {
        memcpy(page + i * 8, &w, 8);
    }
}

/*
 * Write slice idx as the guest would have when stopped in sweep hi at page
 * b (words [0, split) of page b written; split = 0: not started on it).
 */
static void write_slice(Dump *d, unsigned idx, uint64_t hi, uint64_t b,
                        unsigned split)
{
    uint64_t start, end;

    guest_slice_bounds(&d->p, idx, &start, &end);
    for (uint64_t a = start; a < end; a += GUEST_PAGE_SIZE) {
        uint64_t i = (a - start) / GUEST_PAGE_SIZE;

        fill_page(d, a, i < b ? hi : hi - 1, 0, 512);
        if (i == b && split) {
            fill_page(d, a, hi, 0, split);
        }
    }
}

static Dump *dump_new(unsigned ncpus, uint64_t pages, uint32_t seed)
{
    Dump *d = g_new0(Dump, 1);

    /* The dump starts a little below the region, as a pmemsave of all RAM
     * would. */
    d->base = BASE - 4 * GUEST_PAGE_SIZE;
    d->len = (pages + 8) * GUEST_PAGE_SIZE;
    d->ram = g_malloc0(d->len);
    d->p.ncpus = ncpus;
    d->p.start = BASE;
    d->p.end = BASE + pages * GUEST_PAGE_SIZE;
    d->p.seed = seed;
    return d;
}

static void dump_free(Dump *d)
{
    g_free(d->ram);
    g_free(d);
}

static uint64_t page_addr(unsigned i)
{
    return BASE + i * GUEST_PAGE_SIZE;
}

static bool run_check(Dump *d, GuestCheckReport *rep, GError **errp)
{
    return guest_ram_check(d->ram, d->base, d->len, &d->p, rep, errp);
}

static void assert_good(Dump *d, GuestCheckReport *rep)
{
    GError *err = NULL;
    bool ok = run_check(d, rep, &err);

    if (!ok) {
        guest_check_report_print(rep, stderr);
    }
    g_assert_no_error(err);
    g_assert_true(ok);
    g_assert_true(rep->good);
    g_assert_cmpuint(rep->pages_bad, ==, 0);
}

/* Expect exactly one bad page, at addr, with a reason containing why. */
static void assert_one_bad(Dump *d, uint64_t addr, const char *why)
{
    g_autofree GuestCheckReport *rep = g_new0(GuestCheckReport, 1);
    GError *err = NULL;

    g_assert_false(run_check(d, rep, &err));
    g_assert_nonnull(err);
    g_clear_error(&err);
    g_assert_false(rep->good);
    g_assert_cmpuint(rep->nslices, ==, d->p.ncpus);
    g_assert_cmpuint(rep->pages_bad, ==, 1);
    g_assert_cmpuint(rep->nbad, ==, 1);
    g_assert_cmphex(rep->bad[0].addr, ==, addr);
    g_assert_nonnull(strstr(rep->bad[0].why, why));
}

static void test_clean(void)
{
    Dump *d = dump_new(1, PAGES, 0);
    g_autofree GuestCheckReport *rep = g_new0(GuestCheckReport, 1);

    write_slice(d, 0, 4, PAGES, 0);         /* sweep 3 done, 4 done too */
    assert_good(d, rep);
    g_assert_cmpuint(rep->slice[0].sweeps_done, ==, 4);
    g_assert_cmpuint(rep->pages_ok, ==, PAGES);
    g_assert_cmpuint(rep->pages_torn, ==, 0);

    write_slice(d, 0, 5, 17, 0);            /* stopped between pages */
    assert_good(d, rep);
    g_assert_cmpuint(rep->slice[0].sweeps_done, ==, 4);
    g_assert_cmphex(rep->slice[0].boundary, ==, page_addr(17));
    dump_free(d);
}

static void test_torn_boundary(void)
{
    Dump *d = dump_new(1, PAGES, 7);
    g_autofree GuestCheckReport *rep = g_new0(GuestCheckReport, 1);

    write_slice(d, 0, 9, 10, 100);
    assert_good(d, rep);
    g_assert_cmpuint(rep->pages_torn, ==, 1);
    g_assert_cmphex(rep->slice[0].torn_addr, ==, page_addr(10));
    g_assert_cmpuint(rep->slice[0].sweeps_done, ==, 8);

    /* Torn first and last pages are boundaries too. */
    write_slice(d, 0, 9, 0, 1);
    assert_good(d, rep);
    g_assert_cmphex(rep->slice[0].torn_addr, ==, page_addr(0));
    write_slice(d, 0, 9, PAGES - 1, 511);
    assert_good(d, rep);
    g_assert_cmphex(rep->slice[0].torn_addr, ==, page_addr(PAGES - 1));
    dump_free(d);
}

static void test_first_sweep(void)
{
    Dump *d = dump_new(1, PAGES, 3);
    g_autofree GuestCheckReport *rep = g_new0(GuestCheckReport, 1);

    /* Never started: all zero is legal (min_sweeps catches it). */
    assert_good(d, rep);
    g_assert_cmpuint(rep->slice[0].sweeps_done, ==, 0);
    g_assert_cmpuint(rep->pages_zero, ==, PAGES);

    write_slice(d, 0, 1, 5, 300);
    assert_good(d, rep);
    g_assert_cmpuint(rep->pages_ok, ==, 5);
    g_assert_cmpuint(rep->pages_torn, ==, 1);
    g_assert_cmpuint(rep->pages_zero, ==, PAGES - 6);

    d->p.min_sweeps = 1;
    g_assert_false(run_check(d, rep, NULL));
    g_assert_false(rep->good);
    write_slice(d, 0, 2, 5, 0);
    assert_good(d, rep);
    dump_free(d);
}

static void test_torn_middle(void)
{
    Dump *d = dump_new(1, PAGES, 0);

    write_slice(d, 0, 6, 40, 0);
    fill_page(d, page_addr(12), 5, 200, 512);   /* 6 over 5, inside 6s */
    assert_one_bad(d, page_addr(12), "torn page away");

    /* Two torn pages: only one can be the boundary. */
    write_slice(d, 0, 6, 40, 10);
    fill_page(d, page_addr(50), 6, 0, 30);
    assert_one_bad(d, page_addr(50), "torn page away");

    /* Torn with the older words first is never legal. */
    write_slice(d, 0, 6, 40, 0);
    fill_page(d, page_addr(40), 6, 100, 512);
    assert_one_bad(d, page_addr(40), "do not follow");

    /* Three runs of words in one page. */
    write_slice(d, 0, 6, 40, 0);
    fill_page(d, page_addr(3), 5, 10, 20);
    assert_one_bad(d, page_addr(3), "more than two runs");
    dump_free(d);
}

static void test_misplaced(void)
{
    Dump *d = dump_new(1, PAGES, 11);

    write_slice(d, 0, 3, 30, 0);
    /* Page 20 holds what belongs at page 21. */
    memcpy(d->ram + (page_addr(20) - d->base),
           d->ram + (page_addr(21) - d->base), GUEST_PAGE_SIZE);
    assert_one_bad(d, page_addr(20), "another page's index");

    /* Random bytes. */
    write_slice(d, 0, 3, 30, 0);
    memset(d->ram + (page_addr(45) - d->base) + 64, 0xa5, 8);
    assert_one_bad(d, page_addr(45), "");
    {
        g_autofree GuestCheckReport *rep = g_new0(GuestCheckReport, 1);

        g_assert_false(run_check(d, rep, NULL));
        g_assert_cmpuint(rep->bad[0].word_index, ==, 8);
        g_assert_cmphex(rep->bad[0].found, ==, 0xa5a5a5a5a5a5a5a5ULL);
        g_assert_cmphex(rep->bad[0].expected, ==,
                        guest_pattern(2, page_addr(45), 11));
    }
    dump_free(d);
}

static void test_stale(void)
{
    Dump *d = dump_new(1, PAGES, 0);

    write_slice(d, 0, 8, 20, 0);
    fill_page(d, page_addr(33), 6, 0, 512);     /* region of 7s */
    assert_one_bad(d, page_addr(33), "stale");

    write_slice(d, 0, 8, 20, 0);
    fill_page(d, page_addr(5), 7, 0, 512);      /* region of 8s */
    assert_one_bad(d, page_addr(5), "stale");

    write_slice(d, 0, 8, 20, 0);
    fill_page(d, page_addr(50), 8, 0, 512);     /* newer page in the 7s */
    assert_one_bad(d, page_addr(50), "newer sweep");
    dump_free(d);
}

static void test_zero_in_sweep(void)
{
    Dump *d = dump_new(1, PAGES, 0);

    write_slice(d, 0, 2, PAGES, 0);
    fill_page(d, page_addr(7), 0, 0, 512);
    assert_one_bad(d, page_addr(7), "zero page");

    /* Zero pages after the boundary are fine only in the first sweep. */
    write_slice(d, 0, 3, 10, 0);
    fill_page(d, page_addr(60), 0, 0, 512);
    assert_one_bad(d, page_addr(60), "zero page");
    dump_free(d);
}

static void test_two_slices(void)
{
    /* 65 pages over 2 CPUs: 32 and 33 pages. */
    Dump *d = dump_new(2, PAGES + 1, 0xdeadbeef);
    g_autofree GuestCheckReport *rep = g_new0(GuestCheckReport, 1);
    uint64_t s, e;

    guest_slice_bounds(&d->p, 0, &s, &e);
    g_assert_cmphex(s, ==, BASE);
    g_assert_cmphex(e, ==, page_addr(32));
    guest_slice_bounds(&d->p, 1, &s, &e);
    g_assert_cmphex(s, ==, page_addr(32));
    g_assert_cmphex(e, ==, page_addr(65));

    write_slice(d, 0, 12, 5, 77);
    write_slice(d, 1, 3, 32, 0);
    assert_good(d, rep);
    g_assert_cmpuint(rep->nslices, ==, 2);
    g_assert_cmpuint(rep->slice[0].sweeps_done, ==, 11);
    g_assert_cmpuint(rep->slice[1].sweeps_done, ==, 2);
    g_assert_cmphex(rep->slice[0].torn_addr, ==, page_addr(5));
    g_assert_cmpuint(rep->slice[1].pages_ok, ==, 33);

    /* A slice's torn page is only legal in its own slice's sequence. */
    fill_page(d, page_addr(40), 4, 0, 9);
    assert_one_bad(d, page_addr(40), "torn page away");

    /* The same bytes checked as one slice are wrong. */
    write_slice(d, 1, 3, 32, 0);
    d->p.ncpus = 1;
    g_assert_false(run_check(d, rep, NULL));
    g_assert_cmpuint(rep->pages_bad, >, 0);
    dump_free(d);
}

static void test_seed_matters(void)
{
    Dump *d = dump_new(1, PAGES, 1);
    g_autofree GuestCheckReport *rep = g_new0(GuestCheckReport, 1);

    g_assert_cmphex(guest_pattern(1, BASE, 1), !=, guest_pattern(1, BASE, 2));
    write_slice(d, 0, 2, 9, 0);
    assert_good(d, rep);
    d->p.seed = 2;
    g_assert_false(run_check(d, rep, NULL));
    g_assert_cmpuint(rep->pages_bad, ==, PAGES);
    dump_free(d);
}

static void test_bad_params(void)
{
    Dump *d = dump_new(1, PAGES, 0);
    g_autofree GuestCheckReport *rep = g_new0(GuestCheckReport, 1);
    GError *err = NULL;

    d->p.end += GUEST_PAGE_SIZE * 16;           /* past the dump */
    g_assert_false(run_check(d, rep, &err));
    g_assert_nonnull(err);
    g_assert_cmpuint(rep->nslices, ==, 0);
    g_clear_error(&err);

    d->p.end = BASE + PAGES * GUEST_PAGE_SIZE;
    d->p.start = d->base - GUEST_PAGE_SIZE;     /* below the dump */
    g_assert_false(run_check(d, rep, &err));
    g_clear_error(&err);

    d->p.start = BASE + 1;
    g_assert_false(run_check(d, rep, &err));
    g_clear_error(&err);

    d->p.start = BASE;
    d->p.ncpus = 0;
    g_assert_false(run_check(d, rep, &err));
    g_clear_error(&err);
    d->p.ncpus = GUEST_MAX_CPUS + 1;
    g_assert_false(run_check(d, rep, &err));
    g_clear_error(&err);

    d->p.ncpus = 1;
    d->p.end = d->p.start;
    g_assert_false(run_check(d, rep, &err));
    g_assert_cmpuint(rep->nslices, ==, 0);
    g_clear_error(&err);
    dump_free(d);
}

static void test_json(void)
{
    Dump *d = dump_new(1, PAGES, 0);
    g_autofree GuestCheckReport *rep = g_new0(GuestCheckReport, 1);
    g_autofree char *js = NULL;

    write_slice(d, 0, 2, 3, 0);
    fill_page(d, page_addr(9), 0, 0, 512);
    g_assert_false(run_check(d, rep, NULL));
    js = guest_check_report_json(rep);
    g_assert_nonnull(strstr(js, "\"good\":false"));
    g_assert_nonnull(strstr(js, "\"pages_bad\":1"));
    g_assert_nonnull(strstr(js, "\"addr\":4231168"));     /* page 9 */
    dump_free(d);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/ramcheck/clean", test_clean);
    g_test_add_func("/ramcheck/torn-boundary", test_torn_boundary);
    g_test_add_func("/ramcheck/first-sweep", test_first_sweep);
    g_test_add_func("/ramcheck/torn-middle", test_torn_middle);
    g_test_add_func("/ramcheck/misplaced", test_misplaced);
    g_test_add_func("/ramcheck/stale", test_stale);
    g_test_add_func("/ramcheck/zero-in-sweep", test_zero_in_sweep);
    g_test_add_func("/ramcheck/two-slices", test_two_slices);
    g_test_add_func("/ramcheck/seed", test_seed_matters);
    g_test_add_func("/ramcheck/bad-params", test_bad_params);
    g_test_add_func("/ramcheck/json", test_json);
    return g_test_run();
}

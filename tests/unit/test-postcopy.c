/*
 * Postcopy: discard generation and host-page chunking at the switch, the
 * urgent-page queue and its host-page search, the destination's requested
 * set, and every wrong-order or malformed POSTCOPY_* command fed to a real
 * LoadVMContext, which must fail with a clear message and leave guest RAM
 * outside the affected range untouched.
 */
#include "qemu/osdep.h"
#include "qemu/bitmap.h"
#include "qemu/rcu.h"
#include "exec/ramblock.h"
#include "exec/memory.h"
#include "migration/migration.h"
#include "migration/postcopy-ram.h"
#include "migration/qemu-file.h"
#include "migration/channel.h"
#include "migration/ram.h"
#include "migration/savevm.h"
#include "migration/misc.h"
#include "ram-stream-log.h"

#define B0_SIZE (4u << 20)
#define B1_SIZE (2u << 20)
#define HP_SIZE (4u << 20)
#define HUGE (2u << 20)
/* 19 characters: a DISCARD with no ranges is then >= 20 bytes long */
#define LONG_NAME "zero-ranges-block-x"

static RAMBlock *b0, *b1, *bh, *bl;
/* The two sides, made as the program makes them. */
static MigrationState *ms;
static MigrationIncomingState *mis;

/* ---- fake dirty log: nothing is ever dirty ---- */

static bool fake_log_start(GError **errp)
{
    return true;
}

static void fake_log_stop(void)
{
}

static bool fake_log_sync(RAMBlock *rb, unsigned long *bmap,
                          uint64_t *num_dirty, GError **errp)
{
    *num_dirty = 0;
    return true;
}

static const AccelMemoryOps fake_ops = {
    .log_start = fake_log_start,
    .log_stop = fake_log_stop,
    .log_sync = fake_log_sync,
};

/* ---- discard generation ---- */

typedef struct Range {
    uint64_t start, len;
} Range;

typedef struct DiscardLog {
    GArray *ranges;             /* Range */
    GArray *batch_sizes;        /* unsigned */
    const char *name;
} DiscardLog;

static int collect(void *opaque, const char *idstr, uint16_t n,
                   const uint64_t *start, const uint64_t *length)
{
    DiscardLog *l = opaque;
    unsigned v = n;

    g_assert_cmpstr(idstr, ==, l->name);
    g_assert_cmpuint(n, >=, 1);
    g_assert_cmpuint(n, <=, MAX_DISCARDS_PER_COMMAND);
    g_array_append_val(l->batch_sizes, v);
    for (unsigned i = 0; i < n; i++) {
        Range r = { start[i], length[i] };

        g_array_append_val(l->ranges, r);
    }
    return 0;
}

static DiscardLog log_new(const char *name)
{
    DiscardLog l = {
        g_array_new(false, false, sizeof(Range)),
        g_array_new(false, false, sizeof(unsigned)),
        name,
    };

    return l;
}

static void log_free(DiscardLog *l)
{
    g_array_free(l->ranges, true);
    g_array_free(l->batch_sizes, true);
}

static Range range_at(DiscardLog *l, guint i)
{
    return g_array_index(l->ranges, Range, i);
}

static QEMUFile *sink(QIOChannel **ioc)
{
    *ioc = qio_channel_new_buffer();
    return qemu_file_new_output(*ioc);
}

static void sink_close(QEMUFile *f, QIOChannel *ioc)
{
    qemu_fclose(f);
    qio_channel_unref(ioc);
}

/* bmap = "still to send", unsentmap = "never sent" */
static void set_maps(RAMBlock *rb, const unsigned long *to_send, size_t nts,
                     const unsigned long *sent, size_t ns)
{
    unsigned long n = rb->used_length >> TARGET_PAGE_BITS;

    bitmap_zero(rb->bmap, n);
    bitmap_fill(rb->unsentmap, n);
    for (size_t i = 0; i < nts; i++) {
        set_bit(to_send[i], rb->bmap);
    }
    for (size_t i = 0; i < ns; i++) {
        clear_bit(sent[i], rb->unsentmap);
    }
}

static void test_discard_small_pages(void)
{
    QIOChannel *ioc;
    QEMUFile *f = sink(&ioc);
    GError *err = NULL;
    DiscardLog l = log_new("t0");
    /* dirty: 3,4,5 (sent), 7 (never sent), 9 (sent), 10 (never sent) */
    static const unsigned long to_send[] = { 3, 4, 5, 7, 9, 10 };
    static const unsigned long sent[] = { 3, 4, 5, 9, 20 };
    unsigned long npages = B0_SIZE >> TARGET_PAGE_BITS;

    g_assert_true(ram_save_setup(ms->ram, f, &err));
    g_assert_no_error(err);
    g_assert_nonnull(b0->unsentmap);
    set_maps(b0, to_send, ARRAY_SIZE(to_send), sent, ARRAY_SIZE(sent));
    g_assert_cmpint(ram_postcopy_block_discard(ms->ram, b0, collect, &l), ==, 3);
    /* exactly the pages still to send: [3,6), [7,8), [9,11) */
    g_assert_cmpuint(l.ranges->len, ==, 3);
    g_assert_cmpuint(range_at(&l, 0).start, ==, 3 * TARGET_PAGE_SIZE);
    g_assert_cmpuint(range_at(&l, 0).len, ==, 3 * TARGET_PAGE_SIZE);
    g_assert_cmpuint(range_at(&l, 1).start, ==, 7 * TARGET_PAGE_SIZE);
    g_assert_cmpuint(range_at(&l, 1).len, ==, TARGET_PAGE_SIZE);
    g_assert_cmpuint(range_at(&l, 2).start, ==, 9 * TARGET_PAGE_SIZE);
    g_assert_cmpuint(range_at(&l, 2).len, ==, 2 * TARGET_PAGE_SIZE);
    /* nothing added to the pages to send with 4 KiB host pages */
    g_assert_cmpuint(bitmap_count_one(b0->bmap, npages), ==, 6);
    log_free(&l);

    /* 30 isolated dirty+sent pages: commands of 12, 12 and 6 ranges */
    l = log_new("t0");
    bitmap_zero(b0->bmap, npages);
    bitmap_fill(b0->unsentmap, npages);
    for (unsigned long i = 0; i < 30; i++) {
        set_bit(i * 2, b0->bmap);
        clear_bit(i * 2, b0->unsentmap);
    }
    g_assert_cmpint(ram_postcopy_block_discard(ms->ram, b0, collect, &l), ==, 30);
    g_assert_cmpuint(l.batch_sizes->len, ==, 3);
    g_assert_cmpuint(g_array_index(l.batch_sizes, unsigned, 0), ==, 12);
    g_assert_cmpuint(g_array_index(l.batch_sizes, unsigned, 1), ==, 12);
    g_assert_cmpuint(g_array_index(l.batch_sizes, unsigned, 2), ==, 6);
    g_assert_cmpuint(range_at(&l, 29).start, ==, 58 * TARGET_PAGE_SIZE);
    log_free(&l);

    /* nothing dirty: nothing sent */
    l = log_new("t0");
    bitmap_zero(b0->bmap, npages);
    g_assert_cmpint(ram_postcopy_block_discard(ms->ram, b0, collect, &l), ==, 0);
    g_assert_cmpuint(l.batch_sizes->len, ==, 0);
    log_free(&l);

    ram_save_cleanup(ms->ram);
    sink_close(f, ioc);
}

static void test_discard_huge_pages(void)
{
    QIOChannel *ioc;
    QEMUFile *f = sink(&ioc);
    GError *err = NULL;
    DiscardLog l = log_new("th");
    unsigned long npages = HP_SIZE >> TARGET_PAGE_BITS;
    /*
     * Host page 0 (pages 0..511): page 3 dirty, whole page sent before:
     * discard and resend host page 0 whole.
     * Host page 1 (512..1023): page 600 to send, never sent anything:
     * resend whole, no discard.
     */
    unsigned long sent[512];
    static const unsigned long to_send[] = { 3, 600 };

    for (unsigned long i = 0; i < 512; i++) {
        sent[i] = i;
    }
    bh->page_size = HUGE;
    g_assert_true(ram_save_setup(ms->ram, f, &err));
    g_assert_no_error(err);
    set_maps(bh, to_send, ARRAY_SIZE(to_send), sent, ARRAY_SIZE(sent));
    g_assert_cmpint(ram_postcopy_block_discard(ms->ram, bh, collect, &l), ==, 1);
    /* both host pages, whole, as one run */
    g_assert_cmpuint(range_at(&l, 0).start, ==, 0);
    g_assert_cmpuint(range_at(&l, 0).len, ==, 2 * HUGE);
    g_assert_cmpuint(bitmap_count_one(bh->bmap, npages), ==, 1024);
    g_assert_cmpuint(ram_bytes_remaining(ms->ram), >=, 1024 * TARGET_PAGE_SIZE);
    log_free(&l);

    /* one target page left in a host page: it goes whole */
    l = log_new("th");
    bitmap_zero(bh->bmap, npages);
    bitmap_fill(bh->unsentmap, npages);
    set_bit(1023, bh->bmap);
    clear_bit(700, bh->unsentmap);
    g_assert_cmpint(ram_postcopy_block_discard(ms->ram, bh, collect, &l), ==, 1);
    g_assert_cmpuint(range_at(&l, 0).start, ==, HUGE);
    g_assert_cmpuint(range_at(&l, 0).len, ==, HUGE);
    g_assert_true(test_bit(512, bh->bmap));
    g_assert_false(test_bit(511, bh->bmap));
    log_free(&l);

    ram_save_cleanup(ms->ram);
    bh->page_size = TARGET_PAGE_SIZE;
    sink_close(f, ioc);
}

/* ---- the urgent queue ---- */

/* (block index << 32) | page of every page in the log; bh is block 1. */
static GArray *sent_pages(RamStreamLog *rl, QEMUFile *f, QIOChannel *ioc)
{
    GArray *pages = g_array_new(false, false, sizeof(uint64_t));

    ram_stream_log_update(rl, f, ioc);
    for (guint i = 0; i < rl->pages->len; i++) {
        RAMBlock *rb = g_array_index(rl->blocks, RAMBlock *, i);
        uint64_t idx = rb == bh ? 1 : rb == b0 ? 0 : rb == b1 ? 2 : 3;
        uint64_t v = (idx << 32) | g_array_index(rl->pages, unsigned long, i);

        g_array_append_val(pages, v);
    }
    ram_stream_log_clear(rl);
    return pages;
}

static void test_urgent_pages(void)
{
    QIOChannel *ioc;
    QEMUFile *f = sink(&ioc);
    GError *err = NULL;
    RamStreamLog *rl = ram_stream_log_new();
    GArray *pages;
    unsigned long total = (B0_SIZE + B1_SIZE + HP_SIZE + B1_SIZE) >>
                          TARGET_PAGE_BITS;
    uint64_t first;

    bh->page_size = HUGE;
    g_assert_true(ram_save_setup(ms->ram, f, &err));
    g_assert_no_error(err);
    g_assert_true(ram_postcopy_send_discard_bitmap(ms->ram, f, &err));
    g_assert_no_error(err);
    /* Setup and discard commands: no RAM records. */
    ram_stream_log_skip(rl, f, ioc);
    ram_set_postcopy_phase(ms->ram, true);

    /* bad requests are refused with a clear error */
    g_assert_false(ram_postcopy_queue_request(ms->ram, "nope", 0, HUGE, &err));
    g_assert_nonnull(strstr(err->message, "unknown RAMBlock 'nope'"));
    g_clear_error(&err);
    g_assert_false(ram_postcopy_queue_request(ms->ram, "th", TARGET_PAGE_SIZE,
                                              HUGE, &err));
    g_assert_nonnull(strstr(err->message, "not aligned"));
    g_clear_error(&err);
    g_assert_false(ram_postcopy_queue_request(ms->ram, "th", HUGE, TARGET_PAGE_SIZE,
                                              &err));
    g_assert_nonnull(strstr(err->message, "not aligned"));
    g_clear_error(&err);
    g_assert_false(ram_postcopy_queue_request(ms->ram, "th", HP_SIZE, HUGE, &err));
    g_assert_nonnull(strstr(err->message, "beyond its used length"));
    g_clear_error(&err);
    g_assert_false(ram_postcopy_queue_request(ms->ram, "t0", B0_SIZE - 4096, 8192,
                                              &err));
    g_assert_nonnull(strstr(err->message, "beyond its used length"));
    g_clear_error(&err);
    g_assert_cmpuint(ram_postcopy_queue_length(ms->ram), ==, 0);

    /* the second huge page of th goes first, whole, in order */
    g_assert_true(ram_postcopy_queue_request(ms->ram, "th", HUGE, HUGE, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(ram_postcopy_queue_length(ms->ram), ==, 1);
    while (ram_save_iterate(ms->ram, f, &err) == 0) {
        g_assert_no_error(err);
    }
    g_assert_no_error(err);
    pages = sent_pages(rl, f, ioc);
    g_assert_cmpuint(pages->len, ==, total);
    for (unsigned i = 0; i < 512; i++) {
        g_assert_cmpuint(g_array_index(pages, uint64_t, i), ==,
                         (1ULL << 32) | (512 + i));
    }
    /* then the background scan goes on after the requested page */
    first = g_array_index(pages, uint64_t, 512);
    g_assert_false(first == ((1ULL << 32) | 0));
    /* every page exactly once */
    {
        g_autoptr(GHashTable) seen = g_hash_table_new(g_int64_hash,
                                                      g_int64_equal);

        for (guint i = 0; i < pages->len; i++) {
            uint64_t *v = &g_array_index(pages, uint64_t, i);

            g_assert_true(g_hash_table_add(seen, v));
        }
    }
    /* a request for a page already sent sends nothing */
    g_array_free(pages, true);
    g_assert_true(ram_postcopy_queue_request(ms->ram, "th", 0, HUGE, &err));
    g_assert_cmpint(ram_save_iterate(ms->ram, f, &err), ==, 1);
    pages = sent_pages(rl, f, ioc);
    g_assert_cmpuint(pages->len, ==, 0);
    g_assert_cmpuint(ram_postcopy_queue_length(ms->ram), ==, 0);

    ram_set_postcopy_phase(ms->ram, false);
    ram_save_cleanup(ms->ram);
    bh->page_size = TARGET_PAGE_SIZE;
    g_array_free(pages, true);
    ram_stream_log_free(rl);
    sink_close(f, ioc);
}

/* ---- destination: the requested set ---- */

/*
 * A destination flooding REQ_PAGES must not grow the source: duplicates
 * and extensions of the newest request merge into it, requests for pages
 * already sent take no entry, and past RAM_POSTCOPY_MAX_REQUESTS distinct
 * requests the migration fails with a clear error.
 */
static void test_request_flood(void)
{
    QIOChannel *ioc;
    QEMUFile *f = sink(&ioc);
    GError *err = NULL;
    unsigned i;

    g_assert_true(ram_save_setup(ms->ram, f, &err));
    g_assert_no_error(err);
    ram_set_postcopy_phase(ms->ram, true);

    /* the same page over and over: one entry */
    for (i = 0; i < 3 * RAM_POSTCOPY_MAX_REQUESTS; i++) {
        g_assert_true(ram_postcopy_queue_request(ms->ram, "t0", 0x3000,
                                                 TARGET_PAGE_SIZE, &err));
        g_assert_no_error(err);
    }
    g_assert_cmpuint(ram_postcopy_queue_length(ms->ram), ==, 1);
    /* a sequential reader, forwards then one step back: still one */
    for (i = 4; i < 64; i++) {
        g_assert_true(ram_postcopy_queue_request(ms->ram, "t0",
                                                 (uint64_t)i * TARGET_PAGE_SIZE,
                                                 TARGET_PAGE_SIZE, &err));
    }
    g_assert_true(ram_postcopy_queue_request(ms->ram, "t0", 0x2000,
                                             TARGET_PAGE_SIZE, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(ram_postcopy_queue_length(ms->ram), ==, 1);

    /* all of it goes out, pages 2..63 of t0 first */
    while (ram_save_iterate(ms->ram, f, &err) == 0) {
        g_assert_no_error(err);
    }
    g_assert_no_error(err);
    g_assert_cmpuint(ram_postcopy_queue_length(ms->ram), ==, 0);

    /* everything is sent now: any number of requests queues nothing */
    for (i = 0; i < 2 * RAM_POSTCOPY_MAX_REQUESTS; i++) {
        g_assert_true(ram_postcopy_queue_request(ms->ram,
                                                 i & 1 ? "t1" : "t0",
                                                 (uint64_t)(i % 256) *
                                                 TARGET_PAGE_SIZE * 2,
                                                 TARGET_PAGE_SIZE, &err));
        g_assert_no_error(err);
    }
    g_assert_cmpuint(ram_postcopy_queue_length(ms->ram), ==, 0);
    ram_set_postcopy_phase(ms->ram, false);
    ram_save_cleanup(ms->ram);

    /*
     * All dirty again; alternating blocks defeats merging, so each request
     * is an entry until the cap, and the next one fails.
     */
    g_assert_true(ram_save_setup(ms->ram, f, &err));
    g_assert_no_error(err);
    ram_set_postcopy_phase(ms->ram, true);
    for (i = 0; i < RAM_POSTCOPY_MAX_REQUESTS; i++) {
        g_assert_true(ram_postcopy_queue_request(ms->ram,
                                                 i & 1 ? "t1" : "t0", 0,
                                                 TARGET_PAGE_SIZE, &err));
        g_assert_no_error(err);
    }
    g_assert_cmpuint(ram_postcopy_queue_length(ms->ram), ==,
                     RAM_POSTCOPY_MAX_REQUESTS);
    g_assert_false(ram_postcopy_queue_request(ms->ram, "t0", 0,
                                              TARGET_PAGE_SIZE, &err));
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message, "destination sent more than 4096 "
                            "outstanding page requests"));
    g_clear_error(&err);
    g_assert_cmpuint(ram_postcopy_queue_length(ms->ram), ==,
                     RAM_POSTCOPY_MAX_REQUESTS);

    ram_set_postcopy_phase(ms->ram, false);
    ram_save_cleanup(ms->ram);
    sink_close(f, ioc);
}

static void test_requested_set(void)
{
    postcopy_incoming_reset(mis);
    g_assert_false(postcopy_request_pending(mis, b0, 8192));
    g_assert_true(postcopy_request_mark(mis, b0, 8192));
    g_assert_false(postcopy_request_mark(mis, b0, 8192));
    g_assert_true(postcopy_request_pending(mis, b0, 8192));
    g_assert_false(postcopy_request_pending(mis, b0, 4096));
    g_assert_false(postcopy_request_pending(mis, b1, 8192));
    bh->page_size = HUGE;
    postcopy_incoming_reset(mis);
    /* one bit per host page: any offset inside it is the same request */
    g_assert_true(postcopy_request_mark(mis, bh, HUGE + 4096));
    g_assert_false(postcopy_request_mark(mis, bh, HUGE + 8192));
    g_assert_false(postcopy_request_pending(mis, bh, 0));
    bh->page_size = TARGET_PAGE_SIZE;
    postcopy_incoming_reset(mis);
}

/* ---- destination: commands in the wrong order or malformed ---- */

typedef struct Stream {
    QIOChannel *ioc;
    QEMUFile *f;
} Stream;

static Stream stream_new(void)
{
    Stream s;

    s.ioc = qio_channel_new_buffer();
    s.f = qemu_file_new_output(s.ioc);
    return s;
}

static void put_cmd(Stream *s, uint16_t cmd, uint16_t len, const void *data)
{
    qemu_savevm_command_send(s->f, cmd, len, data);
}

static void put_advise(Stream *s, uint64_t summary, uint64_t tps)
{
    qemu_savevm_send_postcopy_advise_sizes(s->f, summary, tps);
}

static void put_discard(Stream *s, const char *name, unsigned n,
                        const uint64_t *starts, const uint64_t *lens)
{
    qemu_savevm_send_postcopy_ram_discard(s->f, name, n, starts, lens);
}

/* Build a raw DISCARD payload; returns its length. */
static size_t raw_discard(uint8_t *buf, uint8_t version, const char *name,
                          uint8_t term, unsigned n, const uint64_t *se)
{
    size_t pos = 0, nl = strlen(name);

    buf[pos++] = version;
    buf[pos++] = nl;
    memcpy(buf + pos, name, nl);
    pos += nl;
    buf[pos++] = term;
    for (unsigned i = 0; i < 2 * n; i++) {
        uint64_t be = GUINT64_TO_BE(se[i]);

        memcpy(buf + pos, &be, 8);
        pos += 8;
    }
    return pos;
}

/* Load s; returns the error (caller frees), NULL on success. */
static GError *load(Stream *s)
{
    LoadVMContext ctx;
    const uint8_t *data;
    size_t len;
    QIOChannel *in;
    QEMUFile *f;
    GError *err = NULL;
    int ret;

    qemu_put_byte(s->f, QEMU_VM_EOF);
    g_assert_cmpint(qemu_fflush(s->f), ==, 0);
    data = qio_channel_buffer_data(s->ioc, &len);
    in = qio_channel_new_from_bytes(data, len);
    f = qemu_file_new_input(in);
    qio_channel_unref(in);
    loadvm_context_init(&ctx, f);
    ctx.opaque = mis;
    ret = qemu_loadvm_state_main(f, &ctx, &err);
    g_assert_true((ret < 0) == (err != NULL));
    loadvm_context_destroy(&ctx);
    qemu_fclose(f);
    qemu_fclose(s->f);
    qio_channel_unref(s->ioc);
    return err;
}

static void expect_error(Stream *s, const char *a, const char *b)
{
    GError *err = load(s);

    g_assert_nonnull(err);
    if (g_test_verbose()) {
        g_test_message("error: %s", err->message);
    }
    g_assert_nonnull(strstr(err->message, a));
    if (b) {
        g_assert_nonnull(strstr(err->message, b));
    }
    g_error_free(err);
}

static uint64_t local_summary(void)
{
    return TARGET_PAGE_SIZE | (bh->page_size);
}

static void fill(RAMBlock *rb, uint8_t v)
{
    memset(rb->host, v, rb->used_length);
}

static bool all_equal(RAMBlock *rb, uint64_t start, uint64_t len, uint8_t v)
{
    for (uint64_t i = start; i < start + len; i++) {
        if (rb->host[i] != v) {
            return false;
        }
    }
    return true;
}

/* A fresh destination after a successful ADVISE, RAM filled afterwards. */
static void advised(void)
{
    Stream s = stream_new();
    GError *err;

    postcopy_incoming_reset(mis);
    put_advise(&s, local_summary(), TARGET_PAGE_SIZE);
    err = load(&s);
    g_assert_no_error(err);
    g_assert_cmpint(postcopy_state_get(mis), ==, POSTCOPY_INCOMING_ADVISE);
    fill(b0, 0xa0);
    fill(b1, 0xb1);
    fill(bh, 0xcc);
    fill(bl, 0xdd);
}

static void test_advise(void)
{
    Stream s;
    uint8_t eight[8] = { 0 };

    /* ADVISE discards all RAM: nothing stale survives */
    postcopy_incoming_reset(mis);
    fill(b0, 0x11);
    s = stream_new();
    put_advise(&s, local_summary(), TARGET_PAGE_SIZE);
    g_assert_null(load(&s));
    g_assert_true(all_equal(b0, 0, B0_SIZE, 0));

    /* ADVISE twice */
    advised();
    s = stream_new();
    put_advise(&s, local_summary(), TARGET_PAGE_SIZE);
    expect_error(&s, "POSTCOPY_ADVISE in wrong postcopy state 1 (ADVISE)",
                 "expected NONE");
    g_assert_true(all_equal(b0, 0, B0_SIZE, 0xa0));

    /* page sizes that differ (a hugetlbfs block on one side only) */
    postcopy_incoming_reset(mis);
    fill(b0, 0x22);
    s = stream_new();
    put_advise(&s, TARGET_PAGE_SIZE | HUGE, TARGET_PAGE_SIZE);
    expect_error(&s, "page sizes differ", "0x201000");
    g_assert_true(all_equal(b0, 0, B0_SIZE, 0x22));
    g_assert_cmpint(postcopy_state_get(mis), ==, POSTCOPY_INCOMING_NONE);

    /* a different target page size */
    s = stream_new();
    put_advise(&s, local_summary(), 8192);
    expect_error(&s, "target page size 0x2000", NULL);

    /* ADVISE with the wrong length */
    s = stream_new();
    put_cmd(&s, MIG_CMD_POSTCOPY_ADVISE, 8, eight);
    expect_error(&s, "bad length for command POSTCOPY_ADVISE", "got 8");
    g_assert_true(all_equal(b0, 0, B0_SIZE, 0x22));

    /* ADVISE while postcopy-ram is off here */
    g_assert_true(migrate_set_capability(MIGRATION_CAPABILITY_POSTCOPY_RAM,
                                         false, NULL));
    s = stream_new();
    put_advise(&s, local_summary(), TARGET_PAGE_SIZE);
    expect_error(&s, "postcopy-ram is not enabled", NULL);
    g_assert_true(migrate_set_capability(MIGRATION_CAPABILITY_POSTCOPY_RAM,
                                         true, NULL));
    g_assert_true(all_equal(b0, 0, B0_SIZE, 0x22));
}

static void test_order(void)
{
    uint64_t st[1] = { 0 }, ln[1] = { TARGET_PAGE_SIZE };
    Stream s;

    /* DISCARD before ADVISE */
    postcopy_incoming_reset(mis);
    fill(b0, 0x33);
    s = stream_new();
    put_discard(&s, "t0", 1, st, ln);
    expect_error(&s, "POSTCOPY_RAM_DISCARD in wrong postcopy state 0 (NONE)",
                 "expected ADVISE or DISCARD");
    g_assert_true(all_equal(b0, 0, B0_SIZE, 0x33));

    /* LISTEN before ADVISE */
    s = stream_new();
    qemu_savevm_send_postcopy_listen(s.f);
    expect_error(&s, "POSTCOPY_LISTEN in wrong postcopy state 0 (NONE)",
                 "expected ADVISE or DISCARD");

    /* RUN before LISTEN (after ADVISE) */
    advised();
    s = stream_new();
    qemu_savevm_send_postcopy_run(s.f);
    expect_error(&s, "POSTCOPY_RUN in wrong postcopy state 1 (ADVISE)",
                 "expected LISTENING");
    g_assert_cmpint(postcopy_state_get(mis), ==, POSTCOPY_INCOMING_ADVISE);

    /* LISTEN outside a PACKAGED blob */
    s = stream_new();
    qemu_savevm_send_postcopy_listen(s.f);
    expect_error(&s, "POSTCOPY_LISTEN outside of a PACKAGED blob", NULL);
    g_assert_cmpint(postcopy_state_get(mis), ==, POSTCOPY_INCOMING_ADVISE);

    /* DISCARD after LISTEN */
    postcopy_state_set(mis, POSTCOPY_INCOMING_LISTENING);
    s = stream_new();
    put_discard(&s, "t0", 1, st, ln);
    expect_error(&s, "wrong postcopy state 3 (LISTENING)",
                 "expected ADVISE or DISCARD");
    g_assert_true(all_equal(b0, 0, B0_SIZE, 0xa0));

    /* RUN twice: RUNNING is not LISTENING */
    postcopy_state_set(mis, POSTCOPY_INCOMING_RUNNING);
    s = stream_new();
    qemu_savevm_send_postcopy_run(s.f);
    expect_error(&s, "POSTCOPY_RUN in wrong postcopy state 4 (RUNNING)",
                 NULL);
    postcopy_incoming_reset(mis);
}

static void test_discard_cmd(void)
{
    uint8_t buf[512];
    size_t len;
    Stream s;
    GError *err;
    uint64_t ok_and_bad[4] = { 0, TARGET_PAGE_SIZE, B1_SIZE,
                               TARGET_PAGE_SIZE };
    uint64_t one[2] = { 0, TARGET_PAGE_SIZE };

    advised();

    /* bad version byte */
    s = stream_new();
    len = raw_discard(buf, 1, "t0", 0, 1, one);
    put_cmd(&s, MIG_CMD_POSTCOPY_RAM_DISCARD, len, buf);
    expect_error(&s, "POSTCOPY_RAM_DISCARD", "version 1");

    /* missing terminator */
    s = stream_new();
    len = raw_discard(buf, 0, "t0", 0x55, 1, one);
    put_cmd(&s, MIG_CMD_POSTCOPY_RAM_DISCARD, len, buf);
    expect_error(&s, "POSTCOPY_RAM_DISCARD", "terminator");

    /* len not 3 + namelen + 16k */
    s = stream_new();
    len = raw_discard(buf, 0, "t0", 0, 2, ok_and_bad);
    put_cmd(&s, MIG_CMD_POSTCOPY_RAM_DISCARD, len - 3, buf);
    expect_error(&s, "POSTCOPY_RAM_DISCARD", "not a multiple of 16");

    /* zero ranges */
    s = stream_new();
    len = raw_discard(buf, 0, LONG_NAME, 0, 0, NULL);
    g_assert_cmpuint(len, >=, 20);
    put_cmd(&s, MIG_CMD_POSTCOPY_RAM_DISCARD, len, buf);
    expect_error(&s, "POSTCOPY_RAM_DISCARD", "no ranges");

    /* unknown block */
    s = stream_new();
    put_discard(&s, "nosuchblock", 1, &one[0], &one[1]);
    expect_error(&s, "unknown RAMBlock 'nosuchblock'", NULL);

    /* range past the block end; the first (good) range is not applied */
    s = stream_new();
    len = raw_discard(buf, 0, "t1", 0, 2, ok_and_bad);
    put_cmd(&s, MIG_CMD_POSTCOPY_RAM_DISCARD, len, buf);
    expect_error(&s, "range 1", "beyond the block's used length");
    g_assert_true(all_equal(b1, 0, B1_SIZE, 0xb1));

    /* range not host-page aligned (2 MiB pages) */
    bh->page_size = HUGE;
    s = stream_new();
    put_discard(&s, "th", 1, &one[0], &one[1]);
    expect_error(&s, "not aligned to the host page size 0x200000", NULL);
    g_assert_true(all_equal(bh, 0, HP_SIZE, 0xcc));
    bh->page_size = TARGET_PAGE_SIZE;

    /* a state error left everything as it was */
    g_assert_cmpint(postcopy_state_get(mis), ==, POSTCOPY_INCOMING_ADVISE);
    g_assert_true(all_equal(b0, 0, B0_SIZE, 0xa0));
    g_assert_true(all_equal(b1, 0, B1_SIZE, 0xb1));
    g_assert_true(all_equal(bl, 0, B1_SIZE, 0xdd));

    /* a good discard: exactly its range goes, state DISCARD */
    rcu_read_lock();
    bitmap_set(b0->receivedmap, 0, B0_SIZE >> TARGET_PAGE_BITS);
    rcu_read_unlock();
    s = stream_new();
    {
        uint64_t st[2] = { TARGET_PAGE_SIZE, 5 * TARGET_PAGE_SIZE };
        uint64_t ln[2] = { TARGET_PAGE_SIZE, 2 * TARGET_PAGE_SIZE };

        put_discard(&s, "t0", 2, st, ln);
    }
    err = load(&s);
    g_assert_no_error(err);
    g_assert_cmpint(postcopy_state_get(mis), ==, POSTCOPY_INCOMING_DISCARD);
    g_assert_true(all_equal(b0, 0, TARGET_PAGE_SIZE, 0xa0));
    g_assert_true(all_equal(b0, TARGET_PAGE_SIZE, TARGET_PAGE_SIZE, 0));
    g_assert_true(all_equal(b0, 2 * TARGET_PAGE_SIZE, 3 * TARGET_PAGE_SIZE,
                            0xa0));
    g_assert_true(all_equal(b0, 5 * TARGET_PAGE_SIZE, 2 * TARGET_PAGE_SIZE,
                            0));
    g_assert_true(all_equal(b0, 7 * TARGET_PAGE_SIZE,
                            B0_SIZE - 7 * TARGET_PAGE_SIZE, 0xa0));
    g_assert_true(all_equal(b1, 0, B1_SIZE, 0xb1));
    g_assert_true(test_bit(0, b0->receivedmap));
    g_assert_false(test_bit(1, b0->receivedmap));
    g_assert_false(test_bit(6, b0->receivedmap));
    g_assert_true(test_bit(7, b0->receivedmap));

    /* DISCARD again in state DISCARD is fine */
    s = stream_new();
    put_discard(&s, "t1", 1, &one[0], &one[1]);
    g_assert_no_error(load(&s));
    g_assert_true(all_equal(b1, 0, TARGET_PAGE_SIZE, 0));
    postcopy_incoming_reset(mis);
}

/* Placing needs LISTEN (an open userfaultfd): refuse cleanly before. */
static void test_place_without_listen(void)
{
    GError *err = NULL;
    uint8_t page[TARGET_PAGE_SIZE] = { 1 };

    postcopy_incoming_reset(mis);
    g_assert_false(postcopy_place_page(mis, b0, 0, page, &err));
    g_assert_nonnull(strstr(err->message, "userfaultfd is not open"));
    g_clear_error(&err);
    g_assert_false(postcopy_place_page_zero(mis, b0, 0, &err));
    g_assert_nonnull(err);
    g_clear_error(&err);
}

static void test_host_check(void)
{
    GError *err = NULL;

    if (!postcopy_ram_supported_by_host(NULL, &err)) {
        /* a clear reason naming the step is all we can ask for here */
        g_assert_nonnull(err);
        g_test_skip(err->message);
        g_error_free(err);
        return;
    }
    g_assert_no_error(err);
}

int main(int argc, char **argv)
{
    GError *err = NULL;
    int ret;

    g_test_init(&argc, &argv, NULL);
    rcu_register_thread();
    memory_register_accel_ops(&fake_ops);
    b0 = qemu_ram_alloc("t0", B0_SIZE, NULL, &err);
    g_assert_no_error(err);
    b1 = qemu_ram_alloc("t1", B1_SIZE, NULL, &err);
    g_assert_no_error(err);
    bh = qemu_ram_alloc("th", HP_SIZE, NULL, &err);
    g_assert_no_error(err);
    bl = qemu_ram_alloc(LONG_NAME, B1_SIZE, NULL, &err);
    g_assert_no_error(err);
    g_assert_true(migrate_set_capability(MIGRATION_CAPABILITY_POSTCOPY_RAM,
                                         true, &err));
    g_assert_no_error(err);
    ms = migration_state_new();
    /* The "ram" section handler loads into the current incoming object. */
    mis = migration_incoming_get_current();
    ram_mig_init();
    postcopy_ram_init();
    g_assert_true(ram_load_setup(mis, &err));

    g_test_add_func("/postcopy/host-check", test_host_check);
    g_test_add_func("/postcopy/discard/small-pages", test_discard_small_pages);
    g_test_add_func("/postcopy/discard/huge-pages", test_discard_huge_pages);
    g_test_add_func("/postcopy/urgent-pages", test_urgent_pages);
    g_test_add_func("/postcopy/urgent-pages/flood", test_request_flood);
    g_test_add_func("/postcopy/requested-set", test_requested_set);
    g_test_add_func("/postcopy/cmd/advise", test_advise);
    g_test_add_func("/postcopy/cmd/order", test_order);
    g_test_add_func("/postcopy/cmd/discard", test_discard_cmd);
    g_test_add_func("/postcopy/place-without-listen",
                    test_place_without_listen);
    ret = g_test_run();
    ram_load_cleanup(mis);
    migration_state_free(ms);
    qemu_ram_free(b0);
    qemu_ram_free(b1);
    qemu_ram_free(bh);
    qemu_ram_free(bl);
    rcu_unregister_thread();
    return ret;
}

/*
 * RAM section: save into a memory stream, wipe, load back, compare; the
 * host-page-aware page search; exact setup bytes; and malformed streams
 * rejected with clean errors.
 */
#include "qemu/osdep.h"
#include "qemu/bitmap.h"
#include "qemu/cutils.h"
#include "qemu/rcu.h"
#include "exec/ramblock.h"
#include "exec/memory.h"
#include "migration/migration.h"
#include "migration/qemu-file.h"
#include "migration/channel.h"
#include "migration/ram.h"
#include "migration/savevm.h"
#include "ram-stream-log.h"
#include "vm-flags.h"

#define B0_SIZE (4u << 20)
#define B1_SIZE (2u << 20)
#define HP_SIZE (4u << 20)          /* block with a faked 2 MiB page size */
#define HUGE (2u << 20)

static RAMBlock *b0, *b1, *bh;
/* The two sides, made as the program makes them. */
static MigrationState *ms;
static MigrationIncomingState *mis;

/* ---- a fake accelerator dirty log: tests choose the dirty pages ---- */

typedef struct FakeDirty {
    RAMBlock *rb;
    unsigned long page;
} FakeDirty;
static GArray *fake_dirty;          /* FakeDirty, consumed by log_sync */
static int log_starts, log_stops;

static bool fake_log_start(GError **errp)
{
    log_starts++;
    return true;
}

static void fake_log_stop(void)
{
    log_stops++;
}

static bool fake_log_sync(RAMBlock *rb, unsigned long *bmap,
                          uint64_t *num_dirty, GError **errp)
{
    *num_dirty = 0;
    for (guint i = 0; i < fake_dirty->len; ) {
        FakeDirty *d = &g_array_index(fake_dirty, FakeDirty, i);

        if (d->rb == rb) {
            if (!test_bit(d->page, bmap)) {
                set_bit(d->page, bmap);
                (*num_dirty)++;
            }
            g_array_remove_index(fake_dirty, i);
        } else {
            i++;
        }
    }
    return true;
}

static const AccelMemoryOps fake_ops = {
    .log_start = fake_log_start,
    .log_stop = fake_log_stop,
    .log_sync = fake_log_sync,
};

static void dirty(RAMBlock *rb, unsigned long page)
{
    FakeDirty d = { rb, page };

    g_array_append_val(fake_dirty, d);
}

/* ---- helpers ---- */

/* Page i: zero, uniform or random bytes, by i % 3. */
static void fill_block(RAMBlock *rb, uint32_t seed)
{
    GRand *r = g_rand_new_with_seed(seed);
    unsigned long n = rb->used_length / TARGET_PAGE_SIZE;

    for (unsigned long i = 0; i < n; i++) {
        uint8_t *p = rb->host + i * TARGET_PAGE_SIZE;

        switch (i % 3) {
        case 0:
            memset(p, 0, TARGET_PAGE_SIZE);
            break;
        case 1:
            memset(p, 0x5a + (i & 7), TARGET_PAGE_SIZE);
            break;
        default:
            for (size_t j = 0; j < TARGET_PAGE_SIZE; j += 4) {
                uint32_t v = g_rand_int(r);
                memcpy(p + j, &v, 4);
            }
        }
    }
    g_rand_free(r);
}

typedef struct Saved {
    uint8_t *data;
    size_t len;
} Saved;

static QEMUFile *out_file(QIOChannel **ioc)
{
    *ioc = qio_channel_new_buffer();
    return qemu_file_new_output(*ioc);
}

static Saved finish_out(QEMUFile *f, QIOChannel *ioc)
{
    Saved s;
    const uint8_t *d;

    g_assert_cmpint(qemu_fflush(f), ==, 0);
    d = qio_channel_buffer_data(ioc, &s.len);
    s.data = g_memdup2(d, s.len);
    qemu_fclose(f);
    qio_channel_unref(ioc);
    return s;
}

/* Load every section in s; returns false with errp on the first error. */
static bool load_all(const Saved *s, GError **errp)
{
    QIOChannel *ioc = qio_channel_new_from_bytes(s->data, s->len);
    QEMUFile *f = qemu_file_new_input(ioc);
    bool ok = true;

    qio_channel_unref(ioc);
    while (ok && qemu_file_tell(f) < s->len) {
        ok = ram_load(mis, f, RAM_SECTION_VERSION, errp);
    }
    qemu_fclose(f);
    return ok;
}

/* Everything: setup, iterate until done, complete. */
static Saved save_all(void)
{
    QIOChannel *ioc;
    QEMUFile *f = out_file(&ioc);
    GError *err = NULL;
    int ret;

    g_assert_true(ram_save_setup(ms->ram, f, &err));
    g_assert_no_error(err);
    do {
        ret = ram_save_iterate(ms->ram, f, &err);
        g_assert_no_error(err);
        g_assert_cmpint(ret, >=, 0);
    } while (ret == 0);
    g_assert_true(ram_save_complete(ms->ram, f, &err));
    g_assert_no_error(err);
    return finish_out(f, ioc);
}

/* ---- tests ---- */

static void test_roundtrip(void)
{
    uint8_t *c0 = g_malloc(B0_SIZE), *c1 = g_malloc(B1_SIZE);
    uint8_t *ch = g_malloc(HP_SIZE);
    GError *err = NULL;
    RAMCounters rc;
    Saved s;
    unsigned long pages = (B0_SIZE + B1_SIZE + HP_SIZE) / TARGET_PAGE_SIZE;

    fill_block(b0, 1);
    fill_block(b1, 2);
    fill_block(bh, 3);
    memcpy(c0, b0->host, B0_SIZE);
    memcpy(c1, b1->host, B1_SIZE);
    memcpy(ch, bh->host, HP_SIZE);
    log_starts = log_stops = 0;

    s = save_all();
    ram_counters_get(ms->ram, &rc);
    /* Every page exactly once: a third of them are zero pages. */
    g_assert_cmpuint(rc.duplicate + rc.normal, ==, pages);
    g_assert_cmpuint(rc.duplicate, ==,
                     DIV_ROUND_UP(B0_SIZE / TARGET_PAGE_SIZE, 3) +
                     DIV_ROUND_UP(B1_SIZE / TARGET_PAGE_SIZE, 3) +
                     DIV_ROUND_UP(HP_SIZE / TARGET_PAGE_SIZE, 3));
    g_assert_cmpuint(rc.transferred, ==, s.len);
    g_assert_cmpuint(rc.dirty_sync_count, ==, 2);   /* setup + complete */
    g_assert_cmpuint(ram_bytes_remaining(ms->ram), ==, 0);
    ram_save_cleanup(ms->ram);
    g_assert_cmpint(log_starts, ==, 1);
    g_assert_cmpint(log_stops, ==, 1);
    g_assert_null(b0->bmap);

    /* Wipe with garbage so zero pages must be written back too. */
    memset(b0->host, 0xee, B0_SIZE);
    memset(b1->host, 0xee, B1_SIZE);
    memset(bh->host, 0xee, HP_SIZE);
    g_assert_true(ram_load_setup(mis, &err));
    g_assert_true(load_all(&s, &err));
    g_assert_no_error(err);
    g_assert_cmpmem(b0->host, B0_SIZE, c0, B0_SIZE);
    g_assert_cmpmem(b1->host, B1_SIZE, c1, B1_SIZE);
    g_assert_cmpmem(bh->host, HP_SIZE, ch, HP_SIZE);
    g_assert_true(bitmap_full(b0->receivedmap, B0_SIZE / TARGET_PAGE_SIZE));
    g_assert_true(bitmap_full(b1->receivedmap, B1_SIZE / TARGET_PAGE_SIZE));
    ram_load_cleanup(mis);
    g_assert_null(b0->receivedmap);

    g_free(s.data);
    g_free(c0);
    g_free(c1);
    g_free(ch);
}

/* The setup section, byte for byte (doc §4.3), and the first records. */
static void test_wire_format(void)
{
    QIOChannel *ioc;
    QEMUFile *f = out_file(&ioc);
    GError *err = NULL;
    GByteArray *want = g_byte_array_new();
    uint8_t be[8];
    Saved s;

#define PUT64(v) do { uint64_t x_ = GUINT64_TO_BE(v); \
                      memcpy(be, &x_, 8); g_byte_array_append(want, be, 8); \
                 } while (0)
#define PUTSTR(str) do { uint8_t l_ = strlen(str); \
                         g_byte_array_append(want, &l_, 1); \
                         g_byte_array_append(want, (const uint8_t *)(str), l_); \
                    } while (0)
    memset(b0->host, 0, B0_SIZE);
    memset(b0->host + TARGET_PAGE_SIZE * 2, 0x11, TARGET_PAGE_SIZE);
    g_assert_true(ram_save_setup(ms->ram, f, &err));
    g_assert_cmpint(ram_save_iterate(ms->ram, f, &err), >=, 0);
    s = finish_out(f, ioc);
    ram_save_cleanup(ms->ram);

    PUT64((uint64_t)(B0_SIZE + B1_SIZE + HP_SIZE) | RAM_SAVE_FLAG_MEM_SIZE);
    PUTSTR("t0");
    PUT64(B0_SIZE);
    PUTSTR("t1");
    PUT64(B1_SIZE);
    PUTSTR("th");
    PUT64(HP_SIZE);         /* no page size: postcopy-ram is off */
    PUT64(RAM_SAVE_FLAG_EOS);
    /* page 0: zero, with the block id; page 1: zero, CONTINUE */
    PUT64(RAM_SAVE_FLAG_ZERO);
    PUTSTR("t0");
    g_byte_array_append(want, (const uint8_t *)"\0", 1);
    PUT64(TARGET_PAGE_SIZE | RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE);
    g_byte_array_append(want, (const uint8_t *)"\0", 1);
    PUT64(2 * TARGET_PAGE_SIZE | RAM_SAVE_FLAG_PAGE | RAM_SAVE_FLAG_CONTINUE);
    g_assert_cmpuint(s.len, >, want->len + TARGET_PAGE_SIZE);
    g_assert_cmpmem(s.data, want->len, want->data, want->len);
    g_assert_cmpmem(s.data + want->len, TARGET_PAGE_SIZE,
                    b0->host + 2 * TARGET_PAGE_SIZE, TARGET_PAGE_SIZE);
    /* Every section ends with EOS. */
    g_assert_cmpmem(s.data + s.len - 8, 8,
                    "\0\0\0\0\0\0\0\x10", 8);
    g_byte_array_free(want, true);
    g_free(s.data);
#undef PUT64
#undef PUTSTR
}

typedef struct SentLog {
    GArray *pages;      /* unsigned long, pages of bh only */
    int other;
    RamStreamLog *rl;
    QEMUFile *f;
    QIOChannel *ioc;
} SentLog;

/* Start logging: setup is written, drain() may follow. */
static SentLog sent_log_new(QEMUFile *f, QIOChannel *ioc)
{
    SentLog log = { g_array_new(false, false, sizeof(unsigned long)), 0,
                    ram_stream_log_new(), f, ioc };

    ram_stream_log_skip(log.rl, f, ioc);
    return log;
}

/* Read back the pages sent since the last call. */
static void sent_update(SentLog *log)
{
    ram_stream_log_update(log->rl, log->f, log->ioc);
    for (guint i = 0; i < log->rl->pages->len; i++) {
        if (g_array_index(log->rl->blocks, RAMBlock *, i) == bh) {
            g_array_append_val(log->pages,
                               g_array_index(log->rl->pages, unsigned long,
                                             i));
        } else {
            log->other++;
        }
    }
    ram_stream_log_clear(log->rl);
}

/* Forget what was sent so far (the drain). */
static void sent_reset(SentLog *log)
{
    sent_update(log);
    g_array_set_size(log->pages, 0);
    log->other = 0;
}

static void sent_log_free(SentLog *log)
{
    g_array_free(log->pages, true);
    ram_stream_log_free(log->rl);
}

/* Drain: after setup, send everything so the bitmaps are clean. */
static void drain(QEMUFile *f)
{
    GError *err = NULL;

    while (ram_save_iterate(ms->ram, f, &err) == 0) {
    }
    g_assert_no_error(err);
}

/*
 * With a 2 MiB host page, one rate-limited iteration (room for one host
 * page) sends every dirty target page of that host page and nothing else;
 * with 4 KiB pages it sends a single page.
 */
static void test_host_page_search(void)
{
    static const unsigned long dirty_pages[] = { 600, 3, 511, 5, 512, 1023 };
    QIOChannel *ioc;
    QEMUFile *f = out_file(&ioc);
    SentLog log;
    GError *err = NULL;
    Saved s;

    fill_block(bh, 7);          /* no zero page among dirty_pages? mixed */
    bh->page_size = HUGE;
    g_assert_true(ram_save_setup(ms->ram, f, &err));
    log = sent_log_new(f, ioc);
    drain(f);
    sent_reset(&log);

    for (size_t i = 0; i < ARRAY_SIZE(dirty_pages); i++) {
        dirty(bh, dirty_pages[i]);
    }
    dirty(b0, 17);
    g_assert_true(migration_bitmap_sync(ms->ram, &err));
    g_assert_cmpuint(ram_bytes_remaining(ms->ram), ==, 7 * TARGET_PAGE_SIZE);

    /* One byte per slice: each call sends exactly one host page. */
    qemu_file_set_rate_limit(f, 10);
    qemu_file_rate_limit_reset(f);
    g_assert_cmpint(ram_save_iterate(ms->ram, f, &err), ==, 0);
    sent_update(&log);
    g_assert_cmpuint(log.pages->len + log.other, >, 0);
    if (log.other) {
        /* The scan resumed in b0 first: that host page is 4 KiB. */
        g_assert_cmpint(log.other, ==, 1);
        g_assert_cmpuint(log.pages->len, ==, 0);
        qemu_file_rate_limit_reset(f);
        g_assert_cmpint(ram_save_iterate(ms->ram, f, &err), ==, 0);
        sent_update(&log);
    }
    g_assert_cmpuint(log.pages->len, ==, 3);
    g_assert_cmpuint(g_array_index(log.pages, unsigned long, 0), ==, 3);
    g_assert_cmpuint(g_array_index(log.pages, unsigned long, 1), ==, 5);
    g_assert_cmpuint(g_array_index(log.pages, unsigned long, 2), ==, 511);

    qemu_file_rate_limit_reset(f);
    g_assert_cmpint(ram_save_iterate(ms->ram, f, &err), ==, 0);
    sent_update(&log);
    g_assert_cmpuint(log.pages->len, ==, 6);
    g_assert_cmpuint(g_array_index(log.pages, unsigned long, 3), ==, 512);
    g_assert_cmpuint(g_array_index(log.pages, unsigned long, 4), ==, 600);
    g_assert_cmpuint(g_array_index(log.pages, unsigned long, 5), ==, 1023);

    qemu_file_set_rate_limit(f, 0);
    g_assert_cmpint(ram_save_iterate(ms->ram, f, &err), ==, 1);
    sent_update(&log);
    g_assert_cmpint(log.other, ==, 1);
    g_assert_cmpuint(ram_bytes_remaining(ms->ram), ==, 0);
    g_assert_no_error(err);

    sent_log_free(&log);
    s = finish_out(f, ioc);
    ram_save_cleanup(ms->ram);
    bh->page_size = TARGET_PAGE_SIZE;
    g_free(s.data);
}

/* With 4 KiB pages the same rate-limited call sends a single page. */
static void test_small_page_search(void)
{
    QIOChannel *ioc;
    QEMUFile *f = out_file(&ioc);
    SentLog log;
    GError *err = NULL;
    Saved s;

    fill_block(bh, 8);
    g_assert_true(ram_save_setup(ms->ram, f, &err));
    log = sent_log_new(f, ioc);
    drain(f);
    sent_reset(&log);
    dirty(bh, 5);
    dirty(bh, 3);
    g_assert_true(migration_bitmap_sync(ms->ram, &err));
    qemu_file_set_rate_limit(f, 10);
    qemu_file_rate_limit_reset(f);
    g_assert_cmpint(ram_save_iterate(ms->ram, f, &err), ==, 0);
    sent_update(&log);
    g_assert_cmpuint(log.pages->len, ==, 1);
    g_assert_cmpuint(g_array_index(log.pages, unsigned long, 0), ==, 3);
    sent_log_free(&log);
    s = finish_out(f, ioc);
    ram_save_cleanup(ms->ram);
    g_free(s.data);
}

/* A dirty page is re-sent after a sync, and loads over the old copy. */
static void test_redirty_resend(void)
{
    QIOChannel *ioc;
    QEMUFile *f = out_file(&ioc);
    GError *err = NULL;
    uint8_t *copy = g_malloc(B1_SIZE);
    RAMCounters rc;
    Saved s;

    fill_block(b1, 9);
    g_assert_true(ram_save_setup(ms->ram, f, &err));
    drain(f);
    memset(b1->host + 10 * TARGET_PAGE_SIZE, 0xab, TARGET_PAGE_SIZE);
    dirty(b1, 10);
    g_assert_true(migration_bitmap_sync(ms->ram, &err));
    g_assert_cmpuint(ram_bytes_remaining(ms->ram), ==, TARGET_PAGE_SIZE);
    g_assert_true(ram_save_complete(ms->ram, f, &err));
    ram_counters_get(ms->ram, &rc);
    g_assert_cmpuint(rc.dirty_sync_count, ==, 3);
    s = finish_out(f, ioc);
    ram_save_cleanup(ms->ram);

    memcpy(copy, b1->host, B1_SIZE);
    memset(b1->host, 0, B1_SIZE);
    g_assert_true(ram_load_setup(mis, &err));
    g_assert_true(load_all(&s, &err));
    g_assert_no_error(err);
    g_assert_cmpmem(b1->host, B1_SIZE, copy, B1_SIZE);
    ram_load_cleanup(mis);
    g_free(copy);
    g_free(s.data);
}

/* ---- postcopy recovery: the received bitmap becomes the dirty map ---- */

/* The RECV_BITMAP reply for rb's received map, as a destination sends it. */
static Saved recv_bitmap_reply(RAMBlock *rb, const unsigned long *recv)
{
    LoadVMContext ctx;
    QIOChannel *ioc;
    QEMUFile *f = out_file(&ioc);
    Saved s;

    loadvm_context_init(&ctx, NULL);
    ctx.to_src = f;
    g_assert_cmpint(migrate_send_rp_recv_bitmap(&ctx, rb->idstr, recv,
                                                rb->used_length >>
                                                TARGET_PAGE_BITS), ==, 0);
    ctx.to_src = NULL;
    loadvm_context_destroy(&ctx);
    s = finish_out(f, ioc);
    return s;
}

/* Feed what follows the RP message header (4 + 1 + id) to the source. */
static bool apply_reply(RAMBlock *rb, const uint8_t *data, size_t len,
                        GError **errp)
{
    size_t hdr = 4 + 1 + strlen(rb->idstr);
    QIOChannel *ioc = qio_channel_new_from_bytes(data + hdr, len - hdr);
    QEMUFile *f = qemu_file_new_input(ioc);
    bool ok;

    qio_channel_unref(ioc);
    ok = ram_postcopy_recv_bitmap(ms->ram, f, rb->idstr, errp);
    qemu_fclose(f);
    return ok;
}

static void test_recv_bitmap(void)
{
    unsigned long n = HP_SIZE >> TARGET_PAGE_BITS;
    unsigned long hp = HUGE >> TARGET_PAGE_BITS;
    g_autofree unsigned long *recv = bitmap_new(n);
    QIOChannel *ioc;
    QEMUFile *f = out_file(&ioc);
    GError *err = NULL;
    unsigned long *bmap;
    Saved s, out;

    bh->page_size = HUGE;
    g_assert_true(ram_save_setup(ms->ram, f, &err));
    out = finish_out(f, ioc);
    g_free(out.data);
    /* Host page 0 all received; host page 1 but its last target page. */
    bitmap_set(recv, 0, hp);
    bitmap_set(recv, hp, hp - 1);
    s = recv_bitmap_reply(bh, recv);
    /* type 5, len 1+2, "th", be64 size (one bit per page, in u64s) */
    g_assert_cmpuint(s.len, ==, 4 + 3 + 8 + n / 8 + 8);
    g_assert_cmpmem(s.data, 7, "\0\x05\0\x03\x02th", 7);
    g_assert_cmpuint(s.data[15], ==, 0xff);          /* LE: page 0 first */
    g_assert_true(apply_reply(bh, s.data, s.len, &err));
    g_assert_no_error(err);
    rcu_read_lock();
    bmap = rcu_dereference(bh->bmap);
    /* Host page 1 is sent again whole: the destination drops half pages. */
    g_assert_cmpuint(find_first_bit(bmap, n), ==, hp);
    g_assert_cmpuint(bitmap_count_one(bmap, n), ==, n - hp);
    rcu_read_unlock();
    g_assert_cmpuint(ram_bytes_remaining(ms->ram), ==,
                     (uint64_t)(n - hp) * TARGET_PAGE_SIZE +
                     B0_SIZE + B1_SIZE);

    /* A size for another block, a bad end marker, a short reply. */
    s.data[4 + 3 + 7] ^= 8;
    g_assert_false(apply_reply(bh, s.data, s.len, &err));
    g_assert_nonnull(strstr(err->message, "the blocks differ"));
    g_clear_error(&err);
    s.data[4 + 3 + 7] ^= 8;
    s.data[s.len - 1] ^= 1;
    g_assert_false(apply_reply(bh, s.data, s.len, &err));
    g_assert_nonnull(strstr(err->message, "bad end marker"));
    g_clear_error(&err);
    g_assert_false(apply_reply(bh, s.data, s.len - 20, &err));
    g_assert_nonnull(err);
    g_clear_error(&err);
    g_assert_false(ram_postcopy_recv_bitmap(ms->ram, NULL, "nosuch", &err));
    g_assert_nonnull(strstr(err->message, "unknown RAMBlock 'nosuch'"));
    g_clear_error(&err);
    ram_save_cleanup(ms->ram);
    bh->page_size = TARGET_PAGE_SIZE;
    g_free(s.data);
}

/* ---- malformed streams ---- */

typedef struct Stream {
    GByteArray *b;
} Stream;

static void s_u8(Stream *s, uint8_t v)
{
    g_byte_array_append(s->b, &v, 1);
}

static void s_be64(Stream *s, uint64_t v)
{
    uint64_t be = GUINT64_TO_BE(v);

    g_byte_array_append(s->b, (const uint8_t *)&be, 8);
}

static void s_str(Stream *s, const char *str)
{
    s_u8(s, strlen(str));
    g_byte_array_append(s->b, (const uint8_t *)str, strlen(str));
}

/* A correct MEM_SIZE list of our three blocks. */
static void s_block_list(Stream *s)
{
    s_be64(s, (uint64_t)(B0_SIZE + B1_SIZE + HP_SIZE) |
           RAM_SAVE_FLAG_MEM_SIZE);
    s_str(s, "t0");
    s_be64(s, B0_SIZE);
    s_str(s, "t1");
    s_be64(s, B1_SIZE);
    s_str(s, "th");
    s_be64(s, HP_SIZE);
}

/* Load s as one section; return the error message (or NULL if it loaded). */
static char *load_bad(Stream *s)
{
    Saved sv = { s->b->data, s->b->len };
    GError *err = NULL;
    char *msg = NULL;

    g_assert_true(ram_load_setup(mis, &err));
    if (!load_all(&sv, &err)) {
        g_assert_nonnull(err);
        msg = g_strdup(err->message);
        g_error_free(err);
    }
    ram_load_cleanup(mis);
    g_byte_array_free(s->b, true);
    s->b = g_byte_array_new();
    return msg;
}

static void expect_error(Stream *s, const char *fragment)
{
    g_autofree char *msg = load_bad(s);

    if (g_test_verbose()) {
        g_test_message("error: %s", msg ? msg : "(none)");
    }
    g_assert_nonnull(msg);
    g_assert_nonnull(strstr(msg, fragment));
}

static void test_load_errors(void)
{
    Stream s = { g_byte_array_new() };
    char *msg;

    /* Unknown block in the list. */
    s_be64(&s, (uint64_t)(B0_SIZE + B1_SIZE + HP_SIZE) |
           RAM_SAVE_FLAG_MEM_SIZE);
    s_str(&s, "nope");
    s_be64(&s, B0_SIZE);
    expect_error(&s, "Unknown ramblock \"nope\", cannot accept migration");

    /* Total differs from ours. */
    s_be64(&s, (uint64_t)(B0_SIZE + B1_SIZE + HP_SIZE + TARGET_PAGE_SIZE) |
           RAM_SAVE_FLAG_MEM_SIZE);
    expect_error(&s, "RAM size mismatch");

    /* Length of one block differs. */
    s_be64(&s, (uint64_t)(B0_SIZE + B1_SIZE + HP_SIZE) |
           RAM_SAVE_FLAG_MEM_SIZE);
    s_str(&s, "t1");
    s_be64(&s, B0_SIZE);
    expect_error(&s, "Length mismatch: t1: stream 0x400000 != local 0x200000");

    /* CONTINUE before any block was named. */
    s_be64(&s, RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE);
    s_u8(&s, 0);
    expect_error(&s, "CONTINUE but no previous block");

    /* Offset past the end of the block. */
    s_be64(&s, (uint64_t)B1_SIZE | RAM_SAVE_FLAG_ZERO);
    s_str(&s, "t1");
    s_u8(&s, 0);
    expect_error(&s, "Illegal RAM offset 0x200000 in block \"t1\"");

    /* Huge offset (would overflow a naive end check). */
    s_be64(&s, (~0ULL & TARGET_PAGE_MASK) | RAM_SAVE_FLAG_PAGE);
    s_str(&s, "t0");
    expect_error(&s, "Illegal RAM offset");

    /* A misaligned offset spills into the flag bits. */
    s_be64(&s, 0x800 | RAM_SAVE_FLAG_PAGE);
    s_str(&s, "t0");
    expect_error(&s, "Unknown combination of migration flags: 0x808");

    /* Obsolete FULL flag, and CONTINUE with EOS. */
    s_be64(&s, RAM_SAVE_FLAG_FULL);
    expect_error(&s, "Unknown combination of migration flags: 0x1");
    s_be64(&s, RAM_SAVE_FLAG_EOS | RAM_SAVE_FLAG_CONTINUE);
    expect_error(&s, "Unknown combination of migration flags: 0x30");
    s_be64(&s, RAM_SAVE_FLAG_XBZRLE);
    expect_error(&s, "Unknown combination of migration flags: 0x40");

    /* Truncated page data. */
    s_be64(&s, RAM_SAVE_FLAG_PAGE);
    s_str(&s, "t0");
    g_byte_array_append(s.b, (const uint8_t *)"abc", 3);
    msg = load_bad(&s);
    g_assert_nonnull(msg);
    g_free(msg);

    /* Missing EOS: the stream just ends. */
    s_block_list(&s);
    msg = load_bad(&s);
    g_assert_nonnull(msg);
    g_free(msg);

    /* Empty block name. */
    s_be64(&s, RAM_SAVE_FLAG_ZERO);
    s_u8(&s, 0);
    s_u8(&s, 0);
    msg = load_bad(&s);
    g_assert_nonnull(msg);
    g_free(msg);

    /* The good case, as a control: list, a ZERO with fill, EOS. */
    s_block_list(&s);
    s_be64(&s, RAM_SAVE_FLAG_EOS);
    s_be64(&s, 3 * TARGET_PAGE_SIZE | RAM_SAVE_FLAG_ZERO);
    s_str(&s, "t1");
    s_u8(&s, 0x77);
    s_be64(&s, RAM_SAVE_FLAG_EOS);
    memset(b1->host, 0, B1_SIZE);
    msg = load_bad(&s);
    g_assert_null(msg);
    /* A non-zero fill byte fills the page (as QEMU 7.2 accepts). */
    g_assert_cmpint(b1->host[3 * TARGET_PAGE_SIZE], ==, 0x77);
    g_assert_cmpint(b1->host[4 * TARGET_PAGE_SIZE - 1], ==, 0x77);
    g_assert_cmpint(b1->host[4 * TARGET_PAGE_SIZE], ==, 0);

    g_byte_array_free(s.b, true);
}

/* CONTINUE refers to the previous section's block. */
static void test_continue_across_sections(void)
{
    Stream s = { g_byte_array_new() };
    Saved sv;
    GError *err = NULL;

    s_be64(&s, RAM_SAVE_FLAG_ZERO);
    s_str(&s, "t0");
    s_u8(&s, 0x31);
    s_be64(&s, RAM_SAVE_FLAG_EOS);
    s_be64(&s, TARGET_PAGE_SIZE | RAM_SAVE_FLAG_ZERO |
           RAM_SAVE_FLAG_CONTINUE);
    s_u8(&s, 0x32);
    s_be64(&s, RAM_SAVE_FLAG_EOS);
    sv.data = s.b->data;
    sv.len = s.b->len;
    g_assert_true(ram_load_setup(mis, &err));
    g_assert_true(load_all(&sv, &err));
    g_assert_no_error(err);
    g_assert_cmpint(b0->host[0], ==, 0x31);
    g_assert_cmpint(b0->host[TARGET_PAGE_SIZE], ==, 0x32);
    g_assert_true(test_bit(0, b0->receivedmap));
    g_assert_true(test_bit(1, b0->receivedmap));
    g_assert_false(test_bit(2, b0->receivedmap));
    ram_load_cleanup(mis);
    g_byte_array_free(s.b, true);
}

/*
 * A ZERO record for a page never touched must not touch it (not even read
 * it: that maps the zero page, a fault per page); one for a page that
 * holds data, from before the load or from the load itself, must clear it.
 */
static void test_zero_untouched(void)
{
    RAMBackendConfig shared = { .type = RAM_BACKEND_ANON, .share = true };
    RAMBlock *rb = qemu_ram_alloc("tz", 1 << 20, NULL, NULL);
    RAMBlock *sh = qemu_ram_alloc("ts", 1 << 20, &shared, NULL);
    Stream s = { g_byte_array_new() };
    uint8_t page[TARGET_PAGE_SIZE];
    unsigned long *untouched;
    Saved sv;
    GError *err = NULL;

    g_assert_nonnull(rb);
    g_assert_null(qemu_ram_untouched_map(sh));  /* shared: cannot know */
    memset(rb->host + 2 * TARGET_PAGE_SIZE, 0xaa, TARGET_PAGE_SIZE);
    memset(page, 0x77, sizeof(page));
    s_be64(&s, RAM_SAVE_FLAG_ZERO);
    s_str(&s, "tz");
    s_u8(&s, 0);
    s_be64(&s, 2 * TARGET_PAGE_SIZE | RAM_SAVE_FLAG_ZERO |
           RAM_SAVE_FLAG_CONTINUE);
    s_u8(&s, 0);
    s_be64(&s, 4 * TARGET_PAGE_SIZE | RAM_SAVE_FLAG_PAGE |
           RAM_SAVE_FLAG_CONTINUE);
    g_byte_array_append(s.b, page, sizeof(page));
    s_be64(&s, 4 * TARGET_PAGE_SIZE | RAM_SAVE_FLAG_ZERO |
           RAM_SAVE_FLAG_CONTINUE);
    s_u8(&s, 0);
    s_be64(&s, RAM_SAVE_FLAG_EOS);
    sv.data = s.b->data;
    sv.len = s.b->len;

    g_assert_true(ram_load_setup(mis, &err));
    g_assert_true(test_bit(0, rb->zeromap));
    g_assert_false(test_bit(2, rb->zeromap));
    g_assert_true(load_all(&sv, &err));
    g_assert_no_error(err);
    ram_load_cleanup(mis);
    g_assert_true(buffer_is_zero(rb->host + 2 * TARGET_PAGE_SIZE,
                                 TARGET_PAGE_SIZE));
    g_assert_true(buffer_is_zero(rb->host + 4 * TARGET_PAGE_SIZE,
                                 TARGET_PAGE_SIZE));
    untouched = qemu_ram_untouched_map(rb);
    g_assert_nonnull(untouched);
    g_assert_true(test_bit(0, untouched));      /* still never touched */
    g_assert_false(test_bit(4, untouched));
    g_free(untouched);
    qemu_ram_free(rb);
    qemu_ram_free(sh);
    g_byte_array_free(s.b, true);
}

/* Dense-data huge pages: which regions of "td" the stream fills. */
#define TD_REGION_PAGES (RAM_THP_SIZE / TARGET_PAGE_SIZE)
#define TD_REGIONS 7
#define TD_TOUCHED 5                    /* touched before the load */
static const unsigned td_every[TD_REGIONS] = { 1, 1, 16, 16, 1, 1, 1 };

static void td_fill(uint8_t *page, uint64_t offset)
{
    memset(page, (uint8_t)(offset >> TARGET_PAGE_BITS) ^ 0x5a,
           TARGET_PAGE_SIZE);
    memcpy(page, &offset, sizeof(offset));
}

static void td_stream(Stream *s)
{
    uint8_t page[TARGET_PAGE_SIZE];
    bool first = true;

    for (unsigned r = 0; r < TD_REGIONS; r++) {
        for (unsigned i = 0; i < TD_REGION_PAGES; i += td_every[r]) {
            uint64_t off = (uint64_t)r * RAM_THP_SIZE + i * TARGET_PAGE_SIZE;

            s_be64(s, off | RAM_SAVE_FLAG_PAGE |
                   (first ? 0 : RAM_SAVE_FLAG_CONTINUE));
            if (first) {
                s_str(s, "td");
                first = false;
            }
            td_fill(page, off);
            g_byte_array_append(s->b, page, sizeof(page));
        }
    }
    s_be64(s, RAM_SAVE_FLAG_EOS);
}

/* Load td's stream; huge[r]: whether region r was advised huge meanwhile. */
static void td_load(bool postcopy_advised, bool huge[TD_REGIONS])
{
    RAMBlock *rb = qemu_ram_alloc("td", TD_REGIONS * RAM_THP_SIZE, NULL,
                                  NULL);
    Stream s = { g_byte_array_new() };
    uint8_t want[TARGET_PAGE_SIZE];
    Saved sv;
    GError *err = NULL;

    g_assert_nonnull(rb);
    rb->host[TD_TOUCHED * RAM_THP_SIZE + 100 * TARGET_PAGE_SIZE] = 1;
    td_stream(&s);
    sv.data = s.b->data;
    sv.len = s.b->len;
    ram_load_set_postcopy_advised(mis, postcopy_advised);
    g_assert_true(ram_load_setup(mis, &err));
    g_assert_true(load_all(&sv, &err));
    g_assert_no_error(err);
    for (unsigned r = 0; r < TD_REGIONS; r++) {
        huge[r] = vm_advised_huge(rb->host + r * RAM_THP_SIZE);
    }
    ram_load_cleanup(mis);
    ram_load_set_postcopy_advised(mis, false);
    for (uint64_t off = 0; off < rb->used_length; off += TARGET_PAGE_SIZE) {
        unsigned r = off / RAM_THP_SIZE;
        unsigned i = (off % RAM_THP_SIZE) / TARGET_PAGE_SIZE;

        if (i % td_every[r]) {
            g_assert_true(buffer_is_zero(rb->host + off, TARGET_PAGE_SIZE));
        } else {
            td_fill(want, off);
            g_assert_cmpmem(rb->host + off, TARGET_PAGE_SIZE, want,
                            TARGET_PAGE_SIZE);
        }
    }
    qemu_ram_free(rb);
    g_byte_array_free(s.b, true);
}

/*
 * A region is advised huge before its first write when the one below was
 * dense and it is untouched; sparse data, touched regions and postcopy
 * (where khugepaged must not fill holes) keep small pages.
 */
static void test_dense_huge(void)
{
    static const bool want[TD_REGIONS] = {
        false,          /* the first: nothing to predict from */
        true,           /* after a dense one */
        true,           /* after a dense one (sparse itself: mispredicted) */
        false,          /* after a sparse one */
        false,          /* after a sparse one */
        false,          /* touched before the load */
        true,           /* after a dense one */
    };
    bool huge[TD_REGIONS];
    RAMBlock *probe = qemu_ram_alloc("tprobe", RAM_THP_SIZE, NULL, NULL);
    bool thp = qemu_ram_advise_huge_region(probe, 0);

    qemu_ram_free(probe);
    if (!thp) {
        g_test_skip("no transparent huge pages here (madvise refused)");
        return;
    }
    td_load(false, huge);
    for (unsigned r = 0; r < TD_REGIONS; r++) {
        if (huge[r] != want[r]) {
            g_error("region %u: advised huge %d, expected %d", r, huge[r],
                    want[r]);
        }
    }
    td_load(true, huge);
    for (unsigned r = 0; r < TD_REGIONS; r++) {
        if (huge[r]) {
            g_error("region %u advised huge with postcopy advised", r);
        }
    }
}

static void test_bad_version(void)
{
    QIOChannel *ioc = qio_channel_new_from_bytes("\0\0\0\0\0\0\0\x10", 8);
    QEMUFile *f = qemu_file_new_input(ioc);
    GError *err = NULL;

    qio_channel_unref(ioc);
    g_assert_false(ram_load(mis, f, 3, &err));
    g_assert_nonnull(err);
    g_error_free(err);
    qemu_fclose(f);
}

int main(int argc, char **argv)
{
    GError *err = NULL;
    int ret;

    g_test_init(&argc, &argv, NULL);
    rcu_register_thread();
    fake_dirty = g_array_new(false, false, sizeof(FakeDirty));
    memory_register_accel_ops(&fake_ops);
    b0 = qemu_ram_alloc("t0", B0_SIZE, NULL, &err);
    g_assert_no_error(err);
    b1 = qemu_ram_alloc("t1", B1_SIZE, NULL, &err);
    g_assert_no_error(err);
    bh = qemu_ram_alloc("th", HP_SIZE, NULL, &err);
    g_assert_no_error(err);
    ms = migration_state_new();
    mis = migration_incoming_state_new();

    g_test_add_func("/ram/roundtrip", test_roundtrip);
    g_test_add_func("/ram/wire-format", test_wire_format);
    g_test_add_func("/ram/host-page-search", test_host_page_search);
    g_test_add_func("/ram/small-page-search", test_small_page_search);
    g_test_add_func("/ram/redirty-resend", test_redirty_resend);
    g_test_add_func("/ram/load-errors", test_load_errors);
    g_test_add_func("/ram/continue-across-sections",
                    test_continue_across_sections);
    g_test_add_func("/ram/bad-version", test_bad_version);
    g_test_add_func("/ram/zero-untouched", test_zero_untouched);
    g_test_add_func("/ram/dense-huge", test_dense_huge);
    g_test_add_func("/ram/recv-bitmap", test_recv_bitmap);
    ret = g_test_run();
    migration_state_free(ms);
    migration_incoming_state_free(mis);
    qemu_ram_free(b0);
    qemu_ram_free(b1);
    qemu_ram_free(bh);
    rcu_unregister_thread();
    return ret;
}

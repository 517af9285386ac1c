/*
 * Unit tests for the migration stream analyzer (tools/stream-analyze.c):
 * hand-built streams with known contents, and broken ones that must fail
 * with an offset instead of crashing.
 */
#include "qemu/osdep.h"
#include "../../tools/stream-analyze.h"

static void put_u8(GByteArray *a, uint8_t v)
{
    g_byte_array_append(a, &v, 1);
}

static void put_be(GByteArray *a, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        put_u8(a, v >> (8 * i));
    }
}

static void put_str(GByteArray *a, const char *s)
{
    put_u8(a, strlen(s));
    g_byte_array_append(a, (const guint8 *)s, strlen(s));
}

static void put_header(GByteArray *a)
{
    put_be(a, 0x5145564d, 4);
    put_be(a, 3, 4);
    put_u8(a, 0x07);
    put_be(a, 4, 4);
    g_byte_array_append(a, (const guint8 *)"none", 4);
}

static void put_full(GByteArray *a, uint32_t sid, const char *id,
                     uint32_t ver)
{
    put_u8(a, 0x04);
    put_be(a, sid, 4);
    put_str(a, id);
    put_be(a, 0, 4);
    put_be(a, ver, 4);
}

static void put_footer(GByteArray *a, uint32_t sid)
{
    put_u8(a, 0x7e);
    put_be(a, sid, 4);
}

static void put_ram_start(GByteArray *a, uint32_t sid, uint64_t len)
{
    put_u8(a, 0x01);
    put_be(a, sid, 4);
    put_str(a, "ram");
    put_be(a, 0, 4);
    put_be(a, 4, 4);
    put_be(a, len | 0x04, 8);
    put_str(a, "pc.ram");
    put_be(a, len, 8);
    put_be(a, 0x10, 8);
    put_footer(a, sid);
}

static void put_globalstate(GByteArray *a, uint32_t sid)
{
    uint8_t state[100] = "running";

    put_full(a, sid, "globalstate", 1);
    put_be(a, 8, 4);
    g_byte_array_append(a, state, sizeof(state));
    put_footer(a, sid);
}

/* A precopy stream: 4 pages, PAGE + ZERO + XBZRLE, three devices. */
static GByteArray *precopy_stream(void)
{
    GByteArray *a = g_byte_array_new();
    uint8_t page[4096];

    memset(page, 0x7e, sizeof(page));   /* footer bytes inside data */
    put_header(a);
    put_ram_start(a, 3, 4 * 4096);
    put_u8(a, 0x02);                    /* PART */
    put_be(a, 3, 4);
    put_be(a, 0x0000 | 0x08, 8);        /* PAGE @0 with id */
    put_str(a, "pc.ram");
    g_byte_array_append(a, page, sizeof(page));
    put_be(a, 0x1000 | 0x02 | 0x20, 8); /* ZERO|CONTINUE @1 */
    put_u8(a, 0);
    put_be(a, 0x2000 | 0x02 | 0x20, 8); /* ZERO|CONTINUE @2 */
    put_u8(a, 0);
    put_be(a, 0x3000 | 0x40 | 0x20, 8); /* XBZRLE|CONTINUE @3 */
    put_u8(a, 1);
    put_be(a, 3, 2);
    put_u8(a, 0);
    put_u8(a, 1);
    put_u8(a, 0xaa);
    put_be(a, 0x10, 8);
    put_footer(a, 3);
    put_u8(a, 0x03);                    /* END, nothing left */
    put_be(a, 3, 4);
    put_be(a, 0x10, 8);
    put_footer(a, 3);
    put_full(a, 0, "timer", 2);
    put_be(a, 1234, 8);
    put_be(a, 0, 8);
    put_be(a, 5678, 8);
    put_footer(a, 0);
    put_full(a, 7, "mystery-device", 1);   /* unknown layout: scanned */
    put_be(a, 0x1122, 2);
    put_footer(a, 7);                   /* a false footer: no record after */
    put_u8(a, 0xff);
    put_be(a, 0x42424242, 4);
    put_footer(a, 7);
    put_globalstate(a, 4);
    put_u8(a, 0x00);                    /* EOF */
    put_u8(a, 0x06);
    put_be(a, 2, 4);
    g_byte_array_append(a, (const guint8 *)"{}", 2);
    return a;
}

static JsonObject *record(JsonObject *o, guint i)
{
    JsonArray *r = json_object_get_array_member(o, "records");

    g_assert_cmpuint(i, <, json_array_get_length(r));
    return json_array_get_object_element(r, i);
}

static void test_precopy(void)
{
    g_autoptr(GByteArray) a = precopy_stream();
    g_autoptr(JsonObject) o = NULL;
    g_autoptr(GError) err = NULL;
    JsonObject *ram, *blk, *mystery;

    g_assert_true(stream_analyze(a->data, a->len, &o, &err));
    g_assert_no_error(err);
    g_assert_cmpstr(json_object_get_string_member(
        json_object_get_object_member(o, "configuration"), "machine"), ==,
        "none");
    ram = json_object_get_object_member(o, "ram");
    blk = json_array_get_object_element(
        json_object_get_array_member(ram, "blocks"), 0);
    g_assert_cmpstr(json_object_get_string_member(blk, "id"), ==, "pc.ram");
    g_assert_cmpint(json_object_get_int_member(blk, "length"), ==, 16384);
    g_assert_cmpint(json_object_get_int_member(blk, "page"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(blk, "page-bytes"), ==,
                    8 + 7 + 4096);
    g_assert_cmpint(json_object_get_int_member(blk, "zero"), ==, 2);
    g_assert_cmpint(json_object_get_int_member(blk, "zero-bytes"), ==, 18);
    g_assert_cmpint(json_object_get_int_member(blk, "xbzrle"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(ram, "eos"), ==, 3);

    g_assert_cmpstr(json_object_get_string_member(record(o, 3), "idstr"),
                    ==, "timer");
    g_assert_cmpint(json_object_get_int_member(record(o, 3),
                                               "cpu-clock-offset"), ==, 5678);
    mystery = record(o, 4);
    g_assert_true(json_object_get_boolean_member(mystery, "skipped-by-scan"));
    g_assert_cmpint(json_object_get_int_member(mystery, "payload-size"), ==,
                    12);
    g_assert_cmpstr(json_object_get_string_member(record(o, 5), "runstate"),
                    ==, "running");
    g_assert_cmpstr(json_object_get_string_member(record(o, 6), "type"), ==,
                    "EOF");
    g_assert_cmpstr(json_object_get_string_member(record(o, 7), "type"), ==,
                    "VMDESCRIPTION");
}

static void put_cmd(GByteArray *a, uint16_t cmd, uint16_t len)
{
    put_u8(a, 0x08);
    put_be(a, cmd, 2);
    put_be(a, len, 2);
}

static void test_postcopy(void)
{
    g_autoptr(GByteArray) a = g_byte_array_new();
    g_autoptr(GByteArray) blob = g_byte_array_new();
    g_autoptr(JsonObject) o = NULL;
    g_autoptr(GError) err = NULL;
    JsonObject *disc, *pkg, *ram;
    JsonArray *inner, *ranges;

    put_header(a);
    put_cmd(a, 1, 0);                   /* OPEN_RETURN_PATH */
    put_cmd(a, 2, 4);                   /* PING 1 */
    put_be(a, 1, 4);
    put_cmd(a, 3, 16);                  /* ADVISE */
    put_be(a, 4096, 8);
    put_be(a, 4096, 8);
    put_ram_start(a, 2, 8 * 4096);
    put_cmd(a, 6, 3 + 6 + 32);          /* DISCARD two ranges */
    put_u8(a, 0);
    put_str(a, "pc.ram");
    put_u8(a, 0);
    put_be(a, 0x1000, 8);
    put_be(a, 0x2000, 8);
    put_be(a, 0x5000, 8);
    put_be(a, 0x3000, 8);

    put_cmd(blob, 4, 0);                /* LISTEN */
    put_globalstate(blob, 9);
    put_cmd(blob, 2, 4);
    put_be(blob, 3, 4);
    put_cmd(blob, 5, 0);                /* RUN */
    put_cmd(a, 7, 4);
    put_be(a, blob->len, 4);
    g_byte_array_append(a, blob->data, blob->len);

    put_u8(a, 0x03);                    /* END with one zero page */
    put_be(a, 2, 4);
    put_be(a, 0x7000 | 0x02, 8);
    put_str(a, "pc.ram");
    put_u8(a, 0);
    put_be(a, 0x10, 8);
    put_footer(a, 2);
    put_u8(a, 0x00);                    /* EOF, no VMDESCRIPTION */

    g_assert_true(stream_analyze(a->data, a->len, &o, &err));
    g_assert_no_error(err);
    g_assert_cmpint(json_object_get_int_member(record(o, 1), "value"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(record(o, 2),
                                               "page-size-summary"), ==, 4096);
    disc = record(o, 4);
    g_assert_cmpstr(json_object_get_string_member(disc, "command"), ==,
                    "POSTCOPY_RAM_DISCARD");
    ranges = json_object_get_array_member(disc, "ranges");
    g_assert_cmpuint(json_array_get_length(ranges), ==, 2);
    g_assert_cmpint(json_array_get_int_element(
        json_array_get_array_element(ranges, 1), 0), ==, 0x5000);
    pkg = record(o, 5);
    g_assert_cmpint(json_object_get_int_member(pkg, "blob-length"), ==,
                    blob->len);
    inner = json_object_get_array_member(pkg, "records");
    g_assert_cmpuint(json_array_get_length(inner), ==, 4);
    g_assert_cmpstr(json_object_get_string_member(
        json_array_get_object_element(inner, 3), "command"), ==,
        "POSTCOPY_RUN");
    ram = json_object_get_object_member(o, "ram");
    g_assert_cmpint(json_object_get_int_member(ram, "zero"), ==, 1);
}

/* Every truncation must fail cleanly with an offset in the message. */
static void test_truncated(void)
{
    g_autoptr(GByteArray) a = precopy_stream();

    for (guint len = 0; len < a->len; len++) {
        g_autoptr(JsonObject) o = NULL;
        g_autoptr(GError) err = NULL;
        /* a copy of exactly len bytes so ASan sees any overread */
        g_autofree uint8_t *buf = g_memdup2(a->data, len ? len : 1);

        /* ending right after EOF is valid: VMDESCRIPTION is optional */
        if (len == a->len - 7) {
            g_assert_true(stream_analyze(buf, len, &o, &err));
            continue;
        }
        if (stream_analyze(buf, len, &o, &err)) {
            g_error("a stream cut at %u of %u bytes parsed", len, a->len);
        }
        g_assert_true(g_str_has_prefix(err->message, "offset 0x"));
        g_assert_true(json_object_has_member(o, "error"));
    }
}

static void expect_error(GByteArray *a, size_t patch_at, uint8_t val,
                         const char *needle)
{
    g_autoptr(JsonObject) o = NULL;
    g_autoptr(GError) err = NULL;

    a->data[patch_at] = val;
    g_assert_false(stream_analyze(a->data, a->len, &o, &err));
    if (!strstr(err->message, needle)) {
        g_error("'%s' does not contain '%s'", err->message, needle);
    }
}

static void test_corrupt(void)
{
    /* offsets in precopy_stream(): header 17 bytes, RAM START 53 */
    const size_t part = 17 + 53;
    struct { size_t at; uint8_t val; const char *msg; } cases[] = {
        { 0, 'X', "offset 0x0: not a migration stream" },
        { 7, 2, "unsupported stream version" },
        { 17 + 52, 9, "footer names section 9" },         /* START footer */
        { part, 0x05, "unexpected record type 0x05" },
        { part + 12, 0x01, "unknown RAM record flags 0x1" },
        { part + 14, 'x', "unknown RAMBlock 'xc.ram'" },
        { part + 10, 0x40, "is beyond RAMBlock" },
        { part + 13, 0, "offset 0x53: empty RAMBlock id" },
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        g_autoptr(GByteArray) a = precopy_stream();
        expect_error(a, cases[i].at, cases[i].val, cases[i].msg);
    }
    {
        g_autoptr(GByteArray) a = precopy_stream();
        g_autoptr(JsonObject) o = NULL;
        g_autoptr(GError) err = NULL;
        put_u8(a, 0xff);
        g_assert_false(stream_analyze(a->data, a->len, &o, &err));
        g_assert_nonnull(strstr(err->message, "1 unexpected bytes after"));
    }
}

/*
 * levels PACKAGED commands, each blob holding the next, the innermost
 * holding RUN; every package header takes 9 bytes after the 17 of the
 * stream header.
 */
static GByteArray *nested_packages(guint levels)
{
    GByteArray *a = g_byte_array_new();

    put_header(a);
    for (guint k = levels; k > 0; k--) {
        put_cmd(a, 7, 4);
        put_be(a, 5 + 9 * (k - 1), 4);
    }
    put_cmd(a, 5, 0);                   /* RUN */
    put_u8(a, 0x00);                    /* EOF */
    return a;
}

static void test_packaged_depth(void)
{
    /* 50000 levels overflowed the stack before there was a limit */
    static const guint deep[] = { 5, 50000 };

    {
        g_autoptr(GByteArray) a = nested_packages(4);
        g_autoptr(JsonObject) o = NULL;
        g_autoptr(GError) err = NULL;

        g_assert_true(stream_analyze(a->data, a->len, &o, &err));
        g_assert_no_error(err);
    }
    for (size_t i = 0; i < ARRAY_SIZE(deep); i++) {
        g_autoptr(GByteArray) a = nested_packages(deep[i]);
        g_autoptr(JsonObject) o = NULL;
        g_autoptr(GError) err = NULL;

        g_assert_false(stream_analyze(a->data, a->len, &o, &err));
        /* the fifth package, at 17 + 4 * 9 */
        g_assert_nonnull(strstr(err->message, "offset 0x35: PACKAGED "
                                "nested more than 4 deep"));
        g_assert_true(json_object_has_member(o, "error"));
    }
}

/* precopy_stream() with json as its VMDESCRIPTION */
static GByteArray *stream_with_vmdesc(const char *json)
{
    GByteArray *a = precopy_stream();

    g_byte_array_set_size(a, a->len - 7);
    put_u8(a, 0x06);
    put_be(a, strlen(json), 4);
    g_byte_array_append(a, (const guint8 *)json, strlen(json));
    return a;
}

/* The VMDESCRIPTION's JSON error, NULL if it parsed; offset of the JSON */
static const char *vmdesc_error(const char *json, JsonObject **o,
                                size_t *json_off)
{
    g_autoptr(GByteArray) a = stream_with_vmdesc(json);
    g_autoptr(GError) err = NULL;
    JsonObject *rec;

    /* a bad VMDESCRIPTION is reported, the stream is still fine */
    g_assert_true(stream_analyze(a->data, a->len, o, &err));
    g_assert_no_error(err);
    rec = record(*o, 7);
    g_assert_cmpstr(json_object_get_string_member(rec, "type"), ==,
                    "VMDESCRIPTION");
    *json_off = a->len - strlen(json);
    if (!json_object_has_member(rec, "json-error")) {
        g_assert_true(json_object_has_member(rec, "json"));
        return NULL;
    }
    return json_object_get_string_member(rec, "json-error");
}

static char *repeat(const char *head, char ch, size_t n, const char *tail)
{
    g_autofree char *mid = g_strnfill(n, ch);

    return g_strconcat(head, mid, tail, NULL);
}

static void test_vmdesc_depth(void)
{
    /* 100000 levels overflowed json-glib's parser */
    g_autofree char *deep = repeat("", '[', 100000, "");
    g_autofree char *limit = NULL;
    g_autofree char *over = repeat("", '[', 129, "");
    g_autofree char *in_string = repeat("[\"", '[', 1000, "\"]");
    g_autofree char *in_sq = repeat("['\\', ", '[', 200, "");
    g_autofree char *after_comment = repeat("[/* \" */ ", '[', 200, "");
    g_autofree char *after_slashes = repeat("[/ \" / ", '[', 200, "");
    g_autofree char *want = NULL;
    const char *msg;
    size_t off;
    struct { const char *json; size_t at; } bad[] = {
        { deep, 128 }, { over, 128 },
        { in_sq, 6 + 127 }, { after_comment, 9 + 127 },
        { after_slashes, 7 + 127 },
    };

    {
        GString *s = g_string_new(NULL);

        for (int i = 0; i < 128; i++) {
            g_string_append(s, i % 2 ? "{\"a\": " : "[");
        }
        g_string_append(s, "0");
        for (int i = 127; i >= 0; i--) {
            g_string_append(s, i % 2 ? "}" : "]");
        }
        limit = g_string_free(s, FALSE);
    }
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        g_autoptr(JsonObject) o = NULL;

        msg = vmdesc_error(bad[i].json, &o, &off);
        g_assert_nonnull(msg);
        g_free(want);
        want = g_strdup_printf("offset 0x%zx: JSON nested more than 128 "
                               "deep", off + bad[i].at);
        g_assert_cmpstr(msg, ==, want);
    }
    {
        g_autoptr(JsonObject) o = NULL;

        g_assert_null(vmdesc_error(limit, &o, &off));
    }
    {
        g_autoptr(JsonObject) o = NULL;

        g_assert_null(vmdesc_error(in_string, &o, &off));
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/analyze/precopy", test_precopy);
    g_test_add_func("/analyze/postcopy", test_postcopy);
    g_test_add_func("/analyze/truncated", test_truncated);
    g_test_add_func("/analyze/corrupt", test_corrupt);
    g_test_add_func("/analyze/packaged-depth", test_packaged_depth);
    g_test_add_func("/analyze/vmdesc-depth", test_vmdesc_depth);
    return g_test_run();
}

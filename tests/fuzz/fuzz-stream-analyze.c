/*
 * Fuzz target: the offline stream analyzer (tools/stream-analyze.c) that
 * ferry-analyze runs on saved migration streams.
 */
#include "qemu/osdep.h"
#include "stream-analyze.h"
#include "fuzz.h"

static void fuzz_analyze(const uint8_t *data, size_t size);

/*
 * GLib and json-glib allocate for good on first use (types, quarks, error
 * domains): a stream with a VMDESCRIPTION, one whose JSON is broken and a
 * truncated one, before the first input, keep those out of the per-input
 * leak check, which can then record allocations with the fast unwinder
 * (scripts/fuzz.sh).
 */
static void fuzz_analyze_warm_up(void)
{
    static const char json[] =
        "{\"page_size\":4096,\"devices\":[{\"name\":\"d\",\"instance_id\":0,"
        "\"vmsd_name\":\"d\",\"version\":1,\"fields\":[{\"name\":\"a\","
        "\"type\":\"uint32\",\"size\":4}]}]}";
    static const uint8_t head[] = { 'Q', 'E', 'V', 'M', 0, 0, 0, 3 };
    g_autoptr(GByteArray) good = g_byte_array_new();
    g_autoptr(GByteArray) bad = NULL;
    uint8_t rec[5] = { 0x00 };              /* EOF */
    uint32_t len = sizeof(json) - 1;

    g_byte_array_append(good, head, sizeof(head));
    g_byte_array_append(good, rec, 1);
    rec[0] = 0x06;                          /* VMDESCRIPTION */
    rec[1] = len >> 24;
    rec[2] = len >> 16;
    rec[3] = len >> 8;
    rec[4] = len;
    g_byte_array_append(good, rec, 5);
    g_byte_array_append(good, (const uint8_t *)json, len);
    fuzz_analyze(good->data, good->len);
    bad = g_byte_array_sized_new(good->len);
    g_byte_array_append(bad, good->data, good->len);
    bad->data[bad->len - 2] = '[';          /* broken JSON */
    fuzz_analyze(bad->data, bad->len);
    fuzz_analyze(good->data, sizeof(head) + 3);   /* truncated */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool warm;

    if (!warm) {
        warm = true;
        fuzz_analyze_warm_up();
    }
    fuzz_analyze(data, size);
    return 0;
}

static void fuzz_analyze(const uint8_t *data, size_t size)
{
    g_autoptr(GError) err = NULL;
    JsonObject *result = NULL;
    bool ok = stream_analyze(data, size, &result, &err);

    /* The contract: always a description, an error exactly on failure. */
    g_assert(result);
    g_assert(ok == (err == NULL));
    if (err) {
        g_assert(g_str_has_prefix(err->message, "offset 0x"));
    }
    json_object_unref(result);
}

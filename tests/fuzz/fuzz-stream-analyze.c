/*
 * Fuzz target: the offline stream analyzer (tools/stream-analyze.c) that
 * ferry-analyze runs on saved migration streams.
 */
#include "qemu/osdep.h"
#include "stream-analyze.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
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
    return 0;
}

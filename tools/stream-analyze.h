/*
 * Migration stream analyzer: decodes a stream saved with
 * migrate "exec:cat > FILE" (QEMU's or ferry's) into a JSON description.
 * Used by ferry-analyze and the unit tests.
 */
#ifndef TOOLS_STREAM_ANALYZE_H
#define TOOLS_STREAM_ANALYZE_H

#include "qemu/osdep.h"
#include <json-glib/json-glib.h>

/*
 * Decode buf[0..len).  Always returns a description (the caller unrefs)
 * of everything decoded, in stream order; on a parse failure it also
 * returns false and sets errp to a message that starts with
 * "offset 0xN:" (N = byte offset in the stream).
 *
 * Description members: "size", "magic", "version", "configuration",
 * "records" (one object per top-level record), "ram" (per-block totals)
 * and, on failure, "error".
 */
bool stream_analyze(const uint8_t *buf, size_t len, JsonObject **result,
                    GError **errp);

#endif

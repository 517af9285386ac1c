/*
 * Parsing helpers for untrusted text (command line, QMP arguments).
 */
#ifndef QEMU_CUTILS_H
#define QEMU_CUTILS_H

#include "qemu/osdep.h"

/*
 * Parse a size with an optional suffix B, K, M, G, T, P, E (powers of 1024,
 * case-insensitive), decimal or 0x-hex, fractions allowed with a suffix
 * ("1.5G").  default_suffix is the unit used when there is none ('B' for
 * bytes, 'M' for -m).  Rejects empty strings, negative numbers, trailing
 * garbage and overflow with an error naming the value.
 */
bool qemu_strtosz(const char *str, char default_suffix, uint64_t *result,
                  GError **errp);
/* Strict unsigned integer parse (decimal or 0x hex), whole string. */
bool qemu_strtou64(const char *str, uint64_t *result, GError **errp);
/* "on"/"off"/"yes"/"no"/"true"/"false" */
bool qemu_parse_bool(const char *str, bool *result, GError **errp);

/* Vectorised check whether len bytes at buf are all zero. */
bool buffer_is_zero(const void *buf, size_t len);

#endif

/*
 * Nesting depth of JSON text, checked before json-glib parses it.
 */
#ifndef QEMU_JSON_DEPTH_H
#define QEMU_JSON_DEPTH_H

#include "qemu/osdep.h"
#include <sys/types.h>

/* Offset where text nests deeper than max, or -1 if it never does. */
ssize_t json_too_deep(const char *text, size_t len, unsigned max);

#endif

/*
 * A VM's UUID in binary (16 bytes, as QEMU's QemuUUID) and as text.
 */
#ifndef QEMU_UUID_H
#define QEMU_UUID_H

#include "qemu/osdep.h"

#define UUID_LEN 16

/* "01234567-89ab-cdef-0123-456789abcdef", any case; false if not a UUID. */
bool qemu_uuid_parse(const char *str, uint8_t out[UUID_LEN]);
/* Lower-case text of the 16 bytes (g_free it). */
char *qemu_uuid_unparse(const uint8_t uuid[UUID_LEN]);

#endif

/*
 * A VM's UUID in binary and as text.
 */
#include "qemu/uuid.h"

bool qemu_uuid_parse(const char *str, uint8_t out[UUID_LEN])
{
    unsigned n = 0;

    memset(out, 0, UUID_LEN);
    if (!g_uuid_string_is_valid(str)) {
        return false;
    }
    for (const char *c = str; *c; c++) {
        if (*c != '-') {
            out[n / 2] |= g_ascii_xdigit_value(*c) << (n % 2 ? 0 : 4);
            n++;
        }
    }
    return true;
}

char *qemu_uuid_unparse(const uint8_t u[UUID_LEN])
{
    return g_strdup_printf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
                           "%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2], u[3],
                           u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11],
                           u[12], u[13], u[14], u[15]);
}

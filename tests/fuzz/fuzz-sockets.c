/*
 * Fuzz target: socket_address_parse, the parser of "tcp:HOST:PORT" /
 * "unix:PATH" strings from -qmp, -incoming, migrate and the tools.  The
 * first byte picks the parse flags; the rest is the address.  What parses
 * must format back to a URI that parses to the same address, since
 * query-migrate and ferry-migrate hand formatted addresses around.
 */
#include "qemu/osdep.h"
#include "qemu/sockets.h"
#include "fuzz.h"

static void check_roundtrip(const SocketAddress *a)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *uri = socket_address_to_uri(a);
    g_autoptr(SocketAddress) b = socket_address_parse(uri, 0, &err);
    SocketAddressQmp q;

    g_assert_no_error(err);
    g_assert_cmpint(a->type, ==, b->type);
    g_assert_cmpstr(a->host, ==, b->host);
    g_assert_cmpstr(a->port, ==, b->port);
    g_assert_cmpstr(a->path, ==, b->path);
    socket_address_to_qmp(a, &q);
    g_assert(q.type && (q.path || (q.host && q.port)));
    g_assert(q.path || q.ipv4 || q.ipv6);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(SocketAddress) a = NULL;
    g_autofree char *str = NULL;
    unsigned flags;

    if (!size) {
        return 0;
    }
    flags = data[0] & (SOCKET_PARSE_OPTIONS | SOCKET_PARSE_IGNORE_OPTIONS |
                       SOCKET_PARSE_BARE_PATH);
    str = g_strndup((const char *)data + 1, size - 1);
    a = socket_address_parse(str, flags, &err);
    if (!a) {
        g_assert(err && *err->message);
        return 0;
    }
    g_assert_no_error(err);
    if (a->type == SOCKET_ADDRESS_TYPE_UNIX) {
        g_assert(*a->path && strlen(a->path) <= socket_unix_path_max());
    } else {
        g_assert(strlen(a->port) <= 5 && atoi(a->port) <= 65535);
    }
    check_roundtrip(a);
    return 0;
}

/*
 * Socket addresses and stream sockets: the one place that parses
 * "tcp:HOST:PORT" / "unix:PATH" strings and binds, connects and accepts,
 * for the migration channels, the QMP server and the QMP client.
 *
 * Every string comes from a user (command line, QMP, tool options), so
 * parsing checks everything and names what is wrong.  Descriptors are
 * always created close-on-exec: a VM spawns exec: helpers and must not leak
 * its sockets into them.  Functions that fail on a syscall leave its errno
 * in errno (0 when the failure was not a syscall), so that callers can
 * decide whether to retry.
 */
#ifndef QEMU_SOCKETS_H
#define QEMU_SOCKETS_H

#include "qemu/osdep.h"
#include "qemu/error.h"

typedef enum SocketAddressType {
    SOCKET_ADDRESS_TYPE_INET,
    SOCKET_ADDRESS_TYPE_UNIX,
} SocketAddressType;

typedef struct SocketAddress {
    SocketAddressType type;
    /* inet */
    char *host;             /* no brackets; "" = any (listen), localhost */
    char *port;             /* decimal, 0..65535 (0: listen on any port) */
    bool ipv4;              /* resolve to IPv4 only (unless ipv6 too) */
    bool ipv6;              /* resolve to IPv6 only (unless ipv4 too) */
    /* unix */
    char *path;             /* fits sockaddr_un.sun_path with its NUL */
    /* chardev-style options (SOCKET_PARSE_OPTIONS) */
    bool server;
    bool has_wait;
    bool wait;
} SocketAddress;

typedef enum SocketParseFlags {
    /*
     * ",key[=on|off],..." follows the address, as in "-qmp
     * unix:PATH,server=on,wait=off": server, wait, nowait, ipv4, ipv6.
     * Without it a unix path may contain commas (migration URIs).
     */
    SOCKET_PARSE_OPTIONS = 1 << 0,
    /* Cut the address at the first comma and ignore the rest (a client
     * given a server's spelling). */
    SOCKET_PARSE_IGNORE_OPTIONS = 1 << 1,
    /* A string without "tcp:" or "unix:" is a unix socket path. */
    SOCKET_PARSE_BARE_PATH = 1 << 2,
} SocketParseFlags;

/* Longest unix socket path (sun_path less its terminating NUL). */
size_t socket_unix_path_max(void);

/*
 * Parse "tcp:HOST:PORT", "tcp:[V6ADDR]:PORT" or "unix:PATH" (see the
 * flags).  HOST may be empty; PORT must be a decimal number in 0..65535.
 */
SocketAddress *socket_address_parse(const char *str, unsigned flags,
                                    GError **errp);
/* An inet address from parts that are checked like parsed ones. */
SocketAddress *socket_address_new_inet(const char *host, const char *port,
                                       GError **errp);
SocketAddress *socket_address_copy(const SocketAddress *addr);
void socket_address_free(SocketAddress *addr);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SocketAddress, socket_address_free)

/* "HOST:PORT", "[V6]:PORT" or the path: the form used in messages. */
char *socket_address_to_string(const SocketAddress *addr);
/* "tcp:HOST:PORT", "tcp:[V6]:PORT" or "unix:PATH", without options. */
char *socket_address_to_uri(const SocketAddress *addr);

/*
 * The members of QEMU's QMP SocketAddress for addr: "type" and either
 * "host", "port" and one of "ipv4"/"ipv6", or "path".  Strings point into
 * addr; the callers build the JSON.
 */
typedef struct SocketAddressQmp {
    const char *type;       /* "inet" or "unix" */
    const char *host;
    const char *port;
    bool ipv4;
    bool ipv6;
    const char *path;
} SocketAddressQmp;
void socket_address_to_qmp(const SocketAddress *addr, SocketAddressQmp *out);

/*
 * Blocking connect, trying every address the host resolves to in turn.
 * Port 0 is refused.  Returns the fd or -1.
 */
int socket_connect(const SocketAddress *addr, GError **errp);

typedef enum SocketListenFlags {
    /*
     * unix: remove whatever sits at the path (migration's policy, as in
     * QEMU).  Without it only a stale socket is removed and any other
     * file is an error.
     */
    SOCKET_LISTEN_UNLINK_ANY = 1 << 0,
} SocketListenFlags;

/*
 * Non-blocking listening sockets for addr, with SO_REUSEADDR on inet ones.
 * Binds the resolved addresses in turn until max_fds sockets listen and
 * stores them in fds[].  With max_fds > 1 every address family configured
 * on the host gets its own socket (IPv6 ones IPV6_V6ONLY so the IPv4
 * wildcard can bind too); with 1 the first address that binds wins, and
 * an IPv6 wildcard also takes IPv4.  Returns the number of sockets, or -1.
 */
int socket_listen(const SocketAddress *addr, int backlog, unsigned flags,
                  int *fds, int max_fds, GError **errp);

/* accept4, close-on-exec, retrying EINTR; -1 with errno (EAGAIN...). */
int socket_accept(int listen_fd, bool nonblocking);

/* Local port of a bound inet socket, or -1. */
int socket_get_local_port(int fd);
/* Local address of a bound socket, numeric host, or NULL. */
SocketAddress *socket_get_local_address(int fd, GError **errp);

bool socket_set_nonblocking(int fd, bool on, GError **errp);
bool socket_set_cloexec(int fd, GError **errp);
/* TCP_NODELAY; silently nothing on non-TCP sockets. */
void socket_set_nodelay(int fd);

#endif

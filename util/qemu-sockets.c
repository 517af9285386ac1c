/*
 * Socket addresses and stream sockets (see include/qemu/sockets.h).
 */
#include "qemu/osdep.h"
#include "qemu/sockets.h"

#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

/* RFC 1035 limits a name to 253 characters; anything longer is a mistake. */
#define SOCKET_HOST_MAX 255

size_t socket_unix_path_max(void)
{
    return sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1;
}

void socket_address_free(SocketAddress *addr)
{
    if (!addr) {
        return;
    }
    g_free(addr->host);
    g_free(addr->port);
    g_free(addr->path);
    g_free(addr);
}

SocketAddress *socket_address_copy(const SocketAddress *addr)
{
    SocketAddress *c = g_memdup2(addr, sizeof(*addr));

    c->host = g_strdup(addr->host);
    c->port = g_strdup(addr->port);
    c->path = g_strdup(addr->path);
    return c;
}

/* ---- parsing ---- */

static bool check_port(const char *port, const char *str, char **out,
                       GError **errp)
{
    size_t len = strlen(port);
    unsigned long v;

    if (!len) {
        error_setg(errp, "socket address '%s' lacks a port (expected "
                   "HOST:PORT)", str);
        return false;
    }
    /* strtoul would take signs, spaces and hex: insist on plain digits */
    if (len > 5 || strspn(port, "0123456789") != len ||
        (v = strtoul(port, NULL, 10)) > 65535) {
        error_setg(errp, "socket address '%s': port '%s' is not a number "
                   "from 0 to 65535", str, port);
        return false;
    }
    *out = g_strdup_printf("%lu", v);
    return true;
}

static bool check_host(const char *host, bool bracketed, const char *str,
                       GError **errp)
{
    size_t len = strlen(host);

    if (bracketed && !len) {
        error_setg(errp, "socket address '%s': empty IPv6 address in []",
                   str);
        return false;
    }
    if (len > SOCKET_HOST_MAX) {
        error_setg(errp, "socket address '%s': host name is too long "
                   "(%zu bytes, max %d)", str, len, SOCKET_HOST_MAX);
        return false;
    }
    for (const char *p = host; *p; p++) {
        /* no resolver accepts these; catch typos like "tcp:[::1:4444" */
        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '[' ||
            *p == ']' || *p == '/' || *p == ',') {
            error_setg(errp, "socket address '%s': invalid character in "
                       "host '%s'", str, host);
            return false;
        }
    }
    return true;
}

/* "HOST:PORT" or "[V6]:PORT"; str is the whole input, for messages. */
static bool inet_parse(SocketAddress *addr, const char *hp, const char *str,
                       GError **errp)
{
    g_autofree char *host = NULL;
    const char *colon;
    bool bracketed = hp[0] == '[';

    if (bracketed) {
        const char *end = strchr(hp, ']');

        if (!end) {
            error_setg(errp, "socket address '%s': missing ']' after the "
                       "IPv6 address", str);
            return false;
        }
        if (end[1] != ':') {
            error_setg(errp, "socket address '%s': expected ':PORT' after "
                       "']'", str);
            return false;
        }
        host = g_strndup(hp + 1, end - hp - 1);
        colon = end + 1;
    } else {
        /* the last colon, so that an unbracketed "::1:4444" still works */
        colon = strrchr(hp, ':');
        if (!colon) {
            error_setg(errp, "socket address '%s' lacks a port (expected "
                       "HOST:PORT)", str);
            return false;
        }
        host = g_strndup(hp, colon - hp);
    }
    if (!check_host(host, bracketed, str, errp) ||
        !check_port(colon + 1, str, &addr->port, errp)) {
        return false;
    }
    addr->type = SOCKET_ADDRESS_TYPE_INET;
    /* a literal with colons can only be IPv6 */
    addr->ipv6 = strchr(host, ':') != NULL;
    addr->host = g_steal_pointer(&host);
    return true;
}

static bool unix_parse(SocketAddress *addr, const char *path, GError **errp)
{
    size_t len = strlen(path);

    if (!len) {
        error_setg(errp, "unix socket path is empty");
        return false;
    }
    if (len > socket_unix_path_max()) {
        error_setg(errp, "unix socket path '%s' is too long (%zu bytes, "
                   "max %zu)", path, len, socket_unix_path_max());
        return false;
    }
    addr->type = SOCKET_ADDRESS_TYPE_UNIX;
    addr->path = g_strdup(path);
    return true;
}

static bool parse_bool(const char *key, const char *v, bool *on,
                       GError **errp)
{
    if (!v || !strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true")) {
        *on = true;
    } else if (!strcmp(v, "off") || !strcmp(v, "no") ||
               !strcmp(v, "false")) {
        *on = false;
    } else {
        error_setg(errp, "socket option '%s' expects on or off", key);
        return false;
    }
    return true;
}

static bool parse_option(SocketAddress *addr, const char *opt, GError **errp)
{
    const char *v = strchr(opt, '=');
    g_autofree char *key = v ? g_strndup(opt, v - opt) : g_strdup(opt);
    bool on;

    if (!*key) {
        return true;    /* "a,,b" and a trailing comma: as QEMU's opts */
    }
    if (v) {
        v++;
    }
    if (!strcmp(key, "nowait") && !v) {
        addr->has_wait = true;      /* the legacy spelling of wait=off */
        addr->wait = false;
        return true;
    }
    if (strcmp(key, "server") && strcmp(key, "wait") &&
        strcmp(key, "ipv4") && strcmp(key, "ipv6")) {
        error_setg(errp, "socket option '%s' is not supported", opt);
        return false;
    }
    if (!parse_bool(key, v, &on, errp)) {
        return false;
    }
    if (!strcmp(key, "server")) {
        addr->server = on;
    } else if (!strcmp(key, "wait")) {
        addr->has_wait = true;
        addr->wait = on;
    } else if (addr->type != SOCKET_ADDRESS_TYPE_INET) {
        error_setg(errp, "socket option '%s' applies to tcp addresses only",
                   key);
        return false;
    } else if (!strcmp(key, "ipv4")) {
        addr->ipv4 = on;
    } else {
        addr->ipv6 = on;
    }
    return true;
}

static bool parse_options(SocketAddress *addr, const char *tail,
                          GError **errp)
{
    g_auto(GStrv) opts = g_strsplit(tail, ",", -1);

    for (char **o = opts; *o; o++) {
        if (!parse_option(addr, *o, errp)) {
            return false;
        }
    }
    return true;
}

static bool parse_head(SocketAddress *addr, const char *head, unsigned flags,
                       const char *str, GError **errp)
{
    if (g_str_has_prefix(head, "tcp:")) {
        return inet_parse(addr, head + 4, str, errp);
    }
    if (g_str_has_prefix(head, "unix:")) {
        return unix_parse(addr, head + 5, errp);
    }
    if (flags & SOCKET_PARSE_BARE_PATH) {
        return unix_parse(addr, head, errp);
    }
    error_setg(errp, "socket address '%s': expected unix:PATH or "
               "tcp:HOST:PORT", str);
    return false;
}

SocketAddress *socket_address_parse(const char *str, unsigned flags,
                                    GError **errp)
{
    g_autoptr(SocketAddress) addr = g_new0(SocketAddress, 1);
    g_autofree char *head = NULL;
    const char *comma = NULL;

    if (!str || !*str) {
        error_setg(errp, "socket address is empty");
        return NULL;
    }
    if (flags & (SOCKET_PARSE_OPTIONS | SOCKET_PARSE_IGNORE_OPTIONS)) {
        comma = strchr(str, ',');
    }
    head = comma ? g_strndup(str, comma - str) : g_strdup(str);
    if (!parse_head(addr, head, flags, str, errp)) {
        return NULL;
    }
    if (comma && (flags & SOCKET_PARSE_OPTIONS) &&
        !(flags & SOCKET_PARSE_IGNORE_OPTIONS) &&
        !parse_options(addr, comma + 1, errp)) {
        return NULL;
    }
    return g_steal_pointer(&addr);
}

SocketAddress *socket_address_new_inet(const char *host, const char *port,
                                       GError **errp)
{
    g_autofree char *str = NULL;

    if (!host || !port) {
        error_setg(errp, "socket address lacks a host or a port");
        return NULL;
    }
    str = g_strdup_printf(strchr(host, ':') ? "tcp:[%s]:%s" : "tcp:%s:%s",
                          host, port);
    return socket_address_parse(str, 0, errp);
}

/* ---- formatting ---- */

char *socket_address_to_string(const SocketAddress *addr)
{
    if (addr->type == SOCKET_ADDRESS_TYPE_UNIX) {
        return g_strdup(addr->path);
    }
    return g_strdup_printf(strchr(addr->host, ':') ? "[%s]:%s" : "%s:%s",
                           addr->host, addr->port);
}

char *socket_address_to_uri(const SocketAddress *addr)
{
    g_autofree char *s = socket_address_to_string(addr);

    return g_strconcat(addr->type == SOCKET_ADDRESS_TYPE_UNIX ? "unix:" :
                       "tcp:", s, NULL);
}

void socket_address_to_qmp(const SocketAddress *addr, SocketAddressQmp *out)
{
    memset(out, 0, sizeof(*out));
    if (addr->type == SOCKET_ADDRESS_TYPE_UNIX) {
        out->type = "unix";
        out->path = addr->path;
        return;
    }
    out->type = "inet";
    out->host = addr->host;
    out->port = addr->port;
    out->ipv6 = addr->ipv6;
    /* ferry has always reported names and "" as IPv4 */
    out->ipv4 = addr->ipv4 || !addr->ipv6;
}

/* ---- resolving ---- */

static int inet_family(const SocketAddress *addr)
{
    if (addr->ipv4 == addr->ipv6) {
        return AF_UNSPEC;
    }
    return addr->ipv4 ? AF_INET : AF_INET6;
}

static struct addrinfo *inet_resolve(const SocketAddress *addr, int ai_flags,
                                     GError **errp)
{
    struct addrinfo hints = {
        .ai_family = inet_family(addr),
        .ai_socktype = SOCK_STREAM,
        .ai_flags = ai_flags,
    };
    struct addrinfo *res = NULL;
    const char *host = addr->host;
    int rc;

    if (!*host) {
        /* listen: the wildcard; connect: this machine */
        host = (ai_flags & AI_PASSIVE) ? NULL : "localhost";
    }
    rc = getaddrinfo(host, addr->port, &hints, &res);
    if (rc != 0) {
        char *s = socket_address_to_string(addr);

        error_setg(errp, "cannot resolve '%s': %s", s,
                   rc == EAI_SYSTEM ? g_strerror(errno) : gai_strerror(rc));
        g_free(s);
        errno = 0;      /* not a syscall failure: nothing to retry */
        return NULL;
    }
    return res;
}

static void unix_sockaddr(const SocketAddress *addr, struct sockaddr_un *sun)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    /* the parser checked the length */
    g_strlcpy(sun->sun_path, addr->path, sizeof(sun->sun_path));
}

/* ---- connecting ---- */

static int connect_one(const struct sockaddr *sa, socklen_t len, int family)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int ret;

    if (fd < 0) {
        return -1;
    }
    do {
        ret = connect(fd, sa, len);
    } while (ret < 0 && errno == EINTR);
    if (ret < 0) {
        int e = errno;

        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int inet_connect(const SocketAddress *addr, GError **errp)
{
    struct addrinfo *res = inet_resolve(addr, 0, errp);
    int fd = -1, err = ECONNREFUSED;

    if (!res) {
        return -1;
    }
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = connect_one(ai->ai_addr, ai->ai_addrlen, ai->ai_family);
        if (fd < 0) {
            err = errno;
        }
    }
    freeaddrinfo(res);
    errno = err;
    return fd;
}

/* Sets errp for the errno of a failed connect, keeping that errno. */
static void connect_error(const SocketAddress *addr, int err, GError **errp)
{
    char *s = socket_address_to_string(addr);

    if (err) {
        error_setg(errp, "Failed to connect to '%s': %s", s, g_strerror(err));
    } else {
        error_setg(errp, "Failed to connect to '%s': port 0 is only valid "
                   "for listening", s);
    }
    g_free(s);
    errno = err;
}

int socket_connect(const SocketAddress *addr, GError **errp)
{
    struct sockaddr_un sun;
    int fd;

    if (addr->type == SOCKET_ADDRESS_TYPE_UNIX) {
        unix_sockaddr(addr, &sun);
        fd = connect_one((struct sockaddr *)&sun, sizeof(sun), AF_UNIX);
    } else if (!strcmp(addr->port, "0")) {
        connect_error(addr, 0, errp);
        return -1;
    } else {
        fd = inet_connect(addr, errp);
        if (fd < 0 && errno == 0) {
            return -1;          /* not resolved: errp is set */
        }
    }
    if (fd < 0) {
        connect_error(addr, errno, errp);
    }
    return fd;
}

/* ---- listening ---- */

static int listen_one(const struct sockaddr *sa, socklen_t len, int family,
                      int backlog, bool v6only)
{
    int one = 1, e;
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    if (fd < 0) {
        return -1;
    }
    if (family != AF_UNIX) {
        /* a restarted destination must not wait out TIME_WAIT */
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    }
    if (family == AF_INET6 && v6only) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (bind(fd, sa, len) < 0 || listen(fd, backlog) < 0) {
        e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int inet_listen(const SocketAddress *addr, int backlog, int *fds,
                       int max_fds, GError **errp)
{
    bool several = max_fds > 1;
    struct addrinfo *res;
    int n = 0, err = EADDRNOTAVAIL;

    /* binding all: skip families this host has no address for */
    res = inet_resolve(addr, AI_PASSIVE | (several ? AI_ADDRCONFIG : 0),
                       errp);
    if (!res) {
        return -1;
    }
    for (struct addrinfo *ai = res; ai && n < max_fds; ai = ai->ai_next) {
        int fd = listen_one(ai->ai_addr, ai->ai_addrlen, ai->ai_family,
                            backlog, several);

        if (fd < 0) {
            err = errno;
            continue;
        }
        fds[n++] = fd;
    }
    freeaddrinfo(res);
    if (!n) {
        char *s = socket_address_to_string(addr);

        error_setg(errp, "Failed to listen on '%s': %s", s, g_strerror(err));
        g_free(s);
        errno = err;
        return -1;
    }
    return n;
}

/* Make room for the socket file, following the policy in flags. */
static bool unix_clear_path(const char *path, unsigned flags, GError **errp)
{
    struct stat st;

    if (flags & SOCKET_LISTEN_UNLINK_ANY) {
        unlink(path);
        return true;
    }
    if (lstat(path, &st) < 0) {
        return true;
    }
    if (!S_ISSOCK(st.st_mode)) {
        error_setg(errp, "socket path '%s' exists and is not a socket", path);
        errno = EEXIST;
        return false;
    }
    /* a leftover from an earlier run that did not clean up */
    unlink(path);
    return true;
}

static int unix_listen(const SocketAddress *addr, int backlog, unsigned flags,
                       GError **errp)
{
    struct sockaddr_un sun;
    int fd, e;

    if (!unix_clear_path(addr->path, flags, errp)) {
        return -1;
    }
    unix_sockaddr(addr, &sun);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        e = errno;
        error_setg_errno(errp, e, "Failed to create a unix socket");
        errno = e;
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        e = errno;
        goto fail;
    }
    if (listen(fd, backlog) < 0) {
        e = errno;
        unlink(addr->path);     /* we created it */
        goto fail;
    }
    return fd;

fail:
    close(fd);
    error_setg(errp, "Failed to listen on '%s': %s", addr->path,
               g_strerror(e));
    errno = e;
    return -1;
}

int socket_listen(const SocketAddress *addr, int backlog, unsigned flags,
                  int *fds, int max_fds, GError **errp)
{
    g_assert(max_fds >= 1);
    if (addr->type == SOCKET_ADDRESS_TYPE_INET) {
        return inet_listen(addr, backlog, fds, max_fds, errp);
    }
    fds[0] = unix_listen(addr, backlog, flags, errp);
    return fds[0] < 0 ? -1 : 1;
}

int socket_accept(int listen_fd, bool nonblocking)
{
    int fd;

    do {
        fd = accept4(listen_fd, NULL, NULL,
                     SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0));
    } while (fd < 0 && errno == EINTR);
    return fd;
}

/* ---- local address ---- */

int socket_get_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        return -1;
    }
    switch (ss.ss_family) {
    case AF_INET:
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    case AF_INET6:
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    default:
        return -1;
    }
}

static SocketAddress *sockaddr_to_unix(const struct sockaddr_un *sun,
                                       socklen_t len, GError **errp)
{
    size_t off = offsetof(struct sockaddr_un, sun_path);
    g_autofree char *path = NULL;

    if (len <= off || !sun->sun_path[0]) {
        error_setg(errp, "unix socket has no path (unnamed or abstract)");
        return NULL;
    }
    path = g_strndup(sun->sun_path, len - off);
    return socket_address_parse(path, SOCKET_PARSE_BARE_PATH, errp);
}

SocketAddress *socket_get_local_address(int fd, GError **errp)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[NI_MAXHOST], port[NI_MAXSERV];
    int rc;

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        error_setg_errno(errp, errno, "Cannot get the local socket address");
        return NULL;
    }
    if (ss.ss_family == AF_UNIX) {
        return sockaddr_to_unix((struct sockaddr_un *)&ss, len, errp);
    }
    rc = getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port,
                     sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV);
    if (rc != 0) {
        error_setg(errp, "Cannot format the local socket address: %s",
                   gai_strerror(rc));
        return NULL;
    }
    return socket_address_new_inet(host, port, errp);
}

/* ---- descriptor flags ---- */

static bool update_flags(int fd, int get, int set, int flag, bool on,
                         GError **errp)
{
    int flags = fcntl(fd, get);

    if (flags < 0) {
        error_setg_errno(errp, errno, "Cannot get the flags of fd %d", fd);
        return false;
    }
    flags = on ? (flags | flag) : (flags & ~flag);
    if (fcntl(fd, set, flags) < 0) {
        error_setg_errno(errp, errno, "Cannot set the flags of fd %d", fd);
        return false;
    }
    return true;
}

bool socket_set_nonblocking(int fd, bool on, GError **errp)
{
    return update_flags(fd, F_GETFL, F_SETFL, O_NONBLOCK, on, errp);
}

bool socket_set_cloexec(int fd, GError **errp)
{
    return update_flags(fd, F_GETFD, F_SETFD, FD_CLOEXEC, true, errp);
}

void socket_set_nodelay(int fd)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

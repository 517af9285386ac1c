/*
 * Migration channels: fd and memory QIOChannels, and the URI schemes.
 */
#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "migration/channel.h"
#include "migration/options.h"
#include "qemu/sockets.h"
#include "trace/trace-migration.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <glib-unix.h>

typedef enum QIOChannelKind {
    QIO_KIND_FD,
    QIO_KIND_BUFFER_OUT,
    QIO_KIND_BUFFER_IN,
} QIOChannelKind;

struct QIOChannel {
    gint ref;
    QIOChannelKind kind;
    int fd;
    bool is_socket;         /* offers a return path */
    bool can_shutdown;
    pid_t child;            /* exec: child to reap at close, else 0 */
    char *name;
    GByteArray *out;        /* BUFFER_OUT */
    uint8_t *in;            /* BUFFER_IN */
    size_t in_len;
    size_t in_pos;
};

static QIOChannel *qio_channel_alloc(QIOChannelKind kind, const char *name)
{
    QIOChannel *ioc = g_new0(QIOChannel, 1);

    ioc->ref = 1;
    ioc->kind = kind;
    ioc->fd = -1;
    ioc->name = g_strdup(name);
    return ioc;
}

QIOChannel *qio_channel_new_fd(int fd)
{
    QIOChannel *ioc = qio_channel_alloc(QIO_KIND_FD, "fd");
    struct stat st;

    ioc->fd = fd;
    if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) {
        ioc->is_socket = true;
        ioc->can_shutdown = true;
    }
    return ioc;
}

QIOChannel *qio_channel_new_buffer(void)
{
    QIOChannel *ioc = qio_channel_alloc(QIO_KIND_BUFFER_OUT, "buffer");

    ioc->out = g_byte_array_new();
    return ioc;
}

QIOChannel *qio_channel_new_from_bytes_take(void *data, size_t len)
{
    QIOChannel *ioc = qio_channel_alloc(QIO_KIND_BUFFER_IN, "buffer");

    ioc->in = data;
    ioc->in_len = len;
    return ioc;
}

QIOChannel *qio_channel_new_from_bytes(const void *data, size_t len)
{
    return qio_channel_new_from_bytes_take(g_memdup2(data, len), len);
}

const uint8_t *qio_channel_buffer_data(QIOChannel *ioc, size_t *len)
{
    if (ioc->kind != QIO_KIND_BUFFER_OUT) {
        *len = 0;
        return NULL;
    }
    *len = ioc->out->len;
    return ioc->out->data;
}

QIOChannel *qio_channel_ref(QIOChannel *ioc)
{
    qatomic_inc(&ioc->ref);
    return ioc;
}

void qio_channel_unref(QIOChannel *ioc)
{
    if (!ioc || !(qatomic_fetch_dec(&ioc->ref) == 1)) {
        return;
    }
    qio_channel_close(ioc, NULL);
    if (ioc->out) {
        g_byte_array_unref(ioc->out);
    }
    g_free(ioc->in);
    g_free(ioc->name);
    g_free(ioc);
}

void qio_channel_set_name(QIOChannel *ioc, const char *name)
{
    g_free(ioc->name);
    ioc->name = g_strdup(name);
}

const char *qio_channel_get_name(QIOChannel *ioc)
{
    return ioc->name;
}

int qio_channel_get_fd(QIOChannel *ioc)
{
    return ioc->fd;
}

bool qio_channel_is_socket(QIOChannel *ioc)
{
    return ioc->is_socket;
}

static ssize_t buffer_readv(QIOChannel *ioc, const struct iovec *iov,
                            int niov)
{
    size_t done = 0;

    for (int i = 0; i < niov && ioc->in_pos < ioc->in_len; i++) {
        size_t n = MIN(iov[i].iov_len, ioc->in_len - ioc->in_pos);

        memcpy(iov[i].iov_base, ioc->in + ioc->in_pos, n);
        ioc->in_pos += n;
        done += n;
    }
    return done;
}

ssize_t qio_channel_readv(QIOChannel *ioc, const struct iovec *iov,
                          int niov, GError **errp)
{
    ssize_t ret;

    switch (ioc->kind) {
    case QIO_KIND_BUFFER_IN:
        return buffer_readv(ioc, iov, niov);
    case QIO_KIND_BUFFER_OUT:
        error_setg(errp, "Cannot read from an output buffer channel");
        errno = EINVAL;
        return -1;
    default:
        break;
    }
    if (ioc->fd < 0) {
        error_setg_errno(errp, EBADF, "Unable to read from %s", ioc->name);
        errno = EBADF;
        return -1;
    }
    do {
        ret = readv(ioc->fd, iov, niov);
    } while (ret < 0 && errno == EINTR);
    if (ret < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return QIO_CHANNEL_ERR_BLOCK;
        }
        int e = errno;

        error_setg_errno(errp, e, "Unable to read from %s", ioc->name);
        errno = e;  /* callers turn it into the stream's error code */
        return -1;
    }
    return ret;
}

ssize_t qio_channel_writev(QIOChannel *ioc, const struct iovec *iov,
                           int niov, GError **errp)
{
    ssize_t ret;

    switch (ioc->kind) {
    case QIO_KIND_BUFFER_OUT: {
        size_t done = 0;

        for (int i = 0; i < niov; i++) {
            g_byte_array_append(ioc->out, iov[i].iov_base, iov[i].iov_len);
            done += iov[i].iov_len;
        }
        return done;
    }
    case QIO_KIND_BUFFER_IN:
        error_setg(errp, "Cannot write to an input buffer channel");
        errno = EINVAL;
        return -1;
    default:
        break;
    }
    if (ioc->fd < 0) {
        error_setg_errno(errp, EBADF, "Unable to write to %s", ioc->name);
        errno = EBADF;
        return -1;
    }
    do {
        if (ioc->is_socket || ioc->can_shutdown) {
            /* MSG_NOSIGNAL: a vanished peer is EPIPE, not a dead process */
            struct msghdr msg = {
                .msg_iov = (struct iovec *)iov,
                .msg_iovlen = niov,
            };
            ret = sendmsg(ioc->fd, &msg, MSG_NOSIGNAL);
        } else {
            ret = writev(ioc->fd, iov, niov);
        }
    } while (ret < 0 && errno == EINTR);
    if (ret < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return QIO_CHANNEL_ERR_BLOCK;
        }
        int e = errno;

        error_setg_errno(errp, e, "Unable to write to %s", ioc->name);
        errno = e;
        return -1;
    }
    return ret;
}

bool qio_channel_write_all(QIOChannel *ioc, const void *buf, size_t len,
                           GError **errp)
{
    const uint8_t *p = buf;

    while (len) {
        struct iovec iov = { .iov_base = (void *)p, .iov_len = len };
        ssize_t n = qio_channel_writev(ioc, &iov, 1, errp);

        if (n == QIO_CHANNEL_ERR_BLOCK) {
            g_usleep(1000);
            continue;
        }
        if (n < 0) {
            return false;
        }
        p += n;
        len -= n;
    }
    return true;
}

bool qio_channel_set_blocking(QIOChannel *ioc, bool blocking, GError **errp)
{
    int flags;

    if (ioc->fd < 0) {
        return true;
    }
    flags = fcntl(ioc->fd, F_GETFL);
    if (flags < 0) {
        error_setg_errno(errp, errno, "Unable to get flags of %s", ioc->name);
        return false;
    }
    flags = blocking ? (flags & ~O_NONBLOCK) : (flags | O_NONBLOCK);
    if (fcntl(ioc->fd, F_SETFL, flags) < 0) {
        error_setg_errno(errp, errno, "Unable to set flags of %s", ioc->name);
        return false;
    }
    return true;
}

bool qio_channel_shutdown(QIOChannel *ioc, QIOChannelShutdown how,
                          GError **errp)
{
    int sh = how == QIO_CHANNEL_SHUTDOWN_READ ? SHUT_RD :
             how == QIO_CHANNEL_SHUTDOWN_WRITE ? SHUT_WR : SHUT_RDWR;

    if (!ioc->can_shutdown || ioc->fd < 0) {
        return true;
    }
    if (shutdown(ioc->fd, sh) < 0 && errno != ENOTCONN) {
        error_setg_errno(errp, errno, "Unable to shut down %s", ioc->name);
        return false;
    }
    return true;
}

bool qio_channel_close(QIOChannel *ioc, GError **errp)
{
    bool ok = true;

    if (ioc->fd >= 0) {
        if (close(ioc->fd) < 0 && errno != EINTR) {
            error_setg_errno(errp, errno, "Unable to close %s", ioc->name);
            ok = false;
        }
        ioc->fd = -1;
    }
    if (ioc->child > 0) {
        int status;

        /* our end is closed: the child sees EOF (or EPIPE) and exits */
        while (waitpid(ioc->child, &status, 0) < 0 && errno == EINTR) {
        }
        ioc->child = 0;
    }
    return ok;
}

/* ---- URIs ---- */

static QIOChannel *fd_channel_named(int fd, const char *uri)
{
    QIOChannel *ioc = qio_channel_new_fd(fd);

    qio_channel_set_name(ioc, uri);
    return ioc;
}

static bool is_socket_uri(const char *uri)
{
    return g_str_has_prefix(uri, "tcp:") || g_str_has_prefix(uri, "unix:");
}

bool migration_channel_is_socket_uri(const char *uri)
{
    return is_socket_uri(uri);
}

/* Keepalive probes sent before the peer is declared dead. */
#define NET_TIMEOUT_KEEPCNT 3

static void net_setsockopt(int fd, int level, int name, int v,
                           const char *what)
{
    if (setsockopt(fd, level, name, &v, sizeof(v)) < 0) {
        /* Not fatal: the migration works, it just may hang on a dead link. */
        warn_report("migration socket: %s=%d: %s", what, v, strerror(errno));
    }
}

/*
 * A TCP connection whose peer vanished (host down, link cut) is never
 * noticed by a side that only reads: the destination would wait in
 * "active" for ever.  Keepalive probes the peer after timeout/2 of
 * silence and gives up NET_TIMEOUT_KEEPCNT probes later, about timeout
 * in all; TCP_USER_TIMEOUT bounds how long sent data may stay
 * unacknowledged (a writer's view of the same death).  Either makes the
 * blocked read or write fail with ETIMEDOUT.  An idle but alive peer
 * answers the probes: cancel that with migrate_cancel.
 */
static void socket_set_net_timeout(int fd, uint64_t timeout_ms)
{
    int idle = MAX(timeout_ms / 2000, 1);
    int intvl = MAX(timeout_ms / 2000 / NET_TIMEOUT_KEEPCNT, 1);

    trace_migration_channel_net_timeout(fd, timeout_ms, idle, intvl,
                                        NET_TIMEOUT_KEEPCNT);
    net_setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
    net_setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, idle, "TCP_KEEPIDLE");
    net_setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, intvl, "TCP_KEEPINTVL");
    net_setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, NET_TIMEOUT_KEEPCNT,
                   "TCP_KEEPCNT");
    net_setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT,
                   MIN(timeout_ms, INT_MAX), "TCP_USER_TIMEOUT");
}

/*
 * Page-sized writes must not wait for ACKs (Nagle) on a LAN link; a dead
 * peer must not block us for ever (x-net-timeout).  Unix sockets need
 * neither: the kernel knows when a local peer dies.
 */
static void socket_tune(int fd, const SocketAddress *addr)
{
    if (addr->type == SOCKET_ADDRESS_TYPE_INET) {
        uint64_t timeout_ms = migrate_net_timeout();

        socket_set_nodelay(fd);
        if (timeout_ms) {
            socket_set_net_timeout(fd, timeout_ms);
        }
    }
}

/* tcp: or unix:, no options: a migration unix path may contain commas. */
static QIOChannel *socket_open(const char *uri, GError **errp)
{
    g_autoptr(SocketAddress) addr = socket_address_parse(uri, 0, errp);
    g_autofree char *name = NULL;
    int fd;

    if (!addr) {
        return NULL;
    }
    fd = socket_connect(addr, errp);
    if (fd < 0) {
        return NULL;
    }
    socket_tune(fd, addr);
    name = socket_address_to_string(addr);
    return fd_channel_named(fd, name);
}

/*
 * Run "sh -c cmd" with one end of a socketpair as its stdin (source) or
 * stdout (destination).  A socketpair rather than a pipe so that writes
 * can use MSG_NOSIGNAL and shutdown works.
 */
static QIOChannel *exec_spawn(const char *cmd, bool to_child, GError **errp)
{
    const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
    int sv[2];
    GPid pid;
    QIOChannel *ioc;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        error_setg_errno(errp, errno, "Failed to create socketpair");
        return NULL;
    }
    if (!g_spawn_async_with_fds(NULL, (char **)argv, NULL,
                                G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &pid,
                                to_child ? sv[1] : -1,
                                to_child ? -1 : sv[1], -1, errp)) {
        close(sv[0]);
        close(sv[1]);
        g_prefix_error(errp, "Failed to run '%s': ", cmd);
        return NULL;
    }
    close(sv[1]);
    ioc = fd_channel_named(sv[0], cmd);
    /* a pipe to a command has no way back: no return path */
    ioc->is_socket = false;
    ioc->child = pid;
    return ioc;
}

static QIOChannel *file_open(const char *spec, bool writing, GError **errp)
{
    int fd;

    if (strstr(spec, ",offset=")) {
        error_setg(errp, "file: migration does not support an offset ('%s')",
                   spec);
        return NULL;
    }
    fd = writing ? open(spec, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)
                 : open(spec, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Failed to open file '%s'", spec);
        return NULL;
    }
    return fd_channel_named(fd, spec);
}

static QIOChannel *fd_lookup(const char *name, GError **errp)
{
    int fd = monitor_get_fd(name);

    if (fd < 0 && name[0] && strspn(name, "0123456789") == strlen(name)) {
        /* a plain number names an inherited descriptor */
        fd = dup(atoi(name));
    }
    if (fd < 0) {
        error_setg(errp, "File descriptor named '%s' has not been found",
                   name);
        return NULL;
    }
    return fd_channel_named(fd, name);
}

bool migration_channel_connect(const char *uri, QIOChannel **ioc,
                               GError **errp)
{
    *ioc = NULL;
    trace_migration_channel_connect(uri);
    if (is_socket_uri(uri)) {
        *ioc = socket_open(uri, errp);
        if (*ioc) {
            trace_migration_socket_outgoing_connected(uri);
        }
    } else if (g_str_has_prefix(uri, "exec:")) {
        trace_migration_exec_outgoing(uri + 5);
        *ioc = exec_spawn(uri + 5, true, errp);
    } else if (g_str_has_prefix(uri, "file:")) {
        trace_migration_file_outgoing(uri + 5);
        *ioc = file_open(uri + 5, true, errp);
    } else if (g_str_has_prefix(uri, "fd:")) {
        *ioc = fd_lookup(uri + 3, errp);
        if (*ioc) {
            trace_migration_fd_outgoing(uri + 3, qio_channel_get_fd(*ioc));
        }
    } else {
        g_autofree char *scheme = g_strndup(uri, strcspn(uri, ":"));

        error_setg(errp, "unknown migration protocol: %s", scheme);
    }
    return *ioc != NULL;
}

/* ---- listening ---- */

struct MigrationListener {
    int fd;
    guint watch;
    guint idle;
    QIOChannel *ready;      /* exec/file/fd: handed over from idle */
    MigrationListenCb cb;
    void *opaque;
    char *uri;
    SocketAddress *addr;    /* tcp/unix, with the port actually bound */
    unsigned remaining;     /* connections still to accept */
};

void migration_listener_cancel(MigrationListener *l)
{
    if (!l) {
        return;
    }
    if (l->watch) {
        g_source_remove(l->watch);
        l->watch = 0;
    }
    if (l->idle) {
        g_source_remove(l->idle);
        l->idle = 0;
    }
    if (l->fd >= 0) {
        close(l->fd);
        l->fd = -1;
        /* As QEMU: the socket file goes once nobody more may connect. */
        if (l->addr && l->addr->type == SOCKET_ADDRESS_TYPE_UNIX &&
            l->addr->path && unlink(l->addr->path) < 0 && errno != ENOENT) {
            warn_report("migration: cannot remove '%s': %s", l->addr->path,
                        g_strerror(errno));
        }
    }
    qio_channel_unref(l->ready);
    l->ready = NULL;
}

void migration_listener_free(MigrationListener *l)
{
    if (!l) {
        return;
    }
    migration_listener_cancel(l);
    socket_address_free(l->addr);
    g_free(l->uri);
    g_free(l);
}

int migration_listener_port(MigrationListener *l)
{
    if (!l || !l->addr || l->addr->type != SOCKET_ADDRESS_TYPE_INET) {
        return 0;
    }
    return atoi(l->addr->port);
}

const SocketAddress *migration_listener_address(MigrationListener *l)
{
    return l ? l->addr : NULL;
}

static gboolean listen_accept(gint fd, GIOCondition cond, gpointer data)
{
    MigrationListener *l = data;
    MigrationListenCb cb = l->cb;
    void *opaque = l->opaque;
    QIOChannel *ioc;
    int cfd;

    cfd = socket_accept(fd, false);
    if (cfd < 0) {
        /* spurious wakeup or an aborted connection: keep waiting */
        return G_SOURCE_CONTINUE;
    }
    socket_tune(cfd, l->addr);
    ioc = fd_channel_named(cfd, l->uri);
    trace_migration_socket_incoming_accepted(l->uri);
    if (--l->remaining > 0) {
        cb(ioc, opaque);
        return G_SOURCE_CONTINUE;
    }
    /* the last one: the source goes away with our return value */
    l->watch = 0;
    migration_listener_cancel(l);
    /* cb may free the listener: l is not touched after it */
    cb(ioc, opaque);
    return G_SOURCE_REMOVE;
}

static gboolean listen_ready_idle(gpointer data)
{
    MigrationListener *l = data;
    QIOChannel *ioc = l->ready;

    l->ready = NULL;
    l->idle = 0;
    l->cb(ioc, l->opaque);
    return G_SOURCE_REMOVE;
}

static bool listener_open_socket(MigrationListener *l, GError **errp)
{
    l->addr = socket_address_parse(l->uri, 0, errp);
    if (!l->addr) {
        return false;
    }
    /* one source connects; stale unix paths go, as in QEMU */
    if (socket_listen(l->addr, l->remaining, SOCKET_LISTEN_UNLINK_ANY,
                      &l->fd, 1, errp) < 0) {
        return false;
    }
    if (l->addr->type == SOCKET_ADDRESS_TYPE_INET) {
        /* port 0 asked the kernel to choose: query-migrate reports it */
        g_free(l->addr->port);
        l->addr->port = g_strdup_printf("%d",
                                        MAX(socket_get_local_port(l->fd), 0));
    }
    l->watch = g_unix_fd_add(l->fd, G_IO_IN, listen_accept, l);
    return true;
}

static bool listener_open_ready(MigrationListener *l, GError **errp)
{
    const char *uri = l->uri;

    if (g_str_has_prefix(uri, "exec:")) {
        trace_migration_exec_incoming(uri + 5);
        l->ready = exec_spawn(uri + 5, false, errp);
    } else if (g_str_has_prefix(uri, "file:")) {
        trace_migration_file_incoming(uri + 5);
        l->ready = file_open(uri + 5, false, errp);
    } else if (g_str_has_prefix(uri, "fd:")) {
        l->ready = fd_lookup(uri + 3, errp);
        if (l->ready) {
            trace_migration_fd_incoming(uri + 3,
                                        qio_channel_get_fd(l->ready));
        }
    } else {
        g_autofree char *scheme = g_strndup(uri, strcspn(uri, ":"));

        error_setg(errp, "unknown migration protocol: %s", scheme);
    }
    if (!l->ready) {
        return false;
    }
    l->idle = g_idle_add(listen_ready_idle, l);
    return true;
}

MigrationListener *migration_channel_listen(const char *uri, unsigned nconn,
                                            MigrationListenCb cb,
                                            void *opaque, GError **errp)
{
    MigrationListener *l;
    bool ok;

    if (nconn != 1 && !is_socket_uri(uri)) {
        error_setg(errp, "'%s' cannot carry more than one connection (a "
                   "second channel needs tcp: or unix:)", uri);
        return NULL;
    }
    l = g_new0(MigrationListener, 1);
    l->remaining = MAX(nconn, 1);
    trace_migration_channel_listen(uri);
    l->fd = -1;
    l->cb = cb;
    l->opaque = opaque;
    l->uri = g_strdup(uri);
    ok = is_socket_uri(uri) ? listener_open_socket(l, errp)
                            : listener_open_ready(l, errp);
    if (!ok) {
        migration_listener_free(l);
        return NULL;
    }
    return l;
}

/* ---- postcopy socket tuning ---- */

/*
 * Postcopy: unsent data allowed in the kernel's socket queue, so that an
 * urgent page does not wait behind megabytes of background pages.
 */
#define POSTCOPY_TCP_NOTSENT_LOWAT (128 * 1024)
#define POSTCOPY_UNIX_SNDBUF (256 * 1024)
/* Receive buffer of the main stream in postcopy (TCP; see below). */
#define POSTCOPY_INCOMING_RCVBUF (64 * 1024)

static void postcopy_setsockopt(int fd, int level, int name, int v,
                                const char *what)
{
    if (setsockopt(fd, level, name, &v, sizeof(v)) < 0) {
        warn_report("postcopy: %s: %s", what, g_strerror(errno));
    }
}

/*
 * From LISTEN on, an urgent page queues behind whatever background data
 * sits in the sender's queue and in the receiver's buffer, which TCP
 * autotuning grows to megabytes on a fast link: keep both short.
 */
void migration_channel_tune_postcopy(QIOChannel *ioc, bool sender)
{
    int fd = ioc ? qio_channel_get_fd(ioc) : -1;
    int domain = 0;
    socklen_t l = sizeof(domain);
    bool inet;

    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l) < 0) {
        return;
    }
    inet = domain == AF_INET || domain == AF_INET6;
    trace_migration_channel_tune_postcopy(sender, domain);
    if (sender && inet) {
        postcopy_setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT,
                            POSTCOPY_TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT");
    } else if (sender && domain == AF_UNIX) {
        postcopy_setsockopt(fd, SOL_SOCKET, SO_SNDBUF, POSTCOPY_UNIX_SNDBUF,
                            "SO_SNDBUF");
    } else if (!sender && inet) {
        postcopy_setsockopt(fd, SOL_SOCKET, SO_RCVBUF,
                            POSTCOPY_INCOMING_RCVBUF, "SO_RCVBUF");
    }
}

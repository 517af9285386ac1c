/*
 * Migration channels: fd and memory QIOChannels, and the URI schemes.
 */
#include "qemu/osdep.h"
#include "migration/channel.h"

#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
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
    g_atomic_int_inc(&ioc->ref);
    return ioc;
}

void qio_channel_unref(QIOChannel *ioc)
{
    if (!ioc || !g_atomic_int_dec_and_test(&ioc->ref)) {
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

/* "HOST:PORT" or "[V6]:PORT" -> host (maybe "") and port strings. */
static bool parse_host_port(const char *str, char **host, char **port,
                            GError **errp)
{
    const char *colon;

    if (str[0] == '[') {
        const char *end = strchr(str, ']');

        if (!end || end[1] != ':') {
            error_setg(errp, "Invalid address '%s': expected [HOST]:PORT",
                       str);
            return false;
        }
        *host = g_strndup(str + 1, end - str - 1);
        colon = end + 1;
    } else {
        colon = strrchr(str, ':');
        if (!colon) {
            error_setg(errp, "Invalid address '%s': expected HOST:PORT", str);
            return false;
        }
        *host = g_strndup(str, colon - str);
    }
    if (!colon[1]) {
        g_free(*host);
        error_setg(errp, "Invalid address '%s': missing port", str);
        return false;
    }
    *port = g_strdup(colon + 1);
    return true;
}

static struct addrinfo *resolve(const char *addr, const char *host,
                                const char *port, bool passive,
                                GError **errp)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = passive ? AI_PASSIVE : 0,
    };
    struct addrinfo *res = NULL;
    int rc;

    if (!*host && !passive) {
        host = "localhost";
    }
    rc = getaddrinfo(*host ? host : NULL, port, &hints, &res);
    if (rc != 0) {
        error_setg(errp, "address resolution failed for '%s': %s", addr,
                   gai_strerror(rc));
        return NULL;
    }
    return res;
}

static void tcp_tune(int fd)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static QIOChannel *fd_channel_named(int fd, const char *uri)
{
    QIOChannel *ioc = qio_channel_new_fd(fd);

    qio_channel_set_name(ioc, uri);
    return ioc;
}

static QIOChannel *tcp_connect(const char *addr, GError **errp)
{
    g_autofree char *host = NULL;
    g_autofree char *port = NULL;
    struct addrinfo *res, *ai;
    int fd = -1, err = ECONNREFUSED;

    if (!parse_host_port(addr, &host, &port, errp)) {
        return NULL;
    }
    res = resolve(addr, host, port, false, errp);
    if (!res) {
        return NULL;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            break;
        }
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        error_setg(errp, "Failed to connect to '%s': %s", addr,
                   g_strerror(err));
        return NULL;
    }
    tcp_tune(fd);
    return fd_channel_named(fd, addr);
}

static bool unix_addr(const char *path, struct sockaddr_un *sun,
                      GError **errp)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (!*path || strlen(path) >= sizeof(sun->sun_path)) {
        error_setg(errp, "UNIX socket path '%s' is empty or too long", path);
        return false;
    }
    strcpy(sun->sun_path, path);
    return true;
}

static QIOChannel *unix_connect(const char *path, GError **errp)
{
    struct sockaddr_un sun;
    int fd;

    if (!unix_addr(path, &sun, errp)) {
        return NULL;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Failed to create socket");
        return NULL;
    }
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        error_setg(errp, "Failed to connect to '%s': %s", path,
                   g_strerror(errno));
        close(fd);
        return NULL;
    }
    return fd_channel_named(fd, path);
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
    const char *p;

    *ioc = NULL;
    if ((p = g_str_has_prefix(uri, "tcp:") ? uri + 4 : NULL)) {
        *ioc = tcp_connect(p, errp);
    } else if (g_str_has_prefix(uri, "unix:")) {
        *ioc = unix_connect(uri + 5, errp);
    } else if (g_str_has_prefix(uri, "exec:")) {
        *ioc = exec_spawn(uri + 5, true, errp);
    } else if (g_str_has_prefix(uri, "file:")) {
        *ioc = file_open(uri + 5, true, errp);
    } else if (g_str_has_prefix(uri, "fd:")) {
        *ioc = fd_lookup(uri + 3, errp);
    } else {
        g_autofree char *scheme = g_strndup(uri, strcspn(uri, ":"));

        error_setg(errp, "unknown migration protocol: %s", scheme);
    }
    return *ioc != NULL;
}

/* ---- listening ---- */

typedef struct ListenState {
    int fd;
    guint watch;
    guint idle;
    QIOChannel *ready;      /* exec/file/fd: handed over from idle */
    MigrationListenCb cb;
    void *opaque;
    char *uri;
    int port;
} ListenState;

static ListenState listen_state = { .fd = -1 };

void migration_channel_listen_cancel(void)
{
    ListenState *ls = &listen_state;

    if (ls->watch) {
        g_source_remove(ls->watch);
        ls->watch = 0;
    }
    if (ls->idle) {
        g_source_remove(ls->idle);
        ls->idle = 0;
    }
    if (ls->fd >= 0) {
        close(ls->fd);
        ls->fd = -1;
    }
    qio_channel_unref(ls->ready);
    ls->ready = NULL;
    g_clear_pointer(&ls->uri, g_free);
}

int migration_channel_listen_port(void)
{
    return listen_state.port;
}

static gboolean listen_accept(gint fd, GIOCondition cond, gpointer data)
{
    ListenState *ls = &listen_state;
    MigrationListenCb cb = ls->cb;
    void *opaque = ls->opaque;
    g_autofree char *uri = g_strdup(ls->uri);
    int cfd;

    cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    if (cfd < 0) {
        /* spurious wakeup or an aborted connection: keep waiting */
        return G_SOURCE_CONTINUE;
    }
    ls->watch = 0;
    migration_channel_listen_cancel();
    if (g_str_has_prefix(uri, "tcp:")) {
        tcp_tune(cfd);
    }
    cb(fd_channel_named(cfd, uri), opaque);
    return G_SOURCE_REMOVE;
}

static gboolean listen_ready_idle(gpointer data)
{
    ListenState *ls = &listen_state;
    QIOChannel *ioc = ls->ready;

    ls->ready = NULL;
    ls->idle = 0;
    g_clear_pointer(&ls->uri, g_free);
    ls->cb(ioc, ls->opaque);
    return G_SOURCE_REMOVE;
}

static int bind_listen(const struct sockaddr *sa, socklen_t len, int family,
                       int *err)
{
    int one = 1;
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    if (fd < 0) {
        *err = errno;
        return -1;
    }
    if (family != AF_UNIX) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    }
    if (bind(fd, sa, len) < 0 || listen(fd, 1) < 0) {
        *err = errno;
        close(fd);
        return -1;
    }
    return fd;
}

static int tcp_listen(const char *addr, int *port, GError **errp)
{
    g_autofree char *host = NULL;
    g_autofree char *portstr = NULL;
    struct addrinfo *res, *ai;
    int fd = -1, err = EADDRNOTAVAIL;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);

    if (!parse_host_port(addr, &host, &portstr, errp)) {
        return -1;
    }
    res = resolve(addr, host, portstr, true, errp);
    if (!res) {
        return -1;
    }
    for (ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = bind_listen(ai->ai_addr, ai->ai_addrlen, ai->ai_family, &err);
    }
    freeaddrinfo(res);
    if (fd < 0) {
        error_setg(errp, "Failed to listen on '%s': %s", addr,
                   g_strerror(err));
        return -1;
    }
    *port = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0) {
        *port = ss.ss_family == AF_INET6 ?
            ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) :
            ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    return fd;
}

static int unix_listen(const char *path, GError **errp)
{
    struct sockaddr_un sun;
    int fd, err = 0;

    if (!unix_addr(path, &sun, errp)) {
        return -1;
    }
    unlink(path);
    fd = bind_listen((struct sockaddr *)&sun, sizeof(sun), AF_UNIX, &err);
    if (fd < 0) {
        error_setg(errp, "Failed to listen on '%s': %s", path,
                   g_strerror(err));
    }
    return fd;
}

bool migration_channel_listen(const char *uri, MigrationListenCb cb,
                              void *opaque, GError **errp)
{
    ListenState *ls = &listen_state;
    QIOChannel *ready = NULL;
    int fd = -1;

    migration_channel_listen_cancel();
    ls->port = 0;
    if (g_str_has_prefix(uri, "tcp:")) {
        fd = tcp_listen(uri + 4, &ls->port, errp);
    } else if (g_str_has_prefix(uri, "unix:")) {
        fd = unix_listen(uri + 5, errp);
    } else if (g_str_has_prefix(uri, "exec:")) {
        ready = exec_spawn(uri + 5, false, errp);
    } else if (g_str_has_prefix(uri, "file:")) {
        ready = file_open(uri + 5, false, errp);
    } else if (g_str_has_prefix(uri, "fd:")) {
        ready = fd_lookup(uri + 3, errp);
    } else {
        g_autofree char *scheme = g_strndup(uri, strcspn(uri, ":"));

        error_setg(errp, "unknown migration protocol: %s", scheme);
        return false;
    }
    if (fd < 0 && !ready) {
        return false;
    }
    ls->cb = cb;
    ls->opaque = opaque;
    ls->uri = g_strdup(uri);
    if (ready) {
        ls->ready = ready;
        ls->idle = g_idle_add(listen_ready_idle, NULL);
    } else {
        ls->fd = fd;
        ls->watch = g_unix_fd_add(fd, G_IO_IN, listen_accept, NULL);
    }
    return true;
}

/*
 * util/qemu-sockets.c: address parsing (a table of good and bad strings),
 * then real listen/connect/accept round trips on tcp, unix and IPv6, and
 * the migration listener built on top of it.
 */
#include "qemu/osdep.h"
#include "qemu/sockets.h"
#include "migration/channel.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#define O SOCKET_PARSE_OPTIONS
#define IGN SOCKET_PARSE_IGNORE_OPTIONS
#define BARE SOCKET_PARSE_BARE_PATH

typedef struct ParseCase {
    const char *str;
    unsigned flags;
    const char *err;        /* expected substring, or NULL for success */
    SocketAddressType type;
    const char *host;       /* inet: host; unix: path */
    const char *port;
    bool ipv4, ipv6, server, has_wait, wait;
} ParseCase;

#define INET SOCKET_ADDRESS_TYPE_INET
#define UNIX SOCKET_ADDRESS_TYPE_UNIX

static const ParseCase parse_cases[] = {
    /* good */
    { "tcp:127.0.0.1:4444", 0, NULL, INET, "127.0.0.1", "4444" },
    { "tcp:localhost:0", 0, NULL, INET, "localhost", "0" },
    { "tcp::4444", 0, NULL, INET, "", "4444" },
    { "tcp:0:65535", 0, NULL, INET, "0", "65535" },
    { "tcp:h:04444", 0, NULL, INET, "h", "4444" },
    { "tcp:[::1]:4444", 0, NULL, INET, "::1", "4444", .ipv6 = true },
    { "tcp:[fe80::1%lo]:1", 0, NULL, INET, "fe80::1%lo", "1", .ipv6 = true },
    { "tcp:::1:4444", 0, NULL, INET, "::1", "4444", .ipv6 = true },
    { "unix:/tmp/s", 0, NULL, UNIX, "/tmp/s" },
    { "unix:/tmp/a,b", 0, NULL, UNIX, "/tmp/a,b" },
    { "unix:relative", 0, NULL, UNIX, "relative" },
    { "/tmp/bare", BARE, NULL, UNIX, "/tmp/bare" },
    { "unix:/tmp/q,server=on,wait=off", O, NULL, UNIX, "/tmp/q",
      .server = true, .has_wait = true, .wait = false },
    { "unix:/tmp/q,server,nowait", O, NULL, UNIX, "/tmp/q",
      .server = true, .has_wait = true, .wait = false },
    { "unix:/tmp/q,server=yes,,wait=true,", O, NULL, UNIX, "/tmp/q",
      .server = true, .has_wait = true, .wait = true },
    { "tcp:127.0.0.1:4444,server,nowait", O, NULL, INET, "127.0.0.1",
      "4444", .server = true, .has_wait = true },
    { "tcp:h:1,ipv4=on,server=off", O, NULL, INET, "h", "1",
      .ipv4 = true },
    { "unix:/tmp/q,telnet=on,whatever", IGN, NULL, UNIX, "/tmp/q" },
    { "/tmp/q,server=on,wait=off", BARE | IGN, NULL, UNIX, "/tmp/q" },

    /* bad */
    { "", 0, "socket address is empty" },
    { "tcp:127.0.0.1", 0, "lacks a port" },
    { "tcp:127.0.0.1:", 0, "lacks a port" },
    { "tcp:", 0, "lacks a port" },
    { "tcp:h:65536", 0, "port '65536' is not a number from 0 to 65535" },
    { "tcp:h:99999999999", 0, "is not a number" },
    { "tcp:h:-1", 0, "is not a number" },
    { "tcp:h:+1", 0, "is not a number" },
    { "tcp:h: 1", 0, "is not a number" },
    { "tcp:h:0x10", 0, "is not a number" },
    { "tcp:h:http", 0, "is not a number" },
    { "tcp:h:4444junk", 0, "port '4444junk'" },
    { "tcp:h:1,server", 0, "port '1,server'" },
    { "tcp:[::1:4444", 0, "missing ']'" },
    { "tcp:[::1]4444", 0, "expected ':PORT' after ']'" },
    { "tcp:[::1]", 0, "expected ':PORT' after ']'" },
    { "tcp:[]:4444", 0, "empty IPv6 address" },
    { "tcp:a b:1", 0, "invalid character in host 'a b'" },
    { "tcp:a]:1", 0, "invalid character" },
    { "tcp:a\tb:1", 0, "invalid character" },
    { "unix:", 0, "unix socket path is empty" },
    { "unix:,server=on", O, "unix socket path is empty" },
    { "foo:bar", 0, "expected unix:PATH or tcp:HOST:PORT" },
    { "/tmp/bare", 0, "expected unix:PATH or tcp:HOST:PORT" },
    { "stdio", O, "expected unix:PATH or tcp:HOST:PORT" },
    { "TCP:h:1", 0, "expected unix:PATH" },
    { "unix:/p,wait=maybe", O, "socket option 'wait' expects on or off" },
    { "unix:/p,telnet=on", O, "socket option 'telnet=on' is not supported" },
    { "unix:/p,nowait=on", O, "'nowait=on' is not supported" },
    { "unix:/p,ipv4", O, "applies to tcp addresses only" },
    { "unix:/p,server=", O, "expects on or off" },
};

static void check_case(const ParseCase *c)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(SocketAddress) a = socket_address_parse(c->str, c->flags,
                                                      &err);

    g_test_message("parsing '%s' (flags %u)", c->str, c->flags);
    if (c->err) {
        g_assert_null(a);
        g_assert_nonnull(err);
        if (!strstr(err->message, c->err)) {
            g_error("'%s': got '%s', expected '%s'", c->str, err->message,
                    c->err);
        }
        return;
    }
    g_assert_no_error(err);
    g_assert_nonnull(a);
    g_assert_cmpint(a->type, ==, c->type);
    if (c->type == INET) {
        g_assert_cmpstr(a->host, ==, c->host);
        g_assert_cmpstr(a->port, ==, c->port);
        g_assert_null(a->path);
    } else {
        g_assert_cmpstr(a->path, ==, c->host);
        g_assert_null(a->host);
    }
    g_assert_cmpint(a->ipv4, ==, c->ipv4);
    g_assert_cmpint(a->ipv6, ==, c->ipv6);
    g_assert_cmpint(a->server, ==, c->server);
    g_assert_cmpint(a->has_wait, ==, c->has_wait);
    g_assert_cmpint(a->wait, ==, c->wait);
}

static void test_parse_table(void)
{
    for (guint i = 0; i < G_N_ELEMENTS(parse_cases); i++) {
        check_case(&parse_cases[i]);
    }
}

static void test_parse_null_and_long(void)
{
    g_autoptr(GError) err = NULL;
    size_t max = socket_unix_path_max();
    g_autofree char *path = g_strnfill(max, 'p');
    g_autofree char *ok = g_strconcat("unix:", path, NULL);
    g_autofree char *bad = g_strconcat("unix:", path, "p", NULL);
    g_autofree char *host = g_strnfill(300, 'h');
    g_autofree char *longhost = g_strdup_printf("tcp:%s:1", host);
    g_autoptr(SocketAddress) a = NULL;

    g_assert_cmpuint(max, ==, 107);
    g_assert_null(socket_address_parse(NULL, 0, &err));
    g_assert_nonnull(strstr(err->message, "is empty"));
    g_clear_error(&err);

    a = socket_address_parse(ok, 0, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(strlen(a->path), ==, max);
    g_assert_null(socket_address_parse(bad, 0, &err));
    g_assert_nonnull(strstr(err->message, "is too long (108 bytes, max 107)"));
    g_clear_error(&err);

    g_assert_null(socket_address_parse(longhost, 0, &err));
    g_assert_nonnull(strstr(err->message, "host name is too long"));
}

static void test_format(void)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(SocketAddress) v4 = socket_address_parse("tcp:h:01", 0, &err);
    g_autoptr(SocketAddress) v6 = socket_address_parse("tcp:::1:2", 0, &err);
    g_autoptr(SocketAddress) ux = socket_address_parse("unix:/s,x", 0, &err);
    g_autoptr(SocketAddress) mk = NULL;
    g_autoptr(SocketAddress) cp = NULL;
    g_autofree char *s1 = NULL, *s2 = NULL, *s3 = NULL, *s4 = NULL;
    SocketAddressQmp q;

    g_assert_no_error(err);
    s1 = socket_address_to_uri(v4);
    s2 = socket_address_to_uri(v6);
    s3 = socket_address_to_uri(ux);
    s4 = socket_address_to_string(v6);
    g_assert_cmpstr(s1, ==, "tcp:h:1");
    g_assert_cmpstr(s2, ==, "tcp:[::1]:2");
    g_assert_cmpstr(s3, ==, "unix:/s,x");
    g_assert_cmpstr(s4, ==, "[::1]:2");

    socket_address_to_qmp(v4, &q);
    g_assert_cmpstr(q.type, ==, "inet");
    g_assert_cmpstr(q.host, ==, "h");
    g_assert_cmpstr(q.port, ==, "1");
    g_assert_true(q.ipv4 && !q.ipv6);
    g_assert_null(q.path);
    socket_address_to_qmp(v6, &q);
    g_assert_cmpstr(q.host, ==, "::1");
    g_assert_true(!q.ipv4 && q.ipv6);
    socket_address_to_qmp(ux, &q);
    g_assert_cmpstr(q.type, ==, "unix");
    g_assert_cmpstr(q.path, ==, "/s,x");
    g_assert_null(q.host);

    mk = socket_address_new_inet("fe80::2", "80", &err);
    g_assert_no_error(err);
    g_assert_true(mk->ipv6);
    cp = socket_address_copy(mk);
    g_free(s1);
    s1 = socket_address_to_uri(cp);
    g_assert_cmpstr(s1, ==, "tcp:[fe80::2]:80");
    g_assert_null(socket_address_new_inet("a]", "1", &err));
    g_clear_error(&err);
    g_assert_null(socket_address_new_inet("a", "70000", &err));
    g_clear_error(&err);
    g_assert_null(socket_address_new_inet(NULL, "1", &err));
}

/* ---- real sockets ---- */

static bool has_fd_flag(int fd, int get, int flag)
{
    int f = fcntl(fd, get);

    g_assert_cmpint(f, >=, 0);
    return f & flag;
}

/* Connect to addr, accept, send a few bytes each way. */
static void roundtrip(int lfd, const SocketAddress *addr)
{
    g_autoptr(GError) err = NULL;
    char buf[8] = { 0 };
    int cfd, afd;

    cfd = socket_connect(addr, &err);
    g_assert_no_error(err);
    g_assert_cmpint(cfd, >=, 0);
    g_assert_true(has_fd_flag(cfd, F_GETFD, FD_CLOEXEC));
    afd = socket_accept(lfd, false);
    g_assert_cmpint(afd, >=, 0);
    g_assert_true(has_fd_flag(afd, F_GETFD, FD_CLOEXEC));
    g_assert_false(has_fd_flag(afd, F_GETFL, O_NONBLOCK));
    g_assert_cmpint(write(cfd, "ping", 4), ==, 4);
    g_assert_cmpint(read(afd, buf, sizeof(buf)), ==, 4);
    g_assert_cmpstr(buf, ==, "ping");
    g_assert_cmpint(write(afd, "pong", 4), ==, 4);
    g_assert_cmpint(read(cfd, buf, sizeof(buf)), ==, 4);
    g_assert_cmpstr(buf, ==, "pong");
    close(cfd);
    close(afd);
}

/* Listen on "tcp:HOST:0", check the bound port, round trip; -1: skip. */
static int tcp_listen_roundtrip(const char *host, GError **errp)
{
    g_autofree char *uri = g_strdup_printf("tcp:%s:0", host);
    g_autoptr(SocketAddress) addr = socket_address_parse(uri, 0, errp);
    g_autoptr(SocketAddress) local = NULL;
    int lfd, port;

    g_assert_nonnull(addr);
    if (socket_listen(addr, 1, 0, &lfd, 1, errp) < 0) {
        return -1;
    }
    g_assert_true(has_fd_flag(lfd, F_GETFL, O_NONBLOCK));
    g_assert_true(has_fd_flag(lfd, F_GETFD, FD_CLOEXEC));
    /* nothing pending: a non-blocking accept says so */
    g_assert_cmpint(socket_accept(lfd, true), ==, -1);
    g_assert_cmpint(errno, ==, EAGAIN);
    port = socket_get_local_port(lfd);
    g_assert_cmpint(port, >, 0);
    local = socket_get_local_address(lfd, errp);
    g_assert_nonnull(local);
    g_assert_cmpint(atoi(local->port), ==, port);
    g_free(addr->port);
    addr->port = g_strdup_printf("%d", port);
    roundtrip(lfd, addr);
    close(lfd);
    return port;
}

static void test_tcp(void)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(SocketAddress) a = NULL;
    g_autofree char *uri = NULL, *want = NULL;
    int port = tcp_listen_roundtrip("127.0.0.1", &err);

    g_assert_no_error(err);
    g_assert_cmpint(port, >, 0);

    /* nobody listens any more: refused, errno kept for retry decisions */
    uri = g_strdup_printf("tcp:127.0.0.1:%d", port);
    a = socket_address_parse(uri, 0, &err);
    g_assert_cmpint(socket_connect(a, &err), ==, -1);
    g_assert_cmpint(errno, ==, ECONNREFUSED);
    want = g_strdup_printf("Failed to connect to '127.0.0.1:%d': "
                           "Connection refused", port);
    g_assert_cmpstr(err->message, ==, want);
    g_clear_error(&err);

    g_free(a->port);
    a->port = g_strdup("0");
    g_assert_cmpint(socket_connect(a, &err), ==, -1);
    g_assert_nonnull(strstr(err->message, "only valid for listening"));
    g_assert_cmpint(errno, ==, 0);
}

static void test_tcp_resolve_error(void)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(SocketAddress) a =
        socket_address_parse("tcp:no-such-host.invalid:1", 0, &err);

    g_assert_cmpint(socket_connect(a, &err), ==, -1);
    g_assert_nonnull(strstr(err->message, "cannot resolve "
                            "'no-such-host.invalid:1'"));
    g_assert_cmpint(errno, ==, 0);
}

static void test_tcp_v6(void)
{
    g_autoptr(GError) err = NULL;
    int port = tcp_listen_roundtrip("[::1]", &err);

    if (port < 0) {
        g_autofree char *msg = g_strdup_printf("no IPv6 loopback: %s",
                                               err->message);

        g_test_skip(msg);
        return;
    }
    g_assert_no_error(err);
}

static void test_listen_several(void)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(SocketAddress) a = socket_address_parse("tcp:127.0.0.1:0", 0,
                                                      &err);
    int fds[4];
    int n = socket_listen(a, 4, 0, fds, G_N_ELEMENTS(fds), &err);

    g_assert_no_error(err);
    g_assert_cmpint(n, ==, 1);   /* one address: one socket */
    close(fds[0]);
}

static void test_unix(void)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *dir = g_dir_make_tmp("test-sockets-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "s", NULL);
    g_autofree char *uri = g_strdup_printf("unix:%s", path);
    g_autoptr(SocketAddress) a = socket_address_parse(uri, 0, &err);
    g_autoptr(SocketAddress) local = NULL;
    int lfd;

    g_assert_no_error(err);
    g_assert_cmpint(socket_listen(a, 1, 0, &lfd, 1, &err), ==, 1);
    g_assert_no_error(err);
    g_assert_cmpint(socket_get_local_port(lfd), ==, -1);
    local = socket_get_local_address(lfd, &err);
    g_assert_no_error(err);
    g_assert_cmpstr(local->path, ==, path);
    roundtrip(lfd, a);
    close(lfd);

    /* the socket file is left behind: it is stale and gets replaced */
    g_assert_true(g_file_test(path, G_FILE_TEST_EXISTS));
    g_assert_cmpint(socket_listen(a, 1, 0, &lfd, 1, &err), ==, 1);
    close(lfd);
    unlink(path);

    /* a regular file is kept, unless the caller asks otherwise */
    g_assert_true(g_file_set_contents(path, "keep", -1, NULL));
    g_assert_cmpint(socket_listen(a, 1, 0, &lfd, 1, &err), ==, -1);
    g_assert_nonnull(strstr(err->message, "exists and is not a socket"));
    g_clear_error(&err);
    g_assert_true(g_file_test(path, G_FILE_TEST_IS_REGULAR));
    g_assert_cmpint(socket_listen(a, 1, SOCKET_LISTEN_UNLINK_ANY, &lfd, 1,
                                  &err), ==, 1);
    g_assert_no_error(err);
    close(lfd);
    unlink(path);

    /* nobody there: ENOENT, which a client waiting for a server retries */
    g_assert_cmpint(socket_connect(a, &err), ==, -1);
    g_assert_cmpint(errno, ==, ENOENT);
    g_assert_nonnull(strstr(err->message, path));
    g_assert_cmpint(rmdir(dir), ==, 0);
}

static void test_fd_flags(void)
{
    g_autoptr(GError) err = NULL;
    int sv[2];

    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
    g_assert_false(has_fd_flag(sv[0], F_GETFD, FD_CLOEXEC));
    g_assert_true(socket_set_cloexec(sv[0], &err));
    g_assert_true(has_fd_flag(sv[0], F_GETFD, FD_CLOEXEC));
    g_assert_true(socket_set_nonblocking(sv[0], true, &err));
    g_assert_true(has_fd_flag(sv[0], F_GETFL, O_NONBLOCK));
    g_assert_true(socket_set_nonblocking(sv[0], false, &err));
    g_assert_false(has_fd_flag(sv[0], F_GETFL, O_NONBLOCK));
    socket_set_nodelay(sv[0]);      /* not TCP: harmless */
    close(sv[0]);
    close(sv[1]);
    g_assert_false(socket_set_nonblocking(sv[0], true, &err));
    g_assert_nonnull(strstr(err->message, "Bad file descriptor"));
}

/* ---- the migration listener on top ---- */

typedef struct Accepted {
    QIOChannel *ioc;
} Accepted;

static void on_accept(QIOChannel *ioc, void *opaque)
{
    ((Accepted *)opaque)->ioc = ioc;
}

static void test_migration_listener(void)
{
    g_autoptr(GError) err = NULL;
    Accepted acc = { 0 };
    MigrationListener *l;
    const SocketAddress *sa;
    SocketAddressQmp q;
    QIOChannel *src = NULL;
    g_autofree char *uri = NULL;
    int port, v = 0;
    socklen_t len = sizeof(v);

    l = migration_channel_listen("tcp:127.0.0.1:0", 1, on_accept, &acc, &err);
    g_assert_no_error(err);
    port = migration_listener_port(l);
    g_assert_cmpint(port, >, 0);
    sa = migration_listener_address(l);
    socket_address_to_qmp(sa, &q);
    g_assert_cmpstr(q.type, ==, "inet");
    g_assert_cmpstr(q.host, ==, "127.0.0.1");
    g_assert_cmpint(atoi(q.port), ==, port);
    g_assert_true(q.ipv4);

    uri = g_strdup_printf("tcp:127.0.0.1:%d", port);
    g_assert_true(migration_channel_connect(uri, &src, &err));
    while (!acc.ioc) {
        g_main_context_iteration(NULL, TRUE);
    }
    /* still answers query-migrate after the accept */
    g_assert_cmpint(migration_listener_port(l), ==, port);
    g_assert_nonnull(migration_listener_address(l));

    migration_channel_tune_postcopy(src, true);
    g_assert_cmpint(getsockopt(qio_channel_get_fd(src), IPPROTO_TCP,
                               TCP_NOTSENT_LOWAT, &v, &len), ==, 0);
    g_assert_cmpint(v, ==, 128 * 1024);
    migration_channel_tune_postcopy(acc.ioc, false);
    migration_channel_tune_postcopy(NULL, false);
    qio_channel_unref(src);
    qio_channel_unref(acc.ioc);
    migration_listener_free(l);

    /* Two connections (postcopy-preempt): both accepted, in order. */
    {
        QIOChannel *c1 = NULL, *c2 = NULL;
        QIOChannel *got[2] = { NULL, NULL };
        char b = 0;

        l = migration_channel_listen("tcp:127.0.0.1:0", 2, on_accept, &acc,
                                     &err);
        g_assert_no_error(err);
        g_free(uri);
        uri = g_strdup_printf("tcp:127.0.0.1:%d", migration_listener_port(l));
        g_assert_true(migration_channel_connect(uri, &c1, &err));
        g_assert_true(qio_channel_write_all(c1, "1", 1, &err));
        g_assert_true(migration_channel_connect(uri, &c2, &err));
        g_assert_true(qio_channel_write_all(c2, "2", 1, &err));
        for (int i = 0; i < 2; i++) {
            acc.ioc = NULL;
            while (!acc.ioc) {
                g_main_context_iteration(NULL, TRUE);
            }
            got[i] = acc.ioc;
            g_assert_cmpint(read(qio_channel_get_fd(got[i]), &b, 1), ==, 1);
            g_assert_cmpint(b, ==, '1' + i);
        }
        /* The listening socket is gone after the second. */
        g_assert_false(migration_channel_connect(uri, &src, &err));
        g_clear_error(&err);
        for (int i = 0; i < 2; i++) {
            qio_channel_unref(got[i]);
        }
        qio_channel_unref(c1);
        qio_channel_unref(c2);
        migration_listener_free(l);
        g_assert_null(migration_channel_listen("exec:true", 2, on_accept,
                                               &acc, &err));
        g_assert_nonnull(strstr(err->message, "more than one connection"));
        g_clear_error(&err);
    }

    /* exec/file/fd have no socket address */
    acc.ioc = NULL;
    l = migration_channel_listen("exec:true", 1, on_accept, &acc, &err);
    g_assert_no_error(err);
    g_assert_null(migration_listener_address(l));
    g_assert_cmpint(migration_listener_port(l), ==, 0);
    migration_listener_cancel(l);   /* before the idle ran: no callback */
    g_main_context_iteration(NULL, FALSE);
    g_assert_null(acc.ioc);
    migration_listener_free(l);
    migration_listener_free(NULL);

    g_assert_null(migration_channel_listen("tcp:127.0.0.1:99999", 1, on_accept,
                                           &acc, &err));
    g_assert_nonnull(strstr(err->message, "port '99999'"));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/sockets/parse/table", test_parse_table);
    g_test_add_func("/sockets/parse/null-and-long", test_parse_null_and_long);
    g_test_add_func("/sockets/format", test_format);
    g_test_add_func("/sockets/tcp", test_tcp);
    g_test_add_func("/sockets/tcp-resolve-error", test_tcp_resolve_error);
    g_test_add_func("/sockets/tcp-v6", test_tcp_v6);
    g_test_add_func("/sockets/listen-several", test_listen_several);
    g_test_add_func("/sockets/unix", test_unix);
    g_test_add_func("/sockets/fd-flags", test_fd_flags);
    g_test_add_func("/sockets/migration-listener", test_migration_listener);
    return g_test_run();
}

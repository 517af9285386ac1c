/*
 * QEMUFile and channel tests: widths, strings, async pages, sticky
 * errors, broken peers, rate limiting, return path, shutdown.
 */
#include "qemu/osdep.h"
#include "migration/qemu-file.h"

#include <sys/socket.h>

static QEMUFile *reader_of(QEMUFile *out)
{
    size_t len;
    const uint8_t *data;

    qemu_fflush(out);
    data = qio_channel_buffer_data(qemu_file_get_ioc(out), &len);
    QIOChannel *ioc = qio_channel_new_from_bytes(data, len);
    QEMUFile *in = qemu_file_new_input(ioc);

    qio_channel_unref(ioc);
    return in;
}

static QEMUFile *new_buffer_output(void)
{
    QIOChannel *ioc = qio_channel_new_buffer();
    QEMUFile *f = qemu_file_new_output(ioc);

    qio_channel_unref(ioc);
    return f;
}

static QEMUFile *new_input_bytes(const void *data, size_t len)
{
    QIOChannel *ioc = qio_channel_new_from_bytes(data, len);
    QEMUFile *f = qemu_file_new_input(ioc);

    qio_channel_unref(ioc);
    return f;
}

static void test_widths_roundtrip(void)
{
    QEMUFile *out = new_buffer_output();
    QEMUFile *in;
    uint8_t big[100000], back[100000];
    char str[256];
    const uint8_t *raw;
    size_t len;

    for (size_t i = 0; i < sizeof(big); i++) {
        big[i] = i * 7 + 3;
    }
    qemu_put_byte(out, 0xab);
    qemu_put_be16(out, 0xbeef);
    qemu_put_be32(out, 0xdeadbeef);
    qemu_put_be64(out, 0x0123456789abcdefULL);
    qemu_put_counted_string(out, "ram");
    qemu_put_buffer(out, big, sizeof(big));
    qemu_put_byte(out, 0x7e);
    g_assert_cmpuint(qemu_file_transferred(out), ==,
                     1 + 2 + 4 + 8 + 4 + sizeof(big) + 1);
    g_assert_cmpint(qemu_fflush(out), ==, 0);

    /* big-endian on the wire */
    raw = qio_channel_buffer_data(qemu_file_get_ioc(out), &len);
    static const uint8_t head[] = {
        0xab, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef,
        0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 3, 'r', 'a', 'm',
    };
    g_assert_cmpmem(raw, sizeof(head), head, sizeof(head));

    in = reader_of(out);
    g_assert_cmpint(qemu_get_byte(in), ==, 0xab);
    g_assert_cmpuint(qemu_get_be16(in), ==, 0xbeef);
    g_assert_cmpuint(qemu_get_be32(in), ==, 0xdeadbeef);
    g_assert_cmpuint(qemu_get_be64(in), ==, 0x0123456789abcdefULL);
    g_assert_cmpuint(qemu_get_counted_string(in, str), ==, 3);
    g_assert_cmpstr(str, ==, "ram");
    g_assert_cmpint(qemu_peek_byte(in, 0), ==, big[0]);
    g_assert_cmpint(qemu_peek_byte(in, 5), ==, big[5]);
    g_assert_cmpuint(qemu_get_buffer(in, back, sizeof(back)), ==,
                     sizeof(back));
    g_assert_cmpmem(back, sizeof(back), big, sizeof(big));
    g_assert_cmpint(qemu_get_byte(in), ==, 0x7e);
    g_assert_cmpint(qemu_file_get_error(in), ==, 0);
    g_assert_cmpuint(qemu_file_tell(in), ==, len);
    /* clean EOF while peeking is not an error, reading is */
    g_assert_cmpint(qemu_peek_byte(in, 0), ==, -1);
    g_assert_cmpint(qemu_file_get_error(in), ==, 0);
    g_assert_cmpint(qemu_get_byte(in), ==, 0);
    g_assert_cmpint(qemu_file_get_error(in), ==, -EIO);
    qemu_fclose(in);
    g_assert_cmpint(qemu_fclose(out), ==, 0);
}

static void test_counted_string_limits(void)
{
    QEMUFile *out = new_buffer_output();
    char longs[300];
    char buf[256];
    QEMUFile *in;
    static const uint8_t empty[] = { 0 };

    memset(longs, 'x', sizeof(longs) - 1);
    longs[sizeof(longs) - 1] = 0;
    qemu_put_counted_string(out, longs);
    g_assert_cmpint(qemu_file_get_error(out), ==, -EINVAL);
    /* sticky: nothing more is written */
    qemu_put_byte(out, 1);
    qemu_fclose(out);

    in = new_input_bytes(empty, 1);
    g_assert_cmpuint(qemu_get_counted_string(in, buf), ==, 0);
    g_assert_cmpstr(buf, ==, "");
    qemu_fclose(in);
}

static void test_in_place_and_skip(void)
{
    uint8_t data[5000];
    uint8_t *p = NULL;
    uint8_t copy[5000];
    QEMUFile *in;

    for (size_t i = 0; i < sizeof(data); i++) {
        data[i] = i;
    }
    in = new_input_bytes(data, sizeof(data));
    qemu_file_skip(in, 10);
    g_assert_cmpuint(qemu_get_buffer_in_place(in, &p, 4096), ==, 4096);
    g_assert_cmpmem(p, 4096, data + 10, 4096);
    p = copy;
    g_assert_cmpuint(qemu_get_buffer_in_place(in, &p, 100), ==, 100);
    g_assert_cmpmem(p, 100, data + 4106, 100);
    qemu_file_skip(in, 5000);   /* beyond the end */
    g_assert_cmpint(qemu_file_get_error(in), ==, -EIO);
    qemu_fclose(in);
}

static void test_async_not_copied(void)
{
    QEMUFile *out = new_buffer_output();
    uint8_t *page = g_malloc(4096);
    const uint8_t *raw;
    size_t len;

    memset(page, 'A', 4096);
    qemu_put_byte(out, 1);
    qemu_put_buffer_async(out, page, 4096);
    qemu_put_byte(out, 2);
    /* documented: changes before the flush may be sent (no copy made) */
    memset(page, 'B', 4096);
    g_assert_cmpint(qemu_fflush(out), ==, 0);
    /* after the flush the page is no longer referenced */
    memset(page, 'C', 4096);
    raw = qio_channel_buffer_data(qemu_file_get_ioc(out), &len);
    g_assert_cmpuint(len, ==, 4098);
    g_assert_cmpint(raw[0], ==, 1);
    g_assert_cmpint(raw[4097], ==, 2);
    for (int i = 1; i <= 4096; i++) {
        g_assert_cmpint(raw[i], ==, 'B');
    }

    /* many pages: the iovec array fills and flushes by itself */
    for (int i = 0; i < 200; i++) {
        qemu_put_be64(out, i);
        qemu_put_buffer_async(out, page, 4096);
    }
    qemu_fflush(out);
    raw = qio_channel_buffer_data(qemu_file_get_ioc(out), &len);
    g_assert_cmpuint(len, ==, 4098 + 200 * (8 + 4096));
    g_assert_cmpint(raw[4098 + 199 * 4104 + 7], ==, 199);
    g_assert_cmpint(raw[4098 + 199 * 4104 + 8], ==, 'C');
    g_free(page);
    qemu_fclose(out);
}

static void test_short_read_sticky(void)
{
    static const uint8_t data[] = { 1, 2, 3 };
    QEMUFile *in = new_input_bytes(data, sizeof(data));
    GError *err = NULL;

    g_assert_cmpuint(qemu_get_be32(in), ==, 0);
    g_assert_cmpint(qemu_file_get_error(in), ==, -EIO);
    g_assert_cmpint(qemu_file_get_error_obj(in, &err), ==, -EIO);
    g_assert_nonnull(strstr(err->message, "unexpected end of stream"));
    g_clear_error(&err);
    /* everything after is a no-op returning zeros */
    g_assert_cmpint(qemu_get_byte(in), ==, 0);
    qemu_file_set_error(in, -EPERM);    /* first error wins */
    g_assert_cmpint(qemu_file_get_error(in), ==, -EIO);
    g_assert_cmpint(qemu_fclose(in), ==, -EIO);
}

static void make_socketpair(int sv[2])
{
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
}

static void test_broken_peer(void)
{
    int sv[2];
    QIOChannel *ioc;
    QEMUFile *out;
    uint8_t *buf = g_malloc0(1 << 20);
    GError *err = NULL;

    make_socketpair(sv);
    close(sv[1]);
    ioc = qio_channel_new_fd(sv[0]);
    out = qemu_file_new_output(ioc);
    qio_channel_unref(ioc);
    /* no SIGPIPE handler is installed: dying here fails the test */
    qemu_put_buffer(out, buf, 1 << 20);
    qemu_fflush(out);
    g_assert_cmpint(qemu_file_get_error(out), ==, -EPIPE);
    qemu_put_byte(out, 1);
    g_assert_cmpint(qemu_fflush(out), ==, -EPIPE);
    g_assert_cmpint(qemu_file_get_error_obj(out, &err), ==, -EPIPE);
    g_assert_nonnull(err);
    g_clear_error(&err);
    g_assert_cmpint(qemu_fclose(out), ==, -EPIPE);
    g_free(buf);
}

typedef struct Drain {
    QEMUFile *in;
    size_t expect;
    size_t got;
    bool ok;
} Drain;

static gpointer drain_thread(gpointer opaque)
{
    Drain *d = opaque;
    uint8_t buf[4096];

    d->ok = true;
    while (d->got < d->expect) {
        size_t n = MIN(sizeof(buf), d->expect - d->got);

        if (qemu_get_buffer(d->in, buf, n) != n) {
            d->ok = false;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            if (buf[i] != (uint8_t)(d->got + i)) {
                d->ok = false;
            }
        }
        d->got += n;
    }
    return NULL;
}

static void socket_files(QEMUFile **out, QEMUFile **in)
{
    int sv[2];
    QIOChannel *a, *b;

    make_socketpair(sv);
    a = qio_channel_new_fd(sv[0]);
    b = qio_channel_new_fd(sv[1]);
    *out = qemu_file_new_output(a);
    *in = qemu_file_new_input(b);
    qio_channel_unref(a);
    qio_channel_unref(b);
}

static void test_socket_stream_and_rate_limit(void)
{
    QEMUFile *out, *in;
    Drain d = { .expect = 300 * 1024 };
    uint8_t *data = g_malloc(d.expect);
    GThread *t;
    gint64 start, elapsed;

    for (size_t i = 0; i < d.expect; i++) {
        data[i] = i;
    }
    socket_files(&out, &in);
    d.in = in;
    t = g_thread_new("drain", drain_thread, &d);

    qemu_file_set_rate_limit(out, 1000 * 1000);
    g_assert_cmpuint(qemu_file_get_rate_limit(out), ==, 1000 * 1000);
    start = g_get_monotonic_time();
    qemu_file_rate_limit_reset(out);
    for (size_t off = 0; off < d.expect; off += 4096) {
        while (qemu_file_rate_limit(out)) {
            qemu_file_rate_limit_wait(out);
        }
        qemu_put_buffer_async(out, data + off, MIN(4096, d.expect - off));
        if ((off / 4096) % 8 == 7) {
            qemu_fflush(out);
        }
    }
    qemu_fflush(out);
    elapsed = g_get_monotonic_time() - start;
    g_thread_join(t);
    g_assert_true(d.ok);
    g_assert_cmpuint(d.got, ==, d.expect);
    /* 100 KB per 100 ms slice: three slices need at least two waits */
    g_assert_cmpint(elapsed, >=, 180 * 1000);
    g_assert_cmpint(elapsed, <, 10 * 1000 * 1000);
    g_assert_cmpint(qemu_fclose(out), ==, 0);
    qemu_fclose(in);
    g_free(data);
}

static void test_return_path(void)
{
    QEMUFile *src_out, *dst_in, *src_rp, *dst_rp;
    static const uint8_t pipe_data[] = { 0 };

    socket_files(&src_out, &dst_in);
    src_rp = qemu_file_get_return_path(src_out);
    dst_rp = qemu_file_get_return_path(dst_in);
    g_assert_nonnull(src_rp);
    g_assert_nonnull(dst_rp);
    g_assert_false(qemu_file_is_writable(src_rp));
    g_assert_true(qemu_file_is_writable(dst_rp));

    qemu_put_be32(src_out, 0x11223344);
    qemu_fflush(src_out);
    g_assert_cmpuint(qemu_get_be32(dst_in), ==, 0x11223344);
    qemu_put_be16(dst_rp, 2);
    qemu_put_be16(dst_rp, 4);
    qemu_put_be32(dst_rp, 7);
    qemu_fflush(dst_rp);
    g_assert_cmpuint(qemu_get_be16(src_rp), ==, 2);
    g_assert_cmpuint(qemu_get_be16(src_rp), ==, 4);
    g_assert_cmpuint(qemu_get_be32(src_rp), ==, 7);

    /* memory channels have no way back */
    QEMUFile *m = new_input_bytes(pipe_data, 1);
    g_assert_null(qemu_file_get_return_path(m));
    qemu_fclose(m);

    g_assert_cmpint(qemu_fclose(dst_rp), ==, 0);
    g_assert_cmpint(qemu_fclose(src_rp), ==, 0);
    qemu_fclose(src_out);
    qemu_fclose(dst_in);
}

static gpointer blocked_reader(gpointer opaque)
{
    QEMUFile *in = opaque;

    qemu_get_byte(in);
    return GINT_TO_POINTER(qemu_file_get_error(in));
}

static void test_shutdown_wakes_reader(void)
{
    QEMUFile *out, *in;
    GThread *t;

    socket_files(&out, &in);
    t = g_thread_new("reader", blocked_reader, in);
    g_usleep(50 * 1000);
    qemu_file_shutdown(in);
    g_assert_cmpint(GPOINTER_TO_INT(g_thread_join(t)), <, 0);
    qemu_fclose(out);
    qemu_fclose(in);
}

static void test_wrong_direction(void)
{
    QEMUFile *out = new_buffer_output();

    qemu_get_byte(out);
    g_assert_cmpint(qemu_file_get_error(out), ==, -EINVAL);
    qemu_fclose(out);
}


/* ---- channels and URIs ---- */

typedef struct Accepted {
    QIOChannel *ioc;
} Accepted;

static void on_accept(QIOChannel *ioc, void *opaque)
{
    ((Accepted *)opaque)->ioc = ioc;
}

static QIOChannel *wait_accept(Accepted *acc)
{
    gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;

    while (!acc->ioc && g_get_monotonic_time() < deadline) {
        g_main_context_iteration(NULL, FALSE);
        g_usleep(1000);
    }
    g_assert_nonnull(acc->ioc);
    return acc->ioc;
}

/* Send a word each way over a connected pair of channels. */
static void exchange(QIOChannel *src, QIOChannel *dst)
{
    QEMUFile *out = qemu_file_new_output(src);
    QEMUFile *in = qemu_file_new_input(dst);
    QEMUFile *rp_in = qemu_file_get_return_path(out);
    QEMUFile *rp_out = qemu_file_get_return_path(in);

    qemu_put_be64(out, 0x1122334455667788ULL);
    qemu_fflush(out);
    g_assert_cmpuint(qemu_get_be64(in), ==, 0x1122334455667788ULL);
    g_assert_nonnull(rp_in);
    g_assert_nonnull(rp_out);
    qemu_put_be32(rp_out, 0x600d);
    qemu_fflush(rp_out);
    g_assert_cmpuint(qemu_get_be32(rp_in), ==, 0x600d);
    qemu_fclose(rp_in);
    qemu_fclose(rp_out);
    g_assert_cmpint(qemu_fclose(out), ==, 0);
    g_assert_cmpint(qemu_fclose(in), ==, 0);
}

static void test_uri_errors(void)
{
    QIOChannel *ioc = NULL;
    GError *err = NULL;
    Accepted acc = { 0 };
    MigrationListener *l;
    int port;
    g_autofree char *uri = NULL;

    g_assert_false(migration_channel_connect("foo:bar", &ioc, &err));
    g_assert_cmpstr(err->message, ==, "unknown migration protocol: foo");
    g_clear_error(&err);
    g_assert_null(migration_channel_listen("rdma:1.2.3.4:5", 1, on_accept,
                                           &acc, &err));
    g_assert_cmpstr(err->message, ==, "unknown migration protocol: rdma");
    g_clear_error(&err);
    g_assert_false(migration_channel_connect("tcp:127.0.0.1", &ioc, &err));
    g_clear_error(&err);

    /* a port that was just free: connection refused, naming the address */
    l = migration_channel_listen("tcp:127.0.0.1:0", 1, on_accept, &acc, &err);
    g_assert_nonnull(l);
    port = migration_listener_port(l);
    g_assert_cmpint(port, >, 0);
    migration_listener_free(l);
    uri = g_strdup_printf("tcp:127.0.0.1:%d", port);
    g_assert_false(migration_channel_connect(uri, &ioc, &err));
    g_autofree char *want = g_strdup_printf(
        "Failed to connect to '127.0.0.1:%d': Connection refused", port);
    g_assert_cmpstr(err->message, ==, want);
    g_clear_error(&err);

    g_assert_false(migration_channel_connect("file:/nonexistent/x/y", &ioc,
                                             &err));
    g_clear_error(&err);
    g_assert_false(migration_channel_connect("file:/tmp/x,offset=4", &ioc,
                                             &err));
    g_clear_error(&err);
    g_assert_false(migration_channel_connect("fd:nosuchname", &ioc, &err));
    g_assert_nonnull(strstr(err->message, "nosuchname"));
    g_clear_error(&err);
}

static void test_uri_tcp(void)
{
    const char *hosts[] = { "127.0.0.1", "[::1]" };

    for (guint i = 0; i < G_N_ELEMENTS(hosts); i++) {
        Accepted acc = { 0 };
        QIOChannel *src = NULL;
        GError *err = NULL;
        g_autofree char *luri = g_strdup_printf("tcp:%s:0", hosts[i]);
        g_autofree char *curi = NULL;

        MigrationListener *l = migration_channel_listen(luri, 1, on_accept, &acc,
                                                        &err);

        if (!l) {
            /* no IPv6 in this sandbox */
            g_test_message("skipping %s: %s", luri, err->message);
            g_clear_error(&err);
            continue;
        }
        curi = g_strdup_printf("tcp:%s:%d", hosts[i],
                               migration_listener_port(l));
        g_assert_true(migration_channel_connect(curi, &src, &err));
        g_assert_no_error(err);
        exchange(src, wait_accept(&acc));
        qio_channel_unref(src);
        qio_channel_unref(acc.ioc);
        migration_listener_free(l);
    }
}

static void test_uri_unix_and_fd(void)
{
    g_autofree char *dir = g_dir_make_tmp("migstream-XXXXXX", NULL);
    g_autofree char *uri = g_strdup_printf("unix:%s/sock", dir);
    g_autofree char *path = g_strdup_printf("%s/sock", dir);
    Accepted acc = { 0 };
    MigrationListener *l;
    QIOChannel *src = NULL, *a = NULL, *b = NULL;
    GError *err = NULL;
    int sv[2];
    char fduri[32];

    l = migration_channel_listen(uri, 1, on_accept, &acc, &err);
    g_assert_nonnull(l);
    g_assert_true(migration_channel_connect(uri, &src, &err));
    g_assert_no_error(err);
    exchange(src, wait_accept(&acc));
    qio_channel_unref(src);
    qio_channel_unref(acc.ioc);
    unlink(path);
    rmdir(dir);

    /* fd: with a plain number (the monitor's getfd names come later) */
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
    snprintf(fduri, sizeof(fduri), "fd:%d", sv[0]);
    g_assert_true(migration_channel_connect(fduri, &a, &err));
    snprintf(fduri, sizeof(fduri), "fd:%d", sv[1]);
    acc.ioc = NULL;
    migration_listener_free(l);
    l = migration_channel_listen(fduri, 1, on_accept, &acc, &err);
    g_assert_nonnull(l);
    b = wait_accept(&acc);
    migration_listener_free(l);
    close(sv[0]);       /* the channels hold duplicates */
    close(sv[1]);
    exchange(a, b);
    qio_channel_unref(a);
    qio_channel_unref(b);
}

static void write_stream(QIOChannel *ioc, size_t n)
{
    QEMUFile *f = qemu_file_new_output(ioc);

    for (size_t i = 0; i < n; i++) {
        qemu_put_be32(f, i);
    }
    g_assert_null(qemu_file_get_return_path(f));
    g_assert_cmpint(qemu_fclose(f), ==, 0);
}

static void read_stream(QIOChannel *ioc, size_t n)
{
    QEMUFile *f = qemu_file_new_input(ioc);

    for (size_t i = 0; i < n; i++) {
        g_assert_cmpuint(qemu_get_be32(f), ==, i);
    }
    g_assert_cmpint(qemu_peek_byte(f, 0), ==, -1);
    g_assert_cmpint(qemu_fclose(f), ==, 0);
}

static void test_uri_exec_and_file(void)
{
    g_autofree char *dir = g_dir_make_tmp("migstream-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "stream", NULL);
    g_autofree char *src_uri = g_strdup_printf("exec:cat > %s", path);
    g_autofree char *dst_uri = g_strdup_printf("exec:cat %s", path);
    g_autofree char *file_uri = g_strdup_printf("file:%s", path);
    Accepted acc = { 0 };
    MigrationListener *l;
    QIOChannel *ioc = NULL;
    GError *err = NULL;
    const size_t n = 100000;

    g_assert_true(migration_channel_connect(src_uri, &ioc, &err));
    g_assert_no_error(err);
    write_stream(ioc, n);
    qio_channel_unref(ioc);     /* closes and reaps "cat" */

    l = migration_channel_listen(dst_uri, 1, on_accept, &acc, &err);
    g_assert_nonnull(l);
    read_stream(wait_accept(&acc), n);
    migration_listener_free(l);
    qio_channel_unref(acc.ioc);

    g_assert_true(migration_channel_connect(file_uri, &ioc, &err));
    write_stream(ioc, n / 2);
    qio_channel_unref(ioc);
    acc.ioc = NULL;
    l = migration_channel_listen(file_uri, 1, on_accept, &acc, &err);
    g_assert_nonnull(l);
    read_stream(wait_accept(&acc), n / 2);
    migration_listener_free(l);
    qio_channel_unref(acc.ioc);
    unlink(path);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qemu-file/widths", test_widths_roundtrip);
    g_test_add_func("/qemu-file/counted-string", test_counted_string_limits);
    g_test_add_func("/qemu-file/in-place-skip", test_in_place_and_skip);
    g_test_add_func("/qemu-file/async", test_async_not_copied);
    g_test_add_func("/qemu-file/short-read", test_short_read_sticky);
    g_test_add_func("/qemu-file/broken-peer", test_broken_peer);
    g_test_add_func("/qemu-file/rate-limit", test_socket_stream_and_rate_limit);
    g_test_add_func("/qemu-file/return-path", test_return_path);
    g_test_add_func("/qemu-file/shutdown", test_shutdown_wakes_reader);
    g_test_add_func("/qemu-file/wrong-direction", test_wrong_direction);
    g_test_add_func("/channel/uri-errors", test_uri_errors);
    g_test_add_func("/channel/tcp", test_uri_tcp);
    g_test_add_func("/channel/unix-fd", test_uri_unix_and_fd);
    g_test_add_func("/channel/exec-file", test_uri_exec_and_file);
    return g_test_run();
}

/*
 * QEMUFile: buffered, error-sticky migration stream over a QIOChannel.
 *
 * Output keeps an iovec array: small puts are copied into an internal
 * buffer (and the iovec for it grows), big pages can be queued in place
 * (put_buffer_async) so guest memory goes to writev without a copy.
 */
#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "qemu/thread.h"
#include "migration/qemu-file.h"
#include "trace/trace-migration.h"

#include <poll.h>

#define IO_BUF_SIZE  32768
/*
 * A page record is two iovecs (header in buf, page in guest RAM), so this
 * lets one writev carry up to ~1 MiB of pages: fewer syscalls and socket
 * lock round trips than 64 (measured in docs/performance.md).
 */
#define MAX_IOV_SIZE 512

struct QEMUFile {
    QIOChannel *ioc;
    bool is_writable;

    size_t buf_index;       /* output: bytes used; input: read position */
    size_t buf_size;        /* input: valid bytes in buf */
    unsigned int iovcnt;
    uint64_t pending;       /* bytes queued in iov */
    uint64_t flushed;       /* bytes written to the channel */
    uint64_t read_total;    /* bytes read from the channel */
    uint64_t other_channels; /* bytes of this stream sent elsewhere (multifd) */

    /* rate limiting, in bytes per BUFFER_DELAY_MS slice */
    uint64_t rate_limit_max;
    uint64_t rate_limit_used;
    int64_t slice_start;

    int last_error;         /* atomic: read by other threads */
    QemuMutex error_lock;
    GError *last_error_obj;

    /* Last and not zeroed: only [0, buf_size) and [0, iovcnt) are read. */
    uint8_t buf[IO_BUF_SIZE];
    struct iovec iov[MAX_IOV_SIZE];
};

static QEMUFile *qemu_file_new(QIOChannel *ioc, bool writable)
{
    /* 40 KiB of buffers: zeroing them cost more than short loads. */
    QEMUFile *f = g_malloc(sizeof(QEMUFile));

    memset(f, 0, offsetof(QEMUFile, buf));

    f->ioc = qio_channel_ref(ioc);
    f->is_writable = writable;
    f->slice_start = g_get_monotonic_time();
    qemu_mutex_init(&f->error_lock);
    return f;
}

QEMUFile *qemu_file_new_output(QIOChannel *ioc)
{
    return qemu_file_new(ioc, true);
}

QEMUFile *qemu_file_new_input(QIOChannel *ioc)
{
    return qemu_file_new(ioc, false);
}

QEMUFile *qemu_file_get_return_path(QEMUFile *f)
{
    if (!qio_channel_is_socket(f->ioc)) {
        return NULL;
    }
    return qemu_file_new(f->ioc, !f->is_writable);
}

QIOChannel *qemu_file_get_ioc(QEMUFile *f)
{
    return f->ioc;
}

bool qemu_file_is_writable(QEMUFile *f)
{
    return f->is_writable;
}

int qemu_fclose(QEMUFile *f)
{
    int ret;

    if (f->is_writable) {
        qemu_fflush(f);
    }
    ret = qemu_file_get_error(f);
    trace_qemu_file_fclose(qio_channel_get_name(f->ioc), ret);
    qio_channel_unref(f->ioc);
    if (f->last_error_obj) {
        g_error_free(f->last_error_obj);
    }
    qemu_mutex_destroy(&f->error_lock);
    g_free(f);
    return ret;
}

/* ---- errors ---- */

int qemu_file_get_error(QEMUFile *f)
{
    return qatomic_mb_read(&f->last_error);
}

int qemu_file_get_error_obj(QEMUFile *f, GError **errp)
{
    int ret;

    qemu_mutex_lock(&f->error_lock);
    ret = f->last_error;
    if (ret && errp && !*errp) {
        if (f->last_error_obj) {
            *errp = g_error_copy(f->last_error_obj);
        } else {
            error_setg_errno(errp, -ret, "Migration stream error");
        }
    }
    qemu_mutex_unlock(&f->error_lock);
    return ret;
}

void qemu_file_set_error_obj(QEMUFile *f, int ret, GError *err)
{
    bool first = false;

    qemu_mutex_lock(&f->error_lock);
    if (!f->last_error && ret < 0) {
        f->last_error_obj = err;
        err = NULL;
        qatomic_mb_set(&f->last_error, ret);
        first = true;
    }
    qemu_mutex_unlock(&f->error_lock);
    if (first) {
        /* Only the error that sticks: later ones are dropped anyway. */
        trace_qemu_file_set_error(ret);
    }
    if (err) {
        g_error_free(err);
    }
}

void qemu_file_set_error(QEMUFile *f, int ret)
{
    qemu_file_set_error_obj(f, ret, NULL);
}

static void qemu_file_fail(QEMUFile *f, int ret, GError *err)
{
    qemu_file_set_error_obj(f, ret, err);
}

/* ---- waiting on non-blocking channels ---- */

static void wait_fd(QEMUFile *f, short events)
{
    struct pollfd pfd = {
        .fd = qio_channel_get_fd(f->ioc),
        .events = events,
    };

    if (pfd.fd < 0) {
        return;
    }
    while (poll(&pfd, 1, -1) < 0 && errno == EINTR) {
    }
}

/* ---- output ---- */

static void iov_consume(QEMUFile *f, size_t done)
{
    unsigned int i = 0;

    while (i < f->iovcnt && done >= f->iov[i].iov_len) {
        done -= f->iov[i].iov_len;
        i++;
    }
    if (i < f->iovcnt) {
        f->iov[i].iov_base = (uint8_t *)f->iov[i].iov_base + done;
        f->iov[i].iov_len -= done;
    }
    memmove(f->iov, f->iov + i, (f->iovcnt - i) * sizeof(f->iov[0]));
    f->iovcnt -= i;
}

int qemu_fflush(QEMUFile *f)
{
    if (!f->is_writable) {
        return qemu_file_get_error(f);
    }
    while (f->iovcnt && !qemu_file_get_error(f)) {
        GError *err = NULL;
        ssize_t n = qio_channel_writev(f->ioc, f->iov, f->iovcnt, &err);

        if (n == QIO_CHANNEL_ERR_BLOCK) {
            wait_fd(f, POLLOUT);
            continue;
        }
        if (n < 0) {
            int e = errno ? errno : EIO;

            qemu_file_fail(f, -e, err);
            break;
        }
        f->flushed += n;
        f->pending -= n;
        iov_consume(f, n);
    }
    /* after an error the queued data is dropped: nothing will be sent */
    f->flushed += f->pending;
    f->pending = 0;
    f->iovcnt = 0;
    f->buf_index = 0;
    return qemu_file_get_error(f);
}

static inline void add_to_iovec(QEMUFile *f, const uint8_t *p, size_t len)
{
    struct iovec *last = f->iovcnt ? &f->iov[f->iovcnt - 1] : NULL;

    if (last && (uint8_t *)last->iov_base + last->iov_len == p) {
        last->iov_len += len;
    } else {
        f->iov[f->iovcnt].iov_base = (void *)p;
        f->iov[f->iovcnt].iov_len = len;
        f->iovcnt++;
    }
    f->pending += len;
    f->rate_limit_used += len;
}

static inline bool can_put(QEMUFile *f)
{
    if (unlikely(!f->is_writable)) {
        qemu_file_fail(f, -EINVAL, g_error_new(FERRY_ERROR, 0,
                       "write to a migration stream opened for reading"));
        return false;
    }
    return !qemu_file_get_error(f);
}

/* Copy n (<= free space) bytes into buf and queue them. */
static inline void put_copy(QEMUFile *f, const void *p, size_t n)
{
    memcpy(f->buf + f->buf_index, p, n);
    add_to_iovec(f, f->buf + f->buf_index, n);
    f->buf_index += n;
    if (f->buf_index == IO_BUF_SIZE || f->iovcnt == MAX_IOV_SIZE) {
        qemu_fflush(f);
    }
}

/* Fixed-size puts: one copy unless the buffer is nearly full. */
static inline void put_small(QEMUFile *f, const void *p, size_t n)
{
    if (!can_put(f)) {
        return;
    }
    if (likely(IO_BUF_SIZE - f->buf_index >= n)) {
        put_copy(f, p, n);
    } else {
        qemu_put_buffer(f, p, n);
    }
}

void qemu_put_buffer(QEMUFile *f, const uint8_t *buf, size_t len)
{
    if (!can_put(f)) {
        return;
    }
    while (len && !qemu_file_get_error(f)) {
        size_t n = MIN(len, IO_BUF_SIZE - f->buf_index);

        put_copy(f, buf, n);
        buf += n;
        len -= n;
    }
}

void qemu_put_buffer_async(QEMUFile *f, const uint8_t *buf, size_t len)
{
    if (!can_put(f) || !len) {
        return;
    }
    add_to_iovec(f, buf, len);
    if (f->iovcnt == MAX_IOV_SIZE) {
        qemu_fflush(f);
    }
}

void qemu_put_byte(QEMUFile *f, int v)
{
    uint8_t b = v;

    put_small(f, &b, 1);
}

void qemu_put_be16(QEMUFile *f, unsigned int v)
{
    uint16_t be = GUINT16_TO_BE(v);

    put_small(f, &be, 2);
}

void qemu_put_be32(QEMUFile *f, unsigned int v)
{
    uint32_t be = GUINT32_TO_BE(v);

    put_small(f, &be, 4);
}

void qemu_put_be64(QEMUFile *f, uint64_t v)
{
    uint64_t be = GUINT64_TO_BE(v);

    put_small(f, &be, 8);
}

void qemu_put_counted_string(QEMUFile *f, const char *s)
{
    size_t len = strlen(s);

    if (len > 255) {
        qemu_file_fail(f, -EINVAL, g_error_new(FERRY_ERROR, 0,
                       "counted string too long (%zu bytes): '%.32s...'",
                       len, s));
        return;
    }
    qemu_put_byte(f, len);
    qemu_put_buffer(f, (const uint8_t *)s, len);
}

uint64_t qemu_file_transferred(QEMUFile *f)
{
    return f->flushed + f->pending + f->other_channels;
}

void qemu_file_acct_other_channel(QEMUFile *f, uint64_t len)
{
    f->other_channels += len;
    f->rate_limit_used += len;
}

/* ---- input ---- */

static inline size_t avail(QEMUFile *f)
{
    return f->buf_size - f->buf_index;
}

/*
 * Read more data after what is buffered.  Returns bytes added; 0 at EOF or
 * on error (the error is recorded).
 */
static size_t fill_buffer(QEMUFile *f)
{
    if (f->is_writable) {
        qemu_file_fail(f, -EINVAL, g_error_new(FERRY_ERROR, 0,
                       "read from a migration stream opened for writing"));
        return 0;
    }
    if (qemu_file_get_error(f)) {
        return 0;
    }
    if (f->buf_index > 0) {
        memmove(f->buf, f->buf + f->buf_index, avail(f));
        f->buf_size -= f->buf_index;
        f->buf_index = 0;
    }
    if (f->buf_size == IO_BUF_SIZE) {
        return 0;
    }
    for (;;) {
        GError *err = NULL;
        struct iovec iov = {
            .iov_base = f->buf + f->buf_size,
            .iov_len = IO_BUF_SIZE - f->buf_size,
        };
        ssize_t n = qio_channel_readv(f->ioc, &iov, 1, &err);

        if (n == QIO_CHANNEL_ERR_BLOCK) {
            wait_fd(f, POLLIN);
            continue;
        }
        if (n < 0) {
            int e = errno ? errno : EIO;

            qemu_file_fail(f, -e, err);
            return 0;
        }
        f->buf_size += n;
        f->read_total += n;
        return n;
    }
}

static void short_read(QEMUFile *f)
{
    if (!qemu_file_get_error(f)) {
        qemu_file_fail(f, -EIO, g_error_new(FERRY_ERROR, 0,
                       "unexpected end of stream at offset %" PRIu64,
                       qemu_file_tell(f)));
    }
}

/* Make n bytes (n <= IO_BUF_SIZE) available; false at EOF (no error). */
static bool ensure(QEMUFile *f, size_t n)
{
    while (avail(f) < n) {
        if (!fill_buffer(f)) {
            return false;
        }
    }
    return true;
}

size_t qemu_peek_buffer(QEMUFile *f, uint8_t **buf, size_t size,
                        size_t offset)
{
    if (size + offset > IO_BUF_SIZE || qemu_file_get_error(f)) {
        if (size + offset > IO_BUF_SIZE) {
            qemu_file_fail(f, -EINVAL, g_error_new(FERRY_ERROR, 0,
                           "peek of %zu bytes beyond the stream buffer",
                           size + offset));
        }
        return 0;
    }
    ensure(f, size + offset);
    if (avail(f) <= offset) {
        return 0;
    }
    *buf = f->buf + f->buf_index + offset;
    return MIN(size, avail(f) - offset);
}

int qemu_peek_byte(QEMUFile *f, int offset)
{
    uint8_t *p;

    if (offset < 0 || qemu_peek_buffer(f, &p, 1, offset) != 1) {
        return -1;
    }
    return *p;
}

size_t qemu_get_buffer(QEMUFile *f, uint8_t *buf, size_t len)
{
    size_t done = 0;

    if (qemu_file_get_error(f)) {
        return 0;
    }
    while (done < len) {
        size_t n = MIN(avail(f), len - done);

        if (n) {
            memcpy(buf + done, f->buf + f->buf_index, n);
            f->buf_index += n;
            done += n;
            continue;
        }
        if (!fill_buffer(f)) {
            short_read(f);
            break;
        }
    }
    return done;
}

size_t qemu_get_buffer_in_place(QEMUFile *f, uint8_t **buf, size_t len)
{
    if (len <= IO_BUF_SIZE && !qemu_file_get_error(f)) {
        if (!ensure(f, len)) {
            short_read(f);
            return 0;
        }
        *buf = f->buf + f->buf_index;
        f->buf_index += len;
        return len;
    }
    return qemu_get_buffer(f, *buf, len);
}

/* Fixed-size gets: direct from the buffer when it holds enough. */
static inline bool get_small(QEMUFile *f, void *p, size_t n)
{
    if (likely(avail(f) >= n)) {
        memcpy(p, f->buf + f->buf_index, n);
        f->buf_index += n;
        return true;
    }
    return qemu_get_buffer(f, p, n) == n;
}

int qemu_get_byte(QEMUFile *f)
{
    uint8_t b = 0;

    return get_small(f, &b, 1) ? b : 0;
}

unsigned int qemu_get_be16(QEMUFile *f)
{
    uint16_t v = 0;

    return get_small(f, &v, 2) ? GUINT16_FROM_BE(v) : 0;
}

unsigned int qemu_get_be32(QEMUFile *f)
{
    uint32_t v = 0;

    return get_small(f, &v, 4) ? GUINT32_FROM_BE(v) : 0;
}

uint64_t qemu_get_be64(QEMUFile *f)
{
    uint64_t v = 0;

    return get_small(f, &v, 8) ? GUINT64_FROM_BE(v) : 0;
}

size_t qemu_get_counted_string(QEMUFile *f, char buf[256])
{
    size_t len = qemu_get_byte(f);

    if (qemu_file_get_error(f)) {
        buf[0] = 0;
        return 0;
    }
    if (qemu_get_buffer(f, (uint8_t *)buf, len) != len) {
        buf[0] = 0;
        return 0;
    }
    buf[len] = 0;
    return len;
}

void qemu_file_skip(QEMUFile *f, size_t n)
{
    while (n && !qemu_file_get_error(f)) {
        size_t k = MIN(n, avail(f));

        f->buf_index += k;
        n -= k;
        if (n && !fill_buffer(f)) {
            short_read(f);
        }
    }
}

uint64_t qemu_file_tell(QEMUFile *f)
{
    if (f->is_writable) {
        return qemu_file_transferred(f);
    }
    return f->read_total - avail(f);
}

/* ---- rate limiting ---- */

void qemu_file_set_rate_limit(QEMUFile *f, uint64_t bytes_per_sec)
{
    f->rate_limit_max = bytes_per_sec ?
        MAX(bytes_per_sec * BUFFER_DELAY_MS / 1000, 1) : 0;
}

uint64_t qemu_file_get_rate_limit(QEMUFile *f)
{
    return f->rate_limit_max * 1000 / BUFFER_DELAY_MS;
}

void qemu_file_rate_limit_reset(QEMUFile *f)
{
    f->slice_start = g_get_monotonic_time();
    f->rate_limit_used = 0;
}

bool qemu_file_rate_limit(QEMUFile *f)
{
    if (qemu_file_get_error(f)) {
        return true;    /* stop producing: nothing more will be sent */
    }
    /*
     * The clock is read only once the slice's budget is spent: this runs
     * once per page, and an unspent budget says "go on" whatever the time.
     */
    if (!f->rate_limit_max || f->rate_limit_used < f->rate_limit_max) {
        return false;
    }
    if (g_get_monotonic_time() - f->slice_start >= BUFFER_DELAY_MS * 1000) {
        qemu_file_rate_limit_reset(f);
        return false;
    }
    return true;
}

void qemu_file_rate_limit_wait(QEMUFile *f)
{
    int64_t left = f->slice_start + BUFFER_DELAY_MS * 1000 -
                   g_get_monotonic_time();

    if (left > 0) {
        g_usleep(left);
    }
    qemu_file_rate_limit_reset(f);
}

void qemu_file_acct_rate_limit(QEMUFile *f, uint64_t len)
{
    f->rate_limit_used += len;
}

/* ---- channel control ---- */

int qemu_file_shutdown(QEMUFile *f)
{
    GError *err = NULL;
    int ret = 0;

    trace_qemu_file_shutdown(qio_channel_get_name(f->ioc));
    if (!qio_channel_shutdown(f->ioc, QIO_CHANNEL_SHUTDOWN_BOTH, &err)) {
        g_error_free(err);
        ret = -EIO;
    }
    /* every later operation on this file fails at once */
    qemu_file_fail(f, -EIO, g_error_new(FERRY_ERROR, 0,
                   "migration stream was shut down"));
    return ret;
}

bool qemu_file_set_blocking(QEMUFile *f, bool block, GError **errp)
{
    return qio_channel_set_blocking(f->ioc, block, errp);
}

/*
 * multifd's wire format (QEMU 7.2's layout) and one receiving channel
 * placing pages into a RAMBlock, with every refusal of bad input; after
 * the switch to postcopy, pages refused and SYNCs read without waiting.
 */
#include "qemu/osdep.h"
#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include "qemu/rcu.h"
#include "qemu/cutils.h"
#include "exec/ramblock.h"
#include "migration/channel.h"
#include "migration/multifd.h"

#define RAM_SIZE (1u << 20)

static const uint8_t uuid_a[MULTIFD_UUID_LEN] = { 0x12, 0x34, [15] = 0x56 };
static RAMBlock *ram;

static void test_layout(void)
{
    uint8_t hello[MULTIFD_INIT_LEN], hdr[MULTIFD_PACKET_HDR_LEN];
    MultiFDPacket p = {
        .flags = MULTIFD_FLAG_SYNC, .pages_alloc = 128, .normal_pages = 2,
        .next_packet_size = 8192, .packet_num = 0x0102030405060708ull,
        .ramblock = "pc.ram", .offset = { 0x1000, 0xff000 },
    };

    /* QEMU 7.2's sizes: 64-byte hello, 320 + 8 * 128 header. */
    g_assert_cmpuint(MULTIFD_PACKET_HDR_LEN, ==, 1344);
    multifd_init_msg_encode(hello, uuid_a, 3);
    g_assert_cmpmem(hello, 8, "\x11\x22\x33\x44\x00\x00\x00\x01", 8);
    g_assert_cmpmem(hello + 8, 16, uuid_a, 16);
    g_assert_cmpuint(hello[24], ==, 3);
    multifd_packet_encode(hdr, &p);
    g_assert_cmpmem(hdr, 24, "\x11\x22\x33\x44\x00\x00\x00\x01"
                    "\x00\x00\x00\x01\x00\x00\x00\x80"
                    "\x00\x00\x00\x02\x00\x00\x20\x00", 24);
    g_assert_cmpmem(hdr + 24, 8, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    g_assert_cmpstr((char *)hdr + 64, ==, "pc.ram");
    g_assert_cmpmem(hdr + 320, 16, "\0\0\0\0\0\0\x10\0\0\0\0\0\0\x0f\xf0\0",
                    16);
}

static void expect_decode_error(const uint8_t *hdr, const char *what)
{
    MultiFDPacket p;
    g_autoptr(GError) err = NULL;

    g_assert_false(multifd_packet_decode(hdr, &p, &err));
    g_assert_nonnull(strstr(err->message, what));
}

static void test_decode(void)
{
    uint8_t hdr[MULTIFD_PACKET_HDR_LEN];
    MultiFDPacket in = {
        .pages_alloc = 128, .normal_pages = 1, .ramblock = "ram",
        .offset = { 0x2000 },
    }, out;
    g_autoptr(GError) err = NULL;
    uint8_t hello[MULTIFD_INIT_LEN];
    uint8_t id;

    multifd_packet_encode(hdr, &in);
    g_assert_true(multifd_packet_decode(hdr, &out, &err));
    g_assert_cmpuint(out.normal_pages, ==, 1);
    g_assert_cmpuint(out.offset[0], ==, 0x2000);
    g_assert_cmpstr(out.ramblock, ==, "ram");

    hdr[0] ^= 1;
    expect_decode_error(hdr, "magic");
    hdr[0] ^= 1;
    hdr[7] = 2;
    expect_decode_error(hdr, "version 2");
    hdr[7] = 1;
    in.flags = 1 << 1;                  /* zlib */
    multifd_packet_encode(hdr, &in);
    expect_decode_error(hdr, "compressed");
    in.flags = 1 << 7;
    multifd_packet_encode(hdr, &in);
    expect_decode_error(hdr, "unknown flags");
    in.flags = 0;
    in.pages_alloc = 129;
    multifd_packet_encode(hdr, &in);
    expect_decode_error(hdr, "of 129 pages");
    in.pages_alloc = 4;
    in.normal_pages = 5;
    multifd_packet_encode(hdr, &in);
    expect_decode_error(hdr, "carries 5 pages of 4");
    /* An unterminated name is cut, not read past. */
    in.normal_pages = 0;
    multifd_packet_encode(hdr, &in);
    memset(hdr + 64, 'x', MULTIFD_RAMBLOCK_LEN);
    g_assert_true(multifd_packet_decode(hdr, &out, &err));
    g_assert_cmpuint(strlen(out.ramblock), ==, MULTIFD_RAMBLOCK_LEN - 1);

    multifd_init_msg_encode(hello, uuid_a, 1);
    g_assert_true(multifd_init_msg_decode(hello, uuid_a, 2, &id, &err));
    g_assert_cmpuint(id, ==, 1);
    g_assert_false(multifd_init_msg_decode(hello, uuid_a, 1, &id, &err));
    g_assert_nonnull(strstr(err->message, "channel id 1"));
    g_clear_error(&err);
    hello[10] ^= 0xff;
    g_assert_false(multifd_init_msg_decode(hello, uuid_a, 2, &id, &err));
    g_assert_nonnull(strstr(err->message, "received uuid '1234ff00-"));
    g_assert_nonnull(strstr(err->message, "expected uuid '12340000-"));
}

/* A channel's bytes: hello with id, then one packet of npages pages. */
static GByteArray *channel_bytes(uint8_t id, const char *block,
                                 const uint64_t *offsets, uint32_t npages,
                                 uint32_t flags, size_t data_len)
{
    GByteArray *b = g_byte_array_new();
    uint8_t hello[MULTIFD_INIT_LEN], hdr[MULTIFD_PACKET_HDR_LEN];
    MultiFDPacket p = {
        .flags = flags, .pages_alloc = 128, .normal_pages = npages,
    };
    g_autofree uint8_t *data = g_malloc(data_len);

    for (size_t i = 0; i < data_len; i++) {
        data[i] = (i / TARGET_PAGE_SIZE + 1) * 0x21 + i % 7;
    }
    g_strlcpy(p.ramblock, block, sizeof(p.ramblock));
    memcpy(p.offset, offsets, npages * sizeof(*offsets));
    multifd_init_msg_encode(hello, uuid_a, id);
    g_byte_array_append(b, hello, sizeof(hello));
    multifd_packet_encode(hdr, &p);
    g_byte_array_append(b, hdr, sizeof(hdr));
    g_byte_array_append(b, data, data_len);
    return b;
}

/* Run one channel over b; returns the last packet result. */
static int run_channel(GByteArray *b, GError **errp, bool *sync)
{
    MultiFDRecvState *s = multifd_recv_new(2, uuid_a, NULL);
    MultiFDRecvChannel *c = multifd_recv_channel_new(
        s, qio_channel_new_from_bytes(b->data, b->len));
    int r = -1;

    if (multifd_recv_channel_hello(c, errp)) {
        while ((r = multifd_recv_channel_packet(c, sync, errp)) > 0) {
        }
    }
    multifd_recv_channel_free(c);
    multifd_recv_free(s);
    return r;
}

static void test_recv_pages(void)
{
    uint64_t offs[2] = { 0x3000, RAM_SIZE - TARGET_PAGE_SIZE };
    g_autoptr(GByteArray) b = channel_bytes(1, "ram", offs, 2,
                                            MULTIFD_FLAG_SYNC,
                                            2 * TARGET_PAGE_SIZE);
    const uint8_t *data = b->data + MULTIFD_INIT_LEN + MULTIFD_PACKET_HDR_LEN;
    g_autoptr(GError) err = NULL;
    bool sync = false;

    memset(ram->host, 0, RAM_SIZE);
    g_assert_cmpint(run_channel(b, &err, &sync), ==, 0);
    g_assert_no_error(err);
    g_assert_cmpmem(ram->host + offs[0], TARGET_PAGE_SIZE, data,
                    TARGET_PAGE_SIZE);
    g_assert_cmpmem(ram->host + offs[1], TARGET_PAGE_SIZE,
                    data + TARGET_PAGE_SIZE, TARGET_PAGE_SIZE);
    g_assert_true(buffer_is_zero(ram->host, offs[0]));
}

static void expect_channel_error(GByteArray *b, const char *what)
{
    g_autoptr(GError) err = NULL;
    bool sync;

    g_assert_cmpint(run_channel(b, &err, &sync), ==, -1);
    g_assert_nonnull(err);
    if (!strstr(err->message, what)) {
        g_error("'%s' does not say '%s'", err->message, what);
    }
}

static void test_recv_refusals(void)
{
    uint64_t off = 0x1000, beyond = RAM_SIZE, odd = 0x1001;
    GByteArray *b;

    b = channel_bytes(0, "nosuch", &off, 1, 0, TARGET_PAGE_SIZE);
    expect_channel_error(b, "unknown RAM block 'nosuch'");
    g_byte_array_unref(b);
    b = channel_bytes(0, "ram", &beyond, 1, 0, TARGET_PAGE_SIZE);
    expect_channel_error(b, "offset 0x100000 is not a page of block 'ram'");
    g_byte_array_unref(b);
    b = channel_bytes(0, "ram", &odd, 1, 0, TARGET_PAGE_SIZE);
    expect_channel_error(b, "offset 0x1001");
    g_byte_array_unref(b);
    b = channel_bytes(0, "ram", &off, 1, 0, TARGET_PAGE_SIZE - 1);
    expect_channel_error(b, "page data: unexpected end of stream");
    g_byte_array_unref(b);
    b = channel_bytes(0, "ram", &off, 1, 0, TARGET_PAGE_SIZE);
    g_byte_array_set_size(b, MULTIFD_INIT_LEN + 100);
    expect_channel_error(b, "packet header: unexpected end of stream");
    g_byte_array_unref(b);
    b = channel_bytes(2, "ram", &off, 1, 0, TARGET_PAGE_SIZE);
    expect_channel_error(b, "multifd-channels is 2");
    g_byte_array_unref(b);
}

/* Two channels claiming the same id: the second is refused. */
static void test_recv_duplicate_id(void)
{
    MultiFDRecvState *s = multifd_recv_new(2, uuid_a, NULL);
    uint8_t hello[MULTIFD_INIT_LEN];
    MultiFDRecvChannel *c1, *c2;
    g_autoptr(GError) err = NULL;

    multifd_init_msg_encode(hello, uuid_a, 0);
    c1 = multifd_recv_channel_new(s, qio_channel_new_from_bytes(hello, 64));
    c2 = multifd_recv_channel_new(s, qio_channel_new_from_bytes(hello, 64));
    g_assert_true(multifd_recv_channel_hello(c1, &err));
    g_assert_false(multifd_recv_channel_hello(c2, &err));
    g_assert_cmpstr(err->message, ==,
                    "multifd: channel id 0 connected twice");
    multifd_recv_channel_free(c1);
    multifd_recv_channel_free(c2);
    multifd_recv_free(s);
}

/* ---- after the switch to postcopy ---- */

/* One packet (header, then the data of its pages) appended to b. */
static void append_packet(GByteArray *b, const uint64_t *offsets,
                          uint32_t npages, uint32_t flags, uint64_t num)
{
    uint8_t hdr[MULTIFD_PACKET_HDR_LEN], page[TARGET_PAGE_SIZE];
    MultiFDPacket p = {
        .flags = flags, .pages_alloc = 128, .normal_pages = npages,
        .packet_num = num, .ramblock = "ram",
    };

    if (npages) {
        /* (offsets may be NULL: memcpy must not see it even for 0) */
        memcpy(p.offset, offsets, npages * sizeof(*offsets));
    }
    multifd_packet_encode(hdr, &p);
    g_byte_array_append(b, hdr, sizeof(hdr));
    for (uint32_t i = 0; i < npages; i++) {
        memset(page, 0xa5 + i, sizeof(page));
        g_byte_array_append(b, page, sizeof(page));
    }
}

/*
 * From POSTCOPY_LISTEN on, userfaultfd owns RAM: a page written there
 * behind its back would be lost or would hide a fault.  The same bytes
 * are placed in precopy and refused after multifd_recv_enter_postcopy,
 * while SYNCs (QEMU 7.2 sends them at every EOS) still go through.
 */
static void test_recv_postcopy_refuses_pages(void)
{
    uint64_t offs[2] = { 0x5000, 0x7000 };
    g_autoptr(GByteArray) b = g_byte_array_new();
    uint8_t hello[MULTIFD_INIT_LEN];
    g_autoptr(GError) err = NULL;

    multifd_init_msg_encode(hello, uuid_a, 0);
    g_byte_array_append(b, hello, sizeof(hello));
    append_packet(b, NULL, 0, MULTIFD_FLAG_SYNC, 1);
    append_packet(b, NULL, 0, 0, 2);
    append_packet(b, offs, 2, MULTIFD_FLAG_SYNC, 3);
    multifd_recv_enter_postcopy(NULL);          /* no multifd: a no-op */

    for (int postcopy = 0; postcopy < 2; postcopy++) {
        MultiFDRecvState *s = multifd_recv_new(2, uuid_a, NULL);
        MultiFDRecvChannel *c = multifd_recv_channel_new(
            s, qio_channel_new_from_bytes(b->data, b->len));
        bool sync = false;

        memset(ram->host, 0, RAM_SIZE);
        if (postcopy) {
            multifd_recv_enter_postcopy(s);
        }
        g_assert_true(multifd_recv_channel_hello(c, &err));
        g_assert_cmpint(multifd_recv_channel_packet(c, &sync, &err), ==, 1);
        g_assert_no_error(err);
        g_assert_true(sync);
        g_assert_cmpint(multifd_recv_channel_packet(c, &sync, &err), ==, 1);
        g_assert_no_error(err);
        g_assert_false(sync);
        if (!postcopy) {
            /* The control: these very bytes are placed in precopy. */
            g_assert_cmpint(multifd_recv_channel_packet(c, &sync, &err), ==,
                            1);
            g_assert_no_error(err);
            g_assert_true(sync);
            g_assert_cmpuint(ram->host[offs[0]], ==, 0xa5);
            g_assert_cmpuint(ram->host[offs[1] + TARGET_PAGE_SIZE - 1], ==,
                             0xa6);
        } else {
            g_assert_cmpint(multifd_recv_channel_packet(c, &sync, &err), ==,
                            -1);
            g_assert_nonnull(err);
            if (!strstr(err->message, "packet 3 carries 2 pages after the "
                        "switch to postcopy")) {
                g_error("refused with '%s'", err->message);
            }
            g_clear_error(&err);
            g_assert_true(buffer_is_zero(ram->host, RAM_SIZE));
        }
        multifd_recv_channel_free(c);
        multifd_recv_free(s);
    }
}

/*
 * Socket-pair plumbing for the threaded test: the source's end is
 * non-blocking, so that a receiver that stops reading shows as a write
 * that cannot finish, not as a test that hangs.
 */
#define FLOOD_PACKETS 20000
#define FLOOD_CHUNK 16          /* packets per send() at most */
#define FLOOD_DEADLINE_US (20 * G_USEC_PER_SEC)

typedef struct Flood {
    int fd;
    uint8_t chunk[FLOOD_CHUNK * MULTIFD_PACKET_HDR_LEN];
    uint64_t pos;               /* bytes of the SYNC stream written */
    uint64_t total;
} Flood;

/* Write the SYNC stream on until it would block; false if it did. */
static bool flood_some(Flood *f)
{
    while (f->pos < f->total) {
        size_t at = f->pos % sizeof(f->chunk);
        size_t len = MIN(sizeof(f->chunk) - at, f->total - f->pos);
        ssize_t n = send(f->fd, f->chunk + at, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return false;
        }
        if (n <= 0) {
            g_error("writing SYNC packets: %s", g_strerror(errno));
        }
        f->pos += n;
    }
    return true;
}

/* poll() one event on fd; true if it came within ms. */
static bool wait_event(int fd, short ev, int ms)
{
    struct pollfd p = { .fd = fd, .events = ev };
    int r;

    do {
        r = poll(&p, 1, ms);
    } while (r < 0 && errno == EINTR);
    g_assert_cmpint(r, >=, 0);
    return r > 0 && (p.revents & (ev | POLLHUP | POLLERR));
}

/* Bytes written on fd that its peer has not read yet (AF_UNIX). */
static int unread(int fd)
{
    int n = -1;

    g_assert_cmpint(ioctl(fd, SIOCOUTQ, &n), ==, 0);
    return n;
}

/*
 * A real receiving thread.  In precopy it holds at a SYNC until the
 * loader reaches the RAM EOS; after the switch nobody waits at EOS any
 * more (postcopy's EOS syncs are read without waiting, the loader is
 * busy with postcopy), so a receiver that still held would leave the
 * source's channel writes blocked for good, and with them its migration
 * thread.  Here it is blocked at a SYNC before the switch: entering
 * postcopy must release it, and then every SYNC, many times the socket
 * buffers, must be read.  A page packet after that fails only its
 * channel, which is shut down, and writes nothing.
 */
static void test_recv_postcopy_sync_flood(void)
{
    MultiFDRecvState *s = multifd_recv_new(1, uuid_a, NULL);
    g_autofree Flood *f = g_new0(Flood, 1);
    g_autoptr(GByteArray) pages = g_byte_array_new();
    g_autoptr(GError) err = NULL;
    uint8_t hello[MULTIFD_INIT_LEN];
    uint64_t off = 0x9000, held;
    int64_t deadline;
    int sv[2];

    memset(ram->host, 0, RAM_SIZE);
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
                    ==, 0);
    g_assert_true(multifd_recv_new_channel(s, qio_channel_new_fd(sv[1]),
                                           &err));
    g_assert_no_error(err);
    multifd_init_msg_encode(hello, uuid_a, 0);
    g_assert_cmpint(send(sv[0], hello, sizeof(hello), MSG_NOSIGNAL), ==,
                    sizeof(hello));
    g_assert_cmpint(fcntl(sv[0], F_SETFL, O_NONBLOCK), ==, 0);
    f->fd = sv[0];
    f->total = (uint64_t)FLOOD_PACKETS * MULTIFD_PACKET_HDR_LEN;
    for (unsigned i = 0; i < FLOOD_CHUNK; i++) {
        MultiFDPacket p = {
            .flags = MULTIFD_FLAG_SYNC, .pages_alloc = 128,
            .packet_num = i, .ramblock = "ram",
        };

        multifd_packet_encode(f->chunk + i * MULTIFD_PACKET_HDR_LEN, &p);
    }

    /* Precopy: the thread reads the first SYNC and holds there. */
    g_assert_false(flood_some(f));
    g_assert_false(wait_event(sv[0], POLLOUT, 300));
    held = f->pos;
    g_assert_cmpuint(unread(sv[0]), >, 0);
    g_test_message("%" PRIu64 " bytes queued behind the first SYNC", held);

    multifd_recv_enter_postcopy(s);
    deadline = g_get_monotonic_time() + FLOOD_DEADLINE_US;
    while (!flood_some(f)) {
        if (g_get_monotonic_time() > deadline) {
            g_error("the receiver stopped reading after the switch: "
                    "%" PRIu64 " of %" PRIu64 " bytes of SYNC packets "
                    "written in %d s", f->pos, f->total,
                    FLOOD_DEADLINE_US / (int)G_USEC_PER_SEC);
        }
        wait_event(sv[0], POLLOUT, 100);
    }
    while (unread(sv[0]) > 0) {
        if (g_get_monotonic_time() > deadline) {
            g_error("%d bytes of the last SYNC packets never read",
                    unread(sv[0]));
        }
        g_usleep(1000);
    }
    g_assert_cmpuint(f->pos / MULTIFD_PACKET_HDR_LEN, ==, FLOOD_PACKETS);
    g_assert_cmpuint(f->pos, >, 4 * held);

    /* Pages now: the receiver refuses them and shuts its channel down. */
    append_packet(pages, &off, 1, 0, FLOOD_PACKETS);
    g_assert_cmpint(send(sv[0], pages->data, MULTIFD_PACKET_HDR_LEN,
                         MSG_NOSIGNAL), ==, MULTIFD_PACKET_HDR_LEN);
    /* its data may find the channel already shut: no check */
    (void)!send(sv[0], pages->data + MULTIFD_PACKET_HDR_LEN,
                pages->len - MULTIFD_PACKET_HDR_LEN, MSG_NOSIGNAL);
    deadline = g_get_monotonic_time() + FLOOD_DEADLINE_US;
    for (;;) {
        struct pollfd p = { .fd = sv[0], .events = POLLRDHUP };

        g_assert_cmpint(poll(&p, 1, 100), >=, 0);
        if (p.revents & (POLLHUP | POLLRDHUP)) {
            break;
        }
        if (g_get_monotonic_time() > deadline) {
            g_error("a page packet after the switch: channel not shut down");
        }
    }
    g_assert_true(buffer_is_zero(ram->host, RAM_SIZE));

    multifd_recv_stop(s);
    multifd_recv_free(s);
    close(sv[0]);
}

int main(int argc, char **argv)
{
    g_autoptr(GError) err = NULL;

    g_test_init(&argc, &argv, NULL);
    rcu_register_thread();
    ram = qemu_ram_alloc("ram", RAM_SIZE, NULL, &err);
    g_assert_no_error(err);
    g_test_add_func("/multifd/layout", test_layout);
    g_test_add_func("/multifd/decode", test_decode);
    g_test_add_func("/multifd/recv-pages", test_recv_pages);
    g_test_add_func("/multifd/recv-refusals", test_recv_refusals);
    g_test_add_func("/multifd/recv-duplicate-id", test_recv_duplicate_id);
    g_test_add_func("/multifd/recv-postcopy-refuses-pages",
                    test_recv_postcopy_refuses_pages);
    g_test_add_func("/multifd/recv-postcopy-sync-flood",
                    test_recv_postcopy_sync_flood);
    return g_test_run();
}

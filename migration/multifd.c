/*
 * Multifd: RAM pages over extra connections, in QEMU 7.2's format.
 *
 * Threads and locks (docs/threads.md): on each side one thread per
 * channel.  MultiFDSendState.lock guards every channel's job and busy
 * flag and the shared error; the batch being filled belongs to the
 * migration thread alone.  MultiFDRecvState.lock guards the sync
 * rendezvous, the channel table and the shared error; a channel's packet
 * buffer belongs to its thread.
 */
#include "qemu/osdep.h"
#include "qemu/bitmap.h"
#include "qemu/bswap.h"
#include "qemu/error.h"
#include "qemu/rcu.h"
#include "qemu/thread.h"
#include "qemu/uuid.h"
#include "exec/ramblock.h"
#include "migration/multifd.h"
#include "trace/trace-migration.h"
#include <poll.h>
#include <sys/uio.h>

/* ---------------------------------------------------------------------- */
/* Wire format */

/* Field offsets of the packet header. */
enum {
    PKT_MAGIC = 0,
    PKT_VERSION = 4,
    PKT_FLAGS = 8,
    PKT_PAGES_ALLOC = 12,
    PKT_NORMAL_PAGES = 16,
    PKT_NEXT_SIZE = 20,
    PKT_NUM = 24,
    PKT_RAMBLOCK = 64,          /* after 4 reserved 64-bit words */
    PKT_OFFSETS = MULTIFD_HDR_FIXED_LEN,
};

/* Initial message: magic, version, uuid, id, 7 + 32 reserved bytes. */
enum { INIT_MAGIC = 0, INIT_VERSION = 4, INIT_UUID = 8, INIT_ID = 24 };

void multifd_init_msg_encode(uint8_t out[MULTIFD_INIT_LEN],
                             const uint8_t uuid[MULTIFD_UUID_LEN],
                             uint8_t id)
{
    memset(out, 0, MULTIFD_INIT_LEN);
    stl_be_p(out + INIT_MAGIC, MULTIFD_MAGIC);
    stl_be_p(out + INIT_VERSION, MULTIFD_VERSION);
    memcpy(out + INIT_UUID, uuid, MULTIFD_UUID_LEN);
    out[INIT_ID] = id;
}

bool multifd_init_msg_decode(const uint8_t in[MULTIFD_INIT_LEN],
                             const uint8_t uuid[MULTIFD_UUID_LEN],
                             unsigned nchannels, uint8_t *id, GError **errp)
{
    uint32_t magic = ldl_be_p(in + INIT_MAGIC);
    uint32_t version = ldl_be_p(in + INIT_VERSION);

    if (magic != MULTIFD_MAGIC) {
        error_setg(errp, "multifd: channel starts with magic 0x%08x, not "
                   "0x%08x", magic, MULTIFD_MAGIC);
        return false;
    }
    if (version != MULTIFD_VERSION) {
        error_setg(errp, "multifd: channel version %u, expected %u",
                   version, MULTIFD_VERSION);
        return false;
    }
    if (memcmp(in + INIT_UUID, uuid, MULTIFD_UUID_LEN)) {
        g_autofree char *theirs = qemu_uuid_unparse(in + INIT_UUID);
        g_autofree char *ours = qemu_uuid_unparse(uuid);

        error_setg(errp, "multifd: received uuid '%s' and expected uuid "
                   "'%s' for channel %u", theirs, ours, in[INIT_ID]);
        return false;
    }
    if (in[INIT_ID] >= nchannels) {
        error_setg(errp, "multifd: channel id %u, but multifd-channels is %u",
                   in[INIT_ID], nchannels);
        return false;
    }
    *id = in[INIT_ID];
    return true;
}

void multifd_packet_encode(uint8_t out[MULTIFD_PACKET_HDR_LEN],
                           const MultiFDPacket *p)
{
    memset(out, 0, MULTIFD_PACKET_HDR_LEN);
    stl_be_p(out + PKT_MAGIC, MULTIFD_MAGIC);
    stl_be_p(out + PKT_VERSION, MULTIFD_VERSION);
    stl_be_p(out + PKT_FLAGS, p->flags);
    stl_be_p(out + PKT_PAGES_ALLOC, p->pages_alloc);
    stl_be_p(out + PKT_NORMAL_PAGES, p->normal_pages);
    stl_be_p(out + PKT_NEXT_SIZE, p->next_packet_size);
    stq_be_p(out + PKT_NUM, p->packet_num);
    memcpy(out + PKT_RAMBLOCK, p->ramblock, MULTIFD_RAMBLOCK_LEN);
    for (uint32_t i = 0; i < p->normal_pages && i < MULTIFD_PACKET_PAGES;
         i++) {
        stq_be_p(out + PKT_OFFSETS + 8 * i, p->offset[i]);
    }
}

bool multifd_packet_decode(const uint8_t in[MULTIFD_PACKET_HDR_LEN],
                           MultiFDPacket *p, GError **errp)
{
    uint32_t magic = ldl_be_p(in + PKT_MAGIC);
    uint32_t version = ldl_be_p(in + PKT_VERSION);

    if (magic != MULTIFD_MAGIC) {
        error_setg(errp, "multifd: packet magic 0x%08x, expected 0x%08x",
                   magic, MULTIFD_MAGIC);
        return false;
    }
    if (version != MULTIFD_VERSION) {
        error_setg(errp, "multifd: packet version %u, expected %u", version,
                   MULTIFD_VERSION);
        return false;
    }
    p->flags = ldl_be_p(in + PKT_FLAGS);
    p->pages_alloc = ldl_be_p(in + PKT_PAGES_ALLOC);
    p->normal_pages = ldl_be_p(in + PKT_NORMAL_PAGES);
    p->next_packet_size = ldl_be_p(in + PKT_NEXT_SIZE);
    p->packet_num = ldq_be_p(in + PKT_NUM);
    if (p->flags & MULTIFD_FLAG_COMPRESSION_MASK) {
        error_setg(errp, "multifd: packet %" PRIu64 " is compressed (flags "
                   "0x%x); ferry supports multifd-compression none only",
                   p->packet_num, p->flags);
        return false;
    }
    if (p->flags & ~(MULTIFD_FLAG_SYNC | MULTIFD_FLAG_COMPRESSION_MASK)) {
        error_setg(errp, "multifd: packet %" PRIu64 " has unknown flags 0x%x",
                   p->packet_num, p->flags);
        return false;
    }
    if (p->pages_alloc > MULTIFD_PACKET_PAGES) {
        error_setg(errp, "multifd: packet %" PRIu64 " of %u pages, at most "
                   "%u", p->packet_num, p->pages_alloc, MULTIFD_PACKET_PAGES);
        return false;
    }
    if (p->normal_pages > p->pages_alloc) {
        error_setg(errp, "multifd: packet %" PRIu64 " carries %u pages of "
                   "%u allocated", p->packet_num, p->normal_pages,
                   p->pages_alloc);
        return false;
    }
    memcpy(p->ramblock, in + PKT_RAMBLOCK, MULTIFD_RAMBLOCK_LEN);
    p->ramblock[MULTIFD_RAMBLOCK_LEN - 1] = 0;
    for (uint32_t i = 0; i < p->normal_pages; i++) {
        p->offset[i] = ldq_be_p(in + PKT_OFFSETS + 8 * i);
    }
    return true;
}

/*
 * What both sides' threads share: one lock and condition, and the stop
 * flag with the first error that set it.
 */
typedef struct MultiFDShared {
    QemuMutex lock;
    QemuCond cond;
    bool quit;
    GError *error;
} MultiFDShared;

static void shared_init(MultiFDShared *sh)
{
    qemu_mutex_init(&sh->lock);
    qemu_cond_init(&sh->cond);
}

static void shared_destroy(MultiFDShared *sh)
{
    if (sh->error) {
        g_error_free(sh->error);
    }
    qemu_cond_destroy(&sh->cond);
    qemu_mutex_destroy(&sh->lock);
}

/* Called with sh->lock held: stop everything, keep the first error. */
static void shared_fail_locked(MultiFDShared *sh, GError *err)
{
    if (!sh->error) {
        sh->error = err;
    } else if (err) {
        g_error_free(err);
    }
    sh->quit = true;
    qemu_cond_broadcast(&sh->cond);
}

/* Called with sh->lock held, once stopped: why. */
static void shared_error(MultiFDShared *sh, GError **errp)
{
    if (sh->error) {
        g_propagate_error(errp, g_error_copy(sh->error));
    } else {
        error_setg(errp, "multifd: the channels were shut down");
    }
}

/* Drop done bytes from the front of iov[0..n); returns what is left. */
static int iov_consume(struct iovec **iov, int n, size_t done)
{
    struct iovec *v = *iov;

    while (n > 0 && done >= v->iov_len) {
        done -= v->iov_len;
        v++;
        n--;
    }
    if (n > 0) {
        v->iov_base = (uint8_t *)v->iov_base + done;
        v->iov_len -= done;
    }
    *iov = v;
    return n;
}

/* Every byte of iov[0..n), or false with errp set. */
static bool writev_all(QIOChannel *ioc, struct iovec *iov, int n,
                       GError **errp)
{
    while (n > 0) {
        ssize_t done = qio_channel_writev(ioc, iov, MIN(n, IOV_MAX), errp);

        if (done == QIO_CHANNEL_ERR_BLOCK) {
            g_usleep(1000);
            continue;
        }
        if (done < 0) {
            return false;
        }
        n = iov_consume(&iov, n, done);
    }
    return true;
}

/*
 * Every byte of iov[0..n): 1; 0 if the peer closed before the first byte
 * (allow_eof); -1 with errp set otherwise.
 */
static int readv_all(QIOChannel *ioc, struct iovec *iov, int n,
                     bool allow_eof, const char *what, GError **errp)
{
    bool first = true;

    while (n > 0) {
        ssize_t done = qio_channel_readv(ioc, iov, MIN(n, IOV_MAX), errp);

        if (done == QIO_CHANNEL_ERR_BLOCK) {
            g_usleep(1000);
            continue;
        }
        if (done < 0) {
            return -1;
        }
        if (done == 0) {
            if (first && allow_eof) {
                return 0;
            }
            error_setg(errp, "multifd: %s: unexpected end of stream on %s",
                       what, qio_channel_get_name(ioc));
            return -1;
        }
        first = false;
        n = iov_consume(&iov, n, done);
    }
    return 1;
}

/* ---------------------------------------------------------------------- */
/* Source */

typedef struct MultiFDSendChannel {
    MultiFDSendState *s;
    uint8_t id;
    QIOChannel *ioc;
    QemuThread thread;
    bool thread_running;
    /* under s->sh.lock: a job is handed over by setting busy */
    bool busy;
    MultiFDPacket job;
    RAMBlock *job_block;
    /* the thread's own */
    uint8_t hdr[MULTIFD_PACKET_HDR_LEN];
    struct iovec iov[MULTIFD_PACKET_PAGES + 1];
    uint64_t packets;
    uint64_t pages;
} MultiFDSendChannel;

struct MultiFDSendState {
    unsigned n;
    MultiFDSendChannel *ch;
    MultiFDShared sh;
    unsigned next;              /* round robin */
    uint64_t packet_num;
    /* the batch the migration thread fills */
    RAMBlock *block;
    uint32_t num;
    uint64_t offset[MULTIFD_PACKET_PAGES];
};

static bool send_packet(MultiFDSendChannel *c, GError **errp)
{
    MultiFDPacket *p = &c->job;
    int niov = 1;

    multifd_packet_encode(c->hdr, p);
    c->iov[0] = (struct iovec) { c->hdr, sizeof(c->hdr) };
    for (uint32_t i = 0; i < p->normal_pages; i++) {
        c->iov[niov++] = (struct iovec) {
            ramblock_ptr(c->job_block, p->offset[i]), TARGET_PAGE_SIZE
        };
    }
    trace_multifd_send(c->id, p->packet_num, p->normal_pages, p->flags);
    return writev_all(c->ioc, c->iov, niov, errp);
}

static void *multifd_send_thread(void *opaque)
{
    MultiFDSendChannel *c = opaque;
    MultiFDSendState *s = c->s;

    qemu_mutex_lock(&s->sh.lock);
    for (;;) {
        GError *err = NULL;
        bool ok;

        while (!c->busy && !s->sh.quit) {
            qemu_cond_wait(&s->sh.cond, &s->sh.lock);
        }
        if (s->sh.quit) {
            break;
        }
        qemu_mutex_unlock(&s->sh.lock);
        /* The job is ours while busy: the migration thread waits. */
        ok = send_packet(c, &err);
        c->packets++;
        c->pages += c->job.normal_pages;
        qemu_mutex_lock(&s->sh.lock);
        c->busy = false;
        if (!ok) {
            g_prefix_error(&err, "multifd channel %u: ", c->id);
            shared_fail_locked(&s->sh, err);
            break;
        }
        qemu_cond_broadcast(&s->sh.cond);
    }
    qemu_mutex_unlock(&s->sh.lock);
    trace_multifd_send_thread_end(c->id, c->packets, c->pages);
    return NULL;
}

static bool send_channel_open(MultiFDSendState *s, MultiFDSendChannel *c,
                              const char *uri, const uint8_t *uuid,
                              GError **errp)
{
    uint8_t hello[MULTIFD_INIT_LEN];
    g_autofree char *name = g_strdup_printf("mig/src/multifd%u", c->id);

    if (!migration_channel_connect(uri, &c->ioc, errp)) {
        g_prefix_error(errp, "multifd channel %u: ", c->id);
        return false;
    }
    multifd_init_msg_encode(hello, uuid, c->id);
    if (!qio_channel_write_all(c->ioc, hello, sizeof(hello), errp)) {
        g_prefix_error(errp, "multifd channel %u: ", c->id);
        return false;
    }
    if (!qemu_thread_create(&c->thread, name, multifd_send_thread, c, errp)) {
        return false;
    }
    c->thread_running = true;
    return true;
}

MultiFDSendState *multifd_send_setup(const char *uri, unsigned nchannels,
                                     const uint8_t uuid[MULTIFD_UUID_LEN],
                                     GError **errp)
{
    MultiFDSendState *s;

    if (!migration_channel_is_socket_uri(uri)) {
        error_setg(errp, "multifd needs a tcp: or unix: URI (one connection "
                   "per channel), not '%s'", uri);
        return NULL;
    }
    if (nchannels < 1 || nchannels > MULTIFD_MAX_CHANNELS) {
        error_setg(errp, "multifd-channels must be 1 to %u, not %u",
                   MULTIFD_MAX_CHANNELS, nchannels);
        return NULL;
    }
    s = g_new0(MultiFDSendState, 1);
    s->n = nchannels;
    s->ch = g_new0(MultiFDSendChannel, nchannels);
    shared_init(&s->sh);
    trace_multifd_send_setup(nchannels);
    for (unsigned i = 0; i < nchannels; i++) {
        s->ch[i].s = s;
        s->ch[i].id = i;
        if (!send_channel_open(s, &s->ch[i], uri, uuid, errp)) {
            multifd_send_shutdown(s);
            multifd_send_cleanup(s);
            return NULL;
        }
    }
    return s;
}

/* Called with s->sh.lock held: first idle channel from the round robin. */
static MultiFDSendChannel *idle_channel_locked(MultiFDSendState *s)
{
    for (unsigned k = 0; k < s->n; k++) {
        MultiFDSendChannel *c = &s->ch[(s->next + k) % s->n];

        if (!c->busy) {
            s->next = (c->id + 1) % s->n;
            return c;
        }
    }
    return NULL;
}

/* Called with s->sh.lock held. */
static void hand_over_locked(MultiFDSendState *s, MultiFDSendChannel *c,
                             uint32_t flags)
{
    MultiFDPacket *p = &c->job;

    p->flags = flags;
    p->pages_alloc = MULTIFD_PACKET_PAGES;
    p->normal_pages = s->num;
    p->next_packet_size = s->num * TARGET_PAGE_SIZE;
    p->packet_num = s->packet_num++;
    memset(p->ramblock, 0, sizeof(p->ramblock));
    if (s->block) {
        g_strlcpy(p->ramblock, s->block->idstr, sizeof(p->ramblock));
    }
    memcpy(p->offset, s->offset, s->num * sizeof(s->offset[0]));
    c->job_block = s->block;
    c->busy = true;
    s->num = 0;
    qemu_cond_broadcast(&s->sh.cond);
}

/* Give the batch (maybe empty, for a SYNC) to an idle channel. */
static bool send_batch(MultiFDSendState *s, MultiFDSendChannel *only,
                       uint32_t flags)
{
    MultiFDSendChannel *c = NULL;
    bool ok;

    qemu_mutex_lock(&s->sh.lock);
    while (!s->sh.quit) {
        c = only ? (only->busy ? NULL : only) : idle_channel_locked(s);
        if (c) {
            break;
        }
        qemu_cond_wait(&s->sh.cond, &s->sh.lock);
    }
    ok = !s->sh.quit;
    if (ok) {
        hand_over_locked(s, c, flags);
    }
    qemu_mutex_unlock(&s->sh.lock);
    return ok;
}

uint64_t multifd_queue_page(MultiFDSendState *s, RAMBlock *rb,
                            uint64_t offset)
{
    uint64_t bytes = TARGET_PAGE_SIZE;

    if (s->num && s->block != rb) {
        if (!send_batch(s, NULL, 0)) {
            return 0;
        }
    }
    if (!s->num) {
        s->block = rb;
        bytes += MULTIFD_PACKET_HDR_LEN;
    }
    s->offset[s->num++] = offset;
    if (s->num == MULTIFD_PACKET_PAGES && !send_batch(s, NULL, 0)) {
        return 0;
    }
    return bytes;
}

bool multifd_send_sync(MultiFDSendState *s, uint64_t *bytes, GError **errp)
{
    bool ok = true;

    *bytes = 0;
    if (s->num) {
        ok = send_batch(s, NULL, 0);
    }
    s->block = NULL;
    for (unsigned i = 0; ok && i < s->n; i++) {
        ok = send_batch(s, &s->ch[i], MULTIFD_FLAG_SYNC);
        *bytes += MULTIFD_PACKET_HDR_LEN;
    }
    /* The SYNCs are written once every channel is idle again. */
    qemu_mutex_lock(&s->sh.lock);
    for (unsigned i = 0; ok && i < s->n; i++) {
        while (s->ch[i].busy && !s->sh.quit) {
            qemu_cond_wait(&s->sh.cond, &s->sh.lock);
        }
    }
    ok = !s->sh.quit;
    if (!ok) {
        shared_error(&s->sh, errp);
    }
    qemu_mutex_unlock(&s->sh.lock);
    trace_multifd_send_sync(s->packet_num, ok);
    return ok;
}

void multifd_send_shutdown(MultiFDSendState *s)
{
    if (!s) {
        return;
    }
    qemu_mutex_lock(&s->sh.lock);
    shared_fail_locked(&s->sh, NULL);
    for (unsigned i = 0; i < s->n; i++) {
        if (s->ch[i].ioc) {
            qio_channel_shutdown(s->ch[i].ioc, QIO_CHANNEL_SHUTDOWN_BOTH,
                                 NULL);
        }
    }
    qemu_mutex_unlock(&s->sh.lock);
}

void multifd_send_cleanup(MultiFDSendState *s)
{
    if (!s) {
        return;
    }
    qemu_mutex_lock(&s->sh.lock);
    shared_fail_locked(&s->sh, NULL);
    qemu_mutex_unlock(&s->sh.lock);
    for (unsigned i = 0; i < s->n; i++) {
        MultiFDSendChannel *c = &s->ch[i];

        if (c->thread_running) {
            qemu_thread_join(&c->thread);
        }
        if (c->ioc) {
            qio_channel_close(c->ioc, NULL);
            qio_channel_unref(c->ioc);
        }
    }
    shared_destroy(&s->sh);
    g_free(s->ch);
    g_free(s);
}

/* ---------------------------------------------------------------------- */
/* Destination */

struct MultiFDRecvChannel {
    MultiFDRecvState *s;
    QIOChannel *ioc;
    QemuThread thread;
    bool thread_running;
    int id;                     /* -1 until the initial message is read */
    /* the thread's own */
    uint8_t hdr[MULTIFD_PACKET_HDR_LEN];
    MultiFDPacket pkt;
    struct iovec iov[MULTIFD_PACKET_PAGES];
    uint64_t packets;
    uint64_t pages;
};

struct MultiFDRecvState {
    unsigned n;
    uint8_t uuid[MULTIFD_UUID_LEN];
    GPtrArray *channels;        /* MultiFDRecvChannel *, in accept order */
    bool *id_seen;
    unsigned synced;            /* channels waiting at the current SYNC */
    uint64_t sync_gen;          /* bumped when the loader releases them */
    unsigned ended;             /* channels closed by the source */
    /*
     * Set at POSTCOPY_LISTEN: from there no page may come (RAM belongs to
     * userfaultfd), no SYNC waits for the loader and a channel's loss
     * fails nothing.
     */
    bool postcopy;
    RAMDenseAdvisor *dense;     /* the load's, may be NULL */
    MultiFDShared sh;
};

MultiFDRecvState *multifd_recv_new(unsigned nchannels,
                                   const uint8_t uuid[MULTIFD_UUID_LEN],
                                   RAMDenseAdvisor *dense)
{
    MultiFDRecvState *s = g_new0(MultiFDRecvState, 1);

    s->dense = dense;
    s->n = nchannels;
    memcpy(s->uuid, uuid, MULTIFD_UUID_LEN);
    shared_init(&s->sh);
    s->channels = g_ptr_array_new();
    s->id_seen = g_new0(bool, MAX(nchannels, 1));
    return s;
}

MultiFDRecvChannel *multifd_recv_channel_new(MultiFDRecvState *s,
                                             QIOChannel *ioc)
{
    MultiFDRecvChannel *c = g_new0(MultiFDRecvChannel, 1);

    c->s = s;
    c->ioc = ioc;
    c->id = -1;
    return c;
}

void multifd_recv_channel_free(MultiFDRecvChannel *c)
{
    if (c->ioc) {
        qio_channel_unref(c->ioc);
    }
    g_free(c);
}

bool multifd_recv_channel_hello(MultiFDRecvChannel *c, GError **errp)
{
    MultiFDRecvState *s = c->s;
    uint8_t hello[MULTIFD_INIT_LEN];
    struct iovec iov = { hello, sizeof(hello) };
    uint8_t id;
    bool dup;

    if (readv_all(c->ioc, &iov, 1, false, "initial message", errp) < 0 ||
        !multifd_init_msg_decode(hello, s->uuid, s->n, &id, errp)) {
        return false;
    }
    qemu_mutex_lock(&s->sh.lock);
    dup = s->id_seen[id];
    s->id_seen[id] = true;
    qemu_mutex_unlock(&s->sh.lock);
    if (dup) {
        error_setg(errp, "multifd: channel id %u connected twice", id);
        return false;
    }
    c->id = id;
    trace_multifd_recv_new_channel(id);
    return true;
}

/* The pages of a decoded packet go straight into guest RAM. */
static bool recv_pages(MultiFDRecvChannel *c, GError **errp)
{
    MultiFDPacket *p = &c->pkt;
    unsigned long *received;
    RAMBlock *rb;
    bool ok = true;

    rcu_read_lock();
    rb = qemu_ram_block_by_name(p->ramblock);
    if (!rb || !(rb->flags & RAM_MIGRATABLE)) {
        error_setg(errp, "multifd: packet %" PRIu64 " for unknown RAM block "
                   "'%s'", p->packet_num, p->ramblock);
        ok = false;
        goto out;
    }
    for (uint32_t i = 0; i < p->normal_pages; i++) {
        uint64_t off = p->offset[i];

        if (off & ~TARGET_PAGE_MASK || off >= rb->used_length) {
            error_setg(errp, "multifd: packet %" PRIu64 " page %u: offset "
                       "0x%" PRIx64 " is not a page of block '%s' (0x%" PRIx64
                       " bytes)", p->packet_num, i, off, rb->idstr,
                       (uint64_t)rb->used_length);
            ok = false;
            goto out;
        }
        c->iov[i] = (struct iovec) { ramblock_ptr(rb, off), TARGET_PAGE_SIZE };
    }
    ram_dense_packet(c->s->dense, rb, p->offset, p->normal_pages);
    if (readv_all(c->ioc, c->iov, p->normal_pages, false, "page data",
                  errp) < 0) {
        ok = false;
        goto out;
    }
    received = rcu_dereference(rb->receivedmap);
    for (uint32_t i = 0; received && i < p->normal_pages; i++) {
        set_bit_atomic(p->offset[i] >> TARGET_PAGE_BITS, received);
    }
out:
    rcu_read_unlock();
    return ok;
}

int multifd_recv_channel_packet(MultiFDRecvChannel *c, bool *sync,
                                GError **errp)
{
    struct iovec iov = { c->hdr, sizeof(c->hdr) };
    int r = readv_all(c->ioc, &iov, 1, true, "packet header", errp);

    *sync = false;
    if (r <= 0) {
        return r;
    }
    if (!multifd_packet_decode(c->hdr, &c->pkt, errp)) {
        return -1;
    }
    trace_multifd_recv(c->id, c->pkt.packet_num, c->pkt.normal_pages,
                       c->pkt.flags);
    if (c->pkt.normal_pages && qatomic_read(&c->s->postcopy)) {
        error_setg(errp, "multifd: packet %" PRIu64 " carries %u pages after "
                   "the switch to postcopy (they go on the main stream)",
                   c->pkt.packet_num, c->pkt.normal_pages);
        return -1;
    }
    if (c->pkt.normal_pages && !recv_pages(c, errp)) {
        return -1;
    }
    c->packets++;
    c->pages += c->pkt.normal_pages;
    *sync = c->pkt.flags & MULTIFD_FLAG_SYNC;
    return 1;
}

/* A channel at its SYNC waits for the loader to reach the RAM EOS. */
static bool recv_wait_release(MultiFDRecvState *s)
{
    uint64_t gen;
    bool released;

    qemu_mutex_lock(&s->sh.lock);
    if (s->postcopy) {
        /* QEMU 7.2 syncs at every EOS in postcopy too; nobody waits. */
        qemu_mutex_unlock(&s->sh.lock);
        return true;
    }
    gen = s->sync_gen;
    s->synced++;
    qemu_cond_broadcast(&s->sh.cond);
    while (s->sync_gen == gen && !s->sh.quit) {
        qemu_cond_wait(&s->sh.cond, &s->sh.lock);
    }
    released = s->sync_gen != gen;
    qemu_mutex_unlock(&s->sh.lock);
    return released;
}

static void *multifd_recv_thread(void *opaque)
{
    MultiFDRecvChannel *c = opaque;
    MultiFDRecvState *s = c->s;
    GError *err = NULL;
    bool sync;
    int r = 0;

    if (multifd_recv_channel_hello(c, &err)) {
        while ((r = multifd_recv_channel_packet(c, &sync, &err)) > 0) {
            if (sync && !recv_wait_release(s)) {
                break;
            }
        }
    }
    qemu_mutex_lock(&s->sh.lock);
    if (err && s->postcopy) {
        /* Nothing of the migration is left on it. */
        trace_multifd_recv_postcopy_error(c->id, err->message);
        g_clear_error(&err);
        qio_channel_shutdown(c->ioc, QIO_CHANNEL_SHUTDOWN_BOTH, NULL);
    } else if (err) {
        shared_fail_locked(&s->sh, err);
    } else if (r == 0) {
        /*
         * The source closes the channels once the last EOS is synced; a
         * SYNC still awaited from this channel will never come.
         */
        s->ended++;
        qemu_cond_broadcast(&s->sh.cond);
    }
    qemu_mutex_unlock(&s->sh.lock);
    if (err) {
        /* The source's writes on this channel fail rather than block. */
        qio_channel_shutdown(c->ioc, QIO_CHANNEL_SHUTDOWN_BOTH, NULL);
    }
    trace_multifd_recv_thread_end(c->id, c->packets, c->pages);
    return NULL;
}

bool multifd_recv_new_channel(MultiFDRecvState *s, QIOChannel *ioc,
                              GError **errp)
{
    MultiFDRecvChannel *c;
    bool ok;

    if (!qio_channel_set_blocking(ioc, true, errp)) {
        qio_channel_unref(ioc);
        return false;
    }
    c = multifd_recv_channel_new(s, ioc);
    qemu_mutex_lock(&s->sh.lock);
    if (s->sh.quit) {
        /* The load is over (or failed): nobody would read this one. */
        qemu_mutex_unlock(&s->sh.lock);
        multifd_recv_channel_free(c);
        return true;
    }
    g_ptr_array_add(s->channels, c);
    /* Under the lock, so that multifd_recv_stop sees it running or not. */
    ok = qemu_thread_create(&c->thread, "mig/dst/multifd",
                            multifd_recv_thread, c, errp);
    c->thread_running = ok;
    qemu_mutex_unlock(&s->sh.lock);
    return ok;
}

/*
 * The source closed this channel, or reset it: POLLRDHUP says so even
 * with stream data left unread (the loader waits at an EOS, not reading).
 */
static bool peer_closed(QIOChannel *ioc)
{
    struct pollfd p = {
        .fd = ioc ? qio_channel_get_fd(ioc) : -1,
        .events = POLLRDHUP,
    };

    return p.fd >= 0 && qio_channel_is_socket(ioc) && poll(&p, 1, 0) > 0 &&
           (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* How often a sync still missing channels looks at the main stream. */
#define MULTIFD_SYNC_POLL_MS 500

/* Called with s->sh.lock held: give up on channels that do not come? */
static bool channels_missing(MultiFDRecvState *s, QIOChannel *main,
                             int64_t since_ms, uint64_t timeout_ms,
                             GError **errp)
{
    int64_t waited = g_get_monotonic_time() / 1000 - since_ms;

    if (peer_closed(main)) {
        error_setg(errp, "multifd: the source closed the main stream with "
                   "%u of %u channels connected", s->channels->len, s->n);
        return true;
    }
    if (timeout_ms && waited > (int64_t)timeout_ms) {
        error_setg(errp, "multifd: %u of %u channels connected within "
                   "x-net-timeout (%" PRIu64 " ms)", s->channels->len, s->n,
                   timeout_ms);
        return true;
    }
    return false;
}

bool multifd_recv_sync(MultiFDRecvState *s, QIOChannel *main,
                       uint64_t timeout_ms, GError **errp)
{
    int64_t since = g_get_monotonic_time() / 1000;
    bool ok;

    qemu_mutex_lock(&s->sh.lock);
    while (s->synced < s->n && !s->sh.quit && !s->ended) {
        if (s->channels->len == s->n) {
            qemu_cond_wait(&s->sh.cond, &s->sh.lock);
        } else if (!qemu_cond_timedwait(&s->sh.cond, &s->sh.lock,
                                        MULTIFD_SYNC_POLL_MS) &&
                   s->channels->len < s->n &&
                   channels_missing(s, main, since, timeout_ms, errp)) {
            qemu_mutex_unlock(&s->sh.lock);
            return false;
        }
    }
    ok = s->synced == s->n && !s->sh.quit;
    if (ok) {
        s->synced = 0;
        s->sync_gen++;
        qemu_cond_broadcast(&s->sh.cond);
    } else if (s->ended && !s->sh.error) {
        error_setg(errp, "multifd: %u of %u channels closed by the source "
                   "before their SYNC", s->ended, s->n);
    } else {
        shared_error(&s->sh, errp);
    }
    qemu_mutex_unlock(&s->sh.lock);
    trace_multifd_recv_sync(ok);
    return ok;
}

void multifd_recv_enter_postcopy(MultiFDRecvState *s)
{
    unsigned waiting;

    if (!s) {
        return;
    }
    qemu_mutex_lock(&s->sh.lock);
    qatomic_set(&s->postcopy, true);
    /* Every precopy SYNC was met at its EOS: these are postcopy's. */
    waiting = s->synced;
    s->synced = 0;
    s->sync_gen++;
    qemu_cond_broadcast(&s->sh.cond);
    qemu_mutex_unlock(&s->sh.lock);
    trace_multifd_recv_enter_postcopy(waiting);
}

void multifd_recv_shutdown(MultiFDRecvState *s)
{
    if (!s) {
        return;
    }
    qemu_mutex_lock(&s->sh.lock);
    shared_fail_locked(&s->sh, NULL);
    for (guint i = 0; i < s->channels->len; i++) {
        MultiFDRecvChannel *c = s->channels->pdata[i];

        qio_channel_shutdown(c->ioc, QIO_CHANNEL_SHUTDOWN_BOTH, NULL);
    }
    qemu_mutex_unlock(&s->sh.lock);
}

void multifd_recv_stop(MultiFDRecvState *s)
{
    g_autoptr(GPtrArray) running = g_ptr_array_new();

    if (!s) {
        return;
    }
    multifd_recv_shutdown(s);
    qemu_mutex_lock(&s->sh.lock);
    for (guint i = 0; i < s->channels->len; i++) {
        MultiFDRecvChannel *c = s->channels->pdata[i];

        if (c->thread_running) {
            c->thread_running = false;
            g_ptr_array_add(running, c);
        }
    }
    qemu_mutex_unlock(&s->sh.lock);
    /* They take the lock on their way out. */
    for (guint i = 0; i < running->len; i++) {
        MultiFDRecvChannel *c = running->pdata[i];

        qemu_thread_join(&c->thread);
    }
}

void multifd_recv_free(MultiFDRecvState *s)
{
    if (!s) {
        return;
    }
    multifd_recv_stop(s);
    for (guint i = 0; i < s->channels->len; i++) {
        multifd_recv_channel_free(s->channels->pdata[i]);
    }
    g_ptr_array_free(s->channels, true);
    g_free(s->id_seen);
    shared_destroy(&s->sh);
    g_free(s);
}

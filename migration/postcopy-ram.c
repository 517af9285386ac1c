/*
 * Postcopy RAM on the destination.
 *
 * The POSTCOPY_* commands drive one atomic state variable
 * (NONE -> ADVISE -> DISCARD -> LISTENING -> RUNNING -> END); a command
 * in the wrong state or with a bad payload fails the load before anything
 * is applied.  At LISTEN every RAMBlock is registered with userfaultfd in
 * MISSING mode: a vCPU touching a page that is not there blocks in the
 * kernel, the fault thread asks the source for the host page over the
 * return path, and the listen thread (which keeps reading the main
 * stream) places whole host pages atomically with UFFDIO_COPY, which also
 * wakes the vCPU.  Each fault's latency (request -> placement) is kept
 * for query-migrate, and with postcopy-blocktime the time vCPUs spent
 * blocked as well.
 */
#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "qemu/bitmap.h"
#include "qemu/rcu.h"
#include "qemu/thread.h"
#include "exec/ramblock.h"
#include "migration/channel.h"
#include "migration/migration.h"
#include "migration/multifd.h"
#include "migration/postcopy-ram.h"
#include "migration/ram.h"
#include "migration/savevm.h"
#include "sysemu/cpus.h"
#include "sysemu/runstate.h"
#include "trace/trace-migration.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <linux/userfaultfd.h>

#define UFFD_NEEDED_IOCTLS ((1ULL << _UFFDIO_WAKE) | (1ULL << _UFFDIO_COPY) | \
                            (1ULL << _UFFDIO_ZEROPAGE))

/* Per-RAMBlock destination state. */
typedef struct PostcopyBlock {
    RAMBlock *rb;
    unsigned long *requested;   /* host pages asked for, not placed yet */
    int64_t *fault_time;        /* per host page: us of the first fault */
    bool registered;
    bool zeropage;              /* UFFDIO_ZEROPAGE works (not hugetlbfs) */
} PostcopyBlock;

/* One entry of the recent-faults ring (x-postcopy-recent-faults). */
typedef struct PostcopyFaultRecord {
    uint64_t offset;            /* host page's offset in its RAMBlock */
    int64_t time;               /* now_us() of the request */
} PostcopyFaultRecord;

typedef struct PostcopyStats {
    QemuMutex lock;
    bool did_postcopy;
    uint64_t faults;            /* page requests sent */
    uint64_t hist[POSTCOPY_LATENCY_BUCKETS];
    /*
     * The last POSTCOPY_FAULT_RING faults, oldest overwritten: a poller
     * (ferry-migrate --report) sees where and when faults hit without the
     * destination keeping one record per page of a large guest.  Entry
     * faults % POSTCOPY_FAULT_RING is the next to write.
     */
    PostcopyFaultRecord ring[POSTCOPY_FAULT_RING];
    GArray *latencies;          /* uint32 us per placed requested page */
    uint64_t max_latency;
    /* blocktime (postcopy-blocktime): one slot per vCPU */
    bool blocktime;
    int nvcpus;
    uintptr_t *vcpu_addr;       /* host page a vCPU waits for, 0 = none */
    int64_t *vcpu_start;
    uint64_t *vcpu_total;       /* us */
    int blocked;
    int64_t all_blocked_start;
    uint64_t total_blocked;     /* us */
} PostcopyStats;

struct PostcopyIncomingState {
    int state;                  /* PostcopyState, atomic */
    LoadVMContext *ctx;
    int uffd;
    int quit_fd;
    uint64_t features;
    QemuThread fault_thread;
    bool fault_running;
    QemuThread listen_thread;
    bool listen_running;
    QemuMutex blocks_lock;
    GHashTable *blocks;         /* RAMBlock * -> PostcopyBlock * */
    bool thp_disabled;
    /* The main loader returned (after RUN). */
    QemuMutex lock;
    QemuCond cond;
    bool main_done;
    /* Recovery (under lock): the new channel migrate-recover accepted. */
    QEMUFile *recover_file;
    QEMUFile *recover_preempt;
    /*
     * postcopy-preempt (under lock, cond): the second channel and its
     * loader thread.  The thread parks after an error until preempt_gen
     * moves (a new channel), and is done at EOS or once the main stream
     * ended (main_eof).
     */
    QEMUFile *preempt_file;
    QemuThread preempt_thread;
    bool preempt_running;
    bool preempt_parked;
    bool preempt_done;
    unsigned preempt_gen;
    bool main_eof;
    PostcopyStats stats;
    /* hugetlbfs has no UFFDIO_ZEROPAGE: zero pages are copied from here */
    uint8_t *zero_page;
    size_t zero_size;
    /*
     * Fuzzing and tests: pages go through these instead of userfaultfd,
     * and LISTEN starts no thread (the caller runs the listen loop).
     */
    const PostcopyPlacementOps *placement;
};

static const char *const state_names[] = {
    [POSTCOPY_INCOMING_NONE] = "NONE",
    [POSTCOPY_INCOMING_ADVISE] = "ADVISE",
    [POSTCOPY_INCOMING_DISCARD] = "DISCARD",
    [POSTCOPY_INCOMING_LISTENING] = "LISTENING",
    [POSTCOPY_INCOMING_RUNNING] = "RUNNING",
    [POSTCOPY_INCOMING_END] = "END",
};

const char *postcopy_state_str(PostcopyState s)
{
    if ((unsigned)s >= ARRAY_SIZE(state_names)) {
        return "invalid";
    }
    return state_names[s];
}

PostcopyIncomingState *postcopy_incoming_state_new(void)
{
    PostcopyIncomingState *pis = g_new0(PostcopyIncomingState, 1);

    pis->uffd = -1;
    pis->quit_fd = -1;
    qemu_mutex_init(&pis->blocks_lock);
    qemu_mutex_init(&pis->lock);
    qemu_cond_init(&pis->cond);
    qemu_mutex_init(&pis->stats.lock);
    return pis;
}

static void postcopy_incoming_cleanup(PostcopyIncomingState *pis);
static void preempt_drop(PostcopyIncomingState *pis);

void postcopy_incoming_state_free(PostcopyIncomingState *pis)
{
    if (!pis) {
        return;
    }
    postcopy_incoming_cleanup(pis);
    g_clear_pointer(&pis->blocks, g_hash_table_destroy);
    if (pis->stats.latencies) {
        g_array_free(pis->stats.latencies, true);
    }
    g_free(pis->stats.vcpu_addr);
    g_free(pis->stats.vcpu_start);
    g_free(pis->stats.vcpu_total);
    g_free(pis->zero_page);
    qemu_mutex_destroy(&pis->blocks_lock);
    qemu_mutex_destroy(&pis->lock);
    qemu_cond_destroy(&pis->cond);
    qemu_mutex_destroy(&pis->stats.lock);
    g_free(pis);
}

PostcopyState postcopy_state_get(MigrationIncomingState *mis)
{
    return qatomic_mb_read(&mis->postcopy->state);
}

void postcopy_state_set(MigrationIncomingState *mis, PostcopyState s)
{
    PostcopyState old = qatomic_xchg(&mis->postcopy->state, s);

    trace_postcopy_state_change(postcopy_state_str(old),
                                postcopy_state_str(s));
}

bool postcopy_state_cas(MigrationIncomingState *mis, PostcopyState old,
                        PostcopyState new_state)
{
    int expected = old;

    if (qatomic_cmpxchg(&mis->postcopy->state, expected, new_state) !=
        expected) {
        return false;
    }
    trace_postcopy_state_change(postcopy_state_str(old),
                                postcopy_state_str(new_state));
    return true;
}

bool postcopy_is_running(MigrationIncomingState *mis)
{
    PostcopyState s = postcopy_state_get(mis);

    return s == POSTCOPY_INCOMING_LISTENING ||
           s == POSTCOPY_INCOMING_RUNNING;
}

static int64_t now_us(void)
{
    return g_get_monotonic_time();
}

/* ---------------------------------------------------------------------- */
/* userfaultfd */

static int uffd_open(uint64_t features, uint64_t *got, GError **errp)
{
    struct uffdio_api api = { .api = UFFD_API, .features = features };
    int fd = syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);

    if (fd < 0) {
        error_setg_errno(errp, errno, "Host doesn't support userfaultfd");
        return -1;
    }
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        error_setg_errno(errp, errno, "userfaultfd: UFFDIO_API handshake "
                         "failed");
        close(fd);
        return -1;
    }
    if (api.api != UFFD_API) {
        error_setg(errp, "userfaultfd: the kernel answered API 0x%llx, "
                   "expected 0x%llx", (unsigned long long)api.api,
                   (unsigned long long)UFFD_API);
        close(fd);
        return -1;
    }
    if (got) {
        *got = api.features;
    }
    return fd;
}

/* Register a test area in MISSING mode and check the ioctls offered. */
static bool uffd_probe_area(int fd, GError **errp)
{
    size_t ps = getpagesize();
    struct uffdio_register reg = { 0 };
    struct uffdio_range range;
    void *area = mmap(NULL, ps, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    bool ok = false;

    if (area == MAP_FAILED) {
        error_setg_errno(errp, errno, "userfaultfd check: cannot map a test "
                         "area");
        return false;
    }
    reg.range.start = (uintptr_t)area;
    reg.range.len = ps;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0) {
        error_setg_errno(errp, errno, "userfaultfd check: UFFDIO_REGISTER "
                         "of a test area failed");
        goto out;
    }
    range = reg.range;
    if (ioctl(fd, UFFDIO_UNREGISTER, &range) < 0) {
        error_setg_errno(errp, errno, "userfaultfd check: UFFDIO_UNREGISTER "
                         "of the test area failed");
        goto out;
    }
    if ((reg.ioctls & UFFD_NEEDED_IOCTLS) != UFFD_NEEDED_IOCTLS) {
        error_setg(errp, "userfaultfd check: the kernel does not offer "
                   "WAKE, COPY and ZEROPAGE (ioctls 0x%llx)",
                   (unsigned long long)reg.ioctls);
        goto out;
    }
    ok = true;
out:
    munmap(area, ps);
    return ok;
}

bool postcopy_ram_supported_by_host(uint64_t *features_out, GError **errp)
{
    uint64_t features = 0;
    int fd;
    bool ok;

    if ((size_t)getpagesize() < TARGET_PAGE_SIZE) {
        error_setg(errp, "Target page size %llu is bigger than the host "
                   "page size %d", (unsigned long long)TARGET_PAGE_SIZE,
                   getpagesize());
        return false;
    }
    fd = uffd_open(0, &features, errp);
    if (fd < 0) {
        return false;
    }
    ok = uffd_probe_area(fd, errp);
    close(fd);
    if (ok && features_out) {
        *features_out = features;
    }
    return ok;
}

/* ---------------------------------------------------------------------- */
/* Per-block state */

static void pc_block_free(gpointer p)
{
    PostcopyBlock *b = p;

    g_free(b->requested);
    g_free(b->fault_time);
    g_free(b);
}

static PostcopyBlock *pc_block(PostcopyIncomingState *pis, RAMBlock *rb)
{
    PostcopyBlock *b;

    qemu_mutex_lock(&pis->blocks_lock);
    if (!pis->blocks) {
        pis->blocks = g_hash_table_new_full(g_direct_hash, g_direct_equal,
                                           NULL, pc_block_free);
    }
    b = g_hash_table_lookup(pis->blocks, rb);
    if (!b) {
        unsigned long hpages = DIV_ROUND_UP(rb->used_length, rb->page_size);

        b = g_new0(PostcopyBlock, 1);
        b->rb = rb;
        b->requested = bitmap_new(hpages);
        b->fault_time = g_new0(int64_t, hpages);
        g_hash_table_insert(pis->blocks, rb, b);
    }
    qemu_mutex_unlock(&pis->blocks_lock);
    return b;
}

bool postcopy_request_mark(MigrationIncomingState *mis, RAMBlock *rb,
                           ram_addr_t offset)
{
    PostcopyBlock *b = pc_block(mis->postcopy, rb);

    return !test_and_set_bit_atomic(offset / rb->page_size, b->requested);
}

bool postcopy_request_pending(MigrationIncomingState *mis, RAMBlock *rb,
                              ram_addr_t offset)
{
    PostcopyBlock *b = pc_block(mis->postcopy, rb);

    return test_bit_atomic(offset / rb->page_size, b->requested);
}

static GPtrArray *migratable_blocks(void)
{
    GPtrArray *a = g_ptr_array_new();
    RAMBlock *rb;

    rcu_read_lock();
    RAMBLOCK_FOREACH_MIGRATABLE(rb) {
        g_ptr_array_add(a, rb);
    }
    rcu_read_unlock();
    return a;
}

/* ---------------------------------------------------------------------- */
/* Statistics: fault latency and blocktime */

static void stats_reset(PostcopyIncomingState *pis)
{
    PostcopyStats *st = &pis->stats;

    qemu_mutex_lock(&st->lock);
    st->did_postcopy = false;
    st->faults = 0;
    memset(st->hist, 0, sizeof(st->hist));
    memset(st->ring, 0, sizeof(st->ring));
    if (st->latencies) {
        g_array_set_size(st->latencies, 0);
    } else {
        st->latencies = g_array_new(false, false, sizeof(uint32_t));
    }
    st->max_latency = 0;
    g_clear_pointer(&st->vcpu_addr, g_free);
    g_clear_pointer(&st->vcpu_start, g_free);
    g_clear_pointer(&st->vcpu_total, g_free);
    st->blocktime = false;
    st->nvcpus = 0;
    st->blocked = 0;
    st->all_blocked_start = 0;
    st->total_blocked = 0;
    qemu_mutex_unlock(&st->lock);
}

static void stats_start(PostcopyIncomingState *pis)
{
    PostcopyStats *st = &pis->stats;

    qemu_mutex_lock(&st->lock);
    st->did_postcopy = true;
    if (migrate_postcopy_blocktime() && !st->blocktime) {
        /* QEMU keeps one slot even without vCPUs (-M none). */
        st->nvcpus = MAX(cpu_count(), 1);
        st->vcpu_addr = g_new0(uintptr_t, st->nvcpus);
        st->vcpu_start = g_new0(int64_t, st->nvcpus);
        st->vcpu_total = g_new0(uint64_t, st->nvcpus);
        st->blocktime = true;
    }
    qemu_mutex_unlock(&st->lock);
}

static void stats_latency(PostcopyIncomingState *pis, int64_t us)
{
    PostcopyStats *st = &pis->stats;
    uint32_t v = MIN(MAX(us, 0), (int64_t)UINT32_MAX);
    int bucket = v ? MIN(g_bit_nth_msf(v, -1), POSTCOPY_LATENCY_BUCKETS - 1)
                   : 0;

    qemu_mutex_lock(&st->lock);
    st->hist[bucket]++;
    g_array_append_val(st->latencies, v);
    st->max_latency = MAX(st->max_latency, v);
    qemu_mutex_unlock(&st->lock);
}

/* A page request goes out for the host page at offset (in its block). */
static void stats_fault(PostcopyIncomingState *pis, ram_addr_t offset,
                        int64_t t)
{
    PostcopyStats *st = &pis->stats;

    qemu_mutex_lock(&st->lock);
    st->ring[st->faults % POSTCOPY_FAULT_RING] =
        (PostcopyFaultRecord) { .offset = offset, .time = t };
    st->faults++;
    qemu_mutex_unlock(&st->lock);
}

/* A vCPU thread (tid) faulted on the host page at addr. */
static void blocktime_begin(PostcopyIncomingState *pis, pid_t tid,
                            uintptr_t addr)
{
    PostcopyStats *st = &pis->stats;
    int cpu;

    if (!st->blocktime || !tid) {
        return;
    }
    cpu = cpu_index_by_thread_id(tid);
    trace_mark_postcopy_blocktime_begin((void *)addr, cpu);
    qemu_mutex_lock(&st->lock);
    if (cpu >= 0 && cpu < st->nvcpus && !st->vcpu_addr[cpu]) {
        st->vcpu_addr[cpu] = addr;
        st->vcpu_start[cpu] = now_us();
        if (++st->blocked == st->nvcpus) {
            st->all_blocked_start = st->vcpu_start[cpu];
        }
    }
    qemu_mutex_unlock(&st->lock);
}

/* The page at addr is there: the vCPUs waiting for it run again. */
static void blocktime_end(PostcopyIncomingState *pis, uintptr_t addr,
                          bool count)
{
    PostcopyStats *st = &pis->stats;
    int64_t now = now_us();

    if (!st->blocktime) {
        return;
    }
    qemu_mutex_lock(&st->lock);
    for (int i = 0; i < st->nvcpus; i++) {
        if (st->vcpu_addr[i] != addr) {
            continue;
        }
        if (count && st->blocked == st->nvcpus) {
            st->total_blocked += now - st->all_blocked_start;
        }
        if (count) {
            st->vcpu_total[i] += now - st->vcpu_start[i];
        }
        trace_mark_postcopy_blocktime_end((void *)addr, i,
                                          count ? now - st->vcpu_start[i] : 0);
        st->vcpu_addr[i] = 0;
        st->blocked--;
    }
    qemu_mutex_unlock(&st->lock);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/*
 * Copy the ring oldest first, with ages rather than times: now_us() is
 * this host's monotonic clock, meaningless to a poller elsewhere.  The
 * caller holds st->lock.
 */
static void recent_faults_get(PostcopyStats *st, PostcopyStatsInfo *out)
{
    guint n = MIN(st->faults, POSTCOPY_FAULT_RING);
    int64_t now = now_us();

    out->recent_count = n;
    out->recent_offset = g_new(uint64_t, n);
    out->recent_age_us = g_new(int64_t, n);
    for (guint i = 0; i < n; i++) {
        const PostcopyFaultRecord *f =
            &st->ring[(st->faults - n + i) % POSTCOPY_FAULT_RING];

        out->recent_offset[i] = f->offset;
        out->recent_age_us[i] = MAX(now - f->time, 0);
    }
}

void postcopy_stats_get(MigrationIncomingState *mis, PostcopyStatsInfo *out)
{
    PostcopyStats *st = &mis->postcopy->stats;
    uint32_t *sorted = NULL;
    guint n;

    memset(out, 0, sizeof(*out));
    qemu_mutex_lock(&st->lock);
    out->blocktime = st->blocktime;
    if (st->blocktime) {
        out->blocktime_ms = st->total_blocked / 1000;
        out->nvcpus = st->nvcpus;
        out->vcpu_blocktime_ms = g_new0(uint64_t, st->nvcpus);
        for (int i = 0; i < st->nvcpus; i++) {
            out->vcpu_blocktime_ms[i] = st->vcpu_total[i] / 1000;
        }
    }
    out->did_postcopy = st->did_postcopy;
    if (!st->did_postcopy) {
        qemu_mutex_unlock(&st->lock);
        return;
    }
    n = st->latencies->len;
    if (n) {
        sorted = g_memdup2(st->latencies->data, n * sizeof(uint32_t));
    }
    out->faults = st->faults;
    out->latency_max_us = st->max_latency;
    memcpy(out->histogram, st->hist, sizeof(out->histogram));
    recent_faults_get(st, out);
    qemu_mutex_unlock(&st->lock);

    /* Sorting outside the lock: the listen thread keeps placing pages. */
    if (sorted) {
        qsort(sorted, n, sizeof(uint32_t), cmp_u32);
        out->latency_p50_us = sorted[(n - 1) / 2];
        out->latency_p99_us = sorted[(n - 1) * 99 / 100];
    }
    g_free(sorted);
}

void postcopy_stats_info_clear(PostcopyStatsInfo *info)
{
    g_clear_pointer(&info->vcpu_blocktime_ms, g_free);
    g_clear_pointer(&info->recent_offset, g_free);
    g_clear_pointer(&info->recent_age_us, g_free);
}

/* ---------------------------------------------------------------------- */
/* Placing pages */

static void placed(PostcopyIncomingState *pis, RAMBlock *rb,
                   ram_addr_t offset)
{
    unsigned long *map = rcu_dereference(rb->receivedmap);
    PostcopyBlock *b = pc_block(pis, rb);
    unsigned long hp = offset / rb->page_size;
    int64_t t;

    if (map) {
        bitmap_set_atomic(map, offset >> TARGET_PAGE_BITS,
                          rb->page_size >> TARGET_PAGE_BITS);
    }
    t = qatomic_xchg(&b->fault_time[hp], 0);
    clear_bit_atomic(hp, b->requested);
    if (t) {
        stats_latency(pis, now_us() - t);
    }
    blocktime_end(pis, (uintptr_t)(rb->host + offset), true);
}

static bool place_check(MigrationIncomingState *mis, RAMBlock *rb,
                        ram_addr_t offset, GError **errp)
{
    if (mis->postcopy->uffd < 0 && !mis->postcopy->placement) {
        error_setg(errp, "postcopy: placing page 0x%" PRIx64 " of '%s' "
                   "but userfaultfd is not open (state %s)", offset,
                   rb->idstr, postcopy_state_str(postcopy_state_get(mis)));
        return false;
    }
    if (!QEMU_IS_ALIGNED(offset, rb->page_size) ||
        offset >= rb->used_length ||
        rb->page_size > rb->used_length - offset) {
        error_setg(errp, "postcopy: bad host page 0x%" PRIx64 " of '%s'",
                   offset, rb->idstr);
        return false;
    }
    return true;
}

static bool place_failed(RAMBlock *rb, ram_addr_t offset, const char *how,
                         int err, GError **errp)
{
    if (err == EEXIST) {
        error_setg(errp, "postcopy: %s of host page 0x%" PRIx64 " of '%s' "
                   "failed: the page is already present (EEXIST): the "
                   "source sent it twice", how, offset, rb->idstr);
    } else {
        error_setg_errno(errp, err, "postcopy: %s of host page 0x%" PRIx64
                         " of '%s' failed", how, offset, rb->idstr);
    }
    return false;
}

bool postcopy_place_page(MigrationIncomingState *mis, RAMBlock *rb,
                         ram_addr_t offset, const void *from, GError **errp)
{
    PostcopyIncomingState *pis = mis->postcopy;
    struct uffdio_copy copy = {
        .dst = (uintptr_t)(rb->host + offset),
        .src = (uintptr_t)from,
        .len = rb->page_size,
        .mode = 0,
    };

    if (!place_check(mis, rb, offset, errp)) {
        return false;
    }
    trace_postcopy_place_page(rb->host + offset, rb->idstr, offset);
    if (pis->placement) {
        int err = pis->placement->place(rb, offset, from);

        if (err) {
            return place_failed(rb, offset, "placement", err, errp);
        }
        placed(pis, rb, offset);
        return true;
    }
    while (ioctl(pis->uffd, UFFDIO_COPY, &copy) < 0) {
        /* EAGAIN: the mm changed under us; nothing was copied yet. */
        if (errno != EAGAIN || copy.copy > 0) {
            return place_failed(rb, offset, "UFFDIO_COPY", errno, errp);
        }
    }
    placed(pis, rb, offset);
    return true;
}

bool postcopy_place_page_zero(MigrationIncomingState *mis, RAMBlock *rb,
                              ram_addr_t offset, GError **errp)
{
    PostcopyIncomingState *pis = mis->postcopy;
    PostcopyBlock *b = pc_block(pis, rb);
    struct uffdio_zeropage zp = {
        .range = { .start = (uintptr_t)(rb->host + offset),
                   .len = rb->page_size },
        .mode = 0,
    };

    if (!place_check(mis, rb, offset, errp)) {
        return false;
    }
    trace_postcopy_place_page_zero(rb->host + offset, rb->idstr, offset);
    if (b->zeropage) {
        while (ioctl(pis->uffd, UFFDIO_ZEROPAGE, &zp) < 0) {
            if (errno != EAGAIN || zp.zeropage > 0) {
                return place_failed(rb, offset, "UFFDIO_ZEROPAGE", errno,
                                    errp);
            }
        }
        placed(pis, rb, offset);
        return true;
    }
    /* Sized at LISTEN for the largest block; read-only since. */
    if (pis->zero_size < rb->page_size) {
        error_setg(errp, "postcopy: no zero page of %zu bytes", rb->page_size);
        return false;
    }
    return postcopy_place_page(mis, rb, offset, pis->zero_page, errp);
}

/* ---------------------------------------------------------------------- */
/* The fault thread */

static void fault_failed(MigrationIncomingState *mis, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);
static void fault_failed(MigrationIncomingState *mis, const char *fmt, ...)
{
    GError *err = NULL;
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_setg(&err, "postcopy: %s", msg);
    migration_incoming_fail(mis->postcopy->ctx, err);
}

/* Only a running postcopy sends requests (paused: at RESUME, all again). */
static bool requests_flow(MigrationIncomingState *mis)
{
    return migrate_get_state(&mis->status) ==
           MIGRATION_STATUS_POSTCOPY_ACTIVE;
}

/* False after a fatal error (reported): the fault thread stops. */
static bool handle_fault(MigrationIncomingState *mis, uintptr_t addr,
                         pid_t tid)
{
    PostcopyIncomingState *pis = mis->postcopy;
    ram_addr_t off;
    RAMBlock *rb;
    unsigned long *map;
    ram_addr_t hp_off;
    uintptr_t hp_addr;
    PostcopyBlock *b;
    int64_t t;
    int ret;

    rcu_read_lock();
    rb = qemu_ram_block_from_host((void *)addr, &off);
    if (!rb || off >= rb->used_length) {
        rcu_read_unlock();
        fault_failed(mis, "fault at 0x%" PRIxPTR " outside guest RAM", addr);
        return false;
    }
    hp_off = QEMU_ALIGN_DOWN(off, rb->page_size);
    hp_addr = (uintptr_t)(rb->host + hp_off);
    map = rcu_dereference(rb->receivedmap);
    trace_postcopy_ram_fault_thread_request((void *)addr, rb->idstr, hp_off,
                                            tid);
    blocktime_begin(pis, tid, hp_addr);
    if (map && test_bit_atomic(hp_off >> TARGET_PAGE_BITS, map)) {
        /* Placed meanwhile; the copy woke it unless it faulted after. */
        struct uffdio_range r = { .start = hp_addr, .len = rb->page_size };

        trace_postcopy_page_already_received(rb->idstr, hp_off);
        blocktime_end(pis, hp_addr, false);
        rcu_read_unlock();
        if (ioctl(pis->uffd, UFFDIO_WAKE, &r) < 0) {
            fault_failed(mis, "UFFDIO_WAKE at 0x%" PRIxPTR ": %s", hp_addr,
                         g_strerror(errno));
            return false;
        }
        return true;
    }
    b = pc_block(pis, rb);
    if (!postcopy_request_mark(mis, rb, hp_off)) {
        trace_postcopy_request_already_pending(rb->idstr, hp_off);
        rcu_read_unlock();
        return true;    /* already on its way */
    }
    t = now_us();
    qatomic_mb_set(&b->fault_time[hp_off / rb->page_size], t);
    stats_fault(pis, hp_off, t);
    if (map && test_bit_atomic(hp_off >> TARGET_PAGE_BITS, map)) {
        /*
         * Placed between the look above and the mark: nothing to ask
         * for.  Whoever takes the fault time records the one latency
         * sample (placed() if it ran after our store), so that every
         * fault counted has its sample and no request stays marked.
         */
        trace_postcopy_page_already_received(rb->idstr, hp_off);
        if (qatomic_cmpxchg(&b->fault_time[hp_off / rb->page_size], t,
                            0) == t) {
            stats_latency(pis, now_us() - t);
        }
        clear_bit_atomic(hp_off / rb->page_size, b->requested);
        rcu_read_unlock();
        return true;
    }
    /*
     * The mark above comes before this look at the status, and RESUME
     * sets the status before it sends the marked requests again: either
     * it sees our mark or we see "active", so none is lost.
     */
    if (!requests_flow(mis)) {
        trace_postcopy_request_while_paused(rb->idstr, hp_off);
        rcu_read_unlock();
        return true;
    }
    ret = migrate_send_rp_req_pages(pis->ctx, rb->idstr, hp_off,
                                    rb->page_size);
    rcu_read_unlock();
    if (ret < 0) {
        /* The link is broken: the listen thread pauses (it may not know). */
        trace_postcopy_request_failed(rb->idstr, hp_off, -ret);
        postcopy_incoming_pause_request(mis);
    }
    return true;
}

static void *fault_thread(void *opaque)
{
    MigrationIncomingState *mis = opaque;
    PostcopyIncomingState *pis = mis->postcopy;
    struct pollfd pfd[2] = {
        { .fd = pis->uffd, .events = POLLIN },
        { .fd = pis->quit_fd, .events = POLLIN },
    };

    trace_postcopy_ram_fault_thread_entry();
    for (;;) {
        struct uffd_msg msg;
        ssize_t n;

        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            fault_failed(mis, "poll on userfaultfd: %s", g_strerror(errno));
            break;
        }
        if (pfd[1].revents) {
            trace_postcopy_ram_fault_thread_quit();
            break;
        }
        while ((n = read(pis->uffd, &msg, sizeof(msg))) == sizeof(msg)) {
            if (msg.event != UFFD_EVENT_PAGEFAULT) {
                continue;
            }
            if (!handle_fault(mis, msg.arg.pagefault.address,
                              msg.arg.pagefault.feat.ptid)) {
                goto out;
            }
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            fault_failed(mis, "reading userfaultfd: %s", g_strerror(errno));
            break;
        }
    }
out:
    trace_postcopy_ram_fault_thread_exit();
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Transparent huge pages off while discarding (so discards really drop) */

static void discard_prepare(PostcopyIncomingState *pis)
{
    if (!pis->thp_disabled) {
        qemu_ram_advise_huge(false);
        pis->thp_disabled = true;
    }
}

/* ---------------------------------------------------------------------- */
/* Commands */

static bool wrong_state(const char *cmd, PostcopyState st,
                        const char *expected, GError **errp)
{
    error_setg(errp, "%s in wrong postcopy state %d (%s), expected %s", cmd,
               st, postcopy_state_str(st), expected);
    return false;
}

static bool pc_advise(LoadVMContext *ctx, uint64_t summary,
                      uint64_t target_page_size, GError **errp)
{
    MigrationIncomingState *mis = ctx->opaque;
    PostcopyState st = postcopy_state_get(mis);
    g_autoptr(GPtrArray) blocks = NULL;
    uint64_t local = 0;

    trace_loadvm_postcopy_handle_advise(summary, target_page_size);
    if (st != POSTCOPY_INCOMING_NONE) {
        return wrong_state("POSTCOPY_ADVISE", st, "NONE", errp);
    }
    if (!migrate_postcopy_ram()) {
        error_setg(errp, "POSTCOPY_ADVISE: the source wants postcopy but "
                   "postcopy-ram is not enabled on the destination");
        return false;
    }
    if (target_page_size != TARGET_PAGE_SIZE) {
        error_setg(errp, "POSTCOPY_ADVISE: target page size 0x%" PRIx64
                   " differs from ours 0x%llx", target_page_size,
                   (unsigned long long)TARGET_PAGE_SIZE);
        return false;
    }
    blocks = migratable_blocks();
    for (guint i = 0; i < blocks->len; i++) {
        local |= qemu_ram_pagesize(blocks->pdata[i]);
    }
    if (summary != local) {
        error_setg(errp, "POSTCOPY_ADVISE: RAM page sizes differ: source "
                   "page size summary 0x%" PRIx64 ", destination 0x%" PRIx64
                   " (both sides need the same host page sizes, e.g. the "
                   "same hugetlbfs backing)", summary, local);
        return false;
    }
    if (!postcopy_ram_supported_by_host(NULL, errp)) {
        return false;
    }
    /* Everything will be sent again: nothing stale may survive. */
    for (guint i = 0; i < blocks->len; i++) {
        RAMBlock *rb = blocks->pdata[i];
        unsigned long *map;

        if (!ram_block_discard_range(rb, 0, rb->used_length, errp)) {
            error_prepend(errp, "POSTCOPY_ADVISE: ");
            return false;
        }
        rcu_read_lock();
        map = rcu_dereference(rb->receivedmap);
        if (map) {
            bitmap_clear_atomic(map, 0, rb->used_length >> TARGET_PAGE_BITS);
        }
        rcu_read_unlock();
    }
    if (!postcopy_state_cas(mis, POSTCOPY_INCOMING_NONE,
                            POSTCOPY_INCOMING_ADVISE)) {
        return wrong_state("POSTCOPY_ADVISE", postcopy_state_get(mis), "NONE",
                           errp);
    }
    ram_load_set_postcopy_advised(mis, true);
    return true;
}

static bool pc_discard(LoadVMContext *ctx, const char *idstr, unsigned n,
                       const uint64_t *starts, const uint64_t *lengths,
                       GError **errp)
{
    const char *cmd = "POSTCOPY_RAM_DISCARD";
    MigrationIncomingState *mis = ctx->opaque;
    PostcopyState st = postcopy_state_get(mis);
    unsigned long *map;
    RAMBlock *rb;

    trace_loadvm_postcopy_ram_handle_discard_header(idstr, n);
    if (st != POSTCOPY_INCOMING_ADVISE && st != POSTCOPY_INCOMING_DISCARD) {
        return wrong_state(cmd, st, "ADVISE or DISCARD", errp);
    }
    if (n == 0) {
        error_setg(errp, "%s: '%s': no ranges", cmd, idstr);
        return false;
    }
    rcu_read_lock();
    rb = qemu_ram_block_by_name(idstr);
    rcu_read_unlock();
    if (!rb || !(rb->flags & RAM_MIGRATABLE)) {
        error_setg(errp, "%s: unknown RAMBlock '%s'", cmd, idstr);
        return false;
    }
    /* All ranges are checked before any is applied. */
    for (unsigned i = 0; i < n; i++) {
        if (!lengths[i] || !QEMU_IS_ALIGNED(starts[i], rb->page_size) ||
            !QEMU_IS_ALIGNED(lengths[i], rb->page_size)) {
            error_setg(errp, "%s: '%s': range %u (start 0x%" PRIx64 " length "
                       "0x%" PRIx64 ") is empty or not aligned to the host "
                       "page size 0x%zx", cmd, idstr, i, starts[i],
                       lengths[i], rb->page_size);
            return false;
        }
        if (starts[i] >= rb->used_length ||
            lengths[i] > rb->used_length - starts[i]) {
            error_setg(errp, "%s: '%s': range %u (start 0x%" PRIx64 " length "
                       "0x%" PRIx64 ") is beyond the block's used length 0x%"
                       PRIx64, cmd, idstr, i, starts[i], lengths[i],
                       (uint64_t)rb->used_length);
            return false;
        }
    }
    if (st == POSTCOPY_INCOMING_ADVISE) {
        discard_prepare(mis->postcopy);
        if (!postcopy_state_cas(mis, POSTCOPY_INCOMING_ADVISE,
                                POSTCOPY_INCOMING_DISCARD)) {
            return wrong_state(cmd, postcopy_state_get(mis), "ADVISE", errp);
        }
    }
    for (unsigned i = 0; i < n; i++) {
        rcu_read_lock();
        map = rcu_dereference(rb->receivedmap);
        if (map) {
            bitmap_clear_atomic(map, starts[i] >> TARGET_PAGE_BITS,
                                lengths[i] >> TARGET_PAGE_BITS);
        }
        rcu_read_unlock();
        trace_postcopy_discard_range(idstr, starts[i], lengths[i]);
        if (!ram_block_discard_range(rb, starts[i], lengths[i], errp)) {
            error_prepend(errp, "%s: ", cmd);
            return false;
        }
    }
    return true;
}

/* Register every block in MISSING mode. */
static bool uffd_register_blocks(PostcopyIncomingState *pis, GError **errp)
{
    g_autoptr(GPtrArray) blocks = migratable_blocks();

    for (guint i = 0; i < blocks->len; i++) {
        RAMBlock *rb = blocks->pdata[i];
        PostcopyBlock *b = pc_block(pis, rb);
        struct uffdio_register reg = {
            .range = { .start = (uintptr_t)rb->host,
                       .len = QEMU_ALIGN_UP(rb->used_length, rb->page_size) },
            .mode = UFFDIO_REGISTER_MODE_MISSING,
        };

        if (ioctl(pis->uffd, UFFDIO_REGISTER, &reg) < 0) {
            error_setg_errno(errp, errno, "postcopy: UFFDIO_REGISTER of "
                             "RAMBlock '%s' (0x%" PRIx64 " bytes, page size "
                             "0x%zx) failed", rb->idstr,
                             (uint64_t)rb->used_length, rb->page_size);
            return false;
        }
        b->registered = true;
        if (!(reg.ioctls & (1ULL << _UFFDIO_COPY))) {
            error_setg(errp, "postcopy: RAMBlock '%s' does not support "
                       "UFFDIO_COPY", rb->idstr);
            return false;
        }
        b->zeropage = reg.ioctls & (1ULL << _UFFDIO_ZEROPAGE);
    }
    return true;
}

static void uffd_unregister_blocks(PostcopyIncomingState *pis)
{
    GHashTableIter it;
    gpointer v;

    if (!pis->blocks || pis->uffd < 0) {
        return;
    }
    qemu_mutex_lock(&pis->blocks_lock);
    g_hash_table_iter_init(&it, pis->blocks);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        PostcopyBlock *b = v;
        struct uffdio_range r = {
            .start = (uintptr_t)b->rb->host,
            .len = QEMU_ALIGN_UP(b->rb->used_length, b->rb->page_size),
        };

        if (b->registered && ioctl(pis->uffd, UFFDIO_UNREGISTER, &r) < 0) {
            warn_report("postcopy: UFFDIO_UNREGISTER of '%s': %s",
                        b->rb->idstr, g_strerror(errno));
        }
        b->registered = false;
    }
    qemu_mutex_unlock(&pis->blocks_lock);
}

/* Stop the fault thread, unregister, close; THP back as it was. */
static void postcopy_incoming_cleanup(PostcopyIncomingState *pis)
{
    trace_postcopy_ram_incoming_cleanup_entry();
    if (pis->fault_running) {
        uint64_t one = 1;

        if (write(pis->quit_fd, &one, sizeof(one)) != sizeof(one)) {
            warn_report("postcopy: cannot signal the fault thread: %s",
                        g_strerror(errno));
        }
        qemu_thread_join(&pis->fault_thread);
        pis->fault_running = false;
    }
    uffd_unregister_blocks(pis);
    if (pis->uffd >= 0) {
        close(pis->uffd);
        pis->uffd = -1;
    }
    if (pis->quit_fd >= 0) {
        close(pis->quit_fd);
        pis->quit_fd = -1;
    }
    /* Guest RAM is advised huge from its creation (physmem.c): back to that. */
    if (pis->thp_disabled) {
        qemu_ram_advise_huge(true);
    }
    pis->thp_disabled = false;
    trace_postcopy_ram_incoming_cleanup_exit();
}

/*
 * hugetlbfs has no UFFDIO_ZEROPAGE: a zero host page is copied from a
 * buffer as big as the largest block's page, made before two placing
 * threads (listen and preempt) can use it.
 */
static void zero_page_prepare(PostcopyIncomingState *pis)
{
    g_autoptr(GPtrArray) blocks = migratable_blocks();
    size_t max = 0;

    for (guint i = 0; i < blocks->len; i++) {
        max = MAX(max, ((RAMBlock *)blocks->pdata[i])->page_size);
    }
    if (pis->zero_size < max) {
        g_free(pis->zero_page);
        pis->zero_page = g_malloc0(max);
        pis->zero_size = max;
    }
}

static bool uffd_enable(MigrationIncomingState *mis, GError **errp)
{
    PostcopyIncomingState *pis = mis->postcopy;
    uint64_t host_features = 0, want = 0;

    trace_postcopy_ram_enable_notify();
    if (!postcopy_ram_supported_by_host(&host_features, errp)) {
        return false;
    }
    /* The faulting thread's id maps faults to vCPUs (blocktime). */
    if (host_features & UFFD_FEATURE_THREAD_ID) {
        want |= UFFD_FEATURE_THREAD_ID;
    }
    pis->uffd = uffd_open(want, &pis->features, errp);
    if (pis->uffd < 0) {
        return false;
    }
    pis->quit_fd = eventfd(0, EFD_CLOEXEC);
    if (pis->quit_fd < 0) {
        error_setg_errno(errp, errno, "postcopy: eventfd");
        return false;
    }
    if (!uffd_register_blocks(pis, errp)) {
        return false;
    }
    zero_page_prepare(pis);
    if (!qemu_thread_create(&pis->fault_thread, "mig/dst/fault", fault_thread,
                            mis, errp)) {
        return false;
    }
    pis->fault_running = true;
    return true;
}

/* ---------------------------------------------------------------------- */
/* The preempt channel (postcopy-preempt) */

void postcopy_incoming_set_preempt_channel(MigrationIncomingState *mis,
                                           QEMUFile *f)
{
    PostcopyIncomingState *pis = mis->postcopy;

    qemu_mutex_lock(&pis->lock);
    if (pis->preempt_file) {
        qemu_mutex_unlock(&pis->lock);
        warn_report("postcopy-preempt: a third connection; closed");
        qemu_fclose(f);
        return;
    }
    pis->preempt_file = f;
    qemu_mutex_unlock(&pis->lock);
}

/*
 * Park after an error (the main stream pauses too), until a recovery
 * brings a new channel; false when the thread should end instead.
 */
static bool preempt_park(MigrationIncomingState *mis, QEMUFile **f,
                         unsigned *gen)
{
    PostcopyIncomingState *pis = mis->postcopy;
    bool go_on;

    qemu_mutex_lock(&pis->lock);
    if (pis->main_eof) {
        qemu_mutex_unlock(&pis->lock);
        return false;
    }
    qemu_mutex_unlock(&pis->lock);
    /* A broken preempt channel is a broken link: the main side pauses. */
    postcopy_incoming_pause_request(mis);
    qemu_mutex_lock(&pis->lock);
    pis->preempt_parked = true;
    qemu_cond_broadcast(&pis->cond);
    while (pis->preempt_gen == *gen && !pis->main_eof) {
        qemu_cond_wait(&pis->cond, &pis->lock);
    }
    pis->preempt_parked = false;
    go_on = !pis->main_eof;
    *f = pis->preempt_file;
    *gen = pis->preempt_gen;
    qemu_mutex_unlock(&pis->lock);
    return go_on;
}

/* Urgent pages from the preempt channel, until its EOS. */
static void *preempt_thread(void *opaque)
{
    MigrationIncomingState *mis = opaque;
    PostcopyIncomingState *pis = mis->postcopy;
    QEMUFile *f;
    unsigned gen;

    trace_postcopy_preempt_thread_entry();
    qemu_mutex_lock(&pis->lock);
    f = pis->preempt_file;
    gen = pis->preempt_gen;
    qemu_mutex_unlock(&pis->lock);
    for (;;) {
        GError *err = NULL;

        if (f && ram_load_postcopy_preempt(mis, f, &err)) {
            break;
        }
        trace_postcopy_preempt_thread_error(err ? err->message : "no channel");
        g_clear_error(&err);
        if (!preempt_park(mis, &f, &gen)) {
            break;
        }
    }
    qemu_mutex_lock(&pis->lock);
    pis->preempt_done = true;
    qemu_cond_broadcast(&pis->cond);
    qemu_mutex_unlock(&pis->lock);
    trace_postcopy_preempt_thread_exit();
    return NULL;
}

static bool preempt_start(MigrationIncomingState *mis, GError **errp)
{
    PostcopyIncomingState *pis = mis->postcopy;

    if (!migrate_postcopy_preempt()) {
        return true;
    }
    qemu_mutex_lock(&pis->lock);
    if (!pis->preempt_file) {
        qemu_mutex_unlock(&pis->lock);
        error_setg(errp, "postcopy-preempt is on, but the source opened no "
                   "preempt channel");
        return false;
    }
    pis->preempt_done = false;
    pis->preempt_parked = false;
    pis->main_eof = false;
    qemu_mutex_unlock(&pis->lock);
    if (!qemu_thread_create(&pis->preempt_thread, "mig/dst/preempt",
                            preempt_thread, mis, errp)) {
        return false;
    }
    pis->preempt_running = true;
    return true;
}

/*
 * The main stream ended: wait for the preempt channel's EOS (its last
 * urgent pages may still be in flight), then close it.
 */
/* How long the preempt channel's EOS may lag behind the main stream's end. */
#define PREEMPT_EOS_WAIT_US (10 * G_USEC_PER_SEC)

static void preempt_finish(PostcopyIncomingState *pis)
{
    int64_t deadline = g_get_monotonic_time() + PREEMPT_EOS_WAIT_US;
    QEMUFile *f;
    bool done;

    if (!pis->preempt_running) {
        return;
    }
    qemu_mutex_lock(&pis->lock);
    pis->main_eof = true;
    qemu_cond_broadcast(&pis->cond);
    while (!pis->preempt_done &&
           qemu_cond_wait_until(&pis->cond, &pis->lock, deadline)) {
    }
    done = pis->preempt_done;
    f = pis->preempt_file;
    qemu_mutex_unlock(&pis->lock);
    if (!done && f) {
        /* No EOS (a source that never sends one): end the reader. */
        warn_report("postcopy-preempt: no end of the preempt channel after "
                    "the main stream ended; closing it");
        qemu_file_shutdown(f);
    }
    qemu_thread_join(&pis->preempt_thread);
    pis->preempt_running = false;
    qemu_mutex_lock(&pis->lock);
    f = pis->preempt_file;
    pis->preempt_file = NULL;
    qemu_mutex_unlock(&pis->lock);
    if (f) {
        qemu_fclose(f);
    }
}

void postcopy_incoming_preempt_close(MigrationIncomingState *mis)
{
    preempt_drop(mis->postcopy);
}

/* A pause: stop the preempt loader (it parks) and close its channel. */
static void preempt_drop(PostcopyIncomingState *pis)
{
    QEMUFile *f;

    qemu_mutex_lock(&pis->lock);
    f = pis->preempt_file;
    qemu_mutex_unlock(&pis->lock);
    if (!f) {
        return;
    }
    if (pis->preempt_running) {
        qemu_file_shutdown(f);
        qemu_mutex_lock(&pis->lock);
        while (!pis->preempt_parked && !pis->preempt_done) {
            qemu_cond_wait(&pis->cond, &pis->lock);
        }
        qemu_mutex_unlock(&pis->lock);
    }
    qemu_mutex_lock(&pis->lock);
    pis->preempt_file = NULL;
    qemu_mutex_unlock(&pis->lock);
    qemu_fclose(f);
}

/* ---------------------------------------------------------------------- */
/* Recovery */

void postcopy_incoming_pause_request(MigrationIncomingState *mis)
{
    /* The listen thread's read fails at once, and it pauses. */
    qemu_mutex_lock(&mis->file_lock);
    if (mis->from_src_file) {
        qemu_file_shutdown(mis->from_src_file);
    }
    qemu_mutex_unlock(&mis->file_lock);
}

void postcopy_incoming_recover_channel(MigrationIncomingState *mis,
                                       QEMUFile *f)
{
    PostcopyIncomingState *pis = mis->postcopy;

    qemu_mutex_lock(&pis->lock);
    if ((pis->recover_file && (pis->recover_preempt ||
                               !migrate_postcopy_preempt())) ||
        migrate_get_state(&mis->status) != MIGRATION_STATUS_POSTCOPY_PAUSED) {
        qemu_mutex_unlock(&pis->lock);
        warn_report("postcopy recovery: a connection arrived while not "
                    "paused; closed");
        qemu_fclose(f);
        return;
    }
    /* The first connection is the main channel, a second the preempt one. */
    if (!pis->recover_file) {
        pis->recover_file = f;
    } else {
        pis->recover_preempt = f;
    }
    qemu_cond_broadcast(&pis->cond);
    qemu_mutex_unlock(&pis->lock);
}

static void pause_stats(MigrationIncomingState *mis, bool begin)
{
    int64_t now = g_get_monotonic_time() / 1000;

    qemu_mutex_lock(&mis->error_lock);
    if (begin && !mis->paused_since) {
        mis->postcopy_pauses++;
        mis->paused_since = now;
    } else if (!begin && mis->paused_since) {
        mis->postcopy_paused_ms += now - mis->paused_since;
        mis->paused_since = 0;
    }
    qemu_mutex_unlock(&mis->error_lock);
}

/* Close the broken channel: main stream and return path. */
static void drop_channel(MigrationIncomingState *mis, LoadVMContext *ctx)
{
    QEMUFile *to = loadvm_context_take_return_path(ctx);
    QEMUFile *from;

    if (to) {
        qemu_fclose(to);
    }
    qemu_mutex_lock(&mis->file_lock);
    from = mis->from_src_file;
    mis->from_src_file = NULL;
    qemu_mutex_unlock(&mis->file_lock);
    loadvm_context_set_channels(ctx, NULL, NULL);
    if (from) {
        qemu_fclose(from);
    }
    preempt_drop(mis->postcopy);
    /*
     * Half-built host pages are not in the received map: sent again.
     * (The preempt loader is parked: its page is ours to drop too.)
     */
    ram_load_discard_tmp_pages(mis);
}

/*
 * Block until migrate-recover's listener hands us the connection(s): the
 * main one, and with postcopy-preempt the preempt one, which goes
 * straight to the (parked) preempt loader.
 */
static QEMUFile *wait_recover_channel(PostcopyIncomingState *pis)
{
    bool preempt = pis->preempt_running;
    QEMUFile *f;

    qemu_mutex_lock(&pis->lock);
    while (!pis->recover_file || (preempt && !pis->recover_preempt)) {
        qemu_cond_wait(&pis->cond, &pis->lock);
    }
    f = pis->recover_file;
    pis->recover_file = NULL;
    if (preempt) {
        pis->preempt_file = pis->recover_preempt;
        pis->recover_preempt = NULL;
        pis->preempt_gen++;
        qemu_cond_broadcast(&pis->cond);
    }
    qemu_mutex_unlock(&pis->lock);
    return f;
}

/*
 * A failure of a running postcopy: keep the guest and everything received,
 * go to postcopy-paused, and wait for a new channel (migrate-recover).
 * False if this failure cannot be paused (the guest never ran here).
 */
static bool postcopy_pause_incoming(MigrationIncomingState *mis,
                                    LoadVMContext *ctx, const GError *why)
{
    PostcopyIncomingState *pis = mis->postcopy;
    MigrationStatus cur = migrate_get_state(&mis->status);
    QEMUFile *f, *rp;

    if (postcopy_state_get(mis) != POSTCOPY_INCOMING_RUNNING ||
        (cur != MIGRATION_STATUS_POSTCOPY_ACTIVE &&
         cur != MIGRATION_STATUS_POSTCOPY_RECOVER) ||
        pis->placement) {
        return false;       /* (nobody could ever hand us a new channel) */
    }
    trace_postcopy_pause_incoming(why->message);
    warn_report("postcopy paused: %s; the guest keeps running, waiting for "
                "migrate-recover", why->message);
    /* Paused first: the fault thread stops sending before we close. */
    migrate_set_state(&mis->status, cur, MIGRATION_STATUS_POSTCOPY_PAUSED);
    pause_stats(mis, true);
    /* The main loader is done with the stream once it saw RUN. */
    qemu_mutex_lock(&pis->lock);
    while (!pis->main_done) {
        qemu_cond_wait(&pis->cond, &pis->lock);
    }
    qemu_mutex_unlock(&pis->lock);
    drop_channel(mis, ctx);
    for (;;) {
        f = wait_recover_channel(pis);
        rp = qemu_file_get_return_path(f);
        if (rp) {
            break;
        }
        warn_report("postcopy recovery: the new channel cannot carry a "
                    "return path; waiting for another migrate-recover");
        qemu_fclose(f);
    }
    qemu_mutex_lock(&mis->file_lock);
    mis->from_src_file = f;
    qemu_mutex_unlock(&mis->file_lock);
    loadvm_context_set_channels(ctx, f, rp);
    migration_channel_tune_postcopy(qemu_file_get_ioc(f), false);
    migrate_set_state(&mis->status, MIGRATION_STATUS_POSTCOPY_PAUSED,
                      MIGRATION_STATUS_POSTCOPY_RECOVER);
    trace_postcopy_pause_incoming_continued();
    return true;
}

/* RECV_BITMAP: our received map of that block, on the return path. */
static bool pc_recv_bitmap(LoadVMContext *ctx, const char *idstr,
                           GError **errp)
{
    MigrationIncomingState *mis = ctx->opaque;
    unsigned long *map;
    RAMBlock *rb;
    int ret;

    if (migrate_get_state(&mis->status) !=
        MIGRATION_STATUS_POSTCOPY_RECOVER) {
        /* QEMU ignores it then; refusing tells the source why it waits. */
        error_setg(errp, "RECV_BITMAP for '%s' outside postcopy-recover",
                   idstr);
        return false;
    }
    rcu_read_lock();
    rb = qemu_ram_block_by_name(idstr);
    map = rb ? rcu_dereference(rb->receivedmap) : NULL;
    if (!rb || !(rb->flags & RAM_MIGRATABLE) || !map) {
        rcu_read_unlock();
        error_setg(errp, "RECV_BITMAP: unknown RAMBlock '%s'", idstr);
        return false;
    }
    ret = migrate_send_rp_recv_bitmap(ctx, idstr, map,
                                      rb->used_length >> TARGET_PAGE_BITS);
    rcu_read_unlock();
    if (ret < 0) {
        error_setg_errno(errp, -ret, "RECV_BITMAP: sending the bitmap of "
                         "'%s'", idstr);
        return false;
    }
    return true;
}

/* Every host page still asked for, asked for again (new channel). */
static int resend_requests(MigrationIncomingState *mis)
{
    PostcopyIncomingState *pis = mis->postcopy;
    g_autoptr(GPtrArray) blocks = migratable_blocks();
    int sent = 0;

    for (guint i = 0; i < blocks->len; i++) {
        RAMBlock *rb = blocks->pdata[i];
        PostcopyBlock *b = pc_block(pis, rb);
        unsigned long n = DIV_ROUND_UP(rb->used_length, rb->page_size);

        /* The fault thread sets bits meanwhile: atomic reads. */
        for (unsigned long hp = 0; hp < n; hp++) {
            if (!test_bit_atomic(hp, b->requested)) {
                continue;
            }
            if (migrate_send_rp_req_pages(pis->ctx, rb->idstr,
                                          (uint64_t)hp * rb->page_size,
                                          rb->page_size) < 0) {
                return -1;
            }
            sent++;
        }
    }
    return sent;
}

static bool pc_resume(LoadVMContext *ctx, GError **errp)
{
    MigrationIncomingState *mis = ctx->opaque;
    int n;

    if (!migrate_set_state(&mis->status, MIGRATION_STATUS_POSTCOPY_RECOVER,
                           MIGRATION_STATUS_POSTCOPY_ACTIVE)) {
        /* QEMU ignores it then; the source would wait for nothing. */
        error_setg(errp, "POSTCOPY_RESUME outside postcopy-recover "
                   "(status %s)",
                   MigrationStatus_str(migrate_get_state(&mis->status)));
        return false;
    }
    pause_stats(mis, false);
    if (migrate_send_rp_resume_ack(ctx, MIGRATION_RESUME_ACK_VALUE) < 0 ||
        (n = resend_requests(mis)) < 0) {
        error_setg(errp, "POSTCOPY_RESUME: the return path failed");
        return false;
    }
    trace_postcopy_resume_incoming(n);
    return true;
}

/*
 * The listen thread's work: the main stream after LISTEN, pausing through
 * broken links, then the end (SHUT, completed).  False with errp when the
 * migration failed for good.
 */
static bool listen_run(LoadVMContext *ctx, GError **errp)
{
    MigrationIncomingState *mis = ctx->opaque;
    PostcopyIncomingState *pis = mis->postcopy;
    GError *err = NULL;
    int ret;

    migrate_set_state(&mis->status, MIGRATION_STATUS_ACTIVE,
                      MIGRATION_STATUS_POSTCOPY_ACTIVE);
    while ((ret = qemu_loadvm_state_main(ctx->from_src, ctx, &err)) < 0) {
        migration_explain_net_timeout(ctx->from_src, &err);
        if (!postcopy_pause_incoming(mis, ctx, err)) {
            g_prefix_error(&err, "postcopy: ");
            g_propagate_error(errp, err);
            return false;
        }
        g_clear_error(&err);
    }
    /* The main loader may still be in the package: wait for it. */
    qemu_mutex_lock(&pis->lock);
    while (!pis->main_done) {
        qemu_cond_wait(&pis->cond, &pis->lock);
    }
    qemu_mutex_unlock(&pis->lock);
    if (ret == LOADVM_QUIT ||
        postcopy_state_get(mis) != POSTCOPY_INCOMING_RUNNING) {
        error_setg(errp, "postcopy: the stream ended in postcopy state %s "
                   "(expected RUNNING after POSTCOPY_RUN)",
                   postcopy_state_str(postcopy_state_get(mis)));
        return false;
    }
    preempt_finish(pis);
    postcopy_incoming_cleanup(pis);
    postcopy_state_set(mis, POSTCOPY_INCOMING_END);
    qemu_loadvm_state_cleanup();
    if (migrate_send_rp_shut(ctx, 0) < 0) {
        warn_report("postcopy: could not send SHUT to the source");
    }
    migrate_set_state(&mis->status, MIGRATION_STATUS_POSTCOPY_ACTIVE,
                      MIGRATION_STATUS_COMPLETED);
    return true;
}

static void *listen_thread(void *opaque)
{
    LoadVMContext *ctx = opaque;
    GError *err = NULL;

    trace_postcopy_ram_listen_thread_start();
    if (!listen_run(ctx, &err)) {
        migration_incoming_fail(ctx, err);
    }
    trace_postcopy_ram_listen_thread_exit();
    return NULL;
}

bool postcopy_incoming_listen_sync(LoadVMContext *ctx, GError **errp)
{
    MigrationIncomingState *mis = ctx->opaque;

    g_assert(mis->postcopy->placement);
    postcopy_incoming_main_done(mis);
    if (!listen_run(ctx, errp)) {
        postcopy_incoming_cleanup(mis->postcopy);
        qemu_loadvm_state_cleanup();
        return false;
    }
    return true;
}

static bool pc_listen(LoadVMContext *ctx, GError **errp)
{
    const char *cmd = "POSTCOPY_LISTEN";
    MigrationIncomingState *mis = ctx->opaque;
    PostcopyIncomingState *pis = mis->postcopy;
    PostcopyState st = postcopy_state_get(mis);

    trace_loadvm_postcopy_handle_listen(postcopy_state_str(st));
    if (st != POSTCOPY_INCOMING_ADVISE && st != POSTCOPY_INCOMING_DISCARD) {
        return wrong_state(cmd, st, "ADVISE or DISCARD", errp);
    }
    /* The listen thread takes the main stream: the rest must be in a blob. */
    if (!ctx->package_depth) {
        error_setg(errp, "%s outside of a PACKAGED blob", cmd);
        return false;
    }
    if (!ctx->to_src) {
        error_setg(errp, "%s without a return path (OPEN_RETURN_PATH)", cmd);
        return false;
    }
    /* From here the guest may run here: migrate_cancel is refused. */
    if (!migration_incoming_close_cancel_gate(mis)) {
        error_setg(errp, "cancelled by migrate_cancel");
        return false;
    }
    multifd_recv_enter_postcopy(mis->multifd);
    discard_prepare(pis);
    if (!postcopy_state_cas(mis, st, POSTCOPY_INCOMING_LISTENING)) {
        return wrong_state(cmd, postcopy_state_get(mis), "ADVISE or DISCARD",
                           errp);
    }
    pis->ctx = ctx;
    stats_start(pis);
    if (pis->placement) {
        /* No fault can happen: the caller runs the listen loop itself. */
        zero_page_prepare(pis);
        ctx->postcopy_listening = true;
        return true;
    }
    if (!uffd_enable(mis, errp)) {
        error_prepend(errp, "%s: ", cmd);
        postcopy_incoming_cleanup(pis);
        return false;
    }
    if (!preempt_start(mis, errp)) {
        error_prepend(errp, "%s: ", cmd);
        postcopy_incoming_cleanup(pis);
        return false;
    }
    ctx->postcopy_listening = true;
    migration_channel_tune_postcopy(qemu_file_get_ioc(ctx->from_src), false);
    if (!qemu_thread_create(&pis->listen_thread, "mig/dst/listen",
                            listen_thread, ctx, errp)) {
        /* Nobody would ever serve the faults: undo everything. */
        ctx->postcopy_listening = false;
        preempt_finish(pis);
        postcopy_incoming_cleanup(pis);
        return false;
    }
    pis->listen_running = true;
    return true;
}

static gboolean start_vm_bh(gpointer opaque)
{
    /* The received runstate does not matter after RUN (as QEMU). */
    if (autostart) {
        vm_start();
    } else {
        runstate_set(RUN_STATE_PAUSED);
    }
    return G_SOURCE_REMOVE;
}

static bool pc_run(LoadVMContext *ctx, GError **errp)
{
    MigrationIncomingState *mis = ctx->opaque;
    PostcopyState st = postcopy_state_get(mis);

    trace_loadvm_postcopy_handle_run(postcopy_state_str(st));
    if (st != POSTCOPY_INCOMING_LISTENING ||
        !postcopy_state_cas(mis, POSTCOPY_INCOMING_LISTENING,
                            POSTCOPY_INCOMING_RUNNING)) {
        return wrong_state("POSTCOPY_RUN", st, "LISTENING", errp);
    }
    /* vCPU state came in the package already; start them in the main loop */
    if (!mis->postcopy->placement) {
        g_idle_add(start_vm_bh, NULL);
    }
    return true;
}

static const LoadvmPostcopyOps postcopy_ops = {
    .advise = pc_advise,
    .discard = pc_discard,
    .listen = pc_listen,
    .run = pc_run,
    .recv_bitmap = pc_recv_bitmap,
    .resume = pc_resume,
};

void postcopy_incoming_set_placement(MigrationIncomingState *mis,
                                     const PostcopyPlacementOps *ops)
{
    mis->postcopy->placement = ops;
}

void postcopy_ram_init(void)
{
    loadvm_register_postcopy_ops(&postcopy_ops);
}

void postcopy_incoming_reset(MigrationIncomingState *mis)
{
    PostcopyIncomingState *pis = mis->postcopy;

    postcopy_state_set(mis, POSTCOPY_INCOMING_NONE);
    ram_load_set_postcopy_advised(mis, false);
    qemu_mutex_lock(&pis->lock);
    pis->main_done = false;
    qemu_mutex_unlock(&pis->lock);
    qemu_mutex_lock(&pis->blocks_lock);
    g_clear_pointer(&pis->blocks, g_hash_table_destroy);
    qemu_mutex_unlock(&pis->blocks_lock);
    pis->thp_disabled = false;
    stats_reset(pis);
}

void postcopy_incoming_main_done(MigrationIncomingState *mis)
{
    PostcopyIncomingState *pis = mis->postcopy;

    qemu_mutex_lock(&pis->lock);
    pis->main_done = true;
    qemu_cond_broadcast(&pis->cond);
    qemu_mutex_unlock(&pis->lock);
}

void postcopy_incoming_wait(MigrationIncomingState *mis)
{
    PostcopyIncomingState *pis = mis->postcopy;

    if (pis->listen_running) {
        qemu_thread_join(&pis->listen_thread);
        pis->listen_running = false;
    }
}

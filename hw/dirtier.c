/*
 * x-dirtier: a host thread that writes guest RAM at a set rate while the
 * VM runs, standing in for a vCPU on machines without any, and the
 * software dirty log that lets migration see its writes.
 * Page format and interfaces: include/hw/dirtier.h; use: docs/usage.md;
 * thread and lock: docs/threads.md.
 */
#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "qemu/bitmap.h"
#include "qemu/rcu.h"
#include "qemu/thread.h"
#include "exec/memory.h"
#include "sysemu/runstate.h"
#include "monitor/qmp.h"
#include "hw/dirtier.h"
#include "trace/trace-hw.h"

#define DIRTIER_PAGE_WORDS (TARGET_PAGE_SIZE / sizeof(uint64_t))
/* Writer tick: sleep this long between batches when on schedule. */
#define DIRTIER_TICK_US 1000
/* Most pages one batch writes before it looks at the run flag again. */
#define DIRTIER_BATCH_US 10000
/*
 * A writer that fell further behind than this (stalled on userfaults,
 * or descheduled) forgets the debt instead of bursting to catch up: a
 * vCPU that was blocked does not write faster afterwards either.
 */
#define DIRTIER_MAX_LAG_US 100000
/* How often a stop re-checks whether the writer waits for a missing page. */
#define DIRTIER_STOP_POLL_US 100000

/*
 * Guest RAM is written by an agent outside the program's memory model (a
 * vCPU, here this thread), and read concurrently by migration, which
 * copes with torn pages through the dirty log.  ThreadSanitizer must not
 * see these accesses, as it does not see a vCPU's: the few functions that
 * touch guest RAM are left uninstrumented.
 */
#define DIRTIER_GUEST_ACCESS __attribute__((no_sanitize_thread, noinline))

struct Dirtier {
    DirtierConfig cfg;
    RAMBlock *rb;               /* the block holding the region */
    uint64_t rb_page0;          /* target page of the region's page 0 in rb */
    uint8_t *host;              /* host address of the region's page 0 */
    uint64_t npages;            /* pages in the region, >= 2 */
    SoftDirtyLog log;           /* over all of rb */

    /* Owned by the writer thread. */
    uint64_t prng;              /* page choice (pattern=random) */
    uint64_t sweep_next;        /* next data page (pattern=sweep) */

    QemuThread thread;
    QemuMutex lock;
    QemuCond cond;              /* on lock: run/quit changes, parked */
    bool run;                   /* lock: the VM runs */
    bool quit;                  /* lock: dirtier_destroy */
    bool parked;                /* lock: idle, no write in flight */
    bool exited;                /* lock: the thread returned */

    /* Atomics, read by QMP and the stop handler. */
    uint64_t cur_page;          /* region page being accessed + 1, or 0 */
    uint64_t pages_written;
    uint64_t generation;
};

/*
 * The accelerator's memory ops have no opaque pointer, so the log_sync
 * callback finds the device here; it is also what makes "at most one".
 * Set once the device is complete, cleared before it is freed.
 */
static Dirtier *current_dirtier;

/* --- page format ---------------------------------------------------------- */

uint64_t dirtier_fill_seed(uint64_t gpa, uint64_t gen)
{
    /* splitmix64's finaliser over both inputs: neighbours look unrelated. */
    uint64_t x = gpa ^ (gen * 0x9E3779B97F4A7C15ULL);

    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    x ^= x >> 31;
    return x;
}

static inline uint64_t fill_next(uint64_t *s)
{
    *s = *s * DIRTIER_LCG_MUL + DIRTIER_LCG_ADD;
    return *s ^ (*s >> 32);
}

DIRTIER_GUEST_ACCESS
void dirtier_fill_page(void *page, uint64_t gpa, uint64_t gen)
{
    uint64_t *w = page;
    uint64_t s = dirtier_fill_seed(gpa, gen);

    w[0] = GUINT64_TO_LE(DIRTIER_MAGIC);
    w[1] = GUINT64_TO_LE(gpa);
    w[2] = GUINT64_TO_LE(gen);
    for (size_t i = DIRTIER_HEADER_WORDS; i < DIRTIER_PAGE_WORDS; i++) {
        w[i] = GUINT64_TO_LE(fill_next(&s));
    }
}

bool dirtier_check_page(const void *page, uint64_t gpa, uint64_t *gen,
                        GError **errp)
{
    const uint64_t *w = page;
    uint64_t magic = GUINT64_FROM_LE(w[0]);
    uint64_t addr = GUINT64_FROM_LE(w[1]);
    uint64_t g = GUINT64_FROM_LE(w[2]);
    uint64_t s;

    if (magic != DIRTIER_MAGIC) {
        error_setg(errp, "page 0x%" PRIx64 ": magic 0x%" PRIx64 ", expected "
                   "0x%" PRIx64, gpa, magic, (uint64_t)DIRTIER_MAGIC);
        return false;
    }
    if (addr != gpa) {
        error_setg(errp, "page 0x%" PRIx64 ": carries address 0x%" PRIx64
                   " (misplaced)", gpa, addr);
        return false;
    }
    if (g == 0) {
        error_setg(errp, "page 0x%" PRIx64 ": generation 0", gpa);
        return false;
    }
    s = dirtier_fill_seed(gpa, g);
    for (size_t i = DIRTIER_HEADER_WORDS; i < DIRTIER_PAGE_WORDS; i++) {
        uint64_t want = fill_next(&s);

        if (GUINT64_FROM_LE(w[i]) != want) {
            error_setg(errp, "page 0x%" PRIx64 " generation %" PRIu64 ": "
                       "word %zu is 0x%" PRIx64 ", expected 0x%" PRIx64
                       " (torn or corrupted)", gpa, g, i,
                       GUINT64_FROM_LE(w[i]), want);
            return false;
        }
    }
    *gen = g;
    return true;
}

/* --- software dirty log ------------------------------------------------- */

void soft_dirty_log_init(SoftDirtyLog *log, uint64_t npages)
{
    log->npages = npages;
    log->bits = bitmap_new(npages);
}

void soft_dirty_log_destroy(SoftDirtyLog *log)
{
    g_clear_pointer(&log->bits, g_free);
    log->npages = 0;
}

uint64_t soft_dirty_log_harvest(SoftDirtyLog *log, unsigned long *bmap)
{
    unsigned long nwords = BITS_TO_LONGS(log->npages);
    uint64_t newly = 0;

    for (unsigned long i = 0; i < nwords; i++) {
        unsigned long w;

        /* A cheap read first: most words are clear between syncs. */
        if (!qatomic_read(&log->bits[i])) {
            continue;
        }
        /*
         * The exchange (sequentially consistent) pairs with the writer's
         * set_bit_atomic after its stores: once we hold the bit, the page
         * we will read is at least that new.  A write that ends after the
         * exchange sets its bit again, for the next harvest.
         */
        w = qatomic_xchg(&log->bits[i], 0);
        newly += __builtin_popcountl(w & ~bmap[i]);
        bmap[i] |= w;
    }
    return newly;
}

static bool dirtier_log_start(GError **errp)
{
    /*
     * Nothing to mark: the migration bitmap starts all ones, and marks
     * left from before are harmless (the first sync finds them set).
     */
    trace_dirtier_log_start();
    return true;
}

static void dirtier_log_stop(void)
{
    trace_dirtier_log_stop();
}

static bool dirtier_log_sync(RAMBlock *rb, unsigned long *bmap,
                             uint64_t *num_dirty, GError **errp)
{
    Dirtier *d = qatomic_load_acquire(&current_dirtier);

    *num_dirty = 0;
    if (d && rb == d->rb) {
        *num_dirty = soft_dirty_log_harvest(&d->log, bmap);
        trace_dirtier_log_sync(rb->idstr, *num_dirty);
    }
    return true;
}

static const AccelMemoryOps dirtier_memory_ops = {
    .log_start = dirtier_log_start,
    .log_stop = dirtier_log_stop,
    .log_sync = dirtier_log_sync,
};

/* --- the writer --------------------------------------------------------- */

DIRTIER_GUEST_ACCESS
static uint64_t control_read(const uint8_t *host)
{
    return GUINT64_FROM_LE(*(const uint64_t *)host);
}

DIRTIER_GUEST_ACCESS
static void control_write(uint8_t *host, uint64_t gen)
{
    *(uint64_t *)host = GUINT64_TO_LE(gen);
}

/* xorshift64*: deterministic from the seed, never stuck at zero. */
static uint64_t prng_next(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* A data page, 1..npages-1. */
static uint64_t next_page(Dirtier *d)
{
    uint64_t ndata = d->npages - 1;
    uint64_t p;

    if (d->cfg.pattern == DIRTIER_PATTERN_SWEEP) {
        p = d->sweep_next;
        d->sweep_next = p + 1 < d->npages ? p + 1 : 1;
        return p;
    }
    /* Multiply-high maps 64 random bits onto [0, ndata) without modulo. */
    return 1 + (uint64_t)(((unsigned __int128)prng_next(&d->prng) * ndata)
                          >> 64);
}

static void write_one_page(Dirtier *d, uint64_t *gen)
{
    uint64_t page = next_page(d);
    uint64_t g = ++*gen;

    qatomic_set(&d->cur_page, page + 1);
    dirtier_fill_page(d->host + page * TARGET_PAGE_SIZE,
                      d->cfg.addr + page * TARGET_PAGE_SIZE, g);
    /* After the stores: a sync that takes the bit sees the whole page. */
    soft_dirty_log_mark(&d->log, d->rb_page0 + page);
    qatomic_set(&d->cur_page, 1);
    control_write(d->host, g);
    soft_dirty_log_mark(&d->log, d->rb_page0);
    qatomic_set(&d->cur_page, 0);
    qatomic_set(&d->generation, g);
    qatomic_inc(&d->pages_written);
}

/*
 * Pages due since t0 at the configured rate.  The product stays in
 * 128 bits: rate (bytes/s) times microseconds overflows 64 quickly.
 */
static uint64_t pages_due(const Dirtier *d, int64_t t0, int64_t now)
{
    unsigned __int128 bytes = (unsigned __int128)d->cfg.rate *
                              (uint64_t)(now - t0);

    return (uint64_t)(bytes / (1000000ULL * TARGET_PAGE_SIZE));
}

static uint64_t pages_per_us(const Dirtier *d, uint64_t us)
{
    return MAX(pages_due(d, 0, us), 1);
}

/*
 * The thread runs batches while d->run, and between batches looks at the
 * flag under d->lock; it parks (parked = true, broadcast) only there, so a
 * stopper that saw parked knows that no write is in flight and that every
 * written page has its dirty bit set.
 */
static void *dirtier_thread(void *opaque)
{
    Dirtier *d = opaque;
    uint64_t max_batch = pages_per_us(d, DIRTIER_BATCH_US);
    uint64_t max_lag = pages_per_us(d, DIRTIER_MAX_LAG_US);
    uint64_t gen = 0, done = 0;
    int64_t t0 = 0;

    qemu_mutex_lock(&d->lock);
    while (!d->quit) {
        int64_t now;
        uint64_t due;

        if (!d->run) {
            if (!d->parked) {
                d->parked = true;
                trace_dirtier_park(gen, qatomic_read(&d->pages_written));
                qemu_cond_broadcast(&d->cond);
            }
            qemu_cond_wait(&d->cond, &d->lock);
            continue;
        }
        if (d->parked) {
            /*
             * (Re)start: the counter lives in guest RAM, so a destination
             * continues the source's sequence.  Outside the lock: on a
             * postcopy destination this read may wait for the page.
             */
            d->parked = false;
            qemu_mutex_unlock(&d->lock);
            qatomic_set(&d->cur_page, 1);
            gen = control_read(d->host);
            qatomic_set(&d->cur_page, 0);
            qatomic_set(&d->generation, gen);
            trace_dirtier_start(gen);
            t0 = g_get_monotonic_time();
            done = 0;
            qemu_mutex_lock(&d->lock);
            continue;
        }
        now = g_get_monotonic_time();
        due = pages_due(d, t0, now);
        if (due - done > max_lag) {
            done = due - max_lag;
        }
        if (due > done) {
            uint64_t n = MIN(due - done, max_batch);

            qemu_mutex_unlock(&d->lock);
            for (uint64_t i = 0; i < n; i++) {
                write_one_page(d, &gen);
            }
            done += n;
            qemu_mutex_lock(&d->lock);
            continue;
        }
        /* On schedule: sleep a tick, or less if a stop signals us. */
        qemu_cond_wait_until(&d->cond, &d->lock, now + DIRTIER_TICK_US);
    }
    d->parked = true;
    d->exited = true;
    trace_dirtier_park(gen, qatomic_read(&d->pages_written));
    qemu_cond_broadcast(&d->cond);
    qemu_mutex_unlock(&d->lock);
    return NULL;
}

/*
 * Whether the writer is inside an access to a page this postcopy
 * destination has not received: it then waits in a userfault until the
 * page comes, which may be never (a paused postcopy), and cannot be
 * pulled out of it as a vCPU is kicked out of KVM_RUN.
 */
static bool writer_waits_for_page(Dirtier *d)
{
    uint64_t cur = qatomic_read(&d->cur_page);
    unsigned long *map;
    bool missing;

    if (!cur) {
        return false;
    }
    rcu_read_lock();
    map = rcu_dereference(d->rb->receivedmap);
    missing = map && !test_bit_atomic(d->rb_page0 + cur - 1, map);
    rcu_read_unlock();
    return missing;
}

/*
 * With d->lock held: wait until the thread parked (or, for_exit, returned).
 * False if it is stuck on a page this postcopy destination lacks.
 */
static bool wait_writer(Dirtier *d, bool for_exit)
{
    while (!(for_exit ? d->exited : d->parked)) {
        int64_t end = g_get_monotonic_time() + DIRTIER_STOP_POLL_US;

        if (!qemu_cond_wait_until(&d->cond, &d->lock, end) &&
            !d->parked && writer_waits_for_page(d)) {
            /*
             * Only a postcopy destination gets here, and its RAM is not
             * the source of any migration: the write lands when the page
             * does, and the writer parks right after.  Waiting could
             * block the main loop for the whole postcopy.
             */
            trace_dirtier_stop_unparked(qatomic_read(&d->cur_page) - 1);
            return false;
        }
    }
    return true;
}

static void dirtier_vm_state_change(void *opaque, bool running, RunState s)
{
    Dirtier *d = opaque;

    qemu_mutex_lock(&d->lock);
    d->run = running;
    qemu_cond_broadcast(&d->cond);
    if (!running) {
        /*
         * vm_stop() must return with no write in flight: migration's
         * completion stops the VM and then syncs the dirty log one last
         * time, and a later write would never reach the destination.
         */
        wait_writer(d, false);
    }
    qemu_mutex_unlock(&d->lock);
}

/* --- creation ----------------------------------------------------------- */

static const char *pattern_str(DirtierPattern p)
{
    return p == DIRTIER_PATTERN_SWEEP ? "sweep" : "random";
}

/* The mapping holding all of [gpa, gpa + size), or NULL. */
static const MemoryMapping *find_mapping(uint64_t gpa, uint64_t size)
{
    size_t n;
    const MemoryMapping *maps = memory_mappings(&n);

    for (size_t i = 0; i < n; i++) {
        const MemoryMapping *m = &maps[i];

        if (gpa >= m->gpa && gpa - m->gpa < m->size &&
            size <= m->size - (gpa - m->gpa)) {
            return m;
        }
    }
    return NULL;
}

Dirtier *dirtier_create(const DirtierConfig *cfg, bool has_vcpus,
                        GError **errp)
{
    const MemoryMapping *m;
    Dirtier *d;

    if (has_vcpus) {
        error_setg(errp, "x-dirtier needs a machine without vCPUs: its "
                   "writes would escape KVM's dirty log");
        return NULL;
    }
    if (qatomic_load_acquire(&current_dirtier)) {
        error_setg(errp, "x-dirtier: only one x-dirtier device is supported");
        return NULL;
    }
    if (!cfg->rate || cfg->size < 2 * TARGET_PAGE_SIZE ||
        !QEMU_IS_ALIGNED(cfg->size | cfg->addr, TARGET_PAGE_SIZE)) {
        error_setg(errp, "x-dirtier: rate must be > 0, size a page multiple "
                   "of at least 2 pages, addr page aligned");
        return NULL;
    }
    m = find_mapping(cfg->addr, cfg->size);
    if (!m) {
        error_setg(errp, "x-dirtier: region addr=0x%" PRIx64 ",size=0x%"
                   PRIx64 " is not inside guest RAM", cfg->addr, cfg->size);
        return NULL;
    }
    d = g_new0(Dirtier, 1);
    d->cfg = *cfg;
    d->rb = m->block;
    d->rb_page0 = (m->offset + (cfg->addr - m->gpa)) / TARGET_PAGE_SIZE;
    d->host = ramblock_ptr(m->block, d->rb_page0 * TARGET_PAGE_SIZE);
    d->npages = cfg->size / TARGET_PAGE_SIZE;
    /* xorshift must not start from 0; any other seed is its own stream. */
    d->prng = cfg->seed ? cfg->seed : 0x9E3779B97F4A7C15ULL;
    d->sweep_next = 1;
    d->parked = true;
    soft_dirty_log_init(&d->log, m->block->used_length / TARGET_PAGE_SIZE);
    qemu_mutex_init(&d->lock);
    qemu_cond_init(&d->cond);
    if (!qemu_thread_create(&d->thread, "x-dirtier", dirtier_thread, d,
                            errp)) {
        qemu_cond_destroy(&d->cond);
        qemu_mutex_destroy(&d->lock);
        soft_dirty_log_destroy(&d->log);
        g_free(d);
        return NULL;
    }
    qatomic_store_release(&current_dirtier, d);
    memory_register_accel_ops(&dirtier_memory_ops);
    qemu_add_vm_change_state_handler(dirtier_vm_state_change, d);
    trace_dirtier_create(cfg->addr, cfg->size, cfg->rate,
                         pattern_str(cfg->pattern), m->block->idstr);
    /* Created while the VM already runs (a test): start now. */
    if (runstate_is_running()) {
        dirtier_vm_state_change(d, true, RUN_STATE_RUNNING);
    }
    return d;
}

void dirtier_destroy(Dirtier *d)
{
    bool exited;

    if (!d) {
        return;
    }
    /*
     * The memory ops stay registered: physmem reads them without a lock,
     * and with current_dirtier cleared below they report nothing dirty.
     */
    qemu_del_vm_change_state_handler(dirtier_vm_state_change, d);
    qemu_mutex_lock(&d->lock);
    d->run = false;
    d->quit = true;
    qemu_cond_broadcast(&d->cond);
    exited = wait_writer(d, true);
    qemu_mutex_unlock(&d->lock);
    if (!exited) {
        /*
         * Stuck in a userfault that may never be served (ferry quits in
         * a paused postcopy): leave the thread and its object to exit().
         */
        return;
    }
    qemu_thread_join(&d->thread);
    qatomic_store_release(&current_dirtier, NULL);
    /* log_sync may still be running in a migration thread: RCU-free. */
    synchronize_rcu();
    qemu_cond_destroy(&d->cond);
    qemu_mutex_destroy(&d->lock);
    soft_dirty_log_destroy(&d->log);
    g_free(d);
}

void dirtier_get_info(Dirtier *d, DirtierInfo *info)
{
    bool running;

    qemu_mutex_lock(&d->lock);
    running = !d->parked;
    qemu_mutex_unlock(&d->lock);
    info->pages_written = qatomic_read(&d->pages_written);
    info->generation = qatomic_read(&d->generation);
    info->running = running;
    info->rate = d->cfg.rate;
    info->size = d->cfg.size;
}

/* --- QMP ---------------------------------------------------------------- */

static bool qmp_x_query_dirtier(JsonObject *args, JsonNode **ret,
                                GError **errp)
{
    static const char *const no_args[] = { NULL };
    Dirtier *d = qatomic_load_acquire(&current_dirtier);
    DirtierInfo info;
    JsonObject *o;

    if (!qmp_args_check_known(args, no_args, errp)) {
        return false;
    }
    if (!d) {
        g_set_error(errp, FERRY_ERROR, ERROR_CLASS_DEVICE_NOT_FOUND,
                    "No x-dirtier device (-device x-dirtier,...)");
        return false;
    }
    dirtier_get_info(d, &info);
    o = json_object_new();
    json_object_set_int_member(o, "pages-written", info.pages_written);
    json_object_set_int_member(o, "generation", info.generation);
    json_object_set_boolean_member(o, "running", info.running);
    json_object_set_int_member(o, "rate", info.rate);
    json_object_set_int_member(o, "size", info.size);
    *ret = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(*ret, o);
    return true;
}

void dirtier_register_qmp(void)
{
    qmp_register_command("x-query-dirtier", qmp_x_query_dirtier);
}

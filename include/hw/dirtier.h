/*
 * x-dirtier: a ferry-only workload device that writes guest RAM from a
 * host thread while the VM runs, as a vCPU would, with its own software
 * dirty log.  It lets migrations with a running writer (non-converging
 * precopy, postcopy faults) be tested on machines without vCPUs (none,
 * x-ram), hence without KVM.
 *
 * The region [addr, addr + size) holds:
 *   page 0       control page: bytes 0-7 are a little-endian u64
 *                generation counter, read each time the writer starts and
 *                written back as it advances, so it migrates with RAM;
 *   pages 1..n-1 data pages, each written whole: u64 DIRTIER_MAGIC, u64
 *                guest-physical address of the page, u64 generation (the
 *                counter after its increment), then u64 words from
 *                dirtier_fill_word() seeded by (address, generation).
 * All fields are little-endian, so a page can be checked on its own
 * (dirtier_check_page, tests/functional/dirtier.py).
 */
#ifndef HW_DIRTIER_H
#define HW_DIRTIER_H

#include "qemu/osdep.h"
#include "qemu/bitmap.h"
#include "exec/ramblock.h"

/* "FRRYDIRT" read as little-endian bytes. */
#define DIRTIER_MAGIC 0x5452494459525246ULL
#define DIRTIER_HEADER_WORDS 3

typedef enum DirtierPattern {
    DIRTIER_PATTERN_RANDOM,     /* data pages uniformly at random */
    DIRTIER_PATTERN_SWEEP,      /* data pages in order, wrapping */
} DirtierPattern;

/* -device x-dirtier,rate=R,size=S[,addr=A][,pattern=][,seed=N] */
typedef struct DirtierConfig {
    uint64_t rate;              /* bytes/s, > 0 */
    uint64_t size;              /* bytes, page multiple, >= 2 pages */
    uint64_t addr;              /* guest-physical start, page aligned */
    uint64_t seed;              /* page choice PRNG (pattern=random) */
    DirtierPattern pattern;
} DirtierConfig;

/* --- page format ---------------------------------------------------------- */

/*
 * The PRNG of the fill: a 64-bit LCG (Knuth's MMIX constants) whose output
 * is the state with its high half folded into the low one.  Chosen so the
 * Python checker can recompute a page fast enough (a few integer
 * operations per word), not for quality.
 */
#define DIRTIER_LCG_MUL 6364136223846793005ULL
#define DIRTIER_LCG_ADD 1442695040888963407ULL

/* Initial PRNG state of the page at gpa written with generation gen. */
uint64_t dirtier_fill_seed(uint64_t gpa, uint64_t gen);
/* Write a whole TARGET_PAGE_SIZE data page. */
void dirtier_fill_page(void *page, uint64_t gpa, uint64_t gen);
/*
 * Check a data page: true with *gen set if it is a valid dirtier page for
 * gpa; false with errp naming the first wrong field otherwise.
 */
bool dirtier_check_page(const void *page, uint64_t gpa, uint64_t *gen,
                        GError **errp);

/* --- software dirty log ------------------------------------------------- */

/*
 * One bit per target page of a RAMBlock, set (atomically) by a writer
 * after each page it wrote and moved into a migration bitmap by a sync.
 * Writer and harvester need no lock between them: a bit set after the
 * harvest's exchange of its word stays for the next harvest.
 */
typedef struct SoftDirtyLog {
    unsigned long *bits;
    uint64_t npages;
} SoftDirtyLog;

void soft_dirty_log_init(SoftDirtyLog *log, uint64_t npages);
void soft_dirty_log_destroy(SoftDirtyLog *log);

/* Call after the page's last store: the set publishes it (release). */
static inline void soft_dirty_log_mark(SoftDirtyLog *log, uint64_t page)
{
    set_bit_atomic(page, log->bits);
}

/*
 * Take every bit of the log (atomic exchange per word, so no mark is lost
 * between read and clear) and OR it into bmap (npages bits, owned by the
 * caller); returns how many bits of bmap were newly set.
 */
uint64_t soft_dirty_log_harvest(SoftDirtyLog *log, unsigned long *bmap);

/* --- the device --------------------------------------------------------- */

typedef struct Dirtier Dirtier;

/*
 * Create the device on the current machine: check that the region lies in
 * one RAM mapping, register the software dirty log as the accelerator's
 * memory ops and the run-state handler, and start its thread (parked until
 * the VM runs).  has_vcpus: the machine has vCPUs (refused: KVM's dirty
 * log would not see this thread's writes).  At most one may exist.
 */
Dirtier *dirtier_create(const DirtierConfig *cfg, bool has_vcpus,
                        GError **errp);
/* Park and join the thread, unregister everything, free. */
void dirtier_destroy(Dirtier *d);

typedef struct DirtierInfo {
    uint64_t pages_written;     /* data pages written by this process */
    uint64_t generation;        /* counter as last read or written */
    bool running;               /* writing (not parked) */
    uint64_t rate;
    uint64_t size;
} DirtierInfo;

void dirtier_get_info(Dirtier *d, DirtierInfo *info);

/* QMP x-query-dirtier (DeviceNotFound without the device). */
void dirtier_register_qmp(void);

#endif

/*
 * RAMBlocks: named, contiguous host mappings of guest RAM.  The list is
 * RCU-protected: readers walk it with RAMBLOCK_FOREACH inside
 * rcu_read_lock(); writers hold ram_list.mutex and publish with the rculist
 * primitives.  A RAMBlock is freed only after a grace period.
 */
#ifndef EXEC_RAMBLOCK_H
#define EXEC_RAMBLOCK_H

#include "qemu/osdep.h"
#include "qemu/thread.h"
#include "qemu/rcu.h"

/* flags */
#define RAM_SHARED      (1u << 0)   /* MAP_SHARED mapping (share=on, memfd) */
#define RAM_FILE        (1u << 1)   /* backed by a file in mem-path */
#define RAM_MEMFD       (1u << 2)   /* backed by a memfd */
#define RAM_HUGETLB     (1u << 3)   /* hugetlbfs (file or memfd) */
#define RAM_MIGRATABLE  (1u << 4)   /* part of the migration stream */
#define RAM_PREALLOC    (1u << 5)   /* touched at creation */

typedef enum RAMBackendType {
    RAM_BACKEND_ANON,   /* memory-backend-ram, or the default RAM */
    RAM_BACKEND_MEMFD,  /* memory-backend-memfd */
    RAM_BACKEND_FILE,   /* memory-backend-file */
} RAMBackendType;

/* The -object type that makes such a backend ("memory-backend-memfd"). */
const char *ram_backend_type_name(RAMBackendType type);

typedef struct RAMBackendConfig {
    RAMBackendType type;
    const char *mem_path;   /* FILE: file or directory (hugetlbfs mount) */
    bool share;             /* MAP_SHARED; memfd defaults to on */
    bool prealloc;
    bool hugetlb;           /* MEMFD: MFD_HUGETLB */
    uint64_t hugetlbsize;   /* MEMFD with hugetlb: 0 = default huge size */
} RAMBackendConfig;

typedef struct RAMBlock {
    struct rcu_head rcu;
    struct cds_list_head next;
    char idstr[256];
    uint8_t *host;
    ram_addr_t used_length;
    ram_addr_t max_length;
    size_t page_size;           /* host page size of the backing memory */
    int fd;                     /* -1 for anonymous memory */
    uint32_t flags;

    /*
     * Migration state.  bmap: source dirty bitmap, one bit per target page;
     * receivedmap: destination pages already present.  Both are owned by
     * migration/ram.c and replaced/freed under RCU.
     */
    unsigned long *bmap;
    unsigned long *unsentmap;
    unsigned long *receivedmap;
    /*
     * zeromap (destination): target pages never touched when the load
     * began, hence zero; a ZERO record for one that has not been received
     * since needs neither a read nor a write.  NULL when unknown.
     */
    unsigned long *zeromap;
    /* Accelerator's private data (KVM memslot bookkeeping). */
    void *accel_priv;
} RAMBlock;

typedef struct RAMList {
    QemuMutex mutex;      /* serialises writers */
    struct cds_list_head blocks;
    uint64_t version;           /* bumped on every add/remove/resize */
} RAMList;
extern RAMList ram_list;

#define RAMBLOCK_FOREACH(block) \
    cds_list_for_each_entry_rcu(block, &ram_list.blocks, next)
#define RAMBLOCK_FOREACH_MIGRATABLE(block) \
    RAMBLOCK_FOREACH(block) if (!((block)->flags & RAM_MIGRATABLE)) {} else

/*
 * Allocate a RAMBlock of size bytes with the given backend and add it to the
 * list.  The name must be unique.  Errors name the backend and the reason
 * (no hugetlbfs, size not a multiple of the huge page size, ...).
 */
RAMBlock *qemu_ram_alloc(const char *name, uint64_t size,
                         const RAMBackendConfig *cfg, GError **errp);
/* Remove from the list and free after a grace period. */
void qemu_ram_free(RAMBlock *block);
/*
 * Transparent huge page advice for all migratable RAM: on from creation;
 * an incoming migration turns it off while it writes pages one by one
 * (and postcopy while it discards), then on again.
 */
void qemu_ram_advise_huge(bool on);
/*
 * The transparent huge page size that guest RAM is aligned to (x86-64's
 * PMD size), and advice for one such region of rb (offset aligned to
 * it, inside used_length): false if it does not apply or was refused.
 */
#define RAM_THP_SIZE (2 * 1024 * 1024)
bool qemu_ram_advise_huge_region(RAMBlock *rb, ram_addr_t offset);
/*
 * A bitmap (one bit per target page of used_length) of the pages of a
 * private anonymous block that were never touched (neither present nor
 * swapped, per /proc/self/pagemap) and so read as zero; NULL for other
 * blocks or when pagemap cannot be read.  Reading a page to find out
 * would fault it in.
 */
unsigned long *qemu_ram_untouched_map(RAMBlock *rb);

/* Both must be called inside rcu_read_lock() (or with ram_list.mutex). */
RAMBlock *qemu_ram_block_by_name(const char *name);
RAMBlock *qemu_ram_block_from_host(const void *ptr, ram_addr_t *offset);

static inline size_t qemu_ram_pagesize(const RAMBlock *rb)
{
    return rb->page_size;
}
static inline bool qemu_ram_is_shared(const RAMBlock *rb)
{
    return rb->flags & RAM_SHARED;
}
static inline bool offset_in_ramblock(const RAMBlock *rb, ram_addr_t off)
{
    return rb->host && off < rb->used_length;
}
static inline void *ramblock_ptr(RAMBlock *rb, ram_addr_t off)
{
    return rb->host + off;
}

/* Sum of used_length over migratable blocks. */
uint64_t ram_bytes_total(void);

/*
 * Drop the backing pages of [start, start+len) so the range reads as zero
 * (and faults as missing under userfaultfd): MADV_DONTNEED for private
 * anonymous memory, fallocate(PUNCH_HOLE) for fd-backed memory.  start and
 * len must be multiples of the block's page size.
 */
bool ram_block_discard_range(RAMBlock *rb, uint64_t start, size_t len,
                             GError **errp);

#endif

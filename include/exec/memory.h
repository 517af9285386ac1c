/*
 * The guest-physical address space: RAM mappings of RAMBlock ranges at
 * guest-physical addresses, and the hooks an accelerator installs to mirror
 * them (KVM memslots) and to provide dirty logging.
 */
#ifndef EXEC_MEMORY_H
#define EXEC_MEMORY_H

#include "qemu/osdep.h"
#include "exec/ramblock.h"

typedef struct MemoryMapping {
    hwaddr gpa;
    RAMBlock *block;
    ram_addr_t offset;      /* within block */
    uint64_t size;
} MemoryMapping;

typedef struct AccelMemoryOps {
    /* A new mapping appeared (create a memslot). */
    bool (*region_add)(const MemoryMapping *map, GError **errp);
    /* Start/stop dirty logging on all RAM mappings. */
    bool (*log_start)(GError **errp);
    void (*log_stop)(void);
    /*
     * OR the target pages of rb written since the last sync into bmap (bit
     * n = page at offset n * TARGET_PAGE_SIZE in rb) and re-arm tracking
     * for them.  *num_dirty receives the number of bits that were newly set.
     */
    bool (*log_sync)(RAMBlock *rb, unsigned long *bmap, uint64_t *num_dirty,
                     GError **errp);
} AccelMemoryOps;

void memory_register_accel_ops(const AccelMemoryOps *ops);

/* Map [offset, offset+size) of block at gpa. */
bool memory_map_ram(hwaddr gpa, RAMBlock *block, ram_addr_t offset,
                    uint64_t size, GError **errp);
/* Host pointer for [gpa, gpa+len) if it lies wholly in one mapping. */
void *guest_phys_to_host(hwaddr gpa, uint64_t len);
/* Number and list of mappings (stable after machine init). */
const MemoryMapping *memory_mappings(size_t *count);

/* Without an accelerator these do nothing and report nothing dirty. */
bool memory_global_dirty_log_start(GError **errp);
void memory_global_dirty_log_stop(void);
bool ramblock_sync_dirty_bitmap(RAMBlock *rb, unsigned long *bmap,
                                uint64_t *num_dirty, GError **errp);

#endif

/*
 * Shared by the fuzz targets that load into a real RAMBlock.
 */
#include "qemu/osdep.h"
#include "exec/ramblock.h"
#include "fuzz.h"

#include <sys/mman.h>

void fuzz_guard_ram(RAMBlock *rb)
{
    size_t pg = sysconf(_SC_PAGESIZE);
    uint8_t *area = mmap(NULL, rb->max_length + 2 * pg, PROT_NONE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *moved;

    g_assert(area != MAP_FAILED);
    moved = mremap(rb->host, rb->max_length, rb->max_length,
                   MREMAP_MAYMOVE | MREMAP_FIXED, area + pg);
    g_assert(moved == area + pg);
    rb->host = moved;
}

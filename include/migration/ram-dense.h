/*
 * Dense data into huge pages on the destination.
 *
 * An incoming precopy loads into small pages, so that a sparse guest
 * costs only the pages it has (a huge page clears and holds 2 MiB for a
 * single page).  Dense data then pays a small page's first touch 512
 * times per 2 MiB, which on some hosts costs more than the data.  The
 * advisor turns MADV_HUGEPAGE on for a region before its first write when
 * what is arriving predicts the region dense:
 * - the main stream goes up the addresses in a first pass: after a
 *   region at least half written, its untouched neighbour
 *   (ram_dense_track_page);
 * - a multifd packet whose pages are at least half of the span they
 *   cover: the regions it writes (ram_dense_packet).
 * Only untouched regions (zeromap, receivedmap) are advised, never with
 * postcopy (khugepaged would fill holes userfaultfd must see).  Every run
 * of advised regions splits the RAM's mapping, so runs are capped.
 *
 * Thread safety: the advisor's lock serialises advice; the loader and
 * multifd's receivers call it.
 */
#ifndef MIGRATION_RAM_DENSE_H
#define MIGRATION_RAM_DENSE_H

#include "exec/ramblock.h"

#define RAM_DENSE_REGION_PAGES (RAM_THP_SIZE / TARGET_PAGE_SIZE)
/* a region needs this many pages written to predict the next one dense */
#define RAM_DENSE_MIN_PAGES (RAM_DENSE_REGION_PAGES / 2)
/* runs of advised regions per load: well below vm.max_map_count */
#define RAM_DENSE_MAX_RUNS 1024

typedef struct RAMDenseAdvisor RAMDenseAdvisor;

/* The main stream's view: the region its last data page went to. */
typedef struct RAMDenseTracker {
    RAMBlock *block;
    uint64_t region;
    unsigned pages;
} RAMDenseTracker;

RAMDenseAdvisor *ram_dense_new(void);
void ram_dense_free(RAMDenseAdvisor *d);
/*
 * On at the load's first RAM section when postcopy is not advised; off
 * (and forgotten) at the load's cleanup, once no writer is left.
 */
void ram_dense_enable(RAMDenseAdvisor *d, bool on);
void ram_dense_reset(RAMDenseAdvisor *d);
/* Advise region (of RAM_THP_SIZE) of rb if on, untouched and allowed. */
bool ram_dense_advise(RAMDenseAdvisor *d, RAMBlock *rb, uint64_t region);
/* Before the main stream writes a data page at offset of rb. */
void ram_dense_track_page(RAMDenseAdvisor *d, RAMDenseTracker *t,
                          RAMBlock *rb, uint64_t offset);
/* Before a multifd packet writes its n pages at offsets of rb (d: NULL ok). */
void ram_dense_packet(RAMDenseAdvisor *d, RAMBlock *rb,
                      const uint64_t *offsets, unsigned n);

#endif

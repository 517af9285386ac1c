/*
 * Checker for RAM written by the test guest (tests/guest/guest.asm).
 *
 * The guest splits [start, end) into ncpus slices: with
 * pages = (end - start) / 4096 and per = pages / ncpus, slice i is
 * [start + i * per * 4096, start + (i + 1) * per * 4096), and the last
 * slice ends at end.  CPU i sweeps its slice in ascending page order, sweep
 * s = 1, 2, 3, ..., filling every 64-bit word of the page at address a with
 *
 *     word(s, a) = ((s << 32) | (a >> 12)) ^ (seed * 0x9E3779B97F4A7C15)
 *
 * (64-bit wrapping multiply, seed being 32 bits, little-endian in memory).
 * XOR with the mix is its own inverse, so a word decodes back to its sweep
 * number (high 32 bits) and page index (low 32 bits).
 *
 * A consistent snapshot of a slice therefore reads: sweep v + 1 for a
 * prefix of pages, sweep v for the rest (v = 0 meaning never written, all
 * zero bytes), with at most one torn page at the boundary whose words are a
 * prefix of sweep v + 1 followed by sweep v.
 */
#ifndef TESTS_GUEST_RAMCHECK_H
#define TESTS_GUEST_RAMCHECK_H

#include "qemu/osdep.h"

#define GUEST_SEED_MULT 0x9E3779B97F4A7C15ULL
#define GUEST_PAGE_SIZE 4096ULL
#define GUEST_MAX_CPUS 64
/* How many bad pages a report describes in detail. */
#define GUEST_CHECK_MAX_BAD 8

/* Parameters as the guest printed them ("guest: ncpus=... start=..."). */
typedef struct GuestParams {
    unsigned ncpus;
    uint64_t start;
    uint64_t end;
    uint32_t seed;
    /* Every slice must have completed at least this many sweeps. */
    uint64_t min_sweeps;
} GuestParams;

typedef struct GuestBadPage {
    uint64_t addr;          /* guest-physical address of the page */
    unsigned slice;
    uint64_t expected;      /* word the page should hold at word_index */
    uint64_t found;         /* word it holds there */
    unsigned word_index;    /* first wrong word in the page */
    const char *why;        /* static text */
} GuestBadPage;

typedef struct GuestSliceReport {
    uint64_t start, end;
    uint64_t sweeps_done;   /* v: sweeps completed over the whole slice */
    uint64_t boundary;      /* first page of sweep v (end if none) */
    uint64_t torn_addr;     /* the torn page, or UINT64_MAX */
    uint64_t pages_ok, pages_torn, pages_zero, pages_bad;
} GuestSliceReport;

typedef struct GuestCheckReport {
    bool good;
    unsigned nslices;
    GuestSliceReport slice[GUEST_MAX_CPUS];
    uint64_t pages_ok, pages_torn, pages_zero, pages_bad;
    unsigned nbad;          /* entries filled in bad[] */
    GuestBadPage bad[GUEST_CHECK_MAX_BAD];
} GuestCheckReport;

/* The word every page of sweep s at address addr is filled with. */
static inline uint64_t guest_pattern(uint64_t s, uint64_t addr, uint32_t seed)
{
    return ((s << 32) | ((addr >> 12) & 0xffffffffULL)) ^
           ((uint64_t)seed * GUEST_SEED_MULT);
}

/* Slice i of p (no checking: p must have passed guest_params_validate). */
void guest_slice_bounds(const GuestParams *p, unsigned i,
                        uint64_t *start, uint64_t *end);

/* Reject parameters the guest could not have used. */
bool guest_params_validate(const GuestParams *p, GError **errp);

/*
 * Check a dump of guest-physical [ram_base, ram_base + len).  Returns true
 * and rep->good = true if every slice is consistent.  Returns false with
 * rep->good = false and errp set to a one-line summary if pages are bad
 * (rep describes them); returns false with errp set and rep->nslices = 0 if
 * the check could not run (bad parameters, slices outside the dump).
 */
bool guest_ram_check(const uint8_t *ram, uint64_t ram_base, uint64_t len,
                     const GuestParams *p, GuestCheckReport *rep,
                     GError **errp);

/* Human-readable report. */
void guest_check_report_print(const GuestCheckReport *rep, FILE *out);
/* Report as a JSON object (newly allocated string). */
char *guest_check_report_json(const GuestCheckReport *rep);

#endif

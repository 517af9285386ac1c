/*
 * Bitmaps of unsigned long words, bit n of the map is bit (n % BITS_PER_LONG)
 * of word n / BITS_PER_LONG.  Scans go a word at a time.
 */
#ifndef QEMU_BITMAP_H
#define QEMU_BITMAP_H

#include "qemu/osdep.h"
#include "qemu/atomic.h"

#define BITS_PER_LONG (sizeof(unsigned long) * 8)
#define BITS_TO_LONGS(nr) DIV_ROUND_UP((nr), BITS_PER_LONG)
#define BIT_WORD(nr) ((nr) / BITS_PER_LONG)
#define BIT_MASK(nr) (1UL << ((nr) % BITS_PER_LONG))

unsigned long *bitmap_new(unsigned long nbits);       /* zeroed, g_free() */
unsigned long *bitmap_new_full(unsigned long nbits);  /* all ones */
void bitmap_zero(unsigned long *map, unsigned long nbits);
void bitmap_fill(unsigned long *map, unsigned long nbits);
void bitmap_copy(unsigned long *dst, const unsigned long *src,
                 unsigned long nbits);

static inline bool test_bit(unsigned long nr, const unsigned long *map)
{
    return (map[BIT_WORD(nr)] >> (nr % BITS_PER_LONG)) & 1;
}
static inline void set_bit(unsigned long nr, unsigned long *map)
{
    map[BIT_WORD(nr)] |= BIT_MASK(nr);
}
static inline void clear_bit(unsigned long nr, unsigned long *map)
{
    map[BIT_WORD(nr)] &= ~BIT_MASK(nr);
}
/* Atomic variants, for maps shared between threads. */
static inline bool test_bit_atomic(unsigned long nr, const unsigned long *map)
{
    return (qatomic_read(&map[BIT_WORD(nr)]) >> (nr % BITS_PER_LONG)) & 1;
}
void set_bit_atomic(unsigned long nr, unsigned long *map);
void clear_bit_atomic(unsigned long nr, unsigned long *map);
/* Atomically clear; return whether the bit was set. */
bool test_and_clear_bit_atomic(unsigned long nr, unsigned long *map);
bool test_and_set_bit_atomic(unsigned long nr, unsigned long *map);

void bitmap_set(unsigned long *map, unsigned long start, unsigned long nr);
void bitmap_clear(unsigned long *map, unsigned long start, unsigned long nr);
void bitmap_set_atomic(unsigned long *map, unsigned long start,
                       unsigned long nr);
void bitmap_clear_atomic(unsigned long *map, unsigned long start,
                         unsigned long nr);
/* Number of set bits in [0, nbits). */
unsigned long bitmap_count_one(const unsigned long *map, unsigned long nbits);
unsigned long bitmap_count_one_range(const unsigned long *map,
                                     unsigned long start, unsigned long nr);
bool bitmap_empty(const unsigned long *map, unsigned long nbits);
bool bitmap_full(const unsigned long *map, unsigned long nbits);
bool bitmap_equal(const unsigned long *a, const unsigned long *b,
                  unsigned long nbits);
/* dst = a | b, dst = a & ~b over nbits. */
void bitmap_or(unsigned long *dst, const unsigned long *a,
               const unsigned long *b, unsigned long nbits);
void bitmap_andnot(unsigned long *dst, const unsigned long *a,
                   const unsigned long *b, unsigned long nbits);

/*
 * Bits [64 i, 64 i + 64) as one value (bit 0 = bit 64 i), whatever the
 * word size: the wire form of a bitmap (RECV_BITMAP).  The map must
 * extend to a whole 64-bit boundary (bitmap_new rounds up to longs).
 */
static inline uint64_t bitmap_get_u64(const unsigned long *map, uint64_t i)
{
    uint64_t w = 0;

    for (unsigned k = 0; k < 64 / BITS_PER_LONG; k++) {
        w |= (uint64_t)map[i * (64 / BITS_PER_LONG) + k] <<
             (k * BITS_PER_LONG);
    }
    return w;
}

/* First set (zero) bit at or after offset, or size if there is none. */
unsigned long find_next_bit(const unsigned long *map, unsigned long size,
                            unsigned long offset);
unsigned long find_next_zero_bit(const unsigned long *map, unsigned long size,
                                 unsigned long offset);
static inline unsigned long find_first_bit(const unsigned long *map,
                                           unsigned long size)
{
    return find_next_bit(map, size, 0);
}

#endif

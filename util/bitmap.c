/*
 * Bitmaps of unsigned long words.
 *
 * Range operations handle a partial first word, whole middle words and a
 * partial last word, so long runs cost one store per 64 bits.
 */
#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "qemu/bitmap.h"

/* Mask of the bits of a word at and above bit (start % BITS_PER_LONG). */
static inline unsigned long first_word_mask(unsigned long start)
{
    return ~0UL << (start % BITS_PER_LONG);
}

/* Mask of the bits of the last word that lie below nbits. */
static inline unsigned long last_word_mask(unsigned long nbits)
{
    return ~0UL >> (-nbits % BITS_PER_LONG);
}

unsigned long *bitmap_new(unsigned long nbits)
{
    return g_new0(unsigned long, MAX(BITS_TO_LONGS(nbits), 1));
}

unsigned long *bitmap_new_full(unsigned long nbits)
{
    unsigned long *map = bitmap_new(nbits);

    bitmap_fill(map, nbits);
    return map;
}

void bitmap_zero(unsigned long *map, unsigned long nbits)
{
    memset(map, 0, BITS_TO_LONGS(nbits) * sizeof(unsigned long));
}

void bitmap_fill(unsigned long *map, unsigned long nbits)
{
    unsigned long n = BITS_TO_LONGS(nbits);

    if (!n) {
        return;
    }
    memset(map, 0xff, n * sizeof(unsigned long));
    /* Keep the bits past nbits clear so counts and compares stay exact. */
    map[n - 1] &= last_word_mask(nbits);
}

void bitmap_copy(unsigned long *dst, const unsigned long *src,
                 unsigned long nbits)
{
    memcpy(dst, src, BITS_TO_LONGS(nbits) * sizeof(unsigned long));
}

void set_bit_atomic(unsigned long nr, unsigned long *map)
{
    qatomic_fetch_or(&map[BIT_WORD(nr)], BIT_MASK(nr));
}

void clear_bit_atomic(unsigned long nr, unsigned long *map)
{
    qatomic_fetch_and(&map[BIT_WORD(nr)], ~BIT_MASK(nr));
}

bool test_and_clear_bit_atomic(unsigned long nr, unsigned long *map)
{
    unsigned long mask = BIT_MASK(nr);
    unsigned long *p = &map[BIT_WORD(nr)];

    /* Skip the locked RMW when the bit is already clear: the common case. */
    if (!(qatomic_read(p) & mask)) {
        return false;
    }
    return qatomic_fetch_and(p, ~mask) & mask;
}

bool test_and_set_bit_atomic(unsigned long nr, unsigned long *map)
{
    unsigned long mask = BIT_MASK(nr);

    return qatomic_fetch_or(&map[BIT_WORD(nr)], mask)
           & mask;
}

/*
 * Apply op to the words covering [start, start + nr): op receives a
 * word pointer and the mask of bits in range within that word.
 */
#define BITMAP_RANGE_APPLY(map, start, nr, OP)                          \
    do {                                                                \
        unsigned long *p_ = (map) + BIT_WORD(start);                    \
        unsigned long end_ = (start) + (nr);                            \
        unsigned long mask_ = first_word_mask(start);                   \
        long left_ = (long)(nr);                                        \
        long room_ = BITS_PER_LONG - ((start) % BITS_PER_LONG);         \
        if (!(nr)) {                                                    \
            break;                                                      \
        }                                                               \
        while (left_ >= room_) {                                        \
            OP(p_, mask_);                                              \
            left_ -= room_;                                             \
            room_ = BITS_PER_LONG;                                      \
            mask_ = ~0UL;                                               \
            p_++;                                                       \
        }                                                               \
        if (left_) {                                                    \
            mask_ &= last_word_mask(end_);                              \
            OP(p_, mask_);                                              \
        }                                                               \
    } while (0)

#define OP_SET(p, m)        (*(p) |= (m))
#define OP_CLEAR(p, m)      (*(p) &= ~(m))
#define OP_SET_ATOMIC(p, m) \
    ((m) == ~0UL ? qatomic_mb_set((p), ~0UL) \
                 : (void)qatomic_fetch_or((p), (m)))
#define OP_CLEAR_ATOMIC(p, m) \
    ((m) == ~0UL ? qatomic_mb_set((p), 0UL) \
                 : (void)qatomic_fetch_and((p), ~(m)))

void bitmap_set(unsigned long *map, unsigned long start, unsigned long nr)
{
    BITMAP_RANGE_APPLY(map, start, nr, OP_SET);
}

void bitmap_clear(unsigned long *map, unsigned long start, unsigned long nr)
{
    BITMAP_RANGE_APPLY(map, start, nr, OP_CLEAR);
}

void bitmap_set_atomic(unsigned long *map, unsigned long start,
                       unsigned long nr)
{
    BITMAP_RANGE_APPLY(map, start, nr, OP_SET_ATOMIC);
}

void bitmap_clear_atomic(unsigned long *map, unsigned long start,
                         unsigned long nr)
{
    BITMAP_RANGE_APPLY(map, start, nr, OP_CLEAR_ATOMIC);
}

unsigned long bitmap_count_one(const unsigned long *map, unsigned long nbits)
{
    return bitmap_count_one_range(map, 0, nbits);
}

unsigned long bitmap_count_one_range(const unsigned long *map,
                                     unsigned long start, unsigned long nr)
{
    unsigned long count = 0;

#define OP_COUNT(p, m) (count += __builtin_popcountl(*(p) & (m)))
    BITMAP_RANGE_APPLY((unsigned long *)map, start, nr, OP_COUNT);
#undef OP_COUNT
    return count;
}

bool bitmap_empty(const unsigned long *map, unsigned long nbits)
{
    return find_next_bit(map, nbits, 0) >= nbits;
}

bool bitmap_full(const unsigned long *map, unsigned long nbits)
{
    return find_next_zero_bit(map, nbits, 0) >= nbits;
}

bool bitmap_equal(const unsigned long *a, const unsigned long *b,
                  unsigned long nbits)
{
    unsigned long full = nbits / BITS_PER_LONG;
    unsigned long i;

    for (i = 0; i < full; i++) {
        if (a[i] != b[i]) {
            return false;
        }
    }
    if (nbits % BITS_PER_LONG) {
        return !((a[full] ^ b[full]) & last_word_mask(nbits));
    }
    return true;
}

void bitmap_or(unsigned long *dst, const unsigned long *a,
               const unsigned long *b, unsigned long nbits)
{
    unsigned long i, n = BITS_TO_LONGS(nbits);

    for (i = 0; i < n; i++) {
        dst[i] = a[i] | b[i];
    }
}

void bitmap_andnot(unsigned long *dst, const unsigned long *a,
                   const unsigned long *b, unsigned long nbits)
{
    unsigned long i, n = BITS_TO_LONGS(nbits);

    for (i = 0; i < n; i++) {
        dst[i] = a[i] & ~b[i];
    }
}

/*
 * Shared scan: invert is 0 to look for set bits, ~0UL to look for clear
 * bits, so one loop serves both searches.
 */
static unsigned long find_next(const unsigned long *map, unsigned long size,
                               unsigned long offset, unsigned long invert)
{
    unsigned long idx, word;

    if (offset >= size) {
        return size;
    }
    idx = BIT_WORD(offset);
    word = (map[idx] ^ invert) & first_word_mask(offset);
    while (!word) {
        idx++;
        if (idx * BITS_PER_LONG >= size) {
            return size;
        }
        word = map[idx] ^ invert;
    }
    offset = idx * BITS_PER_LONG + __builtin_ctzl(word);
    return MIN(offset, size);
}

unsigned long find_next_bit(const unsigned long *map, unsigned long size,
                            unsigned long offset)
{
    return find_next(map, size, offset, 0);
}

unsigned long find_next_zero_bit(const unsigned long *map, unsigned long size,
                                 unsigned long offset)
{
    return find_next(map, size, offset, ~0UL);
}

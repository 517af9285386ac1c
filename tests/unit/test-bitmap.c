/*
 * Bitmap operations, checked against a bit-by-bit model.
 */
#include "qemu/osdep.h"
#include "qemu/bitmap.h"
#include "qemu/cutils.h"

bool buffer_is_zero_impl(int impl, const void *buf, size_t len);

/* Reference: the slowest possible scan. */
static unsigned long ref_next(const unsigned long *map, unsigned long size,
                              unsigned long off, bool want)
{
    for (; off < size; off++) {
        if (test_bit(off, map) == want) {
            return off;
        }
    }
    return size;
}

static void test_new_fill_zero(void)
{
    unsigned long sizes[] = { 1, 63, 64, 65, 127, 128, 129, 1000 };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(sizes); i++) {
        unsigned long n = sizes[i];
        g_autofree unsigned long *z = bitmap_new(n);
        g_autofree unsigned long *f = bitmap_new_full(n);

        g_assert_true(bitmap_empty(z, n));
        g_assert_false(bitmap_full(z, n));
        g_assert_true(bitmap_full(f, n));
        g_assert_cmpuint(bitmap_count_one(f, n), ==, n);
        /* The padding past n must stay clear. */
        if (n % BITS_PER_LONG) {
            g_assert_cmpuint(f[BITS_TO_LONGS(n) - 1] >> (n % BITS_PER_LONG),
                             ==, 0);
        }
        bitmap_zero(f, n);
        g_assert_true(bitmap_empty(f, n));
        bitmap_fill(z, n);
        bitmap_fill(f, n);
        g_assert_true(bitmap_equal(z, f, n));
        g_assert_cmpuint(bitmap_count_one(z, n), ==, n);
        clear_bit(n - 1, z);
        g_assert_false(bitmap_equal(z, f, n));
        g_assert_false(bitmap_full(z, n));
        g_assert_cmpuint(find_next_zero_bit(z, n, 0), ==, n - 1);
    }
}

static void test_set_clear_ranges(void)
{
    const unsigned long n = 300;
    unsigned long start, len;

    for (start = 0; start < 140; start += 7) {
        for (len = 0; start + len <= n; len += 13) {
            g_autofree unsigned long *m = bitmap_new(n);
            g_autofree unsigned long *a = bitmap_new(n);
            unsigned long i;

            bitmap_set(m, start, len);
            bitmap_set_atomic(a, start, len);
            for (i = 0; i < n; i++) {
                bool in = i >= start && i < start + len;
                g_assert_cmpint(test_bit(i, m), ==, in);
                g_assert_cmpint(test_bit(i, a), ==, in);
            }
            g_assert_cmpuint(bitmap_count_one(m, n), ==, len);
            g_assert_cmpuint(bitmap_count_one_range(m, start, len), ==, len);
            if (start > 0) {
                g_assert_cmpuint(bitmap_count_one_range(m, 0, start), ==, 0);
            }
            g_assert_true(bitmap_equal(m, a, n));

            bitmap_fill(m, n);
            bitmap_fill(a, n);
            bitmap_clear(m, start, len);
            bitmap_clear_atomic(a, start, len);
            for (i = 0; i < n; i++) {
                bool in = i >= start && i < start + len;
                g_assert_cmpint(test_bit(i, m), ==, !in);
            }
            g_assert_true(bitmap_equal(m, a, n));
            g_assert_cmpuint(bitmap_count_one(m, n), ==, n - len);
        }
    }
}

static void test_find(void)
{
    const unsigned long n = 517;
    g_autofree unsigned long *m = bitmap_new(n);
    unsigned long i, off;
    GRand *r = g_rand_new_with_seed(42);
    int round;

    g_assert_cmpuint(find_first_bit(m, n), ==, n);
    g_assert_cmpuint(find_next_zero_bit(m, n, 0), ==, 0);
    for (round = 0; round < 20; round++) {
        bitmap_zero(m, n);
        for (i = 0; i < (unsigned long)round * 5; i++) {
            set_bit(g_rand_int_range(r, 0, n), m);
        }
        if (round == 19) {
            bitmap_fill(m, n);
            clear_bit(n - 1, m);
        }
        for (off = 0; off <= n + 2; off++) {
            g_assert_cmpuint(find_next_bit(m, n, off), ==,
                             ref_next(m, n, off, true));
            g_assert_cmpuint(find_next_zero_bit(m, n, off), ==,
                             ref_next(m, n, off, false));
        }
    }
    g_rand_free(r);

    /* A bit past size (in the padding) must not be reported. */
    bitmap_zero(m, n);
    m[BITS_TO_LONGS(n) - 1] |= 1UL << 63;
    g_assert_cmpuint(find_next_bit(m, n, 0), ==, n);
}

static void test_atomic_single(void)
{
    g_autofree unsigned long *m = bitmap_new(200);

    g_assert_false(test_and_set_bit_atomic(130, m));
    g_assert_true(test_and_set_bit_atomic(130, m));
    g_assert_true(test_bit(130, m));
    g_assert_true(test_and_clear_bit_atomic(130, m));
    g_assert_false(test_and_clear_bit_atomic(130, m));
    set_bit_atomic(5, m);
    g_assert_true(test_bit(5, m));
    clear_bit_atomic(5, m);
    g_assert_true(bitmap_empty(m, 200));
}

typedef struct SetterArg {
    unsigned long *map;
    int parity;
} SetterArg;

static gpointer setter(gpointer opaque)
{
    SetterArg *a = opaque;
    unsigned long i;

    for (i = a->parity; i < 100000; i += 2) {
        set_bit_atomic(i, a->map);
    }
    return NULL;
}

/* Two threads set interleaved bits of the same words: none may be lost. */
static void test_atomic_threads(void)
{
    g_autofree unsigned long *m = bitmap_new(100000);
    SetterArg a = { m, 0 }, b = { m, 1 };
    GThread *t1 = g_thread_new("s0", setter, &a);
    GThread *t2 = g_thread_new("s1", setter, &b);

    g_thread_join(t1);
    g_thread_join(t2);
    g_assert_true(bitmap_full(m, 100000));
}

static void test_or_andnot_equal(void)
{
    const unsigned long n = 130;
    g_autofree unsigned long *a = bitmap_new(n);
    g_autofree unsigned long *b = bitmap_new(n);
    g_autofree unsigned long *d = bitmap_new(n);

    bitmap_set(a, 0, 70);
    bitmap_set(b, 60, 70);
    bitmap_or(d, a, b, n);
    g_assert_true(bitmap_full(d, n));
    bitmap_andnot(d, a, b, n);
    g_assert_cmpuint(bitmap_count_one(d, n), ==, 60);
    g_assert_cmpuint(find_next_zero_bit(d, n, 0), ==, 60);
    bitmap_copy(d, a, n);
    g_assert_true(bitmap_equal(d, a, n));
    /* Differences in the padding do not count. */
    d[BITS_TO_LONGS(n) - 1] |= 1UL << 60;
    g_assert_true(bitmap_equal(d, a, n));
    clear_bit(3, d);
    g_assert_false(bitmap_equal(d, a, n));
}

static void test_buffer_is_zero(void)
{
    size_t lens[] = { 0, 1, 7, 8, 15, 16, 31, 33, 63, 64, 65, 100, 127,
                      128, 129, 4095, 4096, 4097, 65536 };
    g_autofree uint8_t *buf = g_malloc0(65536 + 64);
    size_t i, align, pos;
    int impl;

    for (i = 0; i < ARRAY_SIZE(lens); i++) {
        for (align = 0; align < 3; align++) {
            uint8_t *p = buf + align * 7;
            size_t len = lens[i];
            size_t probes[] = { 0, 1, len / 2, len - 9, len - 1 };
            size_t k;

            g_assert_true(buffer_is_zero(p, len));
            for (impl = 0; impl < 3; impl++) {
                g_assert_true(buffer_is_zero_impl(impl, p, len));
            }
            for (k = 0; len && k < ARRAY_SIZE(probes); k++) {
                pos = probes[k];
                if (pos >= len) {
                    continue;
                }
                p[pos] = 0x10;
                g_assert_false(buffer_is_zero(p, len));
                for (impl = 0; impl < 3; impl++) {
                    g_assert_false(buffer_is_zero_impl(impl, p, len));
                }
                p[pos] = 0;
            }
            /* A byte just outside the range must not matter. */
            p[len] = 1;
            g_assert_true(buffer_is_zero(p, len));
            p[len] = 0;
        }
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/bitmap/new-fill-zero", test_new_fill_zero);
    g_test_add_func("/bitmap/set-clear-ranges", test_set_clear_ranges);
    g_test_add_func("/bitmap/find", test_find);
    g_test_add_func("/bitmap/atomic-single", test_atomic_single);
    g_test_add_func("/bitmap/atomic-threads", test_atomic_threads);
    g_test_add_func("/bitmap/or-andnot-equal", test_or_andnot_equal);
    g_test_add_func("/bufferiszero/all", test_buffer_is_zero);
    return g_test_run();
}

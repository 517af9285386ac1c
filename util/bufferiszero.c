/*
 * Zero-page detection, on the migration hot path (one call per 4 KiB page).
 *
 * Non-zero pages usually differ near their start, so every variant looks
 * at the first and last bytes before scanning; the scan ORs several
 * vectors together and tests once per chunk to keep branches rare.
 */
#include "qemu/osdep.h"
#include "qemu/cutils.h"

#ifdef __x86_64__
#include <immintrin.h>
#endif

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, sizeof(v));
    return v;
}

static bool buffer_zero_scalar(const uint8_t *p, size_t len)
{
    size_t i;

    if (len < 8) {
        for (i = 0; i < len; i++) {
            if (p[i]) {
                return false;
            }
        }
        return true;
    }
    if (load64(p) | load64(p + len - 8)) {
        return false;
    }
    /* Four words per iteration; the unaligned tail is already checked. */
    for (i = 8; i + 32 <= len; i += 32) {
        if (load64(p + i) | load64(p + i + 8) |
            load64(p + i + 16) | load64(p + i + 24)) {
            return false;
        }
    }
    for (; i + 8 <= len; i += 8) {
        if (load64(p + i)) {
            return false;
        }
    }
    return true;
}

#ifdef __x86_64__

/* SSE2 is part of x86-64, so this needs no run-time check. */
static bool buffer_zero_sse2(const uint8_t *p, size_t len)
{
    const __m128i *v, *end;
    __m128i t;

    t = _mm_or_si128(_mm_loadu_si128((const __m128i *)p),
                     _mm_loadu_si128((const __m128i *)(p + len - 16)));
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(t, _mm_setzero_si128())) != 0xffff) {
        return false;
    }
    /* Aligned body; the partial vectors at both ends were tested above. */
    v = (const __m128i *)(((uintptr_t)p + 16) & ~(uintptr_t)15);
    end = (const __m128i *)(((uintptr_t)p + len) & ~(uintptr_t)15);
    for (; v + 4 <= end; v += 4) {
        t = _mm_or_si128(_mm_or_si128(v[0], v[1]), _mm_or_si128(v[2], v[3]));
        if (_mm_movemask_epi8(_mm_cmpeq_epi8(t, _mm_setzero_si128()))
            != 0xffff) {
            return false;
        }
    }
    t = _mm_setzero_si128();
    for (; v < end; v++) {
        t = _mm_or_si128(t, v[0]);
    }
    return _mm_movemask_epi8(_mm_cmpeq_epi8(t, _mm_setzero_si128())) == 0xffff;
}

__attribute__((target("avx2")))
static bool buffer_zero_avx2(const uint8_t *p, size_t len)
{
    const __m256i *v, *end;
    __m256i t;

    t = _mm256_or_si256(_mm256_loadu_si256((const __m256i *)p),
                        _mm256_loadu_si256((const __m256i *)(p + len - 32)));
    if (!_mm256_testz_si256(t, t)) {
        return false;
    }
    v = (const __m256i *)(((uintptr_t)p + 32) & ~(uintptr_t)31);
    end = (const __m256i *)(((uintptr_t)p + len) & ~(uintptr_t)31);
    for (; v + 4 <= end; v += 4) {
        t = _mm256_or_si256(_mm256_or_si256(v[0], v[1]),
                            _mm256_or_si256(v[2], v[3]));
        if (!_mm256_testz_si256(t, t)) {
            return false;
        }
    }
    t = _mm256_setzero_si256();
    for (; v < end; v++) {
        t = _mm256_or_si256(t, v[0]);
    }
    return _mm256_testz_si256(t, t);
}

typedef bool (*BufferZeroFn)(const uint8_t *p, size_t len);
static BufferZeroFn buffer_zero_vector = buffer_zero_sse2;
/* Below this the vector set-up does not pay for itself. */
static size_t vector_min_len = 64;

__attribute__((constructor))
static void buffer_zero_select(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        buffer_zero_vector = buffer_zero_avx2;
        vector_min_len = 128;
    }
}

bool buffer_is_zero(const void *buf, size_t len)
{
    const uint8_t *p = buf;

    if (len < vector_min_len) {
        return buffer_zero_scalar(p, len);
    }
    /* Cheap early exit before entering the vector loop. */
    if (p[0] | p[len - 1]) {
        return false;
    }
    return buffer_zero_vector(p, len);
}

/* For tests: run a specific implementation (0 scalar, 1 SSE2, 2 AVX2). */
bool buffer_is_zero_impl(int impl, const void *buf, size_t len);
bool buffer_is_zero_impl(int impl, const void *buf, size_t len)
{
    switch (impl) {
    case 1:
        return len >= 16 ? buffer_zero_sse2(buf, len)
                         : buffer_zero_scalar(buf, len);
    case 2:
        if (!__builtin_cpu_supports("avx2")) {
            return buffer_zero_scalar(buf, len);
        }
        return len >= 32 ? buffer_zero_avx2(buf, len)
                         : buffer_zero_scalar(buf, len);
    default:
        return buffer_zero_scalar(buf, len);
    }
}

#else

bool buffer_is_zero(const void *buf, size_t len)
{
    return buffer_zero_scalar(buf, len);
}

bool buffer_is_zero_impl(int impl, const void *buf, size_t len);
bool buffer_is_zero_impl(int impl, const void *buf, size_t len)
{
    return buffer_zero_scalar(buf, len);
}

#endif

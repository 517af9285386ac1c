/*
 * Atomic operations: thin macros over GCC's __atomic builtins, which
 * ThreadSanitizer understands (unlike inline assembly or volatile).
 * Names and return values follow QEMU's qemu/atomic.h so code moves
 * between the trees unchanged.
 */
#ifndef QEMU_ATOMIC_H
#define QEMU_ATOMIC_H

/* Relaxed: atomicity only, no ordering with other memory accesses. */
#define qatomic_read(ptr)       __atomic_load_n(ptr, __ATOMIC_RELAXED)
#define qatomic_set(ptr, i)     __atomic_store_n(ptr, i, __ATOMIC_RELAXED)

/* Sequentially consistent, like g_atomic_int_get/set (QEMU's old names). */
#define qatomic_mb_read(ptr)    __atomic_load_n(ptr, __ATOMIC_SEQ_CST)
#define qatomic_mb_set(ptr, i)  __atomic_store_n(ptr, i, __ATOMIC_SEQ_CST)

#define qatomic_load_acquire(ptr)    __atomic_load_n(ptr, __ATOMIC_ACQUIRE)
#define qatomic_store_release(ptr, i) \
    __atomic_store_n(ptr, i, __ATOMIC_RELEASE)

/* Read-modify-write operations are sequentially consistent, as in QEMU. */
#define qatomic_xchg(ptr, i)    __atomic_exchange_n(ptr, i, __ATOMIC_SEQ_CST)

/* Returns the value *ptr had: the swap happened iff it equals old. */
#define qatomic_cmpxchg(ptr, old, new)                                  \
    ({                                                                  \
        __typeof__(*(ptr)) _qa_old = (old);                             \
        (void)__atomic_compare_exchange_n(ptr, &_qa_old, new, false,    \
                                          __ATOMIC_SEQ_CST,             \
                                          __ATOMIC_SEQ_CST);            \
        _qa_old;                                                        \
    })

/* These return the value before the operation. */
#define qatomic_fetch_add(ptr, n) __atomic_fetch_add(ptr, n, __ATOMIC_SEQ_CST)
#define qatomic_fetch_sub(ptr, n) __atomic_fetch_sub(ptr, n, __ATOMIC_SEQ_CST)
#define qatomic_fetch_or(ptr, n)  __atomic_fetch_or(ptr, n, __ATOMIC_SEQ_CST)
#define qatomic_fetch_and(ptr, n) __atomic_fetch_and(ptr, n, __ATOMIC_SEQ_CST)

/* These return the value after the operation. */
#define qatomic_add_fetch(ptr, n) __atomic_add_fetch(ptr, n, __ATOMIC_SEQ_CST)
#define qatomic_sub_fetch(ptr, n) __atomic_sub_fetch(ptr, n, __ATOMIC_SEQ_CST)

#define qatomic_fetch_inc(ptr)  qatomic_fetch_add(ptr, 1)
#define qatomic_fetch_dec(ptr)  qatomic_fetch_sub(ptr, 1)
#define qatomic_inc(ptr)        ((void)qatomic_fetch_add(ptr, 1))
#define qatomic_dec(ptr)        ((void)qatomic_fetch_sub(ptr, 1))
#define qatomic_add(ptr, n)     ((void)qatomic_fetch_add(ptr, n))
#define qatomic_sub(ptr, n)     ((void)qatomic_fetch_sub(ptr, n))

/* Full barrier; the acquire/release pair below for one-way ordering. */
#define smp_mb()                __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define smp_mb_acquire()        __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define smp_mb_release()        __atomic_thread_fence(__ATOMIC_RELEASE)

#endif

/*
 * QemuMutex, QemuCond and the qatomic_* macros.
 */
#include "qemu/osdep.h"
#include "qemu/thread.h"
#include "qemu/atomic.h"

#define NTHREADS 4
#define ITERATIONS 20000

typedef struct Shared {
    QemuMutex lock;
    QemuCond cond;
    long counter;               /* under lock */
    int atomic_counter;
    bool ready;                 /* under lock */
} Shared;

static void *contend(void *opaque)
{
    Shared *s = opaque;
    int i;

    for (i = 0; i < ITERATIONS; i++) {
        qemu_mutex_lock(&s->lock);
        /* Non-atomic read-modify-write: a broken lock loses updates. */
        s->counter = s->counter + 1;
        qemu_mutex_unlock(&s->lock);
        qatomic_inc(&s->atomic_counter);
    }
    return NULL;
}

static void test_mutex_contention(void)
{
    Shared s = { 0 };
    QemuThread th[NTHREADS];
    int i;

    qemu_mutex_init(&s.lock);
    for (i = 0; i < NTHREADS; i++) {
        g_assert_true(qemu_thread_create(&th[i], "contend", contend, &s,
                                         NULL));
    }
    for (i = 0; i < NTHREADS; i++) {
        qemu_thread_join(&th[i]);
    }
    g_assert_cmpint(s.counter, ==, NTHREADS * ITERATIONS);
    g_assert_cmpint(qatomic_read(&s.atomic_counter), ==,
                    NTHREADS * ITERATIONS);
    qemu_mutex_destroy(&s.lock);
}

static void test_trylock_guard(void)
{
    static QemuMutex m = QEMU_MUTEX_INITIALIZER;
    int i;

    g_assert_cmpint(qemu_mutex_trylock(&m), ==, 0);
    qemu_mutex_unlock(&m);
    {
        QEMU_LOCK_GUARD(&m);
        g_assert_cmpint(qemu_mutex_trylock(&m), ==, EBUSY);
    }
    g_assert_cmpint(qemu_mutex_trylock(&m), ==, 0);
    qemu_mutex_unlock(&m);
    for (i = 0; i < 3; i++) {
        WITH_QEMU_LOCK_GUARD(&m) {
            g_assert_cmpint(qemu_mutex_trylock(&m), ==, EBUSY);
            if (i == 1) {
                break;          /* leaving early must unlock too */
            }
        }
        g_assert_cmpint(qemu_mutex_trylock(&m), ==, 0);
        qemu_mutex_unlock(&m);
    }
}

static void test_cond_timeout(void)
{
    Shared s = { 0 };
    int64_t start, elapsed;

    qemu_mutex_init(&s.lock);
    qemu_cond_init(&s.cond);
    qemu_mutex_lock(&s.lock);
    start = g_get_monotonic_time();
    g_assert_false(qemu_cond_timedwait(&s.cond, &s.lock, 50));
    elapsed = g_get_monotonic_time() - start;
    g_assert_cmpint(elapsed, >=, 50 * 1000);
    g_assert_cmpint(elapsed, <, 5 * G_USEC_PER_SEC);

    /* Deadline in g_get_monotonic_time() terms, as g_cond_wait_until. */
    start = g_get_monotonic_time();
    g_assert_false(qemu_cond_wait_until(&s.cond, &s.lock, start + 30000));
    g_assert_cmpint(g_get_monotonic_time(), >=, start + 30000);
    /* A deadline already past returns at once. */
    g_assert_false(qemu_cond_wait_until(&s.cond, &s.lock, start - 1));
    qemu_mutex_unlock(&s.lock);
    qemu_cond_destroy(&s.cond);
    qemu_mutex_destroy(&s.lock);
}

static void *signal_later(void *opaque)
{
    Shared *s = opaque;

    g_usleep(20 * 1000);
    qemu_mutex_lock(&s->lock);
    s->ready = true;
    qemu_cond_broadcast(&s->cond);
    qemu_mutex_unlock(&s->lock);
    return NULL;
}

static void test_cond_signalled(void)
{
    Shared s = { 0 };
    QemuThread th;
    int64_t deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;

    qemu_mutex_init(&s.lock);
    qemu_cond_init(&s.cond);
    g_assert_true(qemu_thread_create(&th, "signal", signal_later, &s,
                                     NULL));
    qemu_mutex_lock(&s.lock);
    while (!s.ready) {
        if (!qemu_cond_wait_until(&s.cond, &s.lock, deadline)) {
            g_error("no wake-up within 10 s");
        }
    }
    qemu_mutex_unlock(&s.lock);
    qemu_thread_join(&th);
    qemu_cond_destroy(&s.cond);
    qemu_mutex_destroy(&s.lock);
}

static void test_atomics(void)
{
    int v = 5;
    uint64_t u = 0xf0;
    void *p = NULL;
    int x = 1;

    /* cmpxchg returns the old value; it swapped iff that equals old. */
    g_assert_cmpint(qatomic_cmpxchg(&v, 5, 7), ==, 5);
    g_assert_cmpint(v, ==, 7);
    g_assert_cmpint(qatomic_cmpxchg(&v, 5, 9), ==, 7);
    g_assert_cmpint(v, ==, 7);
    g_assert_true(qatomic_cmpxchg(&p, NULL, &x) == NULL);
    g_assert_true(qatomic_read(&p) == &x);

    g_assert_cmpint(qatomic_xchg(&v, 1), ==, 7);
    g_assert_cmpint(qatomic_fetch_add(&v, 10), ==, 1);
    g_assert_cmpint(qatomic_fetch_sub(&v, 4), ==, 11);
    qatomic_inc(&v);
    qatomic_dec(&v);
    qatomic_dec(&v);
    g_assert_cmpint(qatomic_read(&v), ==, 6);
    g_assert_cmpuint(qatomic_fetch_or(&u, 0x0f), ==, 0xf0);
    g_assert_cmpuint(qatomic_fetch_and(&u, 0x3c), ==, 0xff);
    g_assert_cmpuint(u, ==, 0x3c);

    qatomic_set(&v, 3);
    qatomic_store_release(&u, 42);
    smp_mb();
    g_assert_cmpint(qatomic_load_acquire(&v), ==, 3);
    g_assert_cmpuint(qatomic_mb_read(&u), ==, 42);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/thread/mutex-contention", test_mutex_contention);
    g_test_add_func("/thread/trylock-guard", test_trylock_guard);
    g_test_add_func("/thread/cond-timeout", test_cond_timeout);
    g_test_add_func("/thread/cond-signalled", test_cond_signalled);
    g_test_add_func("/thread/atomics", test_atomics);
    return g_test_run();
}

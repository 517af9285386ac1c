/*
 * Threads: every thread the VMM creates goes through qemu_thread_create so
 * that it is named (visible in /proc and gdb) and registered with RCU for
 * its whole life (liburcu's memb flavour requires it for readers).
 */
#ifndef QEMU_THREAD_H
#define QEMU_THREAD_H

#include "qemu/osdep.h"
#include <pthread.h>

typedef struct QemuThread {
    pthread_t thread;
} QemuThread;

/*
 * Plain pthread mutexes and condition variables: unlike GLib 2.74's
 * futex-based GMutex, ThreadSanitizer sees them.  Initialise with the
 * init functions (or QEMU_MUTEX_INITIALIZER for a static mutex); every
 * error aborts, since a failing lock means memory corruption.
 */
typedef struct QemuMutex {
    pthread_mutex_t lock;
} QemuMutex;

/* Timed waits measure CLOCK_MONOTONIC, as g_get_monotonic_time() does. */
typedef struct QemuCond {
    pthread_cond_t cond;
} QemuCond;

#define QEMU_MUTEX_INITIALIZER { .lock = PTHREAD_MUTEX_INITIALIZER }

void qemu_mutex_init(QemuMutex *mutex);
void qemu_mutex_destroy(QemuMutex *mutex);
void qemu_mutex_lock(QemuMutex *mutex);
void qemu_mutex_unlock(QemuMutex *mutex);
/* As in QEMU: 0 if the lock was taken, EBUSY if it is held. */
int qemu_mutex_trylock(QemuMutex *mutex);

void qemu_cond_init(QemuCond *cond);
void qemu_cond_destroy(QemuCond *cond);
void qemu_cond_wait(QemuCond *cond, QemuMutex *mutex);
/* Returns false if ms milliseconds passed without a wake-up. */
bool qemu_cond_timedwait(QemuCond *cond, QemuMutex *mutex, int ms);
/*
 * g_cond_wait_until(): end_time is a g_get_monotonic_time() value in
 * microseconds; returns false once it has passed.
 */
bool qemu_cond_wait_until(QemuCond *cond, QemuMutex *mutex,
                          int64_t end_time);
void qemu_cond_signal(QemuCond *cond);
void qemu_cond_broadcast(QemuCond *cond);

/*
 * QEMU_LOCK_GUARD(&m) holds m until the end of the enclosing block;
 * WITH_QEMU_LOCK_GUARD(&m) { ... } holds it for the block that follows
 * (a break or return inside unlocks too).
 */
static inline QemuMutex *qemu_lock_guard_lock(QemuMutex *mutex)
{
    qemu_mutex_lock(mutex);
    return mutex;
}

static inline void qemu_lock_guard_unlock(QemuMutex **mutex)
{
    if (*mutex) {
        qemu_mutex_unlock(*mutex);
    }
}

#define QEMU_GUARD_GLUE_(a, b) a##b
#define QEMU_GUARD_GLUE(a, b) QEMU_GUARD_GLUE_(a, b)
#define QEMU_GUARD_VAR(n) QEMU_GUARD_GLUE(qemu_lock_guard_, n)

#define QEMU_LOCK_GUARD(mutex)                                          \
    QemuMutex *QEMU_GUARD_VAR(__COUNTER__)                              \
        __attribute__((cleanup(qemu_lock_guard_unlock), unused)) =      \
        qemu_lock_guard_lock(mutex)

#define WITH_QEMU_LOCK_GUARD_(mutex, var)                               \
    for (QemuMutex *var __attribute__((cleanup(qemu_lock_guard_unlock))) \
             = qemu_lock_guard_lock(mutex);                             \
         var; qemu_mutex_unlock(var), var = NULL)
#define WITH_QEMU_LOCK_GUARD(mutex)                                     \
    WITH_QEMU_LOCK_GUARD_(mutex, QEMU_GUARD_VAR(__COUNTER__))

/* Returns false (with errp set) if the thread could not be created. */
bool qemu_thread_create(QemuThread *thread, const char *name,
                        void *(*start_routine)(void *), void *arg,
                        GError **errp);
void *qemu_thread_join(QemuThread *thread);
/* Kernel thread id of the caller. */
pid_t qemu_get_thread_id(void);

#endif

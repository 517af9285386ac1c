/*
 * Named, RCU-registered threads.
 */
#include "qemu/osdep.h"
#include "qemu/thread.h"
#include "qemu/rcu.h"
#include <sys/syscall.h>

typedef struct ThreadStart {
    char name[16];
    void *(*fn)(void *);
    void *arg;
} ThreadStart;

static void *thread_trampoline(void *opaque)
{
    ThreadStart ts = *(ThreadStart *)opaque;
    void *ret;

    g_free(opaque);
    pthread_setname_np(pthread_self(), ts.name);
    rcu_register_thread();
    ret = ts.fn(ts.arg);
    rcu_unregister_thread();
    return ret;
}

bool qemu_thread_create(QemuThread *thread, const char *name,
                        void *(*start_routine)(void *), void *arg,
                        GError **errp)
{
    ThreadStart *ts = g_new0(ThreadStart, 1);
    int err;

    /* The kernel keeps 15 characters of a thread name. */
    g_strlcpy(ts->name, name, sizeof(ts->name));
    ts->fn = start_routine;
    ts->arg = arg;
    err = pthread_create(&thread->thread, NULL, thread_trampoline, ts);
    if (err) {
        g_free(ts);
        error_setg_errno(errp, err, "cannot create thread '%s'", name);
        return false;
    }
    return true;
}

void *qemu_thread_join(QemuThread *thread)
{
    void *ret = NULL;

    pthread_join(thread->thread, &ret);
    return ret;
}

pid_t qemu_get_thread_id(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/* Lock errors are bugs (corruption, double unlock): stop at once. */
static void thread_abort(int err, const char *what)
{
    fprintf(stderr, "ferry: %s: %s\n", what, g_strerror(err));
    abort();
}

void qemu_mutex_init(QemuMutex *mutex)
{
    int err = pthread_mutex_init(&mutex->lock, NULL);

    if (err) {
        thread_abort(err, __func__);
    }
}

void qemu_mutex_destroy(QemuMutex *mutex)
{
    int err = pthread_mutex_destroy(&mutex->lock);

    if (err) {
        thread_abort(err, __func__);
    }
}

void qemu_mutex_lock(QemuMutex *mutex)
{
    int err = pthread_mutex_lock(&mutex->lock);

    if (err) {
        thread_abort(err, __func__);
    }
}

void qemu_mutex_unlock(QemuMutex *mutex)
{
    int err = pthread_mutex_unlock(&mutex->lock);

    if (err) {
        thread_abort(err, __func__);
    }
}

int qemu_mutex_trylock(QemuMutex *mutex)
{
    int err = pthread_mutex_trylock(&mutex->lock);

    if (err && err != EBUSY) {
        thread_abort(err, __func__);
    }
    return err;
}

void qemu_cond_init(QemuCond *cond)
{
    pthread_condattr_t attr;
    int err;

    err = pthread_condattr_init(&attr);
    if (!err) {
        err = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    }
    if (!err) {
        err = pthread_cond_init(&cond->cond, &attr);
    }
    pthread_condattr_destroy(&attr);
    if (err) {
        thread_abort(err, __func__);
    }
}

void qemu_cond_destroy(QemuCond *cond)
{
    int err = pthread_cond_destroy(&cond->cond);

    if (err) {
        thread_abort(err, __func__);
    }
}

void qemu_cond_wait(QemuCond *cond, QemuMutex *mutex)
{
    int err = pthread_cond_wait(&cond->cond, &mutex->lock);

    if (err) {
        thread_abort(err, __func__);
    }
}

bool qemu_cond_wait_until(QemuCond *cond, QemuMutex *mutex,
                          int64_t end_time)
{
    struct timespec ts = {
        .tv_sec = end_time / G_USEC_PER_SEC,
        .tv_nsec = (end_time % G_USEC_PER_SEC) * 1000,
    };
    int err;

    if (end_time < 0) {
        ts.tv_sec = 0;
        ts.tv_nsec = 0;
    }
    err = pthread_cond_timedwait(&cond->cond, &mutex->lock, &ts);
    if (err && err != ETIMEDOUT) {
        thread_abort(err, __func__);
    }
    return err == 0;
}

bool qemu_cond_timedwait(QemuCond *cond, QemuMutex *mutex, int ms)
{
    /* g_get_monotonic_time() reads CLOCK_MONOTONIC, the cond's clock. */
    return qemu_cond_wait_until(cond, mutex,
                                g_get_monotonic_time() + (int64_t)ms * 1000);
}

void qemu_cond_signal(QemuCond *cond)
{
    int err = pthread_cond_signal(&cond->cond);

    if (err) {
        thread_abort(err, __func__);
    }
}

void qemu_cond_broadcast(QemuCond *cond)
{
    int err = pthread_cond_broadcast(&cond->cond);

    if (err) {
        thread_abort(err, __func__);
    }
}

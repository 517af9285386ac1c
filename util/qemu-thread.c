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

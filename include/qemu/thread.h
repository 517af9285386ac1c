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

/* Returns false (with errp set) if the thread could not be created. */
bool qemu_thread_create(QemuThread *thread, const char *name,
                        void *(*start_routine)(void *), void *arg,
                        GError **errp);
void *qemu_thread_join(QemuThread *thread);
/* Kernel thread id of the caller. */
pid_t qemu_get_thread_id(void);

#endif

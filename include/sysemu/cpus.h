/*
 * vCPUs, independent of the accelerator.
 */
#ifndef SYSEMU_CPUS_H
#define SYSEMU_CPUS_H

#include "qemu/osdep.h"

typedef struct CPUState CPUState;   /* defined by the accelerator */

int cpu_count(void);
CPUState *qemu_get_cpu(int index);
int cpu_index(const CPUState *cpu);
/* Kernel thread id of a vCPU thread (0 before it started). */
pid_t cpu_thread_id(const CPUState *cpu);
/* vCPU index whose thread has this tid, or -1 (postcopy blocktime). */
int cpu_index_by_thread_id(pid_t tid);

/* Stop every vCPU and wait until none runs guest code; then resume. */
void pause_all_vcpus(void);
void resume_all_vcpus(void);
bool qemu_in_vcpu_thread(void);

#endif

/*
 * Private to accel/kvm: the VM-wide KVM state and the per-vCPU structure.
 */
#ifndef ACCEL_KVM_INT_H
#define ACCEL_KVM_INT_H

#include "qemu/osdep.h"
#include "qemu/thread.h"
#include "sysemu/kvm.h"
#include "sysemu/cpus.h"

typedef struct KVMState {
    int fd;                     /* /dev/kvm */
    int vmfd;
    int vcpu_mmap_size;
    bool manual_dirty_protect;  /* KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 on */
    bool irqchip;
    bool has_xcrs;
    bool has_debugregs;
    int xsave_size;             /* bytes of KVM_GET_XSAVE(2); 0: no xsave */
    struct kvm_cpuid2 *cpuid;   /* KVM_GET_SUPPORTED_CPUID */
    uint32_t nmsrs;             /* MSRs we save that KVM knows */
    uint32_t msrs[KVM_MAX_SAVED_MSRS];
    KVMVMSavedState *vm_reset_state;    /* irqchip and PIT after creation */
} KVMState;

extern KVMState *kvm_state;

struct CPUState {
    int index;
    int fd;
    struct kvm_run *run;
    QemuThread thread;
    pid_t tid;                  /* 0 until the thread runs */
    bool created;               /* thread started */
    /* Protected by the global vCPU lock (kvm-cpus.c). */
    bool stop;                  /* asked to park */
    bool stopped;               /* parked (not in KVM_RUN) */
    bool halted;                /* guest failure or triple fault: wait for reset */
    bool exit;                  /* thread must end (kvm_destroy) */
    X86CPUSavedState *reset_state;      /* right after creation, no TSC */
};

/* vCPU ioctl helpers shared by kvm-all.c / kvm-cpus.c / kvm-x86.c */
int kvm_ioctl(int fd, unsigned long req, void *arg);
int kvm_check_extension(int cap);

/* kvm-x86.c */
bool kvm_arch_init(KVMState *s, GError **errp);
bool kvm_arch_init_vcpu(CPUState *cpu, int ncpus, GError **errp);
void kvm_arch_destroy(KVMState *s);
void kvm_arch_destroy_vcpu(CPUState *cpu);

/* kvm-cpus.c */
bool kvm_create_vcpus(int n, GError **errp);
void kvm_destroy_vcpus(void);
void kvm_cpu_clear_halt(CPUState *cpu);

/* Port I/O dispatch for the run loop (kvm-all.c). */
void kvm_pio(uint16_t port, bool is_write, uint8_t *data, int size);

#endif

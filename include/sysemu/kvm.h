/*
 * The KVM accelerator.  Migration and device code use only what is declared
 * here; the ioctl details stay in accel/kvm/.
 */
#ifndef SYSEMU_KVM_H
#define SYSEMU_KVM_H

#include "qemu/osdep.h"
#include <linux/kvm.h>

typedef struct MachineState MachineState;
typedef struct CPUState CPUState;

bool kvm_enabled(void);
/* Open /dev/kvm, create the VM and the in-kernel irqchip. */
bool kvm_init(MachineState *ms, GError **errp);
/* Create vCPU threads (they wait until vm_start()). */
bool kvm_init_vcpus(MachineState *ms, GError **errp);

#define KVM_MAX_SAVED_MSRS 64

/* Everything about one x86 vCPU that migration carries. */
typedef struct X86CPUSavedState {
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_fpu fpu;
    uint8_t xsave[4096];        /* struct kvm_xsave region */
    bool has_xsave;
    struct kvm_xcrs xcrs;
    bool has_xcrs;
    uint32_t nmsrs;
    struct {
        uint32_t index;
        uint64_t data;
    } msrs[KVM_MAX_SAVED_MSRS];
    struct kvm_lapic_state lapic;
    struct kvm_mp_state mp_state;
    struct kvm_vcpu_events events;
    struct kvm_debugregs debugregs;
} X86CPUSavedState;

/* The VM-wide state: irqchip (PIC master/slave, IOAPIC), PIT, clock. */
typedef struct KVMVMSavedState {
    struct kvm_irqchip pic[2];
    struct kvm_irqchip ioapic;
    struct kvm_pit_state2 pit;
    bool has_pit;
    struct kvm_clock_data clock;
} KVMVMSavedState;

/* The VM must be stopped (vm_stop) around these. */
bool kvm_cpu_get_state(CPUState *cpu, X86CPUSavedState *s, GError **errp);
bool kvm_cpu_put_state(CPUState *cpu, const X86CPUSavedState *s,
                       GError **errp);
bool kvm_vm_get_state(KVMVMSavedState *s, GError **errp);
bool kvm_vm_put_state(const KVMVMSavedState *s, GError **errp);

#endif

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

/* ---- Added by the kvm helper (new declarations only) ---- */

/* Whether /dev/kvm can be opened read-write; errp says why not. */
bool kvm_available(GError **errp);
/* Stop and join the vCPU threads, close the VM and /dev/kvm (exit, tests). */
void kvm_destroy(void);

/*
 * Port I/O devices: accesses to [base, base+len) from the guest call these
 * with the offset from base, one byte at a time.  Unclaimed ports read 0xff
 * and ignore writes.  Register before the vCPUs start.
 */
typedef uint8_t (*KVMPioRead)(void *opaque, uint16_t offset);
typedef void (*KVMPioWrite)(void *opaque, uint16_t offset, uint8_t val);
bool kvm_register_pio(uint16_t base, uint16_t len, KVMPioRead read,
                      KVMPioWrite write, void *opaque, GError **errp);
/* Drive an in-kernel irqchip input line (ISA IRQ 0-15 / GSI). */
bool kvm_set_irq(int irq, int level, GError **errp);

/*
 * Reset support, with the vCPUs paused: put a vCPU (or the irqchip, PIT)
 * back into the state it had right after creation; APs then wait for
 * INIT/SIPI.  kvm_cpu_set_multiboot_state puts a vCPU at a Multiboot entry
 * (32-bit protected mode, flat segments, EAX=0x2BADB002, EBX=mbi).
 */
bool kvm_cpu_reset(CPUState *cpu, GError **errp);
bool kvm_cpu_set_multiboot_state(CPUState *cpu, uint32_t entry,
                                 uint32_t mbi_addr, GError **errp);
bool kvm_vm_reset(GError **errp);

#endif

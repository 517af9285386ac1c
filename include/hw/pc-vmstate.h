/*
 * Device state of the "pc" machine for migration: one "cpu" section per
 * vCPU, "kvm-vm" (PIC, IOAPIC, PIT, KVM clock) and "serial" (COM1).
 */
#ifndef HW_PC_VMSTATE_H
#define HW_PC_VMSTATE_H

#include "qemu/osdep.h"
#include "hw/serial.h"
#include "migration/vmstate.h"
#include "sysemu/kvm.h"

#define PC_MACHINE_MIGRATION_NAME "ferry-pc"

extern const VMStateDescription vmstate_pc_cpu;
extern const VMStateDescription vmstate_pc_kvm_vm;
extern const VMStateDescription vmstate_pc_serial;

/*
 * Register the sections for ncpus vCPUs (which must exist: KVM set up)
 * and the UART (may be NULL: no "serial" section).  Call once per
 * machine; pc_vmstate_unregister() undoes it (tests).
 */
bool pc_vmstate_register(int ncpus, SerialState *serial, GError **errp);
void pc_vmstate_unregister(void);

/*
 * Where the sections take vCPU and VM state from (save) and put it
 * (load, after every field was read and checked): KVM unless a test or
 * fuzz target sets another sink before pc_vmstate_register (NULL: back
 * to KVM).
 */
typedef struct PCVMStateSink {
    int (*cpu_count)(void);
    bool (*cpu_get)(int index, X86CPUSavedState *s, GError **errp);
    bool (*cpu_put)(int index, const X86CPUSavedState *s, GError **errp);
    bool (*vm_get)(KVMVMSavedState *s, GError **errp);
    bool (*vm_put)(const KVMVMSavedState *s, GError **errp);
} PCVMStateSink;
void pc_vmstate_set_sink(const PCVMStateSink *sink);

#endif

/*
 * Device state of the "pc" machine for migration: one "cpu" section per
 * vCPU, "kvm-vm" (PIC, IOAPIC, PIT, KVM clock) and "serial" (COM1).
 */
#ifndef HW_PC_VMSTATE_H
#define HW_PC_VMSTATE_H

#include "qemu/osdep.h"
#include "hw/serial.h"
#include "migration/vmstate.h"

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

#endif

/*
 * The "pc" machine: RAM at 0 (up to 3 GiB, the rest at 4 GiB), KVM vCPUs
 * with the in-kernel irqchip, a 16550 at 0x3f8, Multiboot kernel loading.
 */
#ifndef HW_PC_H
#define HW_PC_H

#include "hw/machine.h"
#include "hw/serial.h"

/* Highest guest-physical end of the RAM mapped below 4 GiB. */
#define PC_LOW_RAM_MAX (3ULL << 30)
#define PC_HIGH_RAM_START (4ULL << 30)

extern const MachineClass pc_machine_class;

/* COM1, for device state save/load (NULL before pc init). */
SerialState *pc_get_serial(void);

#endif

/*
 * The "pc" machine.  There is no firmware: the VMM plays the boot loader
 * and enters a Multiboot kernel directly in 32-bit protected mode.
 */
#include "qemu/osdep.h"
#include "exec/memory.h"
#include "hw/pc.h"
#include "hw/pc-vmstate.h"
#include "hw/multiboot.h"
#include "sysemu/cpus.h"
#include "sysemu/kvm.h"
#include "sysemu/runstate.h"
#include "migration/savevm.h"

#define PC_KBD_STATUS_PORT 0x64
#define PC_KBD_CMD_RESET   0xfe
#define PC_RESET_CTL_PORT  0xcf9
#define PC_RESET_CTL_RST   0x04

static SerialState pc_serial;
static bool pc_serial_up;
static uint8_t pc_reset_ctl;

SerialState *pc_get_serial(void)
{
    return pc_serial_up ? &pc_serial : NULL;
}

/* ---- port I/O glue ---- */

static uint8_t pc_serial_read(void *opaque, uint16_t offset)
{
    return serial_ioport_read(opaque, offset);
}

static void pc_serial_write(void *opaque, uint16_t offset, uint8_t val)
{
    serial_ioport_write(opaque, offset, val);
}

static void pc_serial_irq(void *opaque, int level)
{
    g_autoptr(GError) err = NULL;

    if (!kvm_set_irq(SERIAL_COM1_IRQ, level, &err)) {
        warn_report("serial: %s", err->message);
    }
}

static uint8_t pc_kbd_read(void *opaque, uint16_t offset)
{
    return 0;       /* controller idle: lets guests send the reset command */
}

static void pc_kbd_write(void *opaque, uint16_t offset, uint8_t val)
{
    if (val == PC_KBD_CMD_RESET) {
        qemu_system_reset_request(SHUTDOWN_CAUSE_GUEST_RESET);
    }
}

static uint8_t pc_reset_ctl_read(void *opaque, uint16_t offset)
{
    return pc_reset_ctl;
}

static void pc_reset_ctl_write(void *opaque, uint16_t offset, uint8_t val)
{
    pc_reset_ctl = val & 0x0a;
    if (val & PC_RESET_CTL_RST) {
        qemu_system_reset_request(SHUTDOWN_CAUSE_GUEST_RESET);
    }
}

/* ---- init ---- */

static uint64_t pc_low_ram(const MachineState *ms)
{
    return MIN(ms->ram_size, PC_LOW_RAM_MAX);
}

static bool pc_check_config(MachineState *ms, GError **errp)
{
    g_autoptr(GError) kerr = NULL;

    if (!kvm_available(&kerr)) {
        error_setg(errp, "machine 'pc' requires KVM (-accel kvm): %s",
                   kerr->message);
        return false;
    }
    if (!ms->kernel_filename && !ms->incoming) {
        error_setg(errp, "machine 'pc' has no firmware: give a Multiboot "
                   "kernel with -kernel (or -incoming, to run what a "
                   "migration brings)");
        return false;
    }
    if (!ms->ram || ms->ram->used_length < ms->ram_size) {
        error_setg(errp, "machine 'pc': guest RAM was not allocated");
        return false;
    }
    if (ms->ram_size < 2 * 1024 * 1024 ||
        !QEMU_IS_ALIGNED(ms->ram_size, TARGET_PAGE_SIZE)) {
        error_setg(errp, "machine 'pc' needs at least 2 MiB of RAM in whole "
                   "pages (got 0x%" PRIx64 " bytes)", ms->ram_size);
        return false;
    }
    return true;
}

static bool pc_map_ram(MachineState *ms, GError **errp)
{
    uint64_t low = pc_low_ram(ms);

    if (!memory_map_ram(0, ms->ram, 0, low, errp)) {
        return false;
    }
    return ms->ram_size == low ||
           memory_map_ram(PC_HIGH_RAM_START, ms->ram, low,
                          ms->ram_size - low, errp);
}

static bool pc_init_devices(MachineState *ms, GError **errp)
{
    if (!serial_init(&pc_serial, ms->serial, errp)) {
        return false;
    }
    pc_serial_up = true;
    if (pc_serial.present) {
        serial_set_irq(&pc_serial, pc_serial_irq, NULL);
        if (!kvm_register_pio(SERIAL_COM1_BASE, SERIAL_IO_LEN,
                              pc_serial_read, pc_serial_write, &pc_serial,
                              errp)) {
            return false;
        }
    }
    return kvm_register_pio(PC_KBD_STATUS_PORT, 1, pc_kbd_read,
                            pc_kbd_write, NULL, errp) &&
           kvm_register_pio(PC_RESET_CTL_PORT, 1, pc_reset_ctl_read,
                            pc_reset_ctl_write, NULL, errp);
}

static bool pc_load_kernel(MachineState *ms, MultibootBoot *boot,
                           GError **errp)
{
    uint64_t low = pc_low_ram(ms);

    if (!ms->kernel_filename) {
        error_setg(errp, "machine 'pc' has no -kernel to boot");
        return false;
    }
    return multiboot_load_file(ms->kernel_filename, ms->kernel_cmdline,
                               ms->ram->host, low, ms->ram_size - low, boot,
                               errp);
}

static bool pc_point_bsp(const MultibootBoot *boot, GError **errp)
{
    return kvm_cpu_set_multiboot_state(qemu_get_cpu(0), boot->entry,
                                       boot->mbi_addr, errp);
}

static bool pc_init(MachineState *ms, GError **errp)
{
    MultibootBoot boot;

    if (!pc_check_config(ms, errp) || !kvm_init(ms, errp) ||
        !pc_map_ram(ms, errp) || !pc_init_devices(ms, errp)) {
        return false;
    }
    /*
     * Load before the vCPUs exist, so a bad image fails early.  A
     * destination without -kernel gets RAM and vCPU state from the stream.
     */
    if (ms->kernel_filename && !pc_load_kernel(ms, &boot, errp)) {
        return false;
    }
    if (!kvm_init_vcpus(ms, errp)) {
        return false;
    }
    /* Not QEMU's pc-i440fx-*: each side refuses the other's pc stream. */
    savevm_machine_name = PC_MACHINE_MIGRATION_NAME;
    return pc_vmstate_register(ms->smp_cpus, &pc_serial, errp) &&
           (!ms->kernel_filename || pc_point_bsp(&boot, errp));
}

/* With the vCPUs paused: everything back as right after init. */
static void pc_reset(MachineState *ms)
{
    g_autoptr(GError) err = NULL;
    MultibootBoot boot;
    int n = cpu_count();

    if (pc_serial_up) {
        serial_reset(&pc_serial);
    }
    pc_reset_ctl = 0;
    if (!kvm_vm_reset(&err)) {
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        if (!kvm_cpu_reset(qemu_get_cpu(i), &err)) {
            goto fail;
        }
    }
    /* The guest has written over its image: load it again. */
    if (!pc_load_kernel(ms, &boot, &err) || !pc_point_bsp(&boot, &err)) {
        goto fail;
    }
    return;

fail:
    error_report("system reset failed: %s", err->message);
    runstate_set(RUN_STATE_INTERNAL_ERROR);
}

const MachineClass pc_machine_class = {
    .name = "pc",
    .desc = "x86 PC with KVM, 16550 UART and Multiboot kernel loading",
    .default_ram_id = "pc.ram",
    .needs_vcpus = true,
    .init = pc_init,
    .reset = pc_reset,
};

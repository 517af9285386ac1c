/*
 * The machine registry, and the "none" machine: RAM only, no vCPUs.
 */
#include "qemu/osdep.h"
#include "hw/machine.h"
#include "exec/memory.h"
#include "sysemu/kvm.h"
#include "migration/savevm.h"

#if __has_include("hw/pc.h")
#include "hw/pc.h"
#define HAVE_PC_MACHINE 1
#endif

MachineState *current_machine;
const MachineClass *current_machine_class;

static bool none_machine_init(MachineState *ms, GError **errp)
{
    /*
     * KVM is optional here: with -accel kvm create the VM when /dev/kvm is
     * there (memslots, dirty logging), otherwise run without it.
     */
    if (ms->accel_kvm && access("/dev/kvm", R_OK | W_OK) == 0 &&
        !kvm_init(ms, errp)) {
        return false;
    }
    savevm_machine_name = "none";
    if (ms->isa_serial) {
        /* As QEMU's none: the device is refused, not silently dropped. */
        error_setg(errp, "-device isa-serial: machine '%s' has no ISA bus "
                   "(the UART exists on machine pc)", ms->type);
        return false;
    }
    if (!ms->ram) {
        error_setg(errp, "machine 'none' has no RAM");
        return false;
    }
    return memory_map_ram(0, ms->ram, 0, ms->ram->used_length, errp);
}

static void none_machine_reset(MachineState *ms)
{
    /* Nothing but RAM, which a reset leaves alone. */
}

static const MachineClass none_machine_class = {
    .name = "none",
    .desc = "empty machine",
    .default_ram_id = "ram",
    .needs_vcpus = false,
    .init = none_machine_init,
    .reset = none_machine_reset,
};

/*
 * "none" under a name libvirt will offer: libvirt hides the machine called
 * none (it probes with it), so a RAM-only domain names this one.  Same
 * stream as none, so either side may be a plain -M none or QEMU's.
 */
static const MachineClass x_ram_machine_class = {
    .name = "x-ram",
    .desc = "RAM only, no vCPUs (machine none under a name libvirt accepts)",
    .default_ram_id = "ram",
    .needs_vcpus = false,
    .init = none_machine_init,
    .reset = none_machine_reset,
};

static const MachineClass *const machine_classes[] = {
#ifdef HAVE_PC_MACHINE
    &pc_machine_class,
#endif
    &none_machine_class,
    &x_ram_machine_class,
};

const MachineClass *machine_find_class(const char *name)
{
    size_t i;

    for (i = 0; name && i < ARRAY_SIZE(machine_classes); i++) {
        if (!strcmp(machine_classes[i]->name, name)) {
            return machine_classes[i];
        }
    }
    return NULL;
}

const MachineClass *machine_class_nth(size_t i)
{
    return i < ARRAY_SIZE(machine_classes) ? machine_classes[i] : NULL;
}

void machine_print_types(FILE *out)
{
    size_t i;

    fprintf(out, "Supported machines are:\n");
    for (i = 0; i < ARRAY_SIZE(machine_classes); i++) {
        fprintf(out, "%-20s %s%s\n", machine_classes[i]->name,
                machine_classes[i]->desc,
                !strcmp(machine_classes[i]->name, MACHINE_DEFAULT_TYPE) ?
                " (default)" : "");
    }
}

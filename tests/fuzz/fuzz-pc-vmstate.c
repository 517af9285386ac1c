/*
 * Fuzz target: the pc machine's device-state loaders ("kvm-vm", "cpu" for
 * two vCPUs, "serial") behind qemu_loadvm_state, with a state sink that
 * checks what the loaders would hand to KVM instead of KVM itself, so
 * it runs anywhere.  The stream is what a ferry-pc source sends after
 * its RAM: configuration "ferry-pc", then the FULL sections.
 *
 * "--seed DIR" (fuzz-main.c) writes a valid stream saved through the
 * same sections.
 */
#include "qemu/osdep.h"
#include "hw/pc-vmstate.h"
#include "hw/serial.h"
#include "migration/savevm.h"
#include "fuzz.h"

#define FUZZ_NCPUS 2

static SerialState fuzz_serial;

static int fake_cpu_count(void)
{
    return FUZZ_NCPUS;
}

/* A plausible vCPU: what a KVM vCPU of a booted guest would give. */
static bool fake_cpu_get(int index, X86CPUSavedState *s, GError **errp)
{
    memset(s, 0, sizeof(*s));
    s->regs.rip = 0x100000 + index;
    s->regs.rflags = 2;
    s->sregs.cr0 = 0x80000011;
    s->sregs.efer = 0x500;
    s->has_xsave = true;
    s->has_xcrs = true;
    s->xcrs.nr_xcrs = 1;
    s->xcrs.xcrs[0].value = 3;
    s->nmsrs = 2;
    s->msrs[0].index = 0x10;
    s->msrs[0].data = 12345;
    s->msrs[1].index = 0xc0000081;
    s->mp_state.mp_state = KVM_MP_STATE_RUNNABLE;
    return true;
}

/* What KVM would be given must be within what the loader promised. */
static bool fake_cpu_put(int index, const X86CPUSavedState *s, GError **errp)
{
    g_assert(index >= 0 && index < FUZZ_NCPUS);
    g_assert(s->nmsrs <= KVM_MAX_SAVED_MSRS);
    g_assert(s->xcrs.nr_xcrs <= KVM_MAX_XCRS);
    return true;
}

static bool fake_vm_get(KVMVMSavedState *s, GError **errp)
{
    memset(s, 0, sizeof(*s));
    s->has_pit = true;
    s->clock.clock = 1000000;
    return true;
}

static bool fake_vm_put(const KVMVMSavedState *s, GError **errp)
{
    return true;
}

static const PCVMStateSink fake_sink = {
    .cpu_count = fake_cpu_count,
    .cpu_get = fake_cpu_get,
    .cpu_put = fake_cpu_put,
    .vm_get = fake_vm_get,
    .vm_put = fake_vm_put,
};

static void fuzz_init(void)
{
    static bool done;
    g_autoptr(GError) err = NULL;

    if (done) {
        return;
    }
    done = true;
    savevm_machine_name = PC_MACHINE_MIGRATION_NAME;
    migration_register_core_sections();
    if (!serial_init(&fuzz_serial, "null", &err)) {
        g_error("fuzz-pc-vmstate: %s", err->message);
    }
    pc_vmstate_set_sink(&fake_sink);
    if (!pc_vmstate_register(FUZZ_NCPUS, &fuzz_serial, &err)) {
        g_error("fuzz-pc-vmstate: %s", err->message);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    fuzz_load_stream(data, size);
    return 0;
}

void fuzz_write_seeds(const char *dir)
{
    QIOChannel *ioc = qio_channel_new_buffer();
    QEMUFile *f = qemu_file_new_output(ioc);
    g_autofree char *path = g_build_filename(dir, "pc-devices", NULL);
    const uint8_t *data;
    size_t len;

    fuzz_init();
    global_state_store_runstate(RUN_STATE_RUNNING);
    qemu_savevm_state_header(f);
    qemu_savevm_state_complete_precopy(f, false, false);
    qemu_fflush(f);
    data = qio_channel_buffer_data(ioc, &len);
    g_file_set_contents(path, (const char *)data, len, NULL);
    qemu_fclose(f);
    qio_channel_unref(ioc);
}

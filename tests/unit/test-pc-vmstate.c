/*
 * The pc machine's device state sections ("kvm-vm", "cpu", "serial"):
 * a full migration stream saved from one KVM VM and loaded into a second
 * one carries vCPU, irqchip and UART state; malformed streams (bad MSR
 * count, unknown vCPU instance, -smp mismatch, truncation) fail cleanly.
 * Skipped (loudly) when /dev/kvm cannot be used.
 */
#include "qemu/osdep.h"
#include "hw/machine.h"
#include "hw/pc-vmstate.h"
#include "migration/savevm.h"
#include "sysemu/cpus.h"
#include "sysemu/kvm.h"

#define MSR_IA32_TSC 0x10
#define MSR_STAR     0xc0000081

static bool kvm_usable(void)
{
    g_autoptr(GError) err = NULL;

    if (!kvm_available(&err)) {
        g_printerr("\n*** SKIPPING PC VMSTATE TESTS: %s ***\n",
                   err->message);
        g_test_skip(err->message);
        return false;
    }
    return true;
}

/* A fresh VM with ncpus vCPUs and the pc sections registered. */
static void start_vm(int ncpus, SerialState *serial)
{
    MachineState ms = { .type = "pc", .smp_cpus = ncpus };
    GError *err = NULL;

    g_assert_true(kvm_init(&ms, &err));
    g_assert_no_error(err);
    g_assert_true(kvm_init_vcpus(&ms, &err));
    g_assert_no_error(err);
    savevm_machine_name = PC_MACHINE_MIGRATION_NAME;
    g_assert_true(pc_vmstate_register(ncpus, serial, &err));
    g_assert_no_error(err);
}

static void stop_vm(void)
{
    pc_vmstate_unregister();
    kvm_destroy();
}

static GByteArray *save_stream(void)
{
    QIOChannel *ioc = qio_channel_new_buffer();
    QEMUFile *f = qemu_file_new_output(ioc);
    GByteArray *out = g_byte_array_new();
    const uint8_t *data;
    size_t len;

    qemu_savevm_state_header(f);
    g_assert_cmpint(qemu_savevm_state_complete_precopy(f, false, false), ==,
                    0);
    data = qio_channel_buffer_data(ioc, &len);
    g_byte_array_append(out, data, len);
    qemu_fclose(f);
    qio_channel_unref(ioc);
    return out;
}

static int load_stream(const uint8_t *data, size_t len, GError **errp)
{
    QIOChannel *ioc = qio_channel_new_from_bytes(data, len);
    QEMUFile *f = qemu_file_new_input(ioc);
    LoadVMContext ctx;
    int ret;

    loadvm_context_init(&ctx, f);
    ret = qemu_loadvm_state(f, &ctx, errp);
    loadvm_context_destroy(&ctx);
    qemu_fclose(f);
    qio_channel_unref(ioc);
    return ret;
}

/* Load must fail, with an error that contains what. */
static void expect_load_error(const uint8_t *data, size_t len,
                              const char *what)
{
    GError *err = NULL;

    g_assert_cmpint(load_stream(data, len, &err), <, 0);
    g_assert_nonnull(err);
    g_test_message("expected failure: %s", err->message);
    if (what && !strstr(err->message, what)) {
        g_error("error '%s' does not mention '%s'", err->message, what);
    }
    g_error_free(err);
}

static void set_msr(X86CPUSavedState *s, uint32_t index, uint64_t val)
{
    for (uint32_t i = 0; i < s->nmsrs; i++) {
        if (s->msrs[i].index == index) {
            s->msrs[i].data = val;
            return;
        }
    }
    g_error("MSR 0x%x is not saved", index);
}

static void compare_cpu(const X86CPUSavedState *a, const X86CPUSavedState *b)
{
    g_assert_cmpmem(&a->regs, sizeof(a->regs), &b->regs, sizeof(b->regs));
    g_assert_cmpmem(&a->sregs, sizeof(a->sregs), &b->sregs,
                    sizeof(b->sregs));
    g_assert_cmpint(a->has_xsave, ==, b->has_xsave);
    g_assert_cmpmem(a->xsave, sizeof(a->xsave), b->xsave, sizeof(b->xsave));
    g_assert_cmpuint(a->xcrs.nr_xcrs, ==, b->xcrs.nr_xcrs);
    for (uint32_t i = 0; i < a->xcrs.nr_xcrs; i++) {
        g_assert_cmphex(a->xcrs.xcrs[i].value, ==, b->xcrs.xcrs[i].value);
    }
    g_assert_cmpuint(a->nmsrs, ==, b->nmsrs);
    for (uint32_t i = 0; i < a->nmsrs; i++) {
        g_assert_cmphex(a->msrs[i].index, ==, b->msrs[i].index);
        if (a->msrs[i].index == MSR_IA32_TSC) {
            g_assert_cmpuint(b->msrs[i].data, >=, a->msrs[i].data);
        } else {
            g_assert_cmphex(a->msrs[i].data, ==, b->msrs[i].data);
        }
    }
    g_assert_cmpmem(&a->lapic, sizeof(a->lapic), &b->lapic,
                    sizeof(b->lapic));
    g_assert_cmpuint(a->mp_state.mp_state, ==, b->mp_state.mp_state);
    g_assert_cmpmem(&a->events, sizeof(a->events), &b->events,
                    sizeof(b->events));
    g_assert_cmpmem(&a->debugregs, sizeof(a->debugregs), &b->debugregs,
                    sizeof(b->debugregs));
}

/*
 * Bytes on the wire of one vmsd (all fields present at its version, no
 * subsections): lets the tests find a field without hard-coding layouts.
 */
static size_t encoded_size(const VMStateDescription *vmsd);

static size_t field_encoded_size(const VMStateField *f)
{
    size_t one;

    switch (f->type) {
    case VMS_STRUCT:
        one = encoded_size(f->vmsd);
        break;
    case VMS_BOOL:
        one = 1;
        break;
    default:
        one = f->size;
        break;
    }
    return one * (f->num ? f->num : 1);
}

static size_t encoded_size(const VMStateDescription *vmsd)
{
    size_t n = 0;

    for (const VMStateField *f = vmsd->fields; f->type != VMS_END; f++) {
        n += field_encoded_size(f);
    }
    return n;
}

static size_t encoded_offset(const VMStateDescription *vmsd,
                             const char *name)
{
    size_t n = 0;

    for (const VMStateField *f = vmsd->fields; f->type != VMS_END; f++) {
        if (!strcmp(f->name, name)) {
            return n;
        }
        n += field_encoded_size(f);
    }
    g_error("no field %s in %s", name, vmsd->name);
}

/* Offset of the payload of SECTION_FULL idstr/instance in the stream. */
static size_t section_payload(const GByteArray *s, const char *idstr,
                              uint32_t instance)
{
    size_t n = strlen(idstr);
    g_autofree uint8_t *pat = g_malloc(1 + n + 8);

    pat[0] = n;
    memcpy(pat + 1, idstr, n);
    memcpy(pat + 1 + n, (uint8_t[]) { instance >> 24, instance >> 16,
                                      instance >> 8, instance }, 4);
    memcpy(pat + 5 + n, (uint8_t[]) { 0, 0, 0, 1 }, 4);
    for (size_t i = 5; i + 9 + n <= s->len; i++) {
        if (s->data[i - 5] == QEMU_VM_SECTION_FULL &&
            !memcmp(s->data + i, pat, 9 + n)) {
            return i + 9 + n;
        }
    }
    g_error("section %s %u not found in the stream", idstr, instance);
}

static void put_be32_at(GByteArray *s, size_t off, uint32_t v)
{
    g_assert_cmpuint(off + 4, <=, s->len);
    s->data[off] = v >> 24;
    s->data[off + 1] = v >> 16;
    s->data[off + 2] = v >> 8;
    s->data[off + 3] = v;
}

static GByteArray *copy_bytes(const GByteArray *s)
{
    GByteArray *c = g_byte_array_sized_new(s->len);

    g_byte_array_append(c, s->data, s->len);
    return c;
}

/*
 * Offset of the EOF record: a stream cut after it still loads (the
 * VMDESCRIPTION that follows is optional), one cut before it must not.
 */
static size_t find_eof(const GByteArray *s)
{
    static const char json[] = "{\"page_size\"";

    for (size_t i = 6; i + strlen(json) <= s->len; i++) {
        if (!memcmp(s->data + i, json, strlen(json))) {
            g_assert_cmpuint(s->data[i - 6], ==, QEMU_VM_EOF);
            g_assert_cmpuint(s->data[i - 5], ==, QEMU_VM_VMDESCRIPTION);
            return i - 6;
        }
    }
    g_error("no VMDESCRIPTION in the stream");
}

static void test_roundtrip_and_malformed(void)
{
    X86CPUSavedState *saved = g_new0(X86CPUSavedState, 2);
    X86CPUSavedState *again = g_new0(X86CPUSavedState, 2);
    KVMVMSavedState vm, vm2;
    SerialState src_uart, dst_uart;
    g_autoptr(GByteArray) stream = NULL;
    g_autoptr(GByteArray) bad = NULL;
    GError *err = NULL;
    size_t off, eof;

    if (!kvm_usable()) {
        goto out;
    }
    g_assert_true(serial_init(&src_uart, "null", &err));
    g_assert_true(serial_init(&dst_uart, "null", &err));

    /* Source: distinctive vCPU and UART state. */
    start_vm(2, &src_uart);
    g_assert_true(kvm_cpu_set_multiboot_state(qemu_get_cpu(0), 0x100000,
                                              0x9000, &err));
    g_assert_no_error(err);
    for (int i = 0; i < 2; i++) {
        g_assert_true(kvm_cpu_get_state(qemu_get_cpu(i), &saved[i], &err));
        g_assert_no_error(err);
    }
    saved[0].regs.rcx = 0x1122334455667788ULL;
    saved[0].regs.r15 = 0xfeedface;
    saved[1].regs.rdx = 0xdeadbeef;
    saved[0].sregs.cr2 = 0xabc000;
    set_msr(&saved[0], MSR_STAR, 0x0023001000000000ULL);
    saved[1].debugregs.db[2] = 0x4000;
    for (int i = 0; i < 2; i++) {
        g_assert_true(kvm_cpu_put_state(qemu_get_cpu(i), &saved[i], &err));
        g_assert_no_error(err);
        g_assert_true(kvm_cpu_get_state(qemu_get_cpu(i), &saved[i], &err));
        g_assert_no_error(err);
    }
    serial_ioport_write(&src_uart, UART_SCR, 0x5a);
    serial_ioport_write(&src_uart, UART_LCR, 0x03);
    serial_ioport_write(&src_uart, UART_IER, UART_IER_THRI);
    g_assert_true(kvm_vm_get_state(&vm, &err));
    stream = save_stream();
    g_test_message("pc device state stream: %u bytes", stream->len);
    stop_vm();

    /* The machine name goes first: a "none" destination refuses it. */
    start_vm(2, &dst_uart);
    savevm_machine_name = "none";
    expect_load_error(stream->data, stream->len,
                      "Machine type received is 'ferry-pc'");
    savevm_machine_name = PC_MACHINE_MIGRATION_NAME;

    /* Destination: same -smp; everything arrives. */
    g_assert_cmpuint(dst_uart.regs.scr, !=, 0x5a);
    g_assert_cmpint(load_stream(stream->data, stream->len, &err), ==, 0);
    g_assert_no_error(err);
    for (int i = 0; i < 2; i++) {
        g_assert_true(kvm_cpu_get_state(qemu_get_cpu(i), &again[i], &err));
        g_assert_no_error(err);
        compare_cpu(&saved[i], &again[i]);
    }
    g_assert_cmphex(again[0].regs.rcx, ==, 0x1122334455667788ULL);
    g_assert_cmphex(again[1].regs.rdx, ==, 0xdeadbeef);
    g_assert_cmphex(again[1].debugregs.db[2], ==, 0x4000);
    g_assert_true(kvm_vm_get_state(&vm2, &err));
    g_assert_cmpmem(&vm.pic, sizeof(vm.pic), &vm2.pic, sizeof(vm2.pic));
    g_assert_cmpmem(&vm.ioapic, sizeof(vm.ioapic), &vm2.ioapic,
                    sizeof(vm2.ioapic));
    g_assert_cmpuint(vm2.clock.clock, >=, vm.clock.clock);
    g_assert_cmpmem(&src_uart.regs, sizeof(src_uart.regs), &dst_uart.regs,
                    sizeof(dst_uart.regs));

    /* More MSRs than the format allows. */
    bad = copy_bytes(stream);
    off = section_payload(bad, "cpu", 0) +
          encoded_offset(&vmstate_pc_cpu, "s.nmsrs");
    g_assert_cmpuint((bad->data[off + 3]), ==, saved[0].nmsrs);
    put_be32_at(bad, off, KVM_MAX_SAVED_MSRS + 1);
    expect_load_error(bad->data, bad->len, "MSRs, at most");
    g_clear_pointer(&bad, g_byte_array_unref);

    /* A raw region of another size. */
    bad = copy_bytes(stream);
    off = section_payload(bad, "cpu", 1) +
          encoded_offset(&vmstate_pc_cpu, "xsave_len");
    put_be32_at(bad, off, 8192);
    expect_load_error(bad->data, bad->len, "xsave_len");
    g_clear_pointer(&bad, g_byte_array_unref);

    /* A vCPU this machine does not have. */
    bad = copy_bytes(stream);
    off = section_payload(bad, "cpu", 1);
    put_be32_at(bad, off - 8, 7);
    expect_load_error(bad->data, bad->len,
                      "Unknown savevm section or instance 'cpu' 7");
    g_clear_pointer(&bad, g_byte_array_unref);

    /* Every truncation fails cleanly (never past the end, no crash). */
    g_assert_cmpuint(encoded_size(&vmstate_pc_cpu), >, 4096);
    eof = find_eof(stream);
    for (size_t cut = 0; cut <= eof; cut += 509) {
        expect_load_error(stream->data, cut, NULL);
    }
    stop_vm();

    /* -smp mismatch, both ways round, is named as such. */
    start_vm(1, &dst_uart);
    expect_load_error(stream->data, stream->len, "-smp must be the same");
    stop_vm();
    start_vm(3, &dst_uart);
    expect_load_error(stream->data, stream->len, "-smp must be the same");
    stop_vm();

    serial_cleanup(&src_uart);
    serial_cleanup(&dst_uart);
out:
    g_free(saved);
    g_free(again);
}

static void test_register_checks(void)
{
    g_autoptr(GError) err = NULL;

    /* Without vCPUs there is nothing to register. */
    g_assert_false(pc_vmstate_register(2, NULL, &err));
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message, "vCPUs"));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/pc-vmstate/register-checks", test_register_checks);
    g_test_add_func("/pc-vmstate/roundtrip-malformed",
                    test_roundtrip_and_malformed);
    return g_test_run();
}

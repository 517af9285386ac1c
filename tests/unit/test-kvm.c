/*
 * KVM accelerator against the real /dev/kvm: vCPU/VM state round trip
 * between two VMs; running guest code, pausing it, dirty logging.
 * Skipped (loudly) when /dev/kvm cannot be used.
 */
#include "qemu/osdep.h"
#include "qemu/bitmap.h"
#include "exec/memory.h"
#include "hw/machine.h"
#include "sysemu/cpus.h"
#include "sysemu/kvm.h"

#define MSR_IA32_TSC 0x10
#define MSR_STAR     0xc0000081
#define MSR_LSTAR    0xc0000082

static bool kvm_usable(void)
{
    g_autoptr(GError) err = NULL;

    if (!kvm_available(&err)) {
        g_printerr("\n*** SKIPPING KVM TESTS: %s ***\n", err->message);
        g_test_skip(err->message);
        return false;
    }
    return true;
}

static void start_vm(MachineState *ms, int ncpus)
{
    GError *err = NULL;

    memset(ms, 0, sizeof(*ms));
    ms->type = "pc";
    ms->smp_cpus = ncpus;
    g_assert_true(kvm_init(ms, &err));
    g_assert_no_error(err);
    g_assert_true(kvm_init_vcpus(ms, &err));
    g_assert_no_error(err);
    g_assert_cmpint(cpu_count(), ==, ncpus);
}

static void set_msr(X86CPUSavedState *s, uint32_t index, uint64_t val)
{
    for (uint32_t i = 0; i < s->nmsrs; i++) {
        if (s->msrs[i].index == index) {
            s->msrs[i].data = val;
            return;
        }
    }
}

static void compare_cpu(const X86CPUSavedState *a, const X86CPUSavedState *b)
{
    g_assert_cmpmem(&a->regs, sizeof(a->regs), &b->regs, sizeof(b->regs));
    g_assert_cmpmem(&a->sregs, sizeof(a->sregs), &b->sregs,
                    sizeof(b->sregs));
    g_assert_cmpint(a->has_xsave, ==, b->has_xsave);
    if (a->has_xsave) {
        g_assert_cmpmem(a->xsave, sizeof(a->xsave), b->xsave,
                        sizeof(b->xsave));
    } else {
        g_assert_cmpmem(&a->fpu, sizeof(a->fpu), &b->fpu, sizeof(b->fpu));
    }
    g_assert_cmpmem(&a->xcrs, sizeof(a->xcrs), &b->xcrs, sizeof(b->xcrs));
    g_assert_cmpuint(a->nmsrs, ==, b->nmsrs);
    for (uint32_t i = 0; i < a->nmsrs; i++) {
        g_assert_cmphex(a->msrs[i].index, ==, b->msrs[i].index);
        if (a->msrs[i].index == MSR_IA32_TSC) {
            /* Keeps counting; must not have gone back to ~0. */
            g_assert_cmpuint(b->msrs[i].data, >=, a->msrs[i].data);
            continue;
        }
        g_assert_cmphex(a->msrs[i].data, ==, b->msrs[i].data);
    }
    g_assert_cmpmem(&a->lapic, sizeof(a->lapic), &b->lapic,
                    sizeof(b->lapic));
    g_assert_cmpuint(a->mp_state.mp_state, ==, b->mp_state.mp_state);
    g_assert_cmpmem(&a->events, sizeof(a->events), &b->events,
                    sizeof(b->events));
    g_assert_cmpmem(&a->debugregs, sizeof(a->debugregs), &b->debugregs,
                    sizeof(b->debugregs));
}

static void test_state_roundtrip(void)
{
    MachineState ms;
    X86CPUSavedState *saved = g_new0(X86CPUSavedState, 2);
    X86CPUSavedState *again = g_new0(X86CPUSavedState, 2);
    KVMVMSavedState vm, vm2;
    GError *err = NULL;

    if (!kvm_usable()) {
        goto out;
    }
    start_vm(&ms, 2);
    g_assert_true(kvm_cpu_set_multiboot_state(qemu_get_cpu(0), 0x100000,
                                              0x9000, &err));
    g_assert_no_error(err);
    for (int i = 0; i < 2; i++) {
        g_assert_true(kvm_cpu_get_state(qemu_get_cpu(i), &saved[i], &err));
        g_assert_no_error(err);
    }
    g_assert_cmpuint(saved[0].regs.rax, ==, 0x2BADB002);
    g_assert_cmpuint(saved[0].regs.rip, ==, 0x100000);
    g_assert_cmpuint(saved[0].sregs.cr0 & 1, ==, 1);
    g_assert_cmpuint(saved[0].mp_state.mp_state, ==, KVM_MP_STATE_RUNNABLE);
    g_assert_cmpuint(saved[1].mp_state.mp_state, ==,
                     KVM_MP_STATE_UNINITIALIZED);
    /* The APIC ID in the LAPIC's ID register (bits 31:24 at 0x20). */
    g_assert_cmpuint(saved[1].lapic.regs[0x23], ==, 1);
    g_assert_cmpuint(saved[0].nmsrs, >, 4);

    /* Make the state distinctive, put it back, then move it. */
    saved[0].regs.rcx = 0x1122334455667788ULL;
    saved[1].regs.rdx = 0xdeadbeef;
    set_msr(&saved[0], MSR_STAR, 0x0023001000000000ULL);
    set_msr(&saved[1], MSR_LSTAR, 0xffffffff81000000ULL);
    for (int i = 0; i < 2; i++) {
        g_assert_true(kvm_cpu_put_state(qemu_get_cpu(i), &saved[i], &err));
        g_assert_no_error(err);
        g_assert_true(kvm_cpu_get_state(qemu_get_cpu(i), &saved[i], &err));
        g_assert_no_error(err);
    }
    g_assert_true(kvm_vm_get_state(&vm, &err));
    g_assert_no_error(err);
    kvm_destroy();
    g_assert_false(kvm_enabled());
    g_assert_cmpint(cpu_count(), ==, 0);

    start_vm(&ms, 2);
    g_assert_true(kvm_vm_put_state(&vm, &err));
    g_assert_no_error(err);
    for (int i = 0; i < 2; i++) {
        g_assert_true(kvm_cpu_put_state(qemu_get_cpu(i), &saved[i], &err));
        g_assert_no_error(err);
        g_assert_true(kvm_cpu_get_state(qemu_get_cpu(i), &again[i], &err));
        g_assert_no_error(err);
        compare_cpu(&saved[i], &again[i]);
    }
    g_assert_cmphex(again[0].regs.rcx, ==, 0x1122334455667788ULL);
    g_assert_true(kvm_vm_get_state(&vm2, &err));
    g_assert_no_error(err);
    g_assert_cmpmem(&vm.pic, sizeof(vm.pic), &vm2.pic, sizeof(vm2.pic));
    g_assert_cmpmem(&vm.ioapic, sizeof(vm.ioapic), &vm2.ioapic,
                    sizeof(vm2.ioapic));
    g_assert_cmpuint(vm2.clock.clock, >=, vm.clock.clock);

    /* Reset brings the AP back to its power-on state. */
    g_assert_true(kvm_cpu_reset(qemu_get_cpu(1), &err));
    g_assert_no_error(err);
    g_assert_true(kvm_cpu_get_state(qemu_get_cpu(1), &again[1], &err));
    g_assert_cmphex(again[1].regs.rdx, !=, 0xdeadbeef);
    g_assert_cmpuint(again[1].mp_state.mp_state, ==,
                     KVM_MP_STATE_UNINITIALIZED);
    kvm_destroy();
out:
    g_free(saved);
    g_free(again);
}

/* ---- running guest code ---- */

static volatile int pio_bytes;

static void count_write(void *opaque, uint16_t offset, uint8_t val)
{
    __atomic_add_fetch(&pio_bytes, 1, __ATOMIC_RELAXED);
}

static bool wait_pio(int target)
{
    for (int i = 0; i < 2000; i++) {
        if (__atomic_load_n(&pio_bytes, __ATOMIC_RELAXED) >= target) {
            return true;
        }
        g_usleep(5000);
    }
    return false;
}

#define RUN_RAM   (4 * 1024 * 1024)
#define CODE_ADDR 0x100000
#define DATA_ADDR 0x200000

/* inc dword [DATA_ADDR]; mov dx, 0x3f8; out dx, al; jmp back */
static const uint8_t spin_code[] = {
    0xff, 0x05, 0x00, 0x00, 0x20, 0x00,
    0x66, 0xba, 0xf8, 0x03,
    0xee,
    0xeb, 0xf3,
};

static void test_run_pause_dirty(void)
{
    MachineState ms;
    RAMBackendConfig cfg = { .type = RAM_BACKEND_ANON };
    RAMBlock *rb;
    unsigned long *bmap = bitmap_new(RUN_RAM / TARGET_PAGE_SIZE);
    uint64_t ndirty = 0;
    uint32_t count;
    gint64 t0;
    GError *err = NULL;

    if (!kvm_usable()) {
        g_free(bmap);
        return;
    }
    rb = qemu_ram_alloc("test.ram", RUN_RAM, &cfg, &err);
    g_assert_no_error(err);
    memcpy(rb->host + CODE_ADDR, spin_code, sizeof(spin_code));
    memset(&ms, 0, sizeof(ms));
    ms.smp_cpus = 1;
    g_assert_true(kvm_init(&ms, &err));
    g_assert_true(memory_map_ram(0, rb, 0, RUN_RAM, &err));
    g_assert_no_error(err);
    g_assert_true(kvm_register_pio(0x3f8, 8, NULL, count_write, NULL, &err));
    g_assert_true(kvm_init_vcpus(&ms, &err));
    g_assert_true(kvm_cpu_set_multiboot_state(qemu_get_cpu(0), CODE_ADDR,
                                              0x9000, &err));
    g_assert_no_error(err);
    g_assert_cmpint(cpu_thread_id(qemu_get_cpu(0)), >, 0);
    g_assert_cmpint(cpu_index_by_thread_id(cpu_thread_id(qemu_get_cpu(0))),
                    ==, 0);
    g_assert_cmpint(cpu_index_by_thread_id(getpid()), ==, -1);

    /* vCPUs wait for the start: nothing runs yet. */
    g_usleep(50000);
    g_assert_cmpint(pio_bytes, ==, 0);

    g_assert_true(memory_global_dirty_log_start(&err));
    g_assert_no_error(err);
    g_assert_true(ramblock_sync_dirty_bitmap(rb, bmap, &ndirty, &err));
    g_assert_no_error(err);
    bitmap_zero(bmap, RUN_RAM / TARGET_PAGE_SIZE);

    resume_all_vcpus();
    resume_all_vcpus();                 /* idempotent */
    g_assert_true(wait_pio(20));
    t0 = g_get_monotonic_time();
    pause_all_vcpus();
    pause_all_vcpus();
    g_test_message("pause took %" G_GINT64_FORMAT " us",
                   g_get_monotonic_time() - t0);
    count = *(volatile uint32_t *)(rb->host + DATA_ADDR);
    g_assert_cmpuint(count, >=, 20);
    g_usleep(50000);
    g_assert_cmpuint(*(volatile uint32_t *)(rb->host + DATA_ADDR), ==, count);

    g_assert_true(ramblock_sync_dirty_bitmap(rb, bmap, &ndirty, &err));
    g_assert_no_error(err);
    g_assert_true(test_bit(DATA_ADDR / TARGET_PAGE_SIZE, bmap));
    g_assert_false(test_bit(CODE_ADDR / TARGET_PAGE_SIZE, bmap));
    g_assert_cmpuint(ndirty, ==, 1);

    /* Paused: nothing new is dirty. */
    bitmap_zero(bmap, RUN_RAM / TARGET_PAGE_SIZE);
    g_assert_true(ramblock_sync_dirty_bitmap(rb, bmap, &ndirty, &err));
    g_assert_cmpuint(ndirty, ==, 0);

    /* Running again: the data page is dirty again. */
    resume_all_vcpus();
    g_assert_true(wait_pio(count + 20));
    pause_all_vcpus();
    g_assert_true(ramblock_sync_dirty_bitmap(rb, bmap, &ndirty, &err));
    g_assert_cmpuint(ndirty, ==, 1);
    g_assert_true(test_bit(DATA_ADDR / TARGET_PAGE_SIZE, bmap));
    memory_global_dirty_log_stop();

    kvm_destroy();
    g_free(bmap);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/kvm/state-roundtrip", test_state_roundtrip);
    g_test_add_func("/kvm/run-pause-dirty", test_run_pause_dirty);
    return g_test_run();
}

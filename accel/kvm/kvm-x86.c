/*
 * x86 specifics of the KVM accelerator: CPUID, the Multiboot entry state,
 * saving and restoring vCPU and VM (irqchip, PIT, clock) state.
 */
#include "qemu/osdep.h"
#include "kvm-int.h"
#include <sys/ioctl.h>

#define MSR_IA32_TSC            0x10
#define MSR_IA32_SYSENTER_CS    0x174
#define MSR_IA32_SYSENTER_ESP   0x175
#define MSR_IA32_SYSENTER_EIP   0x176
#define MSR_IA32_MISC_ENABLE    0x1a0
#define MSR_IA32_CR_PAT         0x277
#define MSR_STAR                0xc0000081
#define MSR_LSTAR               0xc0000082
#define MSR_CSTAR               0xc0000083
#define MSR_FMASK               0xc0000084
#define MSR_KERNEL_GS_BASE      0xc0000102
#define MSR_TSC_AUX             0xc0000103

/* EFER, FS/GS base and APIC base travel in kvm_sregs. */
static const uint32_t saved_msrs[] = {
    MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP,
    MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_FMASK, MSR_KERNEL_GS_BASE,
    MSR_TSC_AUX, MSR_IA32_CR_PAT, MSR_IA32_MISC_ENABLE, MSR_IA32_TSC,
};

#define MULTIBOOT_BOOTLOADER_MAGIC 0x2BADB002
#define CR0_PE (1u << 0)
#define CR0_ET (1u << 4)

static bool vcpu_ioctl(CPUState *cpu, unsigned long req, void *arg,
                       const char *what, GError **errp)
{
    if (kvm_ioctl(cpu->fd, req, arg) < 0) {
        error_setg_errno(errp, errno, "vCPU %d: %s failed", cpu->index, what);
        return false;
    }
    return true;
}

/* ---- set-up ---- */

static struct kvm_cpuid2 *kvm_get_supported_cpuid(int fd, GError **errp)
{
    for (int n = 64; n <= 4096; n *= 2) {
        struct kvm_cpuid2 *c = g_malloc0(sizeof(*c) +
                                         n * sizeof(struct kvm_cpuid_entry2));

        c->nent = n;
        if (ioctl(fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
            return c;
        }
        g_free(c);
        if (errno != E2BIG) {
            break;
        }
    }
    error_setg_errno(errp, errno, "KVM_GET_SUPPORTED_CPUID failed");
    return NULL;
}

static bool kvm_init_msr_list(KVMState *s, GError **errp)
{
    struct kvm_msr_list probe = { .nmsrs = 0 };
    g_autofree struct kvm_msr_list *list = NULL;

    if (ioctl(s->fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG) {
        error_setg_errno(errp, errno, "KVM_GET_MSR_INDEX_LIST failed");
        return false;
    }
    list = g_malloc0(sizeof(*list) + probe.nmsrs * sizeof(uint32_t));
    list->nmsrs = probe.nmsrs;
    if (ioctl(s->fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
        error_setg_errno(errp, errno, "KVM_GET_MSR_INDEX_LIST failed");
        return false;
    }
    s->nmsrs = 0;
    for (size_t i = 0; i < ARRAY_SIZE(saved_msrs); i++) {
        for (uint32_t j = 0; j < list->nmsrs; j++) {
            if (list->indices[j] == saved_msrs[i]) {
                s->msrs[s->nmsrs++] = saved_msrs[i];
                break;
            }
        }
    }
    return true;
}

bool kvm_arch_init(KVMState *s, GError **errp)
{
    s->cpuid = kvm_get_supported_cpuid(s->fd, errp);
    if (!s->cpuid || !kvm_init_msr_list(s, errp)) {
        return false;
    }
    s->has_xcrs = kvm_check_extension(KVM_CAP_XCRS) > 0;
    s->has_debugregs = kvm_check_extension(KVM_CAP_DEBUGREGS) > 0;
    if (kvm_check_extension(KVM_CAP_XSAVE) > 0) {
        s->xsave_size = MAX(kvm_check_extension(KVM_CAP_XSAVE2),
                            (int)sizeof(struct kvm_xsave));
    }
    s->vm_reset_state = g_new0(KVMVMSavedState, 1);
    return kvm_vm_get_state(s->vm_reset_state, errp);
}

void kvm_arch_destroy(KVMState *s)
{
    g_free(s->cpuid);
    g_free(s->vm_reset_state);
}

void kvm_arch_destroy_vcpu(CPUState *cpu)
{
    g_free(cpu->reset_state);
}

/* Each vCPU reports its own APIC ID, as an OS expects for bring-up. */
static void kvm_cpuid_set_apic_id(struct kvm_cpuid2 *c, uint32_t id)
{
    for (uint32_t i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];

        if (e->function == 1) {
            e->ebx = (e->ebx & 0x00ffffff) | (id << 24);
        } else if (e->function == 0xb || e->function == 0x1f) {
            e->edx = id;
        }
    }
}

/* The power-on state minus the TSC, which must not go backwards. */
static bool kvm_capture_reset_state(CPUState *cpu, GError **errp)
{
    X86CPUSavedState *s = g_new0(X86CPUSavedState, 1);
    uint32_t n = 0;

    if (!kvm_cpu_get_state(cpu, s, errp)) {
        g_free(s);
        return false;
    }
    for (uint32_t i = 0; i < s->nmsrs; i++) {
        if (s->msrs[i].index != MSR_IA32_TSC) {
            s->msrs[n++] = s->msrs[i];
        }
    }
    s->nmsrs = n;
    cpu->reset_state = s;
    return true;
}

bool kvm_arch_init_vcpu(CPUState *cpu, int ncpus, GError **errp)
{
    KVMState *s = kvm_state;
    size_t sz = sizeof(*s->cpuid) +
                s->cpuid->nent * sizeof(struct kvm_cpuid_entry2);
    g_autofree struct kvm_cpuid2 *c = g_memdup2(s->cpuid, sz);

    kvm_cpuid_set_apic_id(c, cpu->index);
    if (!vcpu_ioctl(cpu, KVM_SET_CPUID2, c, "KVM_SET_CPUID2", errp)) {
        return false;
    }
    return kvm_capture_reset_state(cpu, errp);
}

/* ---- vCPU state ---- */

static bool kvm_get_xsave(CPUState *cpu, X86CPUSavedState *s, GError **errp)
{
    int size = kvm_state->xsave_size;
    g_autofree uint8_t *buf = g_malloc0(size);
    unsigned long req = size > (int)sizeof(struct kvm_xsave) ?
                        KVM_GET_XSAVE2 : KVM_GET_XSAVE;

    if (!vcpu_ioctl(cpu, req, buf, "KVM_GET_XSAVE", errp)) {
        return false;
    }
    for (int i = sizeof(s->xsave); i < size; i++) {
        if (buf[i]) {
            error_setg(errp, "vCPU %d: XSAVE state beyond %zu bytes is in "
                       "use (e.g. AMX); it cannot be saved", cpu->index,
                       sizeof(s->xsave));
            return false;
        }
    }
    memcpy(s->xsave, buf, sizeof(s->xsave));
    s->has_xsave = true;
    return true;
}

static bool kvm_put_xsave(CPUState *cpu, const X86CPUSavedState *s,
                          GError **errp)
{
    /* KVM reads its full XSAVE size from us: pad with zeroes. */
    g_autofree uint8_t *buf = g_malloc0(MAX(kvm_state->xsave_size,
                                            (int)sizeof(s->xsave)));

    memcpy(buf, s->xsave, sizeof(s->xsave));
    return vcpu_ioctl(cpu, KVM_SET_XSAVE, buf, "KVM_SET_XSAVE", errp);
}

typedef struct MsrBuf {
    struct kvm_msrs hdr;
    struct kvm_msr_entry e[KVM_MAX_SAVED_MSRS];
} MsrBuf;

static bool kvm_get_msrs(CPUState *cpu, X86CPUSavedState *s, GError **errp)
{
    MsrBuf b = { .hdr.nmsrs = kvm_state->nmsrs };
    int ret;

    for (uint32_t i = 0; i < kvm_state->nmsrs; i++) {
        b.e[i].index = kvm_state->msrs[i];
    }
    ret = ioctl(cpu->fd, KVM_GET_MSRS, &b);
    if (ret != (int)kvm_state->nmsrs) {
        error_setg(errp, "vCPU %d: KVM_GET_MSRS read %d of %u MSRs",
                   cpu->index, ret, kvm_state->nmsrs);
        return false;
    }
    s->nmsrs = kvm_state->nmsrs;
    for (uint32_t i = 0; i < s->nmsrs; i++) {
        s->msrs[i].index = b.e[i].index;
        s->msrs[i].data = b.e[i].data;
    }
    return true;
}

static bool kvm_put_msrs(CPUState *cpu, const X86CPUSavedState *s,
                         GError **errp)
{
    MsrBuf b = { .hdr.nmsrs = s->nmsrs };
    int ret;

    if (s->nmsrs > KVM_MAX_SAVED_MSRS) {
        error_setg(errp, "vCPU %d: %u MSRs, at most %d", cpu->index,
                   s->nmsrs, KVM_MAX_SAVED_MSRS);
        return false;
    }
    for (uint32_t i = 0; i < s->nmsrs; i++) {
        b.e[i].index = s->msrs[i].index;
        b.e[i].data = s->msrs[i].data;
    }
    ret = ioctl(cpu->fd, KVM_SET_MSRS, &b);
    if (ret != (int)s->nmsrs) {
        uint32_t bad = ret >= 0 && ret < (int)s->nmsrs ?
                       s->msrs[ret].index : 0;
        error_setg(errp, "vCPU %d: KVM_SET_MSRS wrote %d of %u MSRs "
                   "(refused: 0x%x)", cpu->index, ret, s->nmsrs, bad);
        return false;
    }
    return true;
}

bool kvm_cpu_get_state(CPUState *cpu, X86CPUSavedState *s, GError **errp)
{
    memset(s, 0, sizeof(*s));
    if (!vcpu_ioctl(cpu, KVM_GET_REGS, &s->regs, "KVM_GET_REGS", errp) ||
        !vcpu_ioctl(cpu, KVM_GET_SREGS, &s->sregs, "KVM_GET_SREGS", errp) ||
        !vcpu_ioctl(cpu, KVM_GET_FPU, &s->fpu, "KVM_GET_FPU", errp)) {
        return false;
    }
    if (kvm_state->xsave_size && !kvm_get_xsave(cpu, s, errp)) {
        return false;
    }
    if (kvm_state->has_xcrs) {
        if (!vcpu_ioctl(cpu, KVM_GET_XCRS, &s->xcrs, "KVM_GET_XCRS", errp)) {
            return false;
        }
        s->has_xcrs = true;
    }
    if (!kvm_get_msrs(cpu, s, errp) ||
        !vcpu_ioctl(cpu, KVM_GET_LAPIC, &s->lapic, "KVM_GET_LAPIC", errp) ||
        !vcpu_ioctl(cpu, KVM_GET_MP_STATE, &s->mp_state, "KVM_GET_MP_STATE",
                    errp) ||
        !vcpu_ioctl(cpu, KVM_GET_VCPU_EVENTS, &s->events,
                    "KVM_GET_VCPU_EVENTS", errp)) {
        return false;
    }
    if (kvm_state->has_debugregs &&
        !vcpu_ioctl(cpu, KVM_GET_DEBUGREGS, &s->debugregs,
                    "KVM_GET_DEBUGREGS", errp)) {
        return false;
    }
    return true;
}

/*
 * Order matters to KVM: sregs first (CR0/CR4/EFER decide what else is
 * valid, and the APIC base must be set before the LAPIC registers), xcrs
 * before xsave (XCR0 gates the components), mp_state and pending events
 * last so that nothing after them resets them.
 */
bool kvm_cpu_put_state(CPUState *cpu, const X86CPUSavedState *s,
                       GError **errp)
{
    struct kvm_vcpu_events ev = s->events;
    struct kvm_sregs sregs = s->sregs;
    struct kvm_regs regs = s->regs;
    struct kvm_fpu fpu = s->fpu;
    struct kvm_xcrs xcrs = s->xcrs;
    struct kvm_lapic_state lapic = s->lapic;
    struct kvm_mp_state mp = s->mp_state;
    struct kvm_debugregs dbg = s->debugregs;

    if (!vcpu_ioctl(cpu, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS", errp) ||
        !vcpu_ioctl(cpu, KVM_SET_REGS, &regs, "KVM_SET_REGS", errp)) {
        return false;
    }
    if (s->has_xcrs && kvm_state->has_xcrs &&
        !vcpu_ioctl(cpu, KVM_SET_XCRS, &xcrs, "KVM_SET_XCRS", errp)) {
        return false;
    }
    if (s->has_xsave && kvm_state->xsave_size) {
        if (!kvm_put_xsave(cpu, s, errp)) {
            return false;
        }
    } else if (!vcpu_ioctl(cpu, KVM_SET_FPU, &fpu, "KVM_SET_FPU", errp)) {
        return false;
    }
    if (!kvm_put_msrs(cpu, s, errp)) {
        return false;
    }
    if (kvm_state->has_debugregs &&
        !vcpu_ioctl(cpu, KVM_SET_DEBUGREGS, &dbg, "KVM_SET_DEBUGREGS",
                    errp)) {
        return false;
    }
    ev.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING |
                KVM_VCPUEVENT_VALID_SIPI_VECTOR;
    return vcpu_ioctl(cpu, KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC", errp) &&
           vcpu_ioctl(cpu, KVM_SET_MP_STATE, &mp, "KVM_SET_MP_STATE",
                      errp) &&
           vcpu_ioctl(cpu, KVM_SET_VCPU_EVENTS, &ev, "KVM_SET_VCPU_EVENTS",
                      errp);
}

/* ---- reset and Multiboot entry ---- */

bool kvm_cpu_reset(CPUState *cpu, GError **errp)
{
    if (!cpu->reset_state) {
        error_setg(errp, "vCPU %d has no reset state", cpu->index);
        return false;
    }
    if (!kvm_cpu_put_state(cpu, cpu->reset_state, errp)) {
        return false;
    }
    kvm_cpu_clear_halt(cpu);
    return true;
}

static void flat_segment(struct kvm_segment *seg, uint16_t sel, uint8_t type)
{
    *seg = (struct kvm_segment) {
        .base = 0,
        .limit = 0xffffffff,
        .selector = sel,
        .type = type,
        .present = 1,
        .dpl = 0,
        .db = 1,
        .s = 1,
        .g = 1,
    };
}

bool kvm_cpu_set_multiboot_state(CPUState *cpu, uint32_t entry,
                                 uint32_t mbi_addr, GError **errp)
{
    struct kvm_sregs sregs;
    struct kvm_regs regs = {
        .rax = MULTIBOOT_BOOTLOADER_MAGIC,
        .rbx = mbi_addr,
        .rip = entry,
        .rflags = 0x2,
    };
    struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };

    if (!vcpu_ioctl(cpu, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS", errp)) {
        return false;
    }
    /* Selectors as if a GDT had code at 0x08 and data at 0x10. */
    flat_segment(&sregs.cs, 0x08, 0xb);     /* code, read, accessed */
    flat_segment(&sregs.ds, 0x10, 0x3);     /* data, write, accessed */
    sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    sregs.cr0 = CR0_PE | CR0_ET;
    sregs.cr4 = 0;
    sregs.efer = 0;
    return vcpu_ioctl(cpu, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS", errp) &&
           vcpu_ioctl(cpu, KVM_SET_REGS, &regs, "KVM_SET_REGS", errp) &&
           vcpu_ioctl(cpu, KVM_SET_MP_STATE, &mp, "KVM_SET_MP_STATE", errp);
}

/* ---- VM state ---- */

static bool vm_ioctl(unsigned long req, void *arg, const char *what,
                     GError **errp)
{
    if (!kvm_state) {
        error_setg(errp, "KVM is not initialised");
        return false;
    }
    if (kvm_ioctl(kvm_state->vmfd, req, arg) < 0) {
        error_setg_errno(errp, errno, "KVM: %s failed", what);
        return false;
    }
    return true;
}

bool kvm_vm_get_state(KVMVMSavedState *s, GError **errp)
{
    memset(s, 0, sizeof(*s));
    s->pic[0].chip_id = KVM_IRQCHIP_PIC_MASTER;
    s->pic[1].chip_id = KVM_IRQCHIP_PIC_SLAVE;
    s->ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
    if (!vm_ioctl(KVM_GET_IRQCHIP, &s->pic[0], "KVM_GET_IRQCHIP", errp) ||
        !vm_ioctl(KVM_GET_IRQCHIP, &s->pic[1], "KVM_GET_IRQCHIP", errp) ||
        !vm_ioctl(KVM_GET_IRQCHIP, &s->ioapic, "KVM_GET_IRQCHIP", errp) ||
        !vm_ioctl(KVM_GET_PIT2, &s->pit, "KVM_GET_PIT2", errp) ||
        !vm_ioctl(KVM_GET_CLOCK, &s->clock, "KVM_GET_CLOCK", errp)) {
        return false;
    }
    s->has_pit = true;
    return true;
}

static bool kvm_vm_put_chips(const KVMVMSavedState *s, GError **errp)
{
    struct kvm_irqchip chips[3] = { s->pic[0], s->pic[1], s->ioapic };
    struct kvm_pit_state2 pit = s->pit;

    chips[0].chip_id = KVM_IRQCHIP_PIC_MASTER;
    chips[1].chip_id = KVM_IRQCHIP_PIC_SLAVE;
    chips[2].chip_id = KVM_IRQCHIP_IOAPIC;
    for (int i = 0; i < 3; i++) {
        if (!vm_ioctl(KVM_SET_IRQCHIP, &chips[i], "KVM_SET_IRQCHIP", errp)) {
            return false;
        }
    }
    return !s->has_pit ||
           vm_ioctl(KVM_SET_PIT2, &pit, "KVM_SET_PIT2", errp);
}

bool kvm_vm_put_state(const KVMVMSavedState *s, GError **errp)
{
    /* Only the clock value: the other flags describe the source host. */
    struct kvm_clock_data clock = { .clock = s->clock.clock };

    return kvm_vm_put_chips(s, errp) &&
           vm_ioctl(KVM_SET_CLOCK, &clock, "KVM_SET_CLOCK", errp);
}

bool kvm_vm_reset(GError **errp)
{
    if (!kvm_state || !kvm_state->vm_reset_state) {
        error_setg(errp, "KVM is not initialised");
        return false;
    }
    return kvm_vm_put_chips(kvm_state->vm_reset_state, errp);
}

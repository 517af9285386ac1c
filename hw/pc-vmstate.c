/*
 * Migration of the "pc" machine's device state: the vCPUs, the in-kernel
 * irqchip/PIT/clock and the UART.
 *
 * Kernel structs are encoded member by member (big-endian, as every
 * vmstate field), so that the stream does not depend on how the C
 * compiler laid them out.  Two regions go as raw bytes because their
 * layout is fixed by the x86 architecture rather than by Linux: the XSAVE
 * area (Intel SDM, standard format) and the local APIC register page
 * (one 16-byte slot per register, KVM_APIC_REG_SIZE bytes).  Their sizes
 * are sent first and must match ours.
 *
 * Save runs with the vCPUs parked (the VM is stopped); load runs before
 * the destination starts its parked vCPUs, in precopy at the end of the
 * stream, in postcopy from the PACKAGED blob before RUN.
 */
#include "qemu/osdep.h"
#include "qemu/thread.h"
#include "hw/pc-vmstate.h"
#include "migration/savevm.h"
#include "sysemu/cpus.h"
#include "sysemu/kvm.h"

/*
 * sizeof(_t), refusing to compile unless member _f of _s is exactly _n
 * elements of type _t: a header change cannot silently truncate a field.
 */
#define CHECKED_SIZE(_s, _f, _t, _n)                                    \
    (sizeof(_t) +                                                       \
     0 * sizeof(char[sizeof(((_s *)0)->_f) == sizeof(_t) * (_n) ? 1 : -1]))

#define KF(_f, _s, _t, _type) {                                         \
    .name = #_f, .offset = offsetof(_s, _f),                            \
    .size = CHECKED_SIZE(_s, _f, _t, 1), .type = (_type) }
#define KF_ARRAY(_f, _s, _t, _type, _n) {                               \
    .name = #_f, .offset = offsetof(_s, _f),                            \
    .size = CHECKED_SIZE(_s, _f, _t, _n), .type = (_type), .num = (_n) }
#define KU8(_f, _s)   KF(_f, _s, uint8_t, VMS_UINT8)
#define KU16(_f, _s)  KF(_f, _s, uint16_t, VMS_UINT16)
#define KU32(_f, _s)  KF(_f, _s, uint32_t, VMS_UINT32)
#define KU64(_f, _s)  KF(_f, _s, uint64_t, VMS_UINT64)
#define KI64(_f, _s)  KF(_f, _s, int64_t, VMS_INT64)
#define KU64_ARRAY(_f, _s, _n) KF_ARRAY(_f, _s, uint64_t, VMS_UINT64, _n)
/* A nested struct member, encoded by _vmsd. */
#define KSTRUCT(_f, _s, _vmsd, _t) {                                    \
    .name = #_f, .offset = offsetof(_s, _f),                            \
    .size = CHECKED_SIZE(_s, _f, _t, 1), .type = VMS_STRUCT,            \
    .vmsd = &(_vmsd) }
#define KSTRUCT_ARRAY(_f, _s, _vmsd, _t, _n) {                          \
    .name = #_f, .offset = offsetof(_s, _f),                            \
    .size = CHECKED_SIZE(_s, _f, _t, _n), .type = VMS_STRUCT,           \
    .num = (_n), .vmsd = &(_vmsd) }

/* ---- vCPU: struct by struct ---- */

static const VMStateDescription vmstate_kvm_regs = {
    .name = "kvm_regs",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        KU64(rax, struct kvm_regs), KU64(rbx, struct kvm_regs),
        KU64(rcx, struct kvm_regs), KU64(rdx, struct kvm_regs),
        KU64(rsi, struct kvm_regs), KU64(rdi, struct kvm_regs),
        KU64(rsp, struct kvm_regs), KU64(rbp, struct kvm_regs),
        KU64(r8, struct kvm_regs), KU64(r9, struct kvm_regs),
        KU64(r10, struct kvm_regs), KU64(r11, struct kvm_regs),
        KU64(r12, struct kvm_regs), KU64(r13, struct kvm_regs),
        KU64(r14, struct kvm_regs), KU64(r15, struct kvm_regs),
        KU64(rip, struct kvm_regs), KU64(rflags, struct kvm_regs),
        VMSTATE_END_OF_LIST()
    },
};

static const VMStateDescription vmstate_kvm_segment = {
    .name = "kvm_segment",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        KU64(base, struct kvm_segment),
        KU32(limit, struct kvm_segment),
        KU16(selector, struct kvm_segment),
        KU8(type, struct kvm_segment),
        KU8(present, struct kvm_segment),
        KU8(dpl, struct kvm_segment),
        KU8(db, struct kvm_segment),
        KU8(s, struct kvm_segment),
        KU8(l, struct kvm_segment),
        KU8(g, struct kvm_segment),
        KU8(avl, struct kvm_segment),
        KU8(unusable, struct kvm_segment),
        VMSTATE_END_OF_LIST()
    },
};

static const VMStateDescription vmstate_kvm_dtable = {
    .name = "kvm_dtable",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        KU64(base, struct kvm_dtable),
        KU16(limit, struct kvm_dtable),
        VMSTATE_END_OF_LIST()
    },
};

#define SEG(_f) KSTRUCT(_f, struct kvm_sregs, vmstate_kvm_segment, \
                        struct kvm_segment)
#define DTABLE(_f) KSTRUCT(_f, struct kvm_sregs, vmstate_kvm_dtable, \
                           struct kvm_dtable)
#define KVM_INTERRUPT_BITMAP_WORDS ((KVM_NR_INTERRUPTS + 63) / 64)

static const VMStateDescription vmstate_kvm_sregs = {
    .name = "kvm_sregs",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        SEG(cs), SEG(ds), SEG(es), SEG(fs), SEG(gs), SEG(ss),
        SEG(tr), SEG(ldt),
        DTABLE(gdt), DTABLE(idt),
        KU64(cr0, struct kvm_sregs), KU64(cr2, struct kvm_sregs),
        KU64(cr3, struct kvm_sregs), KU64(cr4, struct kvm_sregs),
        KU64(cr8, struct kvm_sregs), KU64(efer, struct kvm_sregs),
        KU64(apic_base, struct kvm_sregs),
        KU64_ARRAY(interrupt_bitmap, struct kvm_sregs,
                   KVM_INTERRUPT_BITMAP_WORDS),
        VMSTATE_END_OF_LIST()
    },
};

static const VMStateDescription vmstate_kvm_fpu = {
    .name = "kvm_fpu",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        VMSTATE_BUFFER(fpr, struct kvm_fpu),        /* 8 x 16 bytes */
        KU16(fcw, struct kvm_fpu),
        KU16(fsw, struct kvm_fpu),
        KU8(ftwx, struct kvm_fpu),
        KU16(last_opcode, struct kvm_fpu),
        KU64(last_ip, struct kvm_fpu),
        KU64(last_dp, struct kvm_fpu),
        VMSTATE_BUFFER(xmm, struct kvm_fpu),        /* 16 x 16 bytes */
        KU32(mxcsr, struct kvm_fpu),
        VMSTATE_END_OF_LIST()
    },
};

static const VMStateDescription vmstate_kvm_xcr = {
    .name = "kvm_xcr",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        KU32(xcr, struct kvm_xcr),
        KU64(value, struct kvm_xcr),
        VMSTATE_END_OF_LIST()
    },
};

static const VMStateDescription vmstate_kvm_xcrs = {
    .name = "kvm_xcrs",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        KU32(nr_xcrs, struct kvm_xcrs),
        KU32(flags, struct kvm_xcrs),
        KSTRUCT_ARRAY(xcrs, struct kvm_xcrs, vmstate_kvm_xcr, struct kvm_xcr,
                      KVM_MAX_XCRS),
        VMSTATE_END_OF_LIST()
    },
};

typedef __typeof__(((X86CPUSavedState *)0)->msrs[0]) SavedMsr;

static const VMStateDescription vmstate_saved_msr = {
    .name = "msr",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        KU32(index, SavedMsr),
        KU64(data, SavedMsr),
        VMSTATE_END_OF_LIST()
    },
};

#define EV(_f, _bits) KF(_f, struct kvm_vcpu_events, uint##_bits##_t, \
                         VMS_UINT##_bits)

static const VMStateDescription vmstate_kvm_vcpu_events = {
    .name = "kvm_vcpu_events",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        EV(exception.injected, 8), EV(exception.nr, 8),
        EV(exception.has_error_code, 8), EV(exception.pending, 8),
        EV(exception.error_code, 32),
        EV(interrupt.injected, 8), EV(interrupt.nr, 8),
        EV(interrupt.soft, 8), EV(interrupt.shadow, 8),
        EV(nmi.injected, 8), EV(nmi.pending, 8), EV(nmi.masked, 8),
        EV(sipi_vector, 32),
        EV(flags, 32),
        EV(smi.smm, 8), EV(smi.pending, 8), EV(smi.smm_inside_nmi, 8),
        EV(smi.latched_init, 8),
        EV(triple_fault.pending, 8),
        EV(exception_has_payload, 8),
        EV(exception_payload, 64),
        VMSTATE_END_OF_LIST()
    },
};

static const VMStateDescription vmstate_kvm_debugregs = {
    .name = "kvm_debugregs",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        KU64_ARRAY(db, struct kvm_debugregs, 4),
        KU64(dr6, struct kvm_debugregs),
        KU64(dr7, struct kvm_debugregs),
        KU64(flags, struct kvm_debugregs),
        VMSTATE_END_OF_LIST()
    },
};

/* ---- "cpu" ---- */

typedef struct PCCPUVMState {
    int index;
    /* Sent so that an -smp mismatch fails with a clear message. */
    uint32_t nr_vcpus;
    /* Sizes of the raw regions; must be equal on both sides. */
    uint32_t xsave_len;
    uint32_t lapic_len;
    X86CPUSavedState s;
} PCCPUVMState;

static PCCPUVMState *pc_cpu_states;
static int pc_cpu_count;

/* ---- where vCPU and VM state come from and go to: KVM by default ---- */

static int kvm_sink_cpu_count(void)
{
    return cpu_count();
}

static bool kvm_sink_cpu_get(int index, X86CPUSavedState *s, GError **errp)
{
    CPUState *cpu = qemu_get_cpu(index);

    if (!cpu) {
        error_setg(errp, "vCPU %d does not exist", index);
        return false;
    }
    return kvm_cpu_get_state(cpu, s, errp);
}

static bool kvm_sink_cpu_put(int index, const X86CPUSavedState *s,
                             GError **errp)
{
    CPUState *cpu = qemu_get_cpu(index);

    if (!cpu) {
        error_setg(errp, "vCPU %d does not exist", index);
        return false;
    }
    return kvm_cpu_put_state(cpu, s, errp);
}

static const PCVMStateSink kvm_sink = {
    .cpu_count = kvm_sink_cpu_count,
    .cpu_get = kvm_sink_cpu_get,
    .cpu_put = kvm_sink_cpu_put,
    .vm_get = kvm_vm_get_state,
    .vm_put = kvm_vm_put_state,
};

static const PCVMStateSink *pc_sink = &kvm_sink;

void pc_vmstate_set_sink(const PCVMStateSink *sink)
{
    pc_sink = sink ? sink : &kvm_sink;
}

static int pc_cpu_pre_save(void *opaque)
{
    PCCPUVMState *c = opaque;
    g_autoptr(GError) err = NULL;

    /* No errp here: say why once, the stream reports the section. */
    if (!pc_sink->cpu_get(c->index, &c->s, &err)) {
        error_report("migration: %s", err->message);
        return -EIO;
    }
    c->nr_vcpus = pc_sink->cpu_count();
    return 0;
}

static int pc_cpu_pre_load(void *opaque)
{
    PCCPUVMState *c = opaque;

    /* Nothing of a previous attempt may leak into this one. */
    memset(&c->s, 0, sizeof(c->s));
    c->nr_vcpus = 0;
    return 0;
}

static bool pc_cpu_post_load(void *opaque, int version_id, GError **errp)
{
    PCCPUVMState *c = opaque;

    if (c->nr_vcpus != (uint32_t)pc_sink->cpu_count()) {
        error_setg(errp, "the source has %u vCPUs and this machine %d: "
                   "-smp must be the same on both sides", c->nr_vcpus,
                   pc_sink->cpu_count());
        return false;
    }
    if (c->s.nmsrs > KVM_MAX_SAVED_MSRS) {
        error_setg(errp, "vCPU %d: %u MSRs, at most %d are supported",
                   c->index, c->s.nmsrs, KVM_MAX_SAVED_MSRS);
        return false;
    }
    if (c->s.xcrs.nr_xcrs > KVM_MAX_XCRS) {
        error_setg(errp, "vCPU %d: %u XCRs, at most %d are supported",
                   c->index, c->s.xcrs.nr_xcrs, KVM_MAX_XCRS);
        return false;
    }
    return pc_sink->cpu_put(c->index, &c->s, errp);
}

#define CPUF(_f) offsetof(PCCPUVMState, _f)

const VMStateDescription vmstate_pc_cpu = {
    .name = "cpu",
    .version_id = 1,
    .minimum_version_id = 1,
    .pre_save = pc_cpu_pre_save,
    .pre_load = pc_cpu_pre_load,
    .post_load_errp = pc_cpu_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32(nr_vcpus, PCCPUVMState),
        VMSTATE_UINT32_EQUAL(xsave_len, PCCPUVMState),
        VMSTATE_UINT32_EQUAL(lapic_len, PCCPUVMState),
        KSTRUCT(s.regs, PCCPUVMState, vmstate_kvm_regs, struct kvm_regs),
        KSTRUCT(s.sregs, PCCPUVMState, vmstate_kvm_sregs,
                struct kvm_sregs),
        KSTRUCT(s.fpu, PCCPUVMState, vmstate_kvm_fpu, struct kvm_fpu),
        VMSTATE_BOOL(s.has_xsave, PCCPUVMState),
        VMSTATE_BUFFER(s.xsave, PCCPUVMState),
        VMSTATE_BOOL(s.has_xcrs, PCCPUVMState),
        KSTRUCT(s.xcrs, PCCPUVMState, vmstate_kvm_xcrs, struct kvm_xcrs),
        VMSTATE_UINT32(s.nmsrs, PCCPUVMState),
        KSTRUCT_ARRAY(s.msrs, PCCPUVMState, vmstate_saved_msr, SavedMsr,
                      KVM_MAX_SAVED_MSRS),
        VMSTATE_BUFFER(s.lapic.regs, PCCPUVMState),
        KU32(s.mp_state.mp_state, PCCPUVMState),
        KSTRUCT(s.events, PCCPUVMState, vmstate_kvm_vcpu_events,
                struct kvm_vcpu_events),
        KSTRUCT(s.debugregs, PCCPUVMState, vmstate_kvm_debugregs,
                struct kvm_debugregs),
        VMSTATE_END_OF_LIST()
    },
};

/* ---- "kvm-vm": PIC master/slave, IOAPIC, PIT, clock ---- */

#define PIC(_f) KU8(_f, struct kvm_pic_state)

static const VMStateDescription vmstate_kvm_pic = {
    .name = "kvm_pic_state",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        PIC(last_irr), PIC(irr), PIC(imr), PIC(isr), PIC(priority_add),
        PIC(irq_base), PIC(read_reg_select), PIC(poll), PIC(special_mask),
        PIC(init_state), PIC(auto_eoi), PIC(rotate_on_auto_eoi),
        PIC(special_fully_nested_mode), PIC(init4), PIC(elcr),
        PIC(elcr_mask),
        VMSTATE_END_OF_LIST()
    },
};

static const VMStateDescription vmstate_kvm_ioapic = {
    .name = "kvm_ioapic_state",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        KU64(base_address, struct kvm_ioapic_state),
        KU32(ioregsel, struct kvm_ioapic_state),
        KU32(id, struct kvm_ioapic_state),
        KU32(irr, struct kvm_ioapic_state),
        /* each redirection entry as its 64-bit register value */
        KU64_ARRAY(redirtbl, struct kvm_ioapic_state, KVM_IOAPIC_NUM_PINS),
        VMSTATE_END_OF_LIST()
    },
};

#define PITCH(_f, _bits) KF(_f, struct kvm_pit_channel_state, \
                            uint##_bits##_t, VMS_UINT##_bits)

static const VMStateDescription vmstate_kvm_pit_channel = {
    .name = "kvm_pit_channel_state",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        PITCH(count, 32), PITCH(latched_count, 16), PITCH(count_latched, 8),
        PITCH(status_latched, 8), PITCH(status, 8), PITCH(read_state, 8),
        PITCH(write_state, 8), PITCH(write_latch, 8), PITCH(rw_mode, 8),
        PITCH(mode, 8), PITCH(bcd, 8), PITCH(gate, 8),
        KI64(count_load_time, struct kvm_pit_channel_state),
        VMSTATE_END_OF_LIST()
    },
};

static const VMStateDescription vmstate_kvm_pit = {
    .name = "kvm_pit_state2",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        KSTRUCT_ARRAY(channels, struct kvm_pit_state2,
                      vmstate_kvm_pit_channel, struct kvm_pit_channel_state,
                      3),
        KU32(flags, struct kvm_pit_state2),
        VMSTATE_END_OF_LIST()
    },
};

static KVMVMSavedState pc_vm_state;

static int pc_kvm_vm_pre_save(void *opaque)
{
    g_autoptr(GError) err = NULL;

    if (!pc_sink->vm_get(opaque, &err)) {
        error_report("migration: %s", err->message);
        return -EIO;
    }
    return 0;
}

static int pc_kvm_vm_pre_load(void *opaque)
{
    memset(opaque, 0, sizeof(KVMVMSavedState));
    return 0;
}

static bool pc_kvm_vm_post_load(void *opaque, int version_id, GError **errp)
{
    /* KVM validates the chip contents; we own nothing else to check. */
    return pc_sink->vm_put(opaque, errp);
}

const VMStateDescription vmstate_pc_kvm_vm = {
    .name = "kvm-vm",
    .version_id = 1,
    .minimum_version_id = 1,
    .pre_save = pc_kvm_vm_pre_save,
    .pre_load = pc_kvm_vm_pre_load,
    .post_load_errp = pc_kvm_vm_post_load,
    .fields = (const VMStateField[]) {
        KSTRUCT(pic[0].chip.pic, KVMVMSavedState, vmstate_kvm_pic,
                struct kvm_pic_state),
        KSTRUCT(pic[1].chip.pic, KVMVMSavedState, vmstate_kvm_pic,
                struct kvm_pic_state),
        KSTRUCT(ioapic.chip.ioapic, KVMVMSavedState, vmstate_kvm_ioapic,
                struct kvm_ioapic_state),
        VMSTATE_BOOL(has_pit, KVMVMSavedState),
        KSTRUCT(pit, KVMVMSavedState, vmstate_kvm_pit,
                struct kvm_pit_state2),
        KU64(clock.clock, KVMVMSavedState),
        VMSTATE_END_OF_LIST()
    },
};

/* ---- "serial": COM1's registers ---- */

typedef struct PCSerialVMState {
    SerialState *dev;
    SerialRegs regs;
} PCSerialVMState;

static PCSerialVMState pc_serial_state;

static int pc_serial_pre_save(void *opaque)
{
    PCSerialVMState *ss = opaque;

    qemu_mutex_lock(&ss->dev->lock);
    ss->regs = ss->dev->regs;
    qemu_mutex_unlock(&ss->dev->lock);
    return 0;
}

static int pc_serial_post_load(void *opaque, int version_id)
{
    PCSerialVMState *ss = opaque;
    SerialRegs *r = &ss->regs;
    /* The interrupt line as the UART drives it: THRE pending via OUT2. */
    bool level = r->thr_ipending && (r->ier & UART_IER_THRI) &&
                 (r->mcr & 0x08);

    qemu_mutex_lock(&ss->dev->lock);
    ss->dev->regs = *r;
    if (ss->dev->set_irq) {
        ss->dev->set_irq(ss->dev->irq_opaque, level);
    }
    qemu_mutex_unlock(&ss->dev->lock);
    return 0;
}

#define UARTREG(_f) VMSTATE_UINT8(regs._f, PCSerialVMState)

const VMStateDescription vmstate_pc_serial = {
    .name = "serial",
    .version_id = 1,
    .minimum_version_id = 1,
    .pre_save = pc_serial_pre_save,
    .post_load = pc_serial_post_load,
    .fields = (const VMStateField[]) {
        UARTREG(rbr), UARTREG(thr), UARTREG(ier), UARTREG(iir),
        UARTREG(fcr), UARTREG(lcr), UARTREG(mcr), UARTREG(lsr),
        UARTREG(msr), UARTREG(scr), UARTREG(dll), UARTREG(dlm),
        VMSTATE_BOOL(regs.thr_ipending, PCSerialVMState),
        VMSTATE_END_OF_LIST()
    },
};

/* ---- registration ---- */

void pc_vmstate_unregister(void)
{
    for (int i = 0; i < pc_cpu_count; i++) {
        vmstate_unregister(&vmstate_pc_cpu, &pc_cpu_states[i]);
    }
    vmstate_unregister(&vmstate_pc_kvm_vm, &pc_vm_state);
    vmstate_unregister(&vmstate_pc_serial, &pc_serial_state);
    g_clear_pointer(&pc_cpu_states, g_free);
    pc_cpu_count = 0;
    pc_serial_state.dev = NULL;
}

bool pc_vmstate_register(int ncpus, SerialState *serial, GError **errp)
{
    if (ncpus < 1 || ncpus != pc_sink->cpu_count()) {
        error_setg(errp, "pc device state: %d vCPUs asked, %d exist",
                   ncpus, pc_sink->cpu_count());
        return false;
    }
    pc_vmstate_unregister();
    /*
     * Stream order is registration order: the irqchip and clock go before
     * the vCPUs, whose LAPICs and pending events then land on a
     * consistent chip; the UART last.
     */
    if (vmstate_register(NULL, 0, &vmstate_pc_kvm_vm, &pc_vm_state) < 0) {
        goto busy;
    }
    pc_cpu_states = g_new0(PCCPUVMState, ncpus);
    pc_cpu_count = ncpus;
    for (int i = 0; i < ncpus; i++) {
        PCCPUVMState *c = &pc_cpu_states[i];

        c->index = i;
        c->xsave_len = sizeof(c->s.xsave);
        c->lapic_len = sizeof(c->s.lapic.regs);
        if (vmstate_register(NULL, i, &vmstate_pc_cpu, c) < 0) {
            goto busy;
        }
    }
    if (serial) {
        pc_serial_state.dev = serial;
        if (vmstate_register(NULL, 0, &vmstate_pc_serial,
                             &pc_serial_state) < 0) {
            goto busy;
        }
    }
    return true;

busy:
    pc_vmstate_unregister();
    error_setg(errp, "pc device state sections are already registered");
    return false;
}

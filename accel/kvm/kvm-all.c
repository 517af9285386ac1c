/*
 * KVM accelerator: /dev/kvm, the VM, memslots and dirty logging, port I/O
 * dispatch.  vCPUs live in kvm-cpus.c, x86 register state in kvm-x86.c.
 */
#include "qemu/osdep.h"
#include "qemu/thread.h"
#include "exec/memory.h"
#include "qemu/bitmap.h"
#include "hw/machine.h"
#include "kvm-int.h"
#include <fcntl.h>
#include <pthread.h>
#include <sys/ioctl.h>

#define KVM_DEVICE "/dev/kvm"

/*
 * Fixed addresses of the TSS pages and the EPT identity map that VMX needs
 * for real mode.  Both sit just below the IOAPIC/LAPIC window, above any
 * guest RAM we map below 4 GiB (at most 3 GiB).
 */
#define KVM_TSS_ADDR          0xfeffd000ULL   /* three pages */
#define KVM_IDENTITY_MAP_ADDR 0xfeffc000ULL   /* one page */

#define KVM_MAX_SLOTS 32
#define KVM_MAX_PIO 16

typedef struct KVMSlot {
    uint32_t slot;
    hwaddr gpa;
    uint64_t size;
    void *host;
    RAMBlock *block;
    ram_addr_t offset;          /* of gpa within block */
    uint32_t flags;             /* KVM_MEM_* */
    unsigned long *dirty;       /* scratch for KVM_GET_DIRTY_LOG */
} KVMSlot;

typedef struct KVMPio {
    uint16_t base;
    uint16_t len;
    KVMPioRead read;
    KVMPioWrite write;
    void *opaque;
} KVMPio;

KVMState *kvm_state;

static QemuMutex slots_lock = QEMU_MUTEX_INITIALIZER;
static KVMSlot slots[KVM_MAX_SLOTS];
static unsigned nslots;
static bool dirty_logging;

static KVMPio pios[KVM_MAX_PIO];
static unsigned npios;

bool kvm_enabled(void)
{
    return kvm_state != NULL;
}

int kvm_ioctl(int fd, unsigned long req, void *arg)
{
    int ret;

    do {
        ret = ioctl(fd, req, arg);
    } while (ret < 0 && errno == EINTR);
    return ret;
}

int kvm_check_extension(int cap)
{
    int ret = ioctl(kvm_state->vmfd >= 0 ? kvm_state->vmfd : kvm_state->fd,
                    KVM_CHECK_EXTENSION, (unsigned long)cap);

    return ret < 0 ? 0 : ret;
}

static int kvm_open(GError **errp)
{
    int fd = open(KVM_DEVICE, O_RDWR | O_CLOEXEC);

    if (fd < 0) {
        error_setg_errno(errp, errno,
                         "Could not access KVM kernel module (" KVM_DEVICE ")");
    }
    return fd;
}

bool kvm_available(GError **errp)
{
    int fd = kvm_open(errp);

    if (fd < 0) {
        return false;
    }
    close(fd);
    return true;
}

/* ---- memslots ---- */

static bool kvm_slot_commit(KVMSlot *s, uint32_t flags, GError **errp)
{
    struct kvm_userspace_memory_region r = {
        .slot = s->slot,
        .flags = flags,
        .guest_phys_addr = s->gpa,
        .memory_size = s->size,
        .userspace_addr = (uintptr_t)s->host,
    };

    if (kvm_ioctl(kvm_state->vmfd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
        error_setg_errno(errp, errno,
                         "KVM_SET_USER_MEMORY_REGION slot %u gpa 0x%" PRIx64
                         " size 0x%" PRIx64, s->slot, s->gpa, s->size);
        return false;
    }
    s->flags = flags;
    return true;
}

static KVMSlot *kvm_slot_find(hwaddr gpa, uint64_t size)
{
    for (unsigned i = 0; i < nslots; i++) {
        if (slots[i].gpa == gpa && slots[i].size == size) {
            return &slots[i];
        }
    }
    return NULL;
}

static bool kvm_slot_overlaps(hwaddr gpa, uint64_t size)
{
    for (unsigned i = 0; i < nslots; i++) {
        if (gpa < slots[i].gpa + slots[i].size &&
            slots[i].gpa < gpa + size) {
            return true;
        }
    }
    return false;
}

static bool kvm_region_add_locked(const MemoryMapping *map, GError **errp)
{
    KVMSlot *s;

    if (kvm_slot_find(map->gpa, map->size)) {
        return true;            /* replayed mapping */
    }
    if (!map->size || !QEMU_IS_ALIGNED(map->gpa, TARGET_PAGE_SIZE) ||
        !QEMU_IS_ALIGNED(map->size, TARGET_PAGE_SIZE) ||
        !QEMU_IS_ALIGNED(map->offset, TARGET_PAGE_SIZE)) {
        error_setg(errp, "KVM: RAM mapping at gpa 0x%" PRIx64
                   " size 0x%" PRIx64 " is not page aligned",
                   map->gpa, map->size);
        return false;
    }
    if (kvm_slot_overlaps(map->gpa, map->size)) {
        error_setg(errp, "KVM: RAM mapping at gpa 0x%" PRIx64
                   " overlaps an existing one", map->gpa);
        return false;
    }
    if (nslots == KVM_MAX_SLOTS) {
        error_setg(errp, "KVM: too many RAM mappings (max %d)",
                   KVM_MAX_SLOTS);
        return false;
    }
    s = &slots[nslots];
    *s = (KVMSlot) {
        .slot = nslots,
        .gpa = map->gpa,
        .size = map->size,
        .host = ramblock_ptr(map->block, map->offset),
        .block = map->block,
        .offset = map->offset,
    };
    if (!kvm_slot_commit(s, dirty_logging ? KVM_MEM_LOG_DIRTY_PAGES : 0,
                         errp)) {
        return false;
    }
    s->dirty = g_new0(unsigned long,
                      BITS_TO_LONGS(s->size / TARGET_PAGE_SIZE));
    nslots++;
    return true;
}

static bool kvm_region_add(const MemoryMapping *map, GError **errp)
{
    bool ok;

    qemu_mutex_lock(&slots_lock);
    ok = kvm_region_add_locked(map, errp);
    qemu_mutex_unlock(&slots_lock);
    return ok;
}

/* ---- dirty logging ---- */

static bool kvm_set_logging(bool on, GError **errp)
{
    uint32_t flags = on ? KVM_MEM_LOG_DIRTY_PAGES : 0;

    for (unsigned i = 0; i < nslots; i++) {
        if (!kvm_slot_commit(&slots[i], flags, errp)) {
            return false;
        }
    }
    dirty_logging = on;
    return true;
}

/*
 * With KVM_DIRTY_LOG_INITIALLY_SET, enabling logging does not
 * write-protect anything: the slot's bitmap simply starts all ones, so the
 * first sync reports every page dirty.  That is what migration wants (its
 * first pass sends everything), and write-protection then happens
 * gradually, one KVM_CLEAR_DIRTY_LOG at a time.
 */
static bool kvm_log_start(GError **errp)
{
    bool ok;

    qemu_mutex_lock(&slots_lock);
    ok = kvm_set_logging(true, errp);
    qemu_mutex_unlock(&slots_lock);
    return ok;
}

static void kvm_log_stop(void)
{
    g_autoptr(GError) err = NULL;

    qemu_mutex_lock(&slots_lock);
    if (!kvm_set_logging(false, &err)) {
        warn_report("cannot stop dirty logging: %s", err->message);
    }
    qemu_mutex_unlock(&slots_lock);
}

/* OR npages bits of src into dst starting at bit dst_start; count new bits. */
static uint64_t bitmap_or_count(unsigned long *dst, unsigned long dst_start,
                                const unsigned long *src, unsigned long npages)
{
    uint64_t count = 0;

    if (dst_start % BITS_PER_LONG == 0) {
        unsigned long *d = dst + dst_start / BITS_PER_LONG;
        unsigned long nwords = BITS_TO_LONGS(npages);

        for (unsigned long i = 0; i < nwords; i++) {
            unsigned long w = src[i];

            if (i == nwords - 1 && npages % BITS_PER_LONG) {
                w &= (1UL << (npages % BITS_PER_LONG)) - 1;
            }
            if (w) {
                count += __builtin_popcountl(w & ~d[i]);
                d[i] |= w;
            }
        }
        return count;
    }
    for (unsigned long i = 0; i < npages; i++) {
        if (test_bit(i, src) && !test_bit(dst_start + i, dst)) {
            set_bit(dst_start + i, dst);
            count++;
        }
    }
    return count;
}

static bool kvm_slot_sync(KVMSlot *s, unsigned long *bmap,
                          uint64_t *num_dirty, GError **errp)
{
    unsigned long npages = s->size / TARGET_PAGE_SIZE;
    struct kvm_dirty_log log = { .slot = s->slot, .dirty_bitmap = s->dirty };

    memset(s->dirty, 0, BITS_TO_LONGS(npages) * sizeof(unsigned long));
    if (kvm_ioctl(kvm_state->vmfd, KVM_GET_DIRTY_LOG, &log) < 0) {
        error_setg_errno(errp, errno, "KVM_GET_DIRTY_LOG slot %u", s->slot);
        return false;
    }
    *num_dirty += bitmap_or_count(bmap, s->offset / TARGET_PAGE_SIZE,
                                  s->dirty, npages);
    if (kvm_state->manual_dirty_protect) {
        /* Re-protect exactly the pages we just collected. */
        struct kvm_clear_dirty_log clear = {
            .slot = s->slot,
            .first_page = 0,
            .num_pages = npages,
            .dirty_bitmap = s->dirty,
        };
        if (kvm_ioctl(kvm_state->vmfd, KVM_CLEAR_DIRTY_LOG, &clear) < 0) {
            error_setg_errno(errp, errno, "KVM_CLEAR_DIRTY_LOG slot %u",
                             s->slot);
            return false;
        }
    }
    return true;
}

static bool kvm_log_sync(RAMBlock *rb, unsigned long *bmap,
                         uint64_t *num_dirty, GError **errp)
{
    bool ok = true;

    *num_dirty = 0;
    qemu_mutex_lock(&slots_lock);
    for (unsigned i = 0; i < nslots && ok; i++) {
        if (slots[i].block != rb ||
            !(slots[i].flags & KVM_MEM_LOG_DIRTY_PAGES)) {
            continue;
        }
        if (slots[i].offset + slots[i].size > rb->used_length) {
            error_setg(errp, "KVM slot %u lies outside RAMBlock '%s'",
                       slots[i].slot, rb->idstr);
            ok = false;
            break;
        }
        ok = kvm_slot_sync(&slots[i], bmap, num_dirty, errp);
    }
    qemu_mutex_unlock(&slots_lock);
    return ok;
}

static const AccelMemoryOps kvm_memory_ops = {
    .region_add = kvm_region_add,
    .log_start = kvm_log_start,
    .log_stop = kvm_log_stop,
    .log_sync = kvm_log_sync,
};

/* ---- port I/O ---- */

bool kvm_register_pio(uint16_t base, uint16_t len, KVMPioRead read,
                      KVMPioWrite write, void *opaque, GError **errp)
{
    if (npios == KVM_MAX_PIO) {
        error_setg(errp, "too many port I/O devices");
        return false;
    }
    pios[npios++] = (KVMPio) { base, len, read, write, opaque };
    return true;
}

static KVMPio *kvm_pio_find(uint16_t port)
{
    for (unsigned i = 0; i < npios; i++) {
        if (port >= pios[i].base && port - pios[i].base < pios[i].len) {
            return &pios[i];
        }
    }
    return NULL;
}

void kvm_pio(uint16_t port, bool is_write, uint8_t *data, int size)
{
    for (int i = 0; i < size; i++) {
        uint16_t p = port + i;
        KVMPio *dev = kvm_pio_find(p);

        if (is_write) {
            if (dev && dev->write) {
                dev->write(dev->opaque, p - dev->base, data[i]);
            }
        } else {
            data[i] = dev && dev->read ? dev->read(dev->opaque, p - dev->base)
                                       : 0xff;
        }
    }
}

bool kvm_set_irq(int irq, int level, GError **errp)
{
    struct kvm_irq_level l = { .irq = irq, .level = level };

    if (!kvm_state || kvm_ioctl(kvm_state->vmfd, KVM_IRQ_LINE, &l) < 0) {
        error_setg_errno(errp, kvm_state ? errno : ENODEV,
                         "KVM_IRQ_LINE %d", irq);
        return false;
    }
    return true;
}

/* ---- VM creation ---- */

static bool kvm_vm_ioctl_checked(unsigned long req, void *arg,
                                 const char *what, GError **errp)
{
    if (kvm_ioctl(kvm_state->vmfd, req, arg) < 0) {
        error_setg_errno(errp, errno, "KVM: %s failed", what);
        return false;
    }
    return true;
}

static bool kvm_create_vm(KVMState *s, GError **errp)
{
    uint64_t idmap = KVM_IDENTITY_MAP_ADDR;
    struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };

    do {
        s->vmfd = ioctl(s->fd, KVM_CREATE_VM, 0);
    } while (s->vmfd < 0 && errno == EINTR);
    if (s->vmfd < 0) {
        error_setg_errno(errp, errno, "KVM_CREATE_VM failed");
        return false;
    }
    if (ioctl(s->vmfd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_ADDR) < 0) {
        error_setg_errno(errp, errno, "KVM: KVM_SET_TSS_ADDR failed");
        return false;
    }
    if (!kvm_vm_ioctl_checked(KVM_SET_IDENTITY_MAP_ADDR, &idmap,
                              "KVM_SET_IDENTITY_MAP_ADDR", errp) ||
        !kvm_vm_ioctl_checked(KVM_CREATE_IRQCHIP, NULL,
                              "KVM_CREATE_IRQCHIP", errp) ||
        !kvm_vm_ioctl_checked(KVM_CREATE_PIT2, &pit,
                              "KVM_CREATE_PIT2", errp)) {
        return false;
    }
    s->irqchip = true;
    return true;
}

static void kvm_enable_manual_protect(KVMState *s)
{
    int caps = kvm_check_extension(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    uint64_t want = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE |
                    KVM_DIRTY_LOG_INITIALLY_SET;
    struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 };

    if ((caps & want) != want) {
        return;                 /* plain KVM_GET_DIRTY_LOG */
    }
    cap.args[0] = want;
    if (ioctl(s->vmfd, KVM_ENABLE_CAP, &cap) < 0) {
        warn_report("KVM: cannot enable manual dirty log protection: %s",
                    g_strerror(errno));
        return;
    }
    s->manual_dirty_protect = true;
}

static bool kvm_open_and_check(KVMState *s, GError **errp)
{
    int ver;

    s->fd = kvm_open(errp);
    if (s->fd < 0) {
        return false;
    }
    ver = ioctl(s->fd, KVM_GET_API_VERSION, 0);
    if (ver != KVM_API_VERSION) {
        error_setg(errp, "KVM API version %d, expected %d", ver,
                   KVM_API_VERSION);
        return false;
    }
    s->vcpu_mmap_size = ioctl(s->fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (s->vcpu_mmap_size < (int)sizeof(struct kvm_run)) {
        error_setg_errno(errp, errno, "KVM_GET_VCPU_MMAP_SIZE failed");
        return false;
    }
    return true;
}

static void kvm_state_free(KVMState *s)
{
    kvm_arch_destroy(s);
    if (s->vmfd >= 0) {
        close(s->vmfd);
    }
    if (s->fd >= 0) {
        close(s->fd);
    }
    g_free(s);
}

/* Mappings made before we were registered (replayed: region_add dedups). */
static bool kvm_replay_mappings(GError **errp)
{
    size_t n = 0;
    const MemoryMapping *maps = memory_mappings(&n);

    for (size_t i = 0; i < n; i++) {
        if (!kvm_region_add(&maps[i], errp)) {
            return false;
        }
    }
    return true;
}

bool kvm_init(MachineState *ms, GError **errp)
{
    KVMState *s;

    if (kvm_state) {
        return true;
    }
    s = g_new0(KVMState, 1);
    s->fd = s->vmfd = -1;
    kvm_state = s;
    if (!kvm_open_and_check(s, errp) || !kvm_create_vm(s, errp) ||
        !kvm_arch_init(s, errp)) {
        goto fail;
    }
    kvm_enable_manual_protect(s);
    if (!kvm_replay_mappings(errp)) {
        goto fail;
    }
    memory_register_accel_ops(&kvm_memory_ops);
    return true;

fail:
    kvm_state = NULL;
    kvm_state_free(s);
    return false;
}

bool kvm_init_vcpus(MachineState *ms, GError **errp)
{
    if (!kvm_state) {
        error_setg(errp, "KVM is not initialised");
        return false;
    }
    if (ms->smp_cpus < 1 || ms->smp_cpus > 255) {
        error_setg(errp, "invalid number of vCPUs %d (1..255)", ms->smp_cpus);
        return false;
    }
    return kvm_create_vcpus(ms->smp_cpus, errp);
}

void kvm_destroy(void)
{
    KVMState *s = kvm_state;

    if (!s) {
        return;
    }
    kvm_destroy_vcpus();
    memory_register_accel_ops(NULL);
    qemu_mutex_lock(&slots_lock);
    for (unsigned i = 0; i < nslots; i++) {
        g_free(slots[i].dirty);
    }
    nslots = 0;
    dirty_logging = false;
    qemu_mutex_unlock(&slots_lock);
    npios = 0;
    kvm_state = NULL;
    kvm_state_free(s);
}

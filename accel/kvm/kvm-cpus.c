/*
 * vCPU threads for KVM: creation, the KVM_RUN loop and its exits, and the
 * pause/resume handshake used by vm_stop/vm_start and migration.
 *
 * Parking protocol: a pauser sets cpu->stop under cpus_lock, sets
 * kvm_run->immediate_exit and sends SIG_IPI to the thread.  If the thread
 * is inside KVM_RUN the signal makes it return with EINTR; if it is about
 * to enter, immediate_exit makes KVM_RUN return EINTR at once.  Either way
 * the thread re-checks cpu->stop, marks itself stopped and waits on
 * park_cond.  A vCPU that hit a fatal guest error (or a triple fault) parks
 * with cpu->halted until the machine is reset.
 */
#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "qemu/thread.h"
#include "sysemu/runstate.h"
#include "kvm-int.h"
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#define SIG_IPI SIGUSR1

static QemuMutex cpus_lock = QEMU_MUTEX_INITIALIZER;
static QemuCond park_cond = { .cond = PTHREAD_COND_INITIALIZER };     /* vCPUs */
static QemuCond parked_cond = { .cond = PTHREAD_COND_INITIALIZER };   /* pausers */
/* Serialises pause_all_vcpus/resume_all_vcpus callers. */
static QemuMutex pause_lock = QEMU_MUTEX_INITIALIZER;

static CPUState **cpus;
static int ncpus;
static __thread CPUState *current_cpu;

int cpu_count(void)
{
    return ncpus;
}

CPUState *qemu_get_cpu(int index)
{
    return index >= 0 && index < ncpus ? cpus[index] : NULL;
}

int cpu_index(const CPUState *cpu)
{
    return cpu->index;
}

pid_t cpu_thread_id(const CPUState *cpu)
{
    return qatomic_load_acquire(&cpu->tid);
}

int cpu_index_by_thread_id(pid_t tid)
{
    for (int i = 0; i < ncpus; i++) {
        if (cpu_thread_id(cpus[i]) == tid) {
            return i;
        }
    }
    return -1;
}

bool qemu_in_vcpu_thread(void)
{
    return current_cpu != NULL;
}

/* ---- exits ---- */

/* Stop this vCPU until reset, leaving the rest of the VM alone. */
static void kvm_cpu_fail(CPUState *cpu, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);

static void kvm_cpu_fail(CPUState *cpu, const char *fmt, ...)
{
    struct kvm_regs regs;
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (ioctl(cpu->fd, KVM_GET_REGS, &regs) == 0) {
        error_report("vCPU %d: %s (rip=0x%llx)", cpu->index, msg, regs.rip);
    } else {
        error_report("vCPU %d: %s", cpu->index, msg);
    }
    runstate_set(RUN_STATE_INTERNAL_ERROR);
    qemu_mutex_lock(&cpus_lock);
    cpu->halted = true;
    qemu_mutex_unlock(&cpus_lock);
}

static void kvm_handle_io(CPUState *cpu)
{
    struct kvm_run *run = cpu->run;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    bool is_write = run->io.direction == KVM_EXIT_IO_OUT;

    /* data_offset comes from the kernel, but stay inside the mapping. */
    if (run->io.data_offset + (uint64_t)run->io.size * run->io.count >
        (uint64_t)kvm_state->vcpu_mmap_size) {
        kvm_cpu_fail(cpu, "bad KVM_EXIT_IO data");
        return;
    }
    for (uint32_t i = 0; i < run->io.count; i++) {
        kvm_pio(run->io.port, is_write, data + i * run->io.size,
                run->io.size);
    }
}

static void kvm_handle_mmio(CPUState *cpu)
{
    struct kvm_run *run = cpu->run;

    /* No MMIO devices: reads float high, writes vanish. */
    if (!run->mmio.is_write) {
        memset(run->mmio.data, 0xff, MIN(run->mmio.len,
                                         sizeof(run->mmio.data)));
    }
}

static void kvm_halt_until_reset(CPUState *cpu)
{
    qemu_mutex_lock(&cpus_lock);
    cpu->halted = true;
    qemu_mutex_unlock(&cpus_lock);
}

static void kvm_handle_system_event(CPUState *cpu)
{
    switch (cpu->run->system_event.type) {
    case KVM_SYSTEM_EVENT_SHUTDOWN:
        qemu_system_shutdown_request(SHUTDOWN_CAUSE_GUEST_SHUTDOWN);
        kvm_halt_until_reset(cpu);
        break;
    case KVM_SYSTEM_EVENT_RESET:
        qemu_system_reset_request(SHUTDOWN_CAUSE_GUEST_RESET);
        kvm_halt_until_reset(cpu);
        break;
    case KVM_SYSTEM_EVENT_CRASH:
        runstate_set(RUN_STATE_GUEST_PANICKED);
        kvm_halt_until_reset(cpu);
        break;
    default:
        break;
    }
}

static void kvm_handle_exit(CPUState *cpu)
{
    struct kvm_run *run = cpu->run;

    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        kvm_handle_io(cpu);
        break;
    case KVM_EXIT_MMIO:
        kvm_handle_mmio(cpu);
        break;
    case KVM_EXIT_SHUTDOWN:
        /* Triple fault: a PC resets. */
        qemu_system_reset_request(SHUTDOWN_CAUSE_GUEST_RESET);
        kvm_halt_until_reset(cpu);
        break;
    case KVM_EXIT_SYSTEM_EVENT:
        kvm_handle_system_event(cpu);
        break;
    case KVM_EXIT_HLT:          /* only without in-kernel irqchip */
    case KVM_EXIT_INTR:
    case KVM_EXIT_IRQ_WINDOW_OPEN:
        break;
    case KVM_EXIT_INTERNAL_ERROR:
        kvm_cpu_fail(cpu, "KVM internal error, suberror %u",
                     run->internal.suberror);
        break;
    case KVM_EXIT_FAIL_ENTRY:
        kvm_cpu_fail(cpu, "KVM entry failed, hardware reason 0x%llx",
                     (unsigned long long)
                     run->fail_entry.hardware_entry_failure_reason);
        break;
    default:
        kvm_cpu_fail(cpu, "unhandled KVM exit reason %u", run->exit_reason);
        break;
    }
}

/* ---- the thread ---- */

/* Returns false when the thread must end. */
static bool kvm_cpu_wait_runnable(CPUState *cpu)
{
    bool keep = true;

    qemu_mutex_lock(&cpus_lock);
    if (cpu->stop || cpu->halted || cpu->exit) {
        cpu->stopped = true;
        qemu_cond_broadcast(&parked_cond);
        while ((cpu->stop || cpu->halted) && !cpu->exit) {
            qemu_cond_wait(&park_cond, &cpus_lock);
        }
        keep = !cpu->exit;
        if (keep) {
            cpu->stopped = false;
            qatomic_store_release(&cpu->run->immediate_exit, 0);
        }
    }
    qemu_mutex_unlock(&cpus_lock);
    return keep;
}

static void *kvm_vcpu_thread(void *opaque)
{
    CPUState *cpu = opaque;

    sigset_t set;

    /* The creator's mask is inherited: make sure kicks can reach us. */
    sigemptyset(&set);
    sigaddset(&set, SIG_IPI);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    current_cpu = cpu;
    qatomic_store_release(&cpu->tid, qemu_get_thread_id());
    while (kvm_cpu_wait_runnable(cpu)) {
        if (ioctl(cpu->fd, KVM_RUN, 0) < 0) {
            if (errno != EINTR && errno != EAGAIN) {
                kvm_cpu_fail(cpu, "KVM_RUN failed: %s", g_strerror(errno));
            }
            continue;
        }
        kvm_handle_exit(cpu);
    }
    return NULL;
}

static void sig_ipi_handler(int sig)
{
    /* Only there to interrupt KVM_RUN. */
}

static void kvm_install_sig_ipi(void)
{
    struct sigaction sa = { .sa_handler = sig_ipi_handler };

    sigemptyset(&sa.sa_mask);
    sigaction(SIG_IPI, &sa, NULL);
}

static void kvm_cpu_kick(CPUState *cpu)
{
    qatomic_store_release(&cpu->run->immediate_exit, 1);
    if (cpu->created) {
        pthread_kill(cpu->thread.thread, SIG_IPI);
    }
}

/* ---- pause / resume ---- */

static bool all_parked(void)
{
    for (int i = 0; i < ncpus; i++) {
        if (!cpus[i]->stopped) {
            return false;
        }
    }
    return true;
}

void pause_all_vcpus(void)
{
    if (qemu_in_vcpu_thread()) {
        /* A vCPU waiting for itself would deadlock. */
        warn_report("pause_all_vcpus called from a vCPU thread: ignored");
        return;
    }
    qemu_mutex_lock(&pause_lock);
    qemu_mutex_lock(&cpus_lock);
    for (int i = 0; i < ncpus; i++) {
        cpus[i]->stop = true;
        kvm_cpu_kick(cpus[i]);
    }
    while (!all_parked()) {
        qemu_cond_wait(&parked_cond, &cpus_lock);
    }
    qemu_mutex_unlock(&cpus_lock);
    qemu_mutex_unlock(&pause_lock);
}

void resume_all_vcpus(void)
{
    qemu_mutex_lock(&pause_lock);
    qemu_mutex_lock(&cpus_lock);
    for (int i = 0; i < ncpus; i++) {
        cpus[i]->stop = false;
    }
    qemu_cond_broadcast(&park_cond);
    qemu_mutex_unlock(&cpus_lock);
    qemu_mutex_unlock(&pause_lock);
}

/* Called by the reset code with the vCPUs paused. */
void kvm_cpu_clear_halt(CPUState *cpu)
{
    qemu_mutex_lock(&cpus_lock);
    cpu->halted = false;
    qemu_mutex_unlock(&cpus_lock);
}

/* ---- creation / destruction ---- */

static CPUState *kvm_create_vcpu(int index, int n, GError **errp)
{
    CPUState *cpu = g_new0(CPUState, 1);

    cpu->index = index;
    cpu->stop = true;           /* wait for vm_start() */
    cpu->fd = ioctl(kvm_state->vmfd, KVM_CREATE_VCPU, (unsigned long)index);
    if (cpu->fd < 0) {
        error_setg_errno(errp, errno, "KVM_CREATE_VCPU %d failed", index);
        g_free(cpu);
        return NULL;
    }
    cpu->run = mmap(NULL, kvm_state->vcpu_mmap_size, PROT_READ | PROT_WRITE,
                    MAP_SHARED, cpu->fd, 0);
    if (cpu->run == MAP_FAILED) {
        error_setg_errno(errp, errno, "cannot map kvm_run of vCPU %d", index);
        close(cpu->fd);
        g_free(cpu);
        return NULL;
    }
    if (!kvm_arch_init_vcpu(cpu, n, errp)) {
        munmap(cpu->run, kvm_state->vcpu_mmap_size);
        close(cpu->fd);
        g_free(cpu);
        return NULL;
    }
    return cpu;
}

static bool kvm_start_vcpu_thread(CPUState *cpu, GError **errp)
{
    char name[16];

    snprintf(name, sizeof(name), "CPU %d/KVM", cpu->index);
    if (!qemu_thread_create(&cpu->thread, name, kvm_vcpu_thread, cpu,
                            errp)) {
        return false;
    }
    cpu->created = true;
    return true;
}

bool kvm_create_vcpus(int n, GError **errp)
{
    if (ncpus) {
        error_setg(errp, "vCPUs already created");
        return false;
    }
    kvm_install_sig_ipi();
    cpus = g_new0(CPUState *, n);
    for (int i = 0; i < n; i++) {
        CPUState *cpu = kvm_create_vcpu(i, n, errp);

        if (!cpu) {
            kvm_destroy_vcpus();
            return false;
        }
        cpus[ncpus++] = cpu;
    }
    for (int i = 0; i < n; i++) {
        if (!kvm_start_vcpu_thread(cpus[i], errp)) {
            kvm_destroy_vcpus();
            return false;
        }
    }
    /* Wait until every thread is up and parked: tids are known after this. */
    qemu_mutex_lock(&cpus_lock);
    while (!all_parked()) {
        qemu_cond_wait(&parked_cond, &cpus_lock);
    }
    qemu_mutex_unlock(&cpus_lock);
    return true;
}

void kvm_destroy_vcpus(void)
{
    qemu_mutex_lock(&cpus_lock);
    for (int i = 0; i < ncpus; i++) {
        cpus[i]->exit = true;
        kvm_cpu_kick(cpus[i]);
    }
    qemu_cond_broadcast(&park_cond);
    qemu_mutex_unlock(&cpus_lock);
    for (int i = 0; i < ncpus; i++) {
        CPUState *cpu = cpus[i];

        if (cpu->created) {
            qemu_thread_join(&cpu->thread);
        }
        kvm_arch_destroy_vcpu(cpu);
        munmap(cpu->run, kvm_state->vcpu_mmap_size);
        close(cpu->fd);
        g_free(cpu);
    }
    g_free(cpus);
    cpus = NULL;
    ncpus = 0;
}

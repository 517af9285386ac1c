/*
 * Machines: "pc" (our x86 test machine: RAM, vCPUs, in-kernel irqchip,
 * a 16550 UART, Multiboot kernel loading) and "none" (RAM only, no vCPU,
 * no accelerator needed; the RAMBlock is named "ram" as in QEMU -M none).
 */
#ifndef HW_MACHINE_H
#define HW_MACHINE_H

#include "qemu/osdep.h"
#include "exec/ramblock.h"

typedef struct MachineState MachineState;

/* -device loader,file=PATH,addr=ADDR,force-raw=on */
typedef struct LoaderDevice {
    char *file;
    uint64_t addr;
} LoaderDevice;

/* -object memory-backend-*,id=... */
typedef struct MemoryBackend {
    char *id;
    uint64_t size;
    RAMBackendConfig cfg;
    char *mem_path;             /* owns cfg.mem_path */
    RAMBlock *block;            /* once allocated */
} MemoryBackend;

struct MachineState {
    const char *type;           /* "pc" or "none" */
    uint64_t ram_size;
    int smp_cpus;
    bool accel_kvm;             /* -accel kvm (pc always needs it) */
    bool accel_tcg;             /* -accel tcg: no KVM; vCPU-less only */
    bool incoming;              /* -incoming: state comes from a stream */
    char *kernel_filename;
    char *kernel_cmdline;
    char *memory_backend;       /* -machine memory-backend=ID */
    char *name;                 /* -name */
    GPtrArray *backends;        /* MemoryBackend * */
    GPtrArray *loaders;         /* LoaderDevice * */
    char *serial;               /* -serial spec: file:PATH, stdio, null, none */
    bool isa_serial;            /* the spec came from -device isa-serial */
    struct DirtierConfig *dirtier;  /* -device x-dirtier (hw/dirtier.h) */
    RAMBlock *ram;              /* main guest RAM, mapped at gpa 0 */
};

typedef struct MachineClass {
    const char *name;
    const char *desc;
    const char *default_ram_id; /* RAMBlock name when no backend is given */
    bool needs_vcpus;
    bool (*init)(MachineState *ms, GError **errp);
    /* system_reset / guest reset: back to the state right after init. */
    void (*reset)(MachineState *ms);
} MachineClass;

/* What runs without -machine (system/vl.c). */
#define MACHINE_DEFAULT_TYPE "pc"

extern MachineState *current_machine;
extern const MachineClass *current_machine_class;

const MachineClass *machine_find_class(const char *name);
/* The i-th registered machine class, NULL past the last (QMP listing). */
const MachineClass *machine_class_nth(size_t i);
void machine_print_types(FILE *out);

#endif

/*
 * Shared by the fuzz targets that load migration streams.
 */
#include "qemu/osdep.h"
#include "qemu/rcu.h"
#include "exec/ramblock.h"
#include "migration/misc.h"
#include "migration/savevm.h"
#include "fuzz.h"

#include <sys/mman.h>

void fuzz_guard_ram(RAMBlock *rb)
{
    size_t pg = sysconf(_SC_PAGESIZE);
    uint8_t *area = mmap(NULL, rb->max_length + 2 * pg, PROT_NONE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *moved;

    g_assert(area != MAP_FAILED);
    moved = mremap(rb->host, rb->max_length, rb->max_length,
                   MREMAP_MAYMOVE | MREMAP_FIXED, area + pg);
    g_assert(moved == area + pg);
    rb->host = moved;
}

RAMBlock *fuzz_ram_setup(const char *target, size_t size)
{
    g_autoptr(GError) err = NULL;
    RAMBlock *rb;

    rcu_register_thread();
    savevm_machine_name = "none";
    migration_register_core_sections();
    rb = qemu_ram_alloc("ram", size, NULL, &err);
    if (!rb) {
        g_error("%s: %s", target, err->message);
    }
    fuzz_guard_ram(rb);
    ram_mig_init();
    return rb;
}

int fuzz_load_stream(const uint8_t *data, size_t size)
{
    QIOChannel *ioc = qio_channel_new_from_bytes(data, size);
    QEMUFile *f = qemu_file_new_input(ioc);
    g_autoptr(GError) err = NULL;
    LoadVMContext ctx;
    int ret;

    qio_channel_unref(ioc);
    loadvm_context_init(&ctx, f);
    ret = qemu_loadvm_state(f, &ctx, &err);
    /* Success and failure are both fine; a failure must say why. */
    g_assert(ret == 0 || (ret < 0 && err && *err->message));
    if (getenv("FUZZ_VERBOSE")) {
        fprintf(stderr, "load: %d %s\n", ret, err ? err->message : "ok");
    }
    loadvm_context_destroy(&ctx);
    qemu_fclose(f);
    global_state_reset_received();
    return ret;
}

/*
 * Fuzz target: a full incoming precopy load with the real RAM section
 * (migration/ram.c) behind qemu_loadvm_state: setup block list, ZERO and
 * PAGE records, CONTINUE, EOS, plus the core device sections and the
 * commands.  The destination has one 1 MiB RAMBlock named "ram", as a
 * `-M none -m 1M` ferry would.
 */
#include "qemu/osdep.h"
#include "qemu/rcu.h"
#include "exec/ramblock.h"
#include "migration/misc.h"
#include "migration/savevm.h"
#include "fuzz.h"


#define FUZZ_RAM_SIZE (1u << 20)

/*
 * Postcopy hooks that accept what the parser validated, so that inputs can
 * reach the records after ADVISE, DISCARD and a PACKAGED blob.
 */
static bool fuzz_advise(LoadVMContext *ctx, uint64_t summary,
                        uint64_t target_page_size, GError **errp)
{
    return true;
}

static bool fuzz_discard(LoadVMContext *ctx, const char *idstr, unsigned n,
                         const uint64_t *starts, const uint64_t *lengths,
                         GError **errp)
{
    /* A destination takes more ranges per command than a source sends. */
    g_assert(n >= 1 && strlen(idstr) < 256);
    return true;
}

static bool fuzz_hook(LoadVMContext *ctx, GError **errp)
{
    return true;
}

static const LoadvmPostcopyOps fuzz_postcopy_ops = {
    .advise = fuzz_advise,
    .discard = fuzz_discard,
    .listen = fuzz_hook,
    .run = fuzz_hook,
};

static void fuzz_init(void)
{
    static bool done;
    g_autoptr(GError) err = NULL;
    RAMBlock *rb;

    if (done) {
        return;
    }
    done = true;
    rcu_register_thread();
    savevm_machine_name = "none";
    migration_register_core_sections();
    rb = qemu_ram_alloc("ram", FUZZ_RAM_SIZE, NULL, &err);
    if (!rb) {
        g_error("fuzz-ram-load: %s", err->message);
    }
    fuzz_guard_ram(rb);
    ram_mig_init();
    loadvm_register_postcopy_ops(&fuzz_postcopy_ops);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    QIOChannel *ioc;
    QEMUFile *f;
    LoadVMContext ctx;
    g_autoptr(GError) err = NULL;
    int ret;

    fuzz_init();
    ioc = qio_channel_new_from_bytes(data, size);
    f = qemu_file_new_input(ioc);
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
    return 0;
}

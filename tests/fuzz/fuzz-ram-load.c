/*
 * Fuzz target: a full incoming precopy load with the real RAM section
 * (migration/ram.c) behind qemu_loadvm_state: setup block list, ZERO and
 * PAGE records, CONTINUE, EOS, plus the core device sections and the
 * commands.  The destination has one 1 MiB RAMBlock named "ram", as a
 * `-M none -m 1M` ferry would.
 */
#include "qemu/osdep.h"
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

    if (done) {
        return;
    }
    done = true;
    fuzz_ram_setup("fuzz-ram-load", FUZZ_RAM_SIZE);
    loadvm_register_postcopy_ops(&fuzz_postcopy_ops);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    fuzz_load_stream(data, size);
    return 0;
}

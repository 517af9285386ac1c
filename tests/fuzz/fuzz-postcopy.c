/*
 * Fuzz target: the postcopy destination as it really runs, minus the
 * kernel.  The real POSTCOPY_* handlers (migration/postcopy-ram.c: the
 * ADVISE/DISCARD/LISTEN/RUN state machine, RECV_BITMAP and RESUME refused
 * outside a recovery) and the real postcopy page loader (host pages
 * gathered and placed whole, EEXIST for a page placed twice) run behind
 * qemu_loadvm_state, then the listen loop on the rest of the stream, with
 * a placement backend that copies into guest RAM instead of
 * UFFDIO_COPY.  The destination has one 1 MiB RAMBlock "ram" between
 * guard pages; the return path goes to a memory buffer.
 */
#include "qemu/osdep.h"
#include "qemu/bitmap.h"
#include "qemu/rcu.h"
#include "exec/ramblock.h"
#include "migration/channel.h"
#include "migration/migration.h"
#include "migration/misc.h"
#include "migration/postcopy-ram.h"
#include "migration/qemu-file.h"
#include "migration/savevm.h"
#include "fuzz.h"


#define FUZZ_RAM_SIZE (1u << 20)

/*
 * userfaultfd refuses to fill a page that is there already; so do we,
 * taking "there" as "received" (what was loaded and not discarded).
 */
static int fake_place(RAMBlock *rb, ram_addr_t offset, const void *from)
{
    unsigned long *map = rcu_dereference(rb->receivedmap);
    unsigned long first = offset >> TARGET_PAGE_BITS;
    unsigned long n = rb->page_size >> TARGET_PAGE_BITS;

    g_assert(from && offset + rb->page_size <= rb->used_length);
    if (map && find_next_bit(map, first + n, first) < first + n) {
        return EEXIST;
    }
    memcpy(rb->host + offset, from, rb->page_size);
    return 0;
}

static const PostcopyPlacementOps fake_placement = {
    .place = fake_place,
};

static void fuzz_init(void)
{
    static bool done;

    if (done) {
        return;
    }
    done = true;
    fuzz_ram_setup("fuzz-postcopy", FUZZ_RAM_SIZE);
    postcopy_ram_init();
    postcopy_incoming_set_placement(migration_incoming_get_current(),
                                    &fake_placement);
    /* The destination turned postcopy-ram on (a page size check). */
    migrate_get_current()->capabilities[MIGRATION_CAPABILITY_POSTCOPY_RAM] =
        true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    MigrationIncomingState *mis;
    QIOChannel *ioc, *rp;
    QEMUFile *f;
    LoadVMContext ctx;
    g_autoptr(GError) err = NULL;
    int ret;

    fuzz_init();
    mis = migration_incoming_get_current();
    postcopy_incoming_reset(mis);
    qatomic_set(&mis->status, MIGRATION_STATUS_ACTIVE);
    qatomic_set(&mis->cancel_gate, MIGRATION_CANCEL_GATE_OPEN);
    ioc = qio_channel_new_from_bytes(data, size);
    f = qemu_file_new_input(ioc);
    qio_channel_unref(ioc);
    mis->from_src_file = f;
    loadvm_context_init(&ctx, f);
    ctx.opaque = mis;
    /* A memory channel has no return path of its own: give it one. */
    rp = qio_channel_new_buffer();
    ctx.to_src = qemu_file_new_output(rp);
    qio_channel_unref(rp);
    ret = qemu_loadvm_state(f, &ctx, &err);
    if (ret == 0 && ctx.postcopy_listening) {
        ret = postcopy_incoming_listen_sync(&ctx, &err) ? 0 : -1;
        if (getenv("FUZZ_VERBOSE")) {
            fprintf(stderr, "postcopy: %s (state %s)\n",
                    err ? err->message : "completed",
                    postcopy_state_str(postcopy_state_get(mis)));
        }
    } else if (ctx.postcopy_listening) {
        /* Failed inside the package after LISTEN: what the thread would do. */
        postcopy_incoming_main_done(mis);
        qemu_loadvm_state_cleanup();
    }
    /* Success and failure are both fine; a failure must say why. */
    g_assert(ret == 0 || (ret < 0 && err && *err->message));
    if (getenv("FUZZ_VERBOSE")) {
        fprintf(stderr, "load: %d %s\n", ret, err ? err->message : "ok");
    }
    loadvm_context_destroy(&ctx);
    qemu_fclose(f);
    mis->from_src_file = NULL;
    qatomic_set(&mis->status, MIGRATION_STATUS_NONE);
    global_state_reset_received();
    return 0;
}

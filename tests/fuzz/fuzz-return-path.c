/*
 * Fuzz target: the return-path messages a source reads from its
 * destination (source_return_path_read and the payload accessors), and
 * the bitmap data that follows a RECV_BITMAP reply in a recovery
 * (ram_postcopy_recv_bitmap against a 1 MiB RAMBlock "ram" whose RAM
 * migration is set up).
 */
#include "qemu/osdep.h"
#include "qemu/rcu.h"
#include "exec/memory.h"
#include "exec/ramblock.h"
#include "migration/channel.h"
#include "migration/migration.h"
#include "migration/qemu-file.h"
#include "migration/ram.h"
#include "migration/savevm.h"
#include "fuzz.h"

#define FUZZ_RAM_SIZE (1u << 20)

static MigrationState *fuzz_ms;

/* No accelerator: nothing is ever dirtied by a guest. */
static bool no_log_start(GError **errp)
{
    return true;
}

static void no_log_stop(void)
{
}

static bool no_log_sync(RAMBlock *rb, unsigned long *bmap,
                        uint64_t *num_dirty, GError **errp)
{
    *num_dirty = 0;
    return true;
}

static const AccelMemoryOps no_ops = {
    .log_start = no_log_start,
    .log_stop = no_log_stop,
    .log_sync = no_log_sync,
};

static void fuzz_init(void)
{
    g_autoptr(GError) err = NULL;
    QIOChannel *ioc;
    QEMUFile *f;

    if (fuzz_ms) {
        return;
    }
    rcu_register_thread();
    memory_register_accel_ops(&no_ops);
    if (!qemu_ram_alloc("ram", FUZZ_RAM_SIZE, NULL, &err)) {
        g_error("fuzz-return-path: %s", err->message);
    }
    fuzz_ms = migration_state_new();
    ioc = qio_channel_new_buffer();
    f = qemu_file_new_output(ioc);
    if (!ram_save_setup(fuzz_ms->ram, f, &err)) {
        g_error("fuzz-return-path: %s", err->message);
    }
    qemu_fclose(f);
    qio_channel_unref(ioc);
}

/* A RECV_BITMAP reply's data, read on from f; false if f is spent. */
static bool check_recv_bitmap(const RPMessage *msg, QEMUFile *f)
{
    g_autoptr(GError) err = NULL;
    char id[256];

    if (!rp_message_get_recv_bitmap(msg, id, &err)) {
        return true;
    }
    if (!ram_postcopy_recv_bitmap(fuzz_ms->ram, f, id, &err)) {
        g_assert(err && *err->message);
        return false;
    }
    /* What is left to send is never more than the RAM. */
    g_assert(ram_bytes_remaining(fuzz_ms->ram) <= FUZZ_RAM_SIZE);
    return true;
}

static void check_message(const RPMessage *msg)
{
    g_autoptr(GError) err = NULL;
    char id[256];
    uint64_t start;
    uint32_t len;

    g_assert(msg->type > MIG_RP_MSG_INVALID && msg->type < MIG_RP_MSG_MAX);
    g_assert(msg->len <= MIG_RP_MAX_LEN);
    switch (msg->type) {
    case MIG_RP_MSG_REQ_PAGES:
    case MIG_RP_MSG_REQ_PAGES_ID:
        if (rp_message_get_req_pages(msg, &start, &len, id, &err)) {
            g_assert(strlen(id) < 256);
        }
        break;
    case MIG_RP_MSG_RECV_BITMAP:
        if (rp_message_get_recv_bitmap(msg, id, &err)) {
            g_assert(strlen(id) < 256);
        }
        break;
    default:
        (void)rp_message_get_u32(msg);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    QIOChannel *ioc = qio_channel_new_from_bytes(data, size);
    QEMUFile *f = qemu_file_new_input(ioc);
    g_autoptr(GError) err = NULL;
    RPMessage msg;
    int ret;

    fuzz_init();
    qio_channel_unref(ioc);
    while ((ret = source_return_path_read(f, &msg, &err)) == 0) {
        check_message(&msg);
        if (msg.type == MIG_RP_MSG_RECV_BITMAP &&
            !check_recv_bitmap(&msg, f)) {
            ret = -1;
            g_clear_error(&err);
            error_setg(&err, "bad bitmap");
            break;
        }
    }
    /* Every failure, the end of the input included, says why. */
    g_assert(ret < 0 && err && *err->message);
    qemu_fclose(f);
    return 0;
}

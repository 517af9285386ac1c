/*
 * Fuzz target for the incoming migration stream parser (qemu_loadvm_state):
 * header, configuration, sections, commands (PACKAGED included), the
 * VMDESCRIPTION trailer, and the return-path message reader.
 *
 * "--seed DIR" (fuzz-main.c) writes a few valid streams there.
 */
#include "qemu/osdep.h"
#include "migration/savevm.h"
#include "fuzz.h"


/* A live handler that reads a bounded, self-described payload. */
static int fuzz_load_state(QEMUFile *f, void *opaque, int version_id)
{
    uint8_t buf[256];
    unsigned int n = qemu_get_byte(f);

    qemu_get_buffer(f, buf, n);
    return qemu_file_get_error(f);
}

static const SaveVMHandlers fuzz_handlers = {
    .load_state = fuzz_load_state,
};

static bool ok_advise(LoadVMContext *c, uint64_t s, uint64_t t, GError **e)
{
    return s == 4096 && t == 4096;
}

static bool ok_discard(LoadVMContext *c, const char *id, unsigned n,
                       const uint64_t *st, const uint64_t *ln, GError **e)
{
    return strcmp(id, "ram") == 0;
}

static bool ok_hook(LoadVMContext *c, GError **e)
{
    return true;
}

static const LoadvmPostcopyOps fuzz_postcopy_ops = {
    .advise = ok_advise,
    .discard = ok_discard,
    .listen = ok_hook,
    .run = ok_hook,
};

static void fuzz_init(void)
{
    static bool done;

    if (done) {
        return;
    }
    done = true;
    savevm_machine_name = "none";
    migration_register_core_sections();
    register_savevm_live("ram", 0, 4, &fuzz_handlers, NULL);
    loadvm_register_postcopy_ops(&fuzz_postcopy_ops);
}

static QEMUFile *input_file(const uint8_t *data, size_t size)
{
    QIOChannel *ioc = qio_channel_new_from_bytes(data, size);
    QEMUFile *f = qemu_file_new_input(ioc);

    qio_channel_unref(ioc);
    return f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    QEMUFile *f;
    LoadVMContext ctx;
    GError *err = NULL;
    RPMessage msg;

    fuzz_init();
    f = input_file(data, size);
    loadvm_context_init(&ctx, f);
    qemu_loadvm_state(f, &ctx, &err);
    g_clear_error(&err);
    loadvm_context_destroy(&ctx);
    qemu_fclose(f);

    /* the same bytes as return-path traffic */
    f = input_file(data, size);
    while (source_return_path_read(f, &msg, &err) == 0) {
        char id[256];
        uint64_t start;
        uint32_t len;

        if (msg.type == MIG_RP_MSG_REQ_PAGES ||
            msg.type == MIG_RP_MSG_REQ_PAGES_ID) {
            rp_message_get_req_pages(&msg, &start, &len, id, NULL);
        }
    }
    g_clear_error(&err);
    qemu_fclose(f);
    return 0;
}

static void write_seed(const char *dir, const char *name, QIOChannel *ioc)
{
    size_t len;
    const uint8_t *data = qio_channel_buffer_data(ioc, &len);
    g_autofree char *path = g_build_filename(dir, name, NULL);

    g_file_set_contents(path, (const char *)data, len, NULL);
}

static QEMUFile *seed_file(QIOChannel **ioc)
{
    *ioc = qio_channel_new_buffer();
    return qemu_file_new_output(*ioc);
}

static void seed_done(const char *dir, const char *name, QEMUFile *f,
                      QIOChannel *ioc)
{
    qemu_fflush(f);
    write_seed(dir, name, ioc);
    qemu_fclose(f);
    qio_channel_unref(ioc);
}

void fuzz_write_seeds(const char *dir)
{
    QIOChannel *ioc, *pioc;
    QEMUFile *f, *pkg;
    uint64_t start = 0x1000, length = 0x2000;
    size_t len;
    const uint8_t *blob;
    static const uint8_t rp[] = {
        0, 2, 0, 4, 0, 0, 0, 1,                             /* PONG 1 */
        0, 3, 0, 16, 0, 0, 0, 0, 2, 0x34, 0x50, 0, 0, 0, 0x10, 0,
        3, 'r', 'a', 'm',                                   /* REQ_PAGES_ID */
        0, 4, 0, 12, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0x10, 0, /* REQ_PAGES */
        0, 1, 0, 4, 0, 0, 0, 0,                             /* SHUT 0 */
    };

    fuzz_init();
    global_state_store_runstate(RUN_STATE_RUNNING);

    f = seed_file(&ioc);
    qemu_savevm_state_header(f);
    qemu_savevm_state_complete_precopy(f, false, false);
    seed_done(dir, "precopy", f, ioc);

    /* postcopy: advise, discard, then the package LISTEN..RUN */
    f = seed_file(&ioc);
    pkg = seed_file(&pioc);
    qemu_savevm_state_header(f);
    qemu_savevm_send_postcopy_advise_sizes(f, 4096, 4096);
    qemu_savevm_send_postcopy_ram_discard(f, "ram", 1, &start, &length);
    qemu_savevm_send_postcopy_listen(pkg);
    qemu_savevm_state_complete_precopy_non_iterable(pkg, true, false);
    qemu_savevm_send_ping(pkg, 3);
    qemu_savevm_send_postcopy_run(pkg);
    qemu_fflush(pkg);
    blob = qio_channel_buffer_data(pioc, &len);
    qemu_savevm_send_packaged(f, blob, len);
    qemu_fclose(pkg);
    qio_channel_unref(pioc);
    seed_done(dir, "postcopy", f, ioc);

    f = seed_file(&ioc);
    qemu_put_buffer(f, rp, sizeof(rp));
    seed_done(dir, "return-path", f, ioc);
}

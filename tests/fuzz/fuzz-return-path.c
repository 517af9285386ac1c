/*
 * Fuzz target: the return-path messages a source reads from its
 * destination (source_return_path_read and the payload accessors).
 */
#include "qemu/osdep.h"
#include "migration/savevm.h"
#include "fuzz.h"

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

    qio_channel_unref(ioc);
    while ((ret = source_return_path_read(f, &msg, &err)) == 0) {
        check_message(&msg);
    }
    /* Every failure, the end of the input included, says why. */
    g_assert(ret < 0 && err && *err->message);
    qemu_fclose(f);
    return 0;
}

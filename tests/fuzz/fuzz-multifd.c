/*
 * Fuzz target: one multifd channel as the destination reads it (initial
 * message, then packets and their page data) into a guarded 1 MiB
 * RAMBlock "ram", with the channel expected to be id 0 or 1 of 2 and
 * the all-zero UUID.  The input's last byte picks the destination's
 * state: bit 0 after POSTCOPY_LISTEN (pages refused, SYNCs passed), bit 1
 * with the dense-data advisor on (its span arithmetic sees every
 * packet).
 */
#include "qemu/osdep.h"
#include "qemu/rcu.h"
#include "exec/ramblock.h"
#include "migration/channel.h"
#include "migration/multifd.h"
#include "migration/ram-dense.h"
#include "fuzz.h"

#define FUZZ_RAM_SIZE (1u << 20)

static const uint8_t zero_uuid[MULTIFD_UUID_LEN];
static RAMDenseAdvisor *dense;

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
    rb = qemu_ram_alloc("ram", FUZZ_RAM_SIZE, NULL, &err);
    if (!rb) {
        g_error("fuzz-multifd: %s", err->message);
    }
    fuzz_guard_ram(rb);
    dense = ram_dense_new();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    MultiFDRecvState *s;
    MultiFDRecvChannel *c;
    g_autoptr(GError) err = NULL;
    bool sync;
    int r = -1;

    fuzz_init();
    ram_dense_enable(dense, size && (data[size - 1] & 2));
    s = multifd_recv_new(2, zero_uuid, dense);
    if (size && (data[size - 1] & 1)) {
        multifd_recv_enter_postcopy(s);
    }
    c = multifd_recv_channel_new(s, qio_channel_new_from_bytes(data, size));
    if (multifd_recv_channel_hello(c, &err)) {
        while ((r = multifd_recv_channel_packet(c, &sync, &err)) > 0) {
            g_assert_null(err);
        }
    }
    /* A channel ends at a packet boundary, or says what was wrong. */
    g_assert(r == 0 ? !err : err && *err->message);
    multifd_recv_channel_free(c);
    multifd_recv_free(s);
    return 0;
}

/* Valid channels: an empty SYNC, and pages at both ends of the block. */
void fuzz_write_seeds(const char *dir)
{
    static const struct {
        const char *name;
        uint32_t npages;
        uint32_t flags;
    } seeds[] = {
        { "sync-only", 0, MULTIFD_FLAG_SYNC },
        { "pages-then-sync", 3, MULTIFD_FLAG_SYNC },
        { "pages", 2, 0 },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(seeds); i++) {
        g_autoptr(GByteArray) out = g_byte_array_new();
        g_autofree char *path = g_build_filename(dir, seeds[i].name, NULL);
        uint8_t hello[MULTIFD_INIT_LEN], hdr[MULTIFD_PACKET_HDR_LEN];
        MultiFDPacket p = {
            .flags = seeds[i].flags, .pages_alloc = MULTIFD_PACKET_PAGES,
            .normal_pages = seeds[i].npages, .packet_num = i,
            .next_packet_size = seeds[i].npages * TARGET_PAGE_SIZE,
        };
        uint8_t page[TARGET_PAGE_SIZE];

        multifd_init_msg_encode(hello, zero_uuid, i % 2);
        g_byte_array_append(out, hello, sizeof(hello));
        g_strlcpy(p.ramblock, "ram", sizeof(p.ramblock));
        for (uint32_t j = 0; j < p.normal_pages; j++) {
            p.offset[j] = j == 0 ? 0 : FUZZ_RAM_SIZE - j * TARGET_PAGE_SIZE;
        }
        multifd_packet_encode(hdr, &p);
        g_byte_array_append(out, hdr, sizeof(hdr));
        for (uint32_t j = 0; j < p.normal_pages; j++) {
            memset(page, 0x11 * (j + 1), sizeof(page));
            g_byte_array_append(out, page, sizeof(page));
        }
        if (!g_file_set_contents(path, (const char *)out->data, out->len,
                                 NULL)) {
            g_error("fuzz-multifd: cannot write %s", path);
        }
    }
}

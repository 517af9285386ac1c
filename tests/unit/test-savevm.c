/*
 * savevm tests: a stream with a fake live handler and a vmstate device
 * round trip; QEMU 7.2 byte layouts; corruptions of every kind; commands;
 * the return path.
 */
#include "qemu/osdep.h"
#include "migration/savevm.h"

#include <sys/socket.h>

/* ---- a fake live handler ---- */

typedef struct Fake {
    int iterations;         /* source: passes done */
    int passes;             /* source: passes needed */
    bool postcopy;
    /* destination */
    int loads;
    uint32_t setup_magic;
    uint32_t iter_sum;
    uint32_t complete;
    int load_setups;
    int load_cleanups;
} Fake;

static int fake_save_setup(QEMUFile *f, void *opaque)
{
    qemu_put_be32(f, 0x5e7u);
    return 0;
}

static int fake_iterate(QEMUFile *f, void *opaque)
{
    Fake *s = opaque;

    s->iterations++;
    qemu_put_byte(f, 1);
    qemu_put_be32(f, s->iterations);
    return s->iterations >= s->passes ? 1 : 0;
}

static int fake_complete(QEMUFile *f, void *opaque)
{
    qemu_put_byte(f, 2);
    qemu_put_be32(f, 0xc0ffee);
    return 0;
}

static bool fake_has_postcopy(void *opaque)
{
    return ((Fake *)opaque)->postcopy;
}

static void fake_pending(void *opaque, uint64_t *must, uint64_t *can)
{
    Fake *s = opaque;

    *must += 100;
    *can += s->postcopy ? 1000 : 0;
}

static int fake_load_setup(QEMUFile *f, void *opaque)
{
    ((Fake *)opaque)->load_setups++;
    return 0;
}

static int fake_load_cleanup(void *opaque)
{
    ((Fake *)opaque)->load_cleanups++;
    return 0;
}

/* START: be32 magic; PART: 01 be32 n; END: 02 be32 value */
static int fake_load_state(QEMUFile *f, void *opaque, int version_id)
{
    Fake *s = opaque;

    s->loads++;
    if (s->loads == 1) {
        s->setup_magic = qemu_get_be32(f);
        return s->setup_magic == 0x5e7u ? 0 : -EINVAL;
    }
    switch (qemu_get_byte(f)) {
    case 1:
        s->iter_sum += qemu_get_be32(f);
        return 0;
    case 2:
        s->complete = qemu_get_be32(f);
        return 0;
    default:
        return -EINVAL;
    }
}

static const SaveVMHandlers fake_handlers = {
    .save_setup = fake_save_setup,
    .save_live_iterate = fake_iterate,
    .save_live_complete_precopy = fake_complete,
    .save_live_complete_postcopy = fake_complete,
    .state_pending_estimate = fake_pending,
    .state_pending_exact = fake_pending,
    .has_postcopy = fake_has_postcopy,
    .load_setup = fake_load_setup,
    .load_state = fake_load_state,
    .load_cleanup = fake_load_cleanup,
};

/* ---- a vmstate device ---- */

typedef struct Dev {
    uint32_t reg;
    uint64_t counter;
    uint8_t name[8];
} Dev;

static const VMStateDescription vmstate_dev = {
    .name = "dev",
    .version_id = 2,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32(reg, Dev),
        VMSTATE_UINT64(counter, Dev),
        VMSTATE_BUFFER(name, Dev),
        VMSTATE_END_OF_LIST()
    },
};

static Fake src_fake, dst_fake;
static Dev src_dev, dst_dev;

/*
 * Take back what the tests register ("fake", "dev"); the core sections
 * stay, registered once as the program does.
 */
static void unregister_test_sections(void)
{
    unregister_savevm("fake", 0);
    unregister_savevm("dev", 0);
}

static void register_source(void)
{
    unregister_test_sections();
    savevm_machine_name = "none";
    migration_register_core_sections();
    memset(&src_fake, 0, sizeof(src_fake));
    src_fake.passes = 3;
    register_savevm_live("fake", 0, 1, &fake_handlers, &src_fake);
    src_dev = (Dev) { .reg = 0x12345678, .counter = 42, .name = "abc" };
    vmstate_register(NULL, 0, &vmstate_dev, &src_dev);
    timers_state.cpu_ticks_offset = 0x1111;
    timers_state.cpu_clock_offset = 0x2222;
    global_state_store_runstate(RUN_STATE_RUNNING);
}

static void register_dest(void)
{
    unregister_test_sections();
    savevm_machine_name = "none";
    migration_register_core_sections();
    memset(&dst_fake, 0, sizeof(dst_fake));
    register_savevm_live("fake", 0, 1, &fake_handlers, &dst_fake);
    memset(&dst_dev, 0, sizeof(dst_dev));
    vmstate_register(NULL, 0, &vmstate_dev, &dst_dev);
    timers_state.cpu_ticks_offset = 0;
    timers_state.cpu_clock_offset = 0;
    global_state_reset_received();
}

static QEMUFile *buffer_output(void)
{
    QIOChannel *ioc = qio_channel_new_buffer();
    QEMUFile *f = qemu_file_new_output(ioc);

    qio_channel_unref(ioc);
    return f;
}

static GByteArray *output_bytes(QEMUFile *f)
{
    GByteArray *out = g_byte_array_new();
    const uint8_t *data;
    size_t len;

    qemu_fflush(f);
    data = qio_channel_buffer_data(qemu_file_get_ioc(f), &len);
    g_byte_array_append(out, data, len);
    return out;
}

/* The full precopy stream of register_source(). */
static GByteArray *build_stream(void)
{
    QEMUFile *f = buffer_output();
    GByteArray *out;
    GError *err = NULL;
    uint64_t must, can;

    register_source();
    qemu_savevm_state_header(f);
    g_assert_cmpint(qemu_savevm_state_setup(f, &err), ==, 0);
    g_assert_no_error(err);
    qemu_savevm_state_pending_estimate(&must, &can);
    g_assert_cmpuint(must, ==, 100);
    while (qemu_savevm_state_iterate(f, false) == 0) {
    }
    g_assert_cmpint(src_fake.iterations, ==, 3);
    g_assert_cmpint(qemu_savevm_state_complete_precopy(f, false, false), ==,
                    0);
    qemu_savevm_state_cleanup();
    out = output_bytes(f);
    qemu_fclose(f);
    return out;
}

static int load_bytes(const uint8_t *data, size_t len, GError **errp)
{
    QIOChannel *ioc = qio_channel_new_from_bytes(data, len);
    QEMUFile *f = qemu_file_new_input(ioc);
    LoadVMContext ctx;
    int ret;

    memset(&dst_fake, 0, sizeof(dst_fake));
    loadvm_context_init(&ctx, f);
    ret = qemu_loadvm_state(f, &ctx, errp);
    g_assert((ret < 0) == (errp && *errp != NULL) || !errp);
    loadvm_context_destroy(&ctx);
    qemu_fclose(f);
    qio_channel_unref(ioc);
    return ret;
}

static void test_roundtrip(void)
{
    g_autoptr(GByteArray) s = build_stream();
    GError *err = NULL;
    RunState rs;

    register_dest();
    g_assert_cmpint(load_bytes(s->data, s->len, &err), ==, 0);
    g_assert_no_error(err);
    g_assert_cmpint(dst_fake.loads, ==, 1 + 3 + 1);
    g_assert_cmpuint(dst_fake.setup_magic, ==, 0x5e7u);
    g_assert_cmpuint(dst_fake.iter_sum, ==, 1 + 2 + 3);
    g_assert_cmpuint(dst_fake.complete, ==, 0xc0ffee);
    g_assert_cmpint(dst_fake.load_setups, ==, 1);
    g_assert_cmpint(dst_fake.load_cleanups, ==, 1);
    g_assert_cmpmem(&dst_dev, sizeof(dst_dev), &src_dev, sizeof(src_dev));
    g_assert_cmpint(timers_state.cpu_ticks_offset, ==, 0x1111);
    g_assert_cmpint(timers_state.cpu_clock_offset, ==, 0x2222);
    g_assert_true(global_state_received_runstate(&rs));
    g_assert_cmpint(rs, ==, RUN_STATE_RUNNING);
}

static void hex_append(GByteArray *a, const char *hex)
{
    for (const char *p = hex; *p;) {
        if (*p == ' ') {
            p++;
            continue;
        }
        guint8 b = g_ascii_xdigit_value(p[0]) * 16 + g_ascii_xdigit_value(p[1]);
        g_byte_array_append(a, &b, 1);
        p += 2;
    }
}

/*
 * The parts we produce must be byte-identical to what QEMU 7.2 -M none
 * sends (qemu-wire-format.md §1.7); only section ids may differ.
 */
static void test_exact_bytes(void)
{
    QEMUFile *f = buffer_output();
    g_autoptr(GByteArray) s = NULL;
    g_autoptr(GByteArray) want = g_byte_array_new();
    uint8_t running[100] = "running";
    uint32_t json_len;
    static const char json_head[] =
        "{\"page_size\": 4096, \"devices\": [{\"name\": \"timer\", "
        "\"instance_id\": 0, \"vmsd_name\": \"timer\", \"version\": 2, "
        "\"fields\": [{\"name\": \"cpu_ticks_offset\", \"type\": \"int64\", "
        "\"size\": 8}, {\"name\": \"unused\", \"type\": \"unused_buffer\", "
        "\"size\": 8}, {\"name\": \"cpu_clock_offset\", \"type\": \"int64\", "
        "\"size\": 8}]}, {\"name\": \"globalstate\", \"instance_id\": 0, "
        "\"vmsd_name\": \"globalstate\", \"version\": 1, \"fields\": "
        "[{\"name\": \"size\", \"type\": \"uint32\", \"size\": 4}, "
        "{\"name\": \"runstate\", \"type\": \"buffer\", \"size\": 100}]}]}";

    unregister_test_sections();
    savevm_machine_name = "none";
    migration_register_core_sections();
    timers_state.cpu_ticks_offset = 0x0102030405060708LL;
    timers_state.cpu_clock_offset = 0x1112131415161718LL;
    global_state_store_runstate(RUN_STATE_RUNNING);
    qemu_savevm_state_header(f);
    g_assert_cmpint(qemu_savevm_state_setup(f, NULL), ==, 0);
    g_assert_cmpint(qemu_savevm_state_complete_precopy(f, false, false), ==,
                    0);
    s = output_bytes(f);
    qemu_fclose(f);

    hex_append(want, "5145564d 00000003 07 00000004 6e6f6e65");
    /* our ids start at 1 (never 0: see savevm.c) */
    hex_append(want, "04 00000001 05 74696d6572 00000000 00000002"
                     "0102030405060708 0000000000000000 1112131415161718"
                     "7e 00000001");
    hex_append(want, "04 00000002 0b 676c6f62616c7374617465 00000000 00000001"
                     "00000008");
    g_byte_array_append(want, running, sizeof(running));
    hex_append(want, "7e 00000002 00 06");
    json_len = GUINT32_TO_BE(strlen(json_head));
    g_byte_array_append(want, (guint8 *)&json_len, 4);
    g_byte_array_append(want, (const guint8 *)json_head, strlen(json_head));
    g_assert_cmpmem(s->data, s->len, want->data, want->len);

    /* commands as QEMU 7.2 sends them (§2.3, §2.4) */
    {
        QEMUFile *c = buffer_output();
        g_autoptr(GByteArray) got = NULL;
        g_autoptr(GByteArray) exp = g_byte_array_new();
        uint64_t start = 0x87c000, length = 0xf784000;

        qemu_savevm_send_postcopy_advise_sizes(c, 4096, 4096);
        qemu_savevm_send_postcopy_ram_discard(c, "ram", 1, &start, &length);
        qemu_savevm_send_open_return_path(c);
        qemu_savevm_send_ping(c, 1);
        qemu_savevm_send_postcopy_listen(c);
        qemu_savevm_send_postcopy_run(c);
        qemu_savevm_send_recv_bitmap(c, "ram");
        qemu_savevm_send_postcopy_resume(c);
        got = output_bytes(c);
        hex_append(exp, "08 0003 0010 0000000000001000 0000000000001000");
        hex_append(exp, "08 0006 0016 00 03 72616d 00 000000000087c000 "
                        "000000000f784000");
        hex_append(exp, "08 0001 0000 08 0002 0004 00000001 08 0004 0000 "
                        "08 0005 0000 08 000a 0004 03 72616d 08 0009 0000");
        g_assert_cmpmem(got->data, got->len, exp->data, exp->len);
        /* more than 12 ranges is refused */
        uint64_t st[13] = { 0 }, ln[13] = { 0 };
        g_assert_cmpint(qemu_savevm_send_postcopy_ram_discard(c, "ram", 13,
                        st, ln), <, 0);
        qemu_fclose(c);
    }
}

/* A stream shaped exactly like QEMU 7.2's (sids 0 and 4, vmdesc "{}"). */
static void test_load_qemu_stream(void)
{
    g_autoptr(GByteArray) s = g_byte_array_new();
    uint8_t paused[100] = "paused";
    GError *err = NULL;
    RunState rs;

    hex_append(s, "5145564d 00000003 07 00000004 6e6f6e65");
    hex_append(s, "04 00000000 05 74696d6572 00000000 00000002"
                  "0000000000000005 0000000000000000 0000000000000006"
                  "7e 00000000");
    hex_append(s, "04 00000004 0b 676c6f62616c7374617465 00000000 00000001"
                  "00000007");
    g_byte_array_append(s, paused, sizeof(paused));
    hex_append(s, "7e 00000004 00 06 00000002 7b7d");
    register_dest();
    g_assert_cmpint(load_bytes(s->data, s->len, &err), ==, 0);
    g_assert_no_error(err);
    g_assert_cmpint(timers_state.cpu_ticks_offset, ==, 5);
    g_assert_cmpint(timers_state.cpu_clock_offset, ==, 6);
    g_assert_true(global_state_received_runstate(&rs));
    g_assert_cmpint(rs, ==, RUN_STATE_PAUSED);

    /* an unknown runstate name is refused */
    memcpy(memmem(s->data, s->len, "paused", 6), "bogus", 6);
    register_dest();
    g_assert_cmpint(load_bytes(s->data, s->len, &err), <, 0);
    g_assert_nonnull(strstr(err->message, "unknown runstate 'bogus'"));
    g_clear_error(&err);
}

static void expect_load_error(GByteArray *s, const char *msg)
{
    GError *err = NULL;

    g_assert_cmpint(load_bytes(s->data, s->len, &err), <, 0);
    g_assert_nonnull(err);
    if (!strstr(err->message, msg)) {
        g_printerr("error '%s' lacks '%s'\n", err->message, msg);
        g_assert_not_reached();
    }
    g_clear_error(&err);
}

static void test_header_errors(void)
{
    g_autoptr(GByteArray) s = build_stream();

    register_dest();
    s->data[0] ^= 0xff;
    expect_load_error(s, "Not a migration stream");
    s->data[0] ^= 0xff;
    s->data[7] = 2;
    expect_load_error(s, "obsolete");
    s->data[7] = 4;
    expect_load_error(s, "Unsupported migration stream version 4");
    s->data[7] = 3;

    savevm_machine_name = "pc";
    expect_load_error(s, "Machine type received is 'none' and local is 'pc'");
    savevm_machine_name = "none";
    s->data[8] = 0x04;
    expect_load_error(s, "Configuration section missing");
    s->data[8] = 0x07;
    s->data[11] = 0x01;     /* machine name length 0x104 */
    expect_load_error(s, "too long");
}

static void test_config_subsections(void)
{
    g_autoptr(GByteArray) s = g_byte_array_new();

    register_dest();
    hex_append(s, "5145564d 00000003 07 00000004 6e6f6e65");
    hex_append(s, "05 1a");
    g_byte_array_append(s, (guint8 *)"configuration/capabilities", 26);
    hex_append(s, "00000001 00000001 0f");
    g_byte_array_append(s, (guint8 *)"x-ignore-shared", 15);
    hex_append(s, "00 06 00000002 7b7d");
    expect_load_error(s, "Capability 'x-ignore-shared'");

    /* zero capabilities and a uuid are accepted */
    g_byte_array_set_size(s, 0);
    hex_append(s, "5145564d 00000003 07 00000004 6e6f6e65");
    hex_append(s, "05 1a");
    g_byte_array_append(s, (guint8 *)"configuration/capabilities", 26);
    hex_append(s, "00000001 00000000 05 12");
    g_byte_array_append(s, (guint8 *)"configuration/uuid", 18);
    hex_append(s, "00000001 00112233445566778899aabbccddeeff");
    hex_append(s, "00 06 00000002 7b7d");
    g_assert_cmpint(load_bytes(s->data, s->len, NULL), ==, 0);

    g_byte_array_set_size(s, 0);
    hex_append(s, "5145564d 00000003 07 00000004 6e6f6e65 05 12");
    g_byte_array_append(s, (guint8 *)"configuration/xxxx", 18);
    hex_append(s, "00000001 00 06 00000002 7b7d");
    expect_load_error(s, "unknown subsection 'configuration/xxxx'");
}

static guint find(GByteArray *s, const char *needle, size_t n)
{
    guint8 *p = memmem(s->data, s->len, needle, n);

    g_assert_nonnull(p);
    return p - s->data;
}

static void test_section_errors(void)
{
    g_autoptr(GByteArray) s = build_stream();
    guint pos;

    /* unknown section on the destination */
    register_dest();
    vmstate_unregister(&vmstate_dev, &dst_dev);
    expect_load_error(s, "Unknown savevm section or instance 'dev' 0");

    /* version too new: "dev" v2 received by a v1-only destination */
    {
        static const VMStateField no_fields[] = { VMSTATE_END_OF_LIST() };
        static const VMStateDescription dev_v1 = {
            .name = "dev", .version_id = 1, .fields = no_fields,
        };
        vmstate_register(NULL, 0, &dev_v1, &dst_dev);
        memset(&dst_fake, 0, sizeof(dst_fake));
        expect_load_error(s, "unsupported version 2 for 'dev'");
    }

    /* footer id of "dev": the 5 bytes after its 20-byte payload */
    register_dest();
    pos = find(s, "\x03" "dev", 4) + 4 + 8 + 20;
    g_assert_cmpint(s->data[pos], ==, 0x7e);
    s->data[pos + 4] ^= 1;
    expect_load_error(s, "Mismatched section id in footer for 'dev'");
    s->data[pos + 4] ^= 1;
    s->data[pos] = 0x00;
    expect_load_error(s, "Missing section footer for 'dev'");
    s->data[pos] = 0x7e;

    /* PART for an id never started */
    /* "fake" is the third registration: id 3 */
    pos = find(s, "\x02\x00\x00\x00\x03", 5);
    s->data[pos + 4] = 0x77;
    expect_load_error(s, "Unknown section id 119");
    s->data[pos + 4] = 0x03;

    /* an unknown record type */
    s->data[pos] = 0x42;
    expect_load_error(s, "Unknown savevm section type 0x42");
}

/* START of "fake" (instance 0, version 1) under id, with its footer. */
static void put_fake_start(GByteArray *s, uint32_t id, bool first)
{
    uint8_t be[4] = { id >> 24, id >> 16, id >> 8, id };

    hex_append(s, "01");
    g_byte_array_append(s, be, 4);
    hex_append(s, "04 66616b65 00000000 00000001");
    /* the first load of "fake" is its setup magic, later ones a PART */
    hex_append(s, first ? "000005e7" : "01 00000001");
    hex_append(s, "7e");
    g_byte_array_append(s, be, 4);
}

static void put_fake_part(GByteArray *s, uint32_t id)
{
    uint8_t be[4] = { id >> 24, id >> 16, id >> 8, id };

    hex_append(s, "02");
    g_byte_array_append(s, be, 4);
    hex_append(s, "01 00000002 7e");
    g_byte_array_append(s, be, 4);
}

/*
 * A handler restarted under a fresh id forgets its old id (QEMU 7.2 keeps
 * one loaded id per handler): a stream of many STARTs cannot grow the
 * loader's section table, and PART under an old id is unknown.
 */
static GByteArray *many_starts(unsigned n, uint32_t part_id)
{
    GByteArray *s = g_byte_array_new();

    hex_append(s, "5145564d 00000003 07 00000004 6e6f6e65");
    for (unsigned i = 1; i <= n; i++) {
        put_fake_start(s, i, i == 1);
    }
    put_fake_part(s, part_id);
    hex_append(s, "00 06 00000002 7b7d");
    return s;
}

static void test_section_id_reuse(void)
{
    const unsigned n = 100000;
    GError *err = NULL;

    register_dest();
    /* the newest id resolves */
    {
        g_autoptr(GByteArray) s = many_starts(n, n);

        g_assert_cmpint(load_bytes(s->data, s->len, &err), ==, 0);
        g_assert_no_error(err);
        g_assert_cmpint(dst_fake.loads, ==, n + 1);
        g_assert_cmpuint(dst_fake.iter_sum, ==, (n - 1) + 2);
    }
    /* every older one is gone: its entry was re-used, not kept */
    for (uint32_t old = 1; old < n; old += n / 4) {
        g_autoptr(GByteArray) s = many_starts(n, old);
        g_autofree char *msg = g_strdup_printf("Unknown section id %u", old);

        expect_load_error(s, msg);
    }
    {
        g_autoptr(GByteArray) s = many_starts(n, n - 1);

        expect_load_error(s, "Unknown section id 99999");
    }
    /* an id freed this way may then name another handler (as in QEMU) */
    {
        g_autoptr(GByteArray) s = g_byte_array_new();

        hex_append(s, "5145564d 00000003 07 00000004 6e6f6e65");
        put_fake_start(s, 1, true);
        put_fake_start(s, 2, false);
        /* FULL "dev" v2 under the id "fake" had first */
        hex_append(s, "04 00000001 03 646576 00000000 00000002");
        hex_append(s, "00000007 0000000000000009 6162636465666768");
        hex_append(s, "7e 00000001");
        put_fake_part(s, 2);
        hex_append(s, "00 06 00000002 7b7d");
        g_assert_cmpint(load_bytes(s->data, s->len, &err), ==, 0);
        g_assert_no_error(err);
        g_assert_cmpuint(dst_dev.reg, ==, 7);
        g_assert_cmpuint(dst_fake.iter_sum, ==, 1 + 2);
    }
}

static void test_truncation(void)
{
    g_autoptr(GByteArray) s = build_stream();
    guint eof_pos = s->len - 1;

    /* the EOF byte sits just before 0x06 + be32 len + JSON */
    while (s->data[eof_pos] != 0x06 || s->data[eof_pos - 1] != 0x00) {
        eof_pos--;
    }
    eof_pos--;
    for (guint len = 0; len < s->len; len++) {
        GError *err = NULL;
        int ret;

        register_dest();
        ret = load_bytes(s->data, len, &err);
        if (len == eof_pos + 1) {
            /* a missing VMDESCRIPTION is only a warning, as in QEMU */
            g_assert_cmpint(ret, ==, 0);
        } else {
            g_assert_cmpint(ret, <, 0);
            g_assert_nonnull(err);
        }
        g_clear_error(&err);
    }
}

static void test_flipped_bytes(void)
{
    g_autoptr(GByteArray) s = build_stream();
    guint failures = 0;

    for (guint pos = 0; pos < s->len; pos++) {
        for (int bit = 0; bit < 8; bit += 3) {
            GError *err = NULL;

            register_dest();
            s->data[pos] ^= 1 << bit;
            if (load_bytes(s->data, s->len, &err) < 0) {
                failures++;
            }
            g_clear_error(&err);
            s->data[pos] ^= 1 << bit;
        }
    }
    /* most flips in framing must be caught (payload flips may load) */
    g_assert_cmpuint(failures, >, 100);
}

/* header + config, then the given hex, then EOF + empty vmdesc */
static GByteArray *with_records(const char *hex)
{
    GByteArray *s = g_byte_array_new();

    hex_append(s, "5145564d 00000003 07 00000004 6e6f6e65");
    hex_append(s, hex);
    hex_append(s, "00 06 00000002 7b7d");
    return s;
}

static void expect_records_error(const char *hex, const char *msg)
{
    g_autoptr(GByteArray) s = with_records(hex);

    expect_load_error(s, msg);
}

static void test_command_errors(void)
{
    register_dest();
    loadvm_register_postcopy_ops(NULL);
    expect_records_error("08 0002 0003 000000",
                         "bad length for command PING: got 3 expected 4");
    expect_records_error("08 0000 0000", "Invalid command 0");
    expect_records_error("08 000b 0000", "Invalid command 11");
    expect_records_error("08 0001 0001 00",
                         "bad length for command OPEN_RETURN_PATH");
    expect_records_error("08 0002 0004 00000001", "without a return path");
    expect_records_error("08 0007 0004 ffffffff", "exceeds the limit");
    expect_records_error("08 0007 0004 00000010 0000",
                         "PACKAGED: reading the 16 byte blob");
    expect_records_error("08 0003 0010 0000000000001000 0000000000001000",
                         "postcopy not supported");
    expect_records_error("08 0003 0008 0000000000001000",
                         "bad length for command POSTCOPY_ADVISE");
    expect_records_error("08 0004 0000", "postcopy not supported");
    expect_records_error("08 0006 0014 00 01 61 00 "
                         "0000000000000000 0000000000001000",
                         "postcopy not supported");
    expect_records_error("08 0008 0000", "ENABLE_COLO is not supported");
    /* the file cannot carry a return path */
    expect_records_error("08 0001 0000", "cannot carry a return path");
}

/* ---- postcopy commands with hooks ---- */

typedef struct Hooks {
    int advise, listen, run, discard;
    uint64_t summary, tps;
    char idstr[256];
    unsigned n;
    uint64_t starts[16], lens[16];
} Hooks;
static Hooks hooks;

static bool h_advise(LoadVMContext *ctx, uint64_t summary, uint64_t tps,
                     GError **errp)
{
    hooks.advise++;
    hooks.summary = summary;
    hooks.tps = tps;
    return true;
}

static bool h_discard(LoadVMContext *ctx, const char *idstr, unsigned n,
                      const uint64_t *starts, const uint64_t *lens,
                      GError **errp)
{
    hooks.discard++;
    g_strlcpy(hooks.idstr, idstr, sizeof(hooks.idstr));
    hooks.n = n;
    for (unsigned i = 0; i < n && i < 16; i++) {
        hooks.starts[i] = starts[i];
        hooks.lens[i] = lens[i];
    }
    return true;
}

static bool h_listen(LoadVMContext *ctx, GError **errp)
{
    hooks.listen++;
    ctx->postcopy_listening = true;
    return true;
}

static bool h_run(LoadVMContext *ctx, GError **errp)
{
    hooks.run++;
    return true;
}

static const LoadvmPostcopyOps test_ops = {
    .advise = h_advise,
    .discard = h_discard,
    .listen = h_listen,
    .run = h_run,
};

static void test_discard_parsing(void)
{
    g_autoptr(GByteArray) ok = NULL;

    register_dest();
    loadvm_register_postcopy_ops(&test_ops);
    memset(&hooks, 0, sizeof(hooks));
    ok = with_records("08 0003 0010 0000000000201000 0000000000001000 "
                      "08 0006 0026 00 03 72616d 00 "
                      "000000000087c000 000000000f784000 "
                      "0000000000001000 0000000000002000");
    g_assert_cmpint(load_bytes(ok->data, ok->len, NULL), ==, 0);
    g_assert_cmpint(hooks.advise, ==, 1);
    g_assert_cmphex(hooks.summary, ==, 0x201000);
    g_assert_cmpuint(hooks.tps, ==, 4096);
    g_assert_cmpint(hooks.discard, ==, 1);
    g_assert_cmpstr(hooks.idstr, ==, "ram");
    g_assert_cmpuint(hooks.n, ==, 2);
    g_assert_cmphex(hooks.starts[0], ==, 0x87c000);
    g_assert_cmphex(hooks.lens[0], ==, 0xf784000);
    g_assert_cmphex(hooks.starts[1], ==, 0x1000);
    g_assert_cmphex(hooks.lens[1], ==, 0x2000);

    /* each rule of §2.4 */
    expect_records_error("08 0006 0016 01 03 72616d 00 "
                         "000000000087c000 000000000f784000",
                         "unsupported version 1");
    expect_records_error("08 0006 0016 00 03 72616d 01 "
                         "000000000087c000 000000000f784000",
                         "missing terminator");
    expect_records_error("08 0006 0015 00 03 72616d 00 "
                         "000000000087c000 000000000f7840",
                         "not a multiple of 16");
    expect_records_error("08 0006 0006 00 03 72616d 00",
                         "payload too short");
    expect_records_error("08 0006 0016 00 ff 72616d 00 "
                         "000000000087c000 000000000f784000",
                         "bad block name length");
    expect_records_error("08 0006 0016 00 00 72616d 00 "
                         "000000000087c000 000000000f784000",
                         "bad block name length");
    expect_records_error("08 0006 0016 00 03 720061 00 "
                         "000000000087c000 000000000f784000",
                         "contains a NUL");
    expect_records_error("08 0006 0016 00 03 72616d 00 "
                         "fffffffffffff000 0000000000002000",
                         "overflows");
    loadvm_register_postcopy_ops(NULL);
}

static void test_packaged(void)
{
    QEMUFile *pkg = buffer_output();
    QEMUFile *f = buffer_output();
    g_autoptr(GByteArray) blob = NULL;
    g_autoptr(GByteArray) s = NULL;
    GError *err = NULL;
    uint64_t must, can;

    register_source();
    src_fake.postcopy = true;
    qemu_savevm_state_pending_exact(&must, &can);
    g_assert_cmpuint(can, ==, 1000);
    qemu_savevm_state_header(f);
    qemu_savevm_state_setup(f, NULL);
    qemu_savevm_send_postcopy_advise_sizes(f, 4096, 4096);
    qemu_savevm_state_iterate(f, true);
    /* postcopy handlers are not completed in precopy */
    qemu_savevm_state_complete_precopy_iterable(f, true);
    qemu_savevm_send_postcopy_listen(pkg);
    qemu_savevm_state_complete_precopy_non_iterable(pkg, true, false);
    qemu_savevm_send_postcopy_run(pkg);
    blob = output_bytes(pkg);
    qemu_fclose(pkg);
    g_assert_cmpint(qemu_savevm_send_packaged(f, blob->data, blob->len), ==,
                    0);
    /* what the listen thread would read afterwards */
    qemu_savevm_state_iterate(f, true);
    qemu_savevm_state_complete_postcopy(f);
    s = output_bytes(f);
    qemu_fclose(f);

    register_dest();
    loadvm_register_postcopy_ops(&test_ops);
    memset(&hooks, 0, sizeof(hooks));
    {
        QIOChannel *ioc = qio_channel_new_from_bytes(s->data, s->len);
        QEMUFile *in = qemu_file_new_input(ioc);
        LoadVMContext ctx;
        int ret;

        loadvm_context_init(&ctx, in);
        g_assert_cmpint(qemu_loadvm_state(in, &ctx, &err), ==, 0);
        g_assert_no_error(err);
        g_assert_true(ctx.postcopy_listening);
        g_assert_cmpint(hooks.advise, ==, 1);
        g_assert_cmpint(hooks.listen, ==, 1);
        g_assert_cmpint(hooks.run, ==, 1);
        g_assert_cmpmem(&dst_dev, sizeof(dst_dev), &src_dev,
                        sizeof(src_dev));
        g_assert_cmpint(dst_fake.load_cleanups, ==, 0);
        g_assert_cmpint(dst_fake.loads, ==, 2);
        /* the listen thread's part: PART + END + EOF */
        ret = qemu_loadvm_state_main(in, &ctx, &err);
        g_assert_cmpint(ret, ==, 0);
        g_assert_no_error(err);
        g_assert_cmpint(dst_fake.loads, ==, 4);
        g_assert_cmpuint(dst_fake.complete, ==, 0xc0ffee);
        qemu_loadvm_state_cleanup();
        g_assert_cmpint(dst_fake.load_cleanups, ==, 1);
        loadvm_context_destroy(&ctx);
        qemu_fclose(in);
        qio_channel_unref(ioc);
    }
    loadvm_register_postcopy_ops(NULL);
}

/* ---- return path ---- */

static void test_return_path(void)
{
    int sv[2];
    QIOChannel *a, *b;
    QEMUFile *src, *dst, *src_rp;
    LoadVMContext ctx;
    RPMessage msg;
    GError *err = NULL;
    char idstr[256];
    uint64_t start;
    uint32_t len;

    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
    a = qio_channel_new_fd(sv[0]);
    b = qio_channel_new_fd(sv[1]);
    src = qemu_file_new_output(a);
    dst = qemu_file_new_input(b);
    qio_channel_unref(a);
    qio_channel_unref(b);
    src_rp = qemu_file_get_return_path(src);

    register_dest();
    qemu_savevm_state_header(src);
    qemu_savevm_send_open_return_path(src);
    qemu_savevm_send_ping(src, 1);
    qemu_savevm_send_ping(src, 0x42);
    qemu_put_byte(src, QEMU_VM_EOF);
    qemu_put_byte(src, QEMU_VM_VMDESCRIPTION);
    qemu_put_be32(src, 2);
    qemu_put_buffer(src, (const uint8_t *)"{}", 2);
    qemu_fflush(src);

    loadvm_context_init(&ctx, dst);
    g_assert_cmpint(qemu_loadvm_state(dst, &ctx, &err), ==, 0);
    g_assert_no_error(err);
    g_assert_true(ctx.have_vmdesc);
    g_assert_nonnull(ctx.to_src);
    g_assert_cmpint(migrate_send_rp_req_pages(&ctx, NULL, 0, 4096), <, 0);
    g_assert_cmpint(migrate_send_rp_req_pages(&ctx, "ram", 0x2345000, 4096),
                    ==, 0);
    g_assert_cmpint(migrate_send_rp_req_pages(&ctx, "ram", 0x8000000, 4096),
                    ==, 0);
    g_assert_cmpint(migrate_send_rp_shut(&ctx, 0), ==, 0);

    g_assert_cmpint(source_return_path_read(src_rp, &msg, &err), ==, 0);
    g_assert_cmpuint(msg.type, ==, MIG_RP_MSG_PONG);
    g_assert_cmpuint(rp_message_get_u32(&msg), ==, 1);
    g_assert_cmpint(source_return_path_read(src_rp, &msg, &err), ==, 0);
    g_assert_cmpuint(rp_message_get_u32(&msg), ==, 0x42);
    g_assert_cmpint(source_return_path_read(src_rp, &msg, &err), ==, 0);
    g_assert_cmpuint(msg.type, ==, MIG_RP_MSG_REQ_PAGES_ID);
    g_assert_cmpuint(msg.len, ==, 0x10);
    g_assert_true(rp_message_get_req_pages(&msg, &start, &len, idstr, &err));
    g_assert_cmphex(start, ==, 0x2345000);
    g_assert_cmpuint(len, ==, 4096);
    g_assert_cmpstr(idstr, ==, "ram");
    g_assert_cmpint(source_return_path_read(src_rp, &msg, &err), ==, 0);
    g_assert_cmpuint(msg.type, ==, MIG_RP_MSG_REQ_PAGES);
    g_assert_true(rp_message_get_req_pages(&msg, &start, &len, idstr, &err));
    g_assert_cmphex(start, ==, 0x8000000);
    g_assert_cmpstr(idstr, ==, "");
    g_assert_cmpint(source_return_path_read(src_rp, &msg, &err), ==, 0);
    g_assert_cmpuint(msg.type, ==, MIG_RP_MSG_SHUT);
    g_assert_cmpuint(rp_message_get_u32(&msg), ==, 0);
    g_assert_no_error(err);

    /* the source's validation of what comes back */
    {
        static const char *const bad[] = {
            "0000 0000", "0007 0000", "0001 0003 000000",
            "0002 0201", "0003 000e 0000000000000000 00001000 02 61",
            "0005 0002 05 61",
        };
        for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
            g_autoptr(GByteArray) m = g_byte_array_new();
            QIOChannel *ioc;
            QEMUFile *in;

            hex_append(m, bad[i]);
            ioc = qio_channel_new_from_bytes(m->data, m->len);
            in = qemu_file_new_input(ioc);
            g_assert_cmpint(source_return_path_read(in, &msg, &err), <, 0);
            g_assert_nonnull(err);
            g_clear_error(&err);
            qemu_fclose(in);
            qio_channel_unref(ioc);
        }
    }
    loadvm_context_destroy(&ctx);
    qemu_fclose(src_rp);
    qemu_fclose(src);
    qemu_fclose(dst);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/savevm/roundtrip", test_roundtrip);
    g_test_add_func("/savevm/exact-bytes", test_exact_bytes);
    g_test_add_func("/savevm/load-qemu-stream", test_load_qemu_stream);
    g_test_add_func("/savevm/header-errors", test_header_errors);
    g_test_add_func("/savevm/config-subsections", test_config_subsections);
    g_test_add_func("/savevm/section-errors", test_section_errors);
    g_test_add_func("/savevm/section-id-reuse", test_section_id_reuse);
    g_test_add_func("/savevm/truncation", test_truncation);
    g_test_add_func("/savevm/flipped-bytes", test_flipped_bytes);
    g_test_add_func("/savevm/command-errors", test_command_errors);
    g_test_add_func("/savevm/discard", test_discard_parsing);
    g_test_add_func("/savevm/packaged", test_packaged);
    g_test_add_func("/savevm/return-path", test_return_path);
    return g_test_run();
}

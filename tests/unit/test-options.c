/*
 * Migration capabilities and parameters (migration/options.c): the
 * tables against QEMU 7.2's facts, support, rules between capabilities,
 * every parameter's range with QEMU's error text, idleness.
 */
#include "qemu/osdep.h"
#include "migration/migration.h"
#include "migration/options.h"

static const char *const cap_names[] = {
    "xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks",
    "compress", "events", "postcopy-ram", "x-colo", "release-ram",
    "block", "return-path", "pause-before-switchover", "multifd",
    "dirty-bitmaps", "postcopy-blocktime", "late-block-activate",
    "x-ignore-shared", "validate-uuid", "background-snapshot",
    "zero-copy-send", "postcopy-preempt",
    "x-auto-postcopy",          /* ferry's own */
};

static bool cap_ferry_supports(MigrationCapability c)
{
    return c == MIGRATION_CAPABILITY_EVENTS ||
           c == MIGRATION_CAPABILITY_RETURN_PATH ||
           c == MIGRATION_CAPABILITY_PAUSE_BEFORE_SWITCHOVER ||
           c == MIGRATION_CAPABILITY_POSTCOPY_RAM ||
           c == MIGRATION_CAPABILITY_POSTCOPY_BLOCKTIME ||
           c == MIGRATION_CAPABILITY_LATE_BLOCK_ACTIVATE ||
           c == MIGRATION_CAPABILITY_MULTIFD ||
           c == MIGRATION_CAPABILITY_POSTCOPY_PREEMPT ||
           c == MIGRATION_CAPABILITY_X_AUTO_POSTCOPY;
}

static void reset_state(void)
{
    MigrationState *s = migrate_get_current();

    s->status = MIGRATION_STATUS_NONE;
    memset(s->capabilities, 0, sizeof(s->capabilities));
    migrate_params_init(&s->parameters);
}

static void test_capability_table(void)
{
    g_assert_cmpint(ARRAY_SIZE(cap_names), ==, MIGRATION_CAPABILITY__MAX);
    for (int i = 0; i < MIGRATION_CAPABILITY__MAX; i++) {
        const MigrationCapabilityInfo *info = migrate_capability_info(i);
        MigrationCapability c;

        g_assert_cmpstr(info->name, ==, cap_names[i]);
        g_assert_cmpstr(MigrationCapability_str(i), ==, cap_names[i]);
        g_assert_true(migration_capability_parse(cap_names[i], &c));
        g_assert_cmpint(c, ==, i);
        g_assert_cmpint(info->supported, ==, cap_ferry_supports(i));
        g_assert_nonnull(info->since);
        g_assert_true(info->desc && *info->desc);
    }
    g_assert_null(migrate_capability_info(MIGRATION_CAPABILITY__MAX));
    g_assert_cmpstr(MigrationCapability_str(-1), ==, "invalid");
}

static void test_capability_set(void)
{
    reset_state();
    for (int i = 0; i < MIGRATION_CAPABILITY__MAX; i++) {
        GError *err = NULL;
        bool ok;

        if (i == MIGRATION_CAPABILITY_POSTCOPY_PREEMPT ||
            i == MIGRATION_CAPABILITY_X_AUTO_POSTCOPY) {
            /* Alone it breaks its rule; with postcopy-ram it is fine. */
            g_assert_false(migrate_set_capability(i, true, &err));
            g_assert_cmpstr(err->message, ==,
                            i == MIGRATION_CAPABILITY_X_AUTO_POSTCOPY ?
                            "x-auto-postcopy requires postcopy-ram" :
                            "Postcopy preempt requires postcopy-ram");
            g_clear_error(&err);
            g_assert_true(migrate_set_capability(
                MIGRATION_CAPABILITY_POSTCOPY_RAM, true, &err));
        }
        ok = migrate_set_capability(i, true, &err);
        if (cap_ferry_supports(i)) {
            g_assert_no_error(err);
            g_assert_true(ok);
            g_assert_true(migrate_get_current()->capabilities[i]);
            g_assert_true(migrate_set_capability(i, false, &err));
            migrate_get_current()->capabilities[
                MIGRATION_CAPABILITY_POSTCOPY_RAM] = false;
        } else {
            g_autofree char *want = g_strdup_printf(
                "Capability '%s' is not supported by this VMM", cap_names[i]);

            g_assert_false(ok);
            g_assert_cmpstr(err->message, ==, want);
            g_clear_error(&err);
            /* Turning an unsupported one off is harmless. */
            g_assert_true(migrate_set_capability(i, false, &err));
        }
        g_assert_false(migrate_get_current()->capabilities[i]);
    }
}

static void test_capability_accessors(void)
{
    static bool (*const acc[])(void) = {
        migrate_xbzrle, migrate_rdma_pin_all, migrate_auto_converge,
        migrate_zero_blocks, migrate_compress, migrate_events,
        migrate_postcopy_ram, migrate_colo, migrate_release_ram,
        migrate_block, migrate_return_path, migrate_pause_before_switchover,
        migrate_multifd, migrate_dirty_bitmaps, migrate_postcopy_blocktime,
        migrate_late_block_activate, migrate_ignore_shared,
        migrate_validate_uuid, migrate_background_snapshot,
        migrate_zero_copy_send, migrate_postcopy_preempt,
        migrate_x_auto_postcopy,
    };
    MigrationState *s = migrate_get_current();

    g_assert_cmpint(ARRAY_SIZE(acc), ==, MIGRATION_CAPABILITY__MAX);
    reset_state();
    /* Each accessor reads its own slot and no other. */
    for (int i = 0; i < MIGRATION_CAPABILITY__MAX; i++) {
        s->capabilities[i] = true;
        for (int j = 0; j < MIGRATION_CAPABILITY__MAX; j++) {
            g_assert_cmpint(acc[j](), ==, i == j);
        }
        s->capabilities[i] = false;
    }
    s->capabilities[MIGRATION_CAPABILITY_EVENTS] = true;
    s->capabilities[MIGRATION_CAPABILITY_RETURN_PATH] = true;
    g_assert_true(migrate_events() && migrate_return_path());
    reset_state();
}

typedef struct CapsCase {
    MigrationCapability on[3];
    const char *error;          /* NULL: accepted */
} CapsCase;

#define C(x) MIGRATION_CAPABILITY_##x

static void test_capability_rules(void)
{
    static const CapsCase cases[] = {
        { { C(POSTCOPY_PREEMPT) }, "Postcopy preempt requires postcopy-ram" },
        { { C(POSTCOPY_PREEMPT), C(POSTCOPY_RAM) }, NULL },
        { { C(POSTCOPY_PREEMPT), C(POSTCOPY_RAM), C(COMPRESS) },
          "Postcopy preempt not compatible with compress" },
        { { C(POSTCOPY_BLOCKTIME) }, NULL },
        { { C(POSTCOPY_RAM), C(X_IGNORE_SHARED) },
          "Postcopy is not compatible with ignore-shared" },
        /* multifd carries postcopy's precopy phase, as in QEMU 7.2 */
        { { C(POSTCOPY_RAM), C(MULTIFD) }, NULL },
        /* ferry's own rule: QEMU 7.2 cannot tell their connections apart */
        { { C(POSTCOPY_RAM), C(POSTCOPY_PREEMPT), C(MULTIFD) },
          "multifd together with postcopy-preempt is not supported: both "
          "add connections after the main one, which the destination "
          "cannot tell apart (as QEMU 7.2)" },
        { { C(MULTIFD), C(RETURN_PATH), C(PAUSE_BEFORE_SWITCHOVER) }, NULL },
        { { C(X_AUTO_POSTCOPY) }, "x-auto-postcopy requires postcopy-ram" },
        { { C(X_AUTO_POSTCOPY), C(POSTCOPY_RAM) }, NULL },
        { { C(MULTIFD), C(COMPRESS) },
          "Multifd is not compatible with compress" },
        { { C(RETURN_PATH), C(PAUSE_BEFORE_SWITCHOVER), C(EVENTS) }, NULL },
        { { C(BACKGROUND_SNAPSHOT), C(EVENTS), C(ZERO_BLOCKS) }, NULL },
        { { C(BACKGROUND_SNAPSHOT), C(RETURN_PATH) },
          "Background-snapshot is not compatible with return-path" },
        { { C(BACKGROUND_SNAPSHOT), C(POSTCOPY_BLOCKTIME) },
          "Background-snapshot is not compatible with postcopy-blocktime" },
        /* QEMU 7.2 checks background-snapshot before preempt. */
        { { C(BACKGROUND_SNAPSHOT), C(POSTCOPY_RAM), C(POSTCOPY_PREEMPT) },
          "Background-snapshot is not compatible with postcopy-ram" },
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        bool caps[MIGRATION_CAPABILITY__MAX] = { false };
        GError *err = NULL;

        for (int j = 0; j < 3; j++) {
            caps[cases[i].on[j]] = true;     /* 0 (xbzrle) is never used */
        }
        caps[0] = false;
        g_assert_cmpint(migrate_caps_check(caps, &err), ==, !cases[i].error);
        if (cases[i].error) {
            g_assert_cmpstr(err->message, ==, cases[i].error);
            g_clear_error(&err);
        }
    }
}

/*
 * background-snapshot with each other capability: QEMU 7.2 allows only
 * these four (postcopy-preempt fails on its own rule).
 */
static void test_capability_bg_snapshot(void)
{
    for (int i = 0; i < MIGRATION_CAPABILITY__MAX; i++) {
        bool caps[MIGRATION_CAPABILITY__MAX] = { false };
        bool allowed = i == C(EVENTS) || i == C(ZERO_BLOCKS) ||
                       i == C(BLOCK) || i == C(X_IGNORE_SHARED) ||
                       i == C(BACKGROUND_SNAPSHOT);
        GError *err = NULL;

        caps[C(BACKGROUND_SNAPSHOT)] = true;
        caps[i] = true;
        g_assert_cmpint(migrate_caps_check(caps, &err), ==, allowed);
        g_clear_error(&err);
    }
}

#undef C

static void test_capability_while_running(void)
{
    GError *err = NULL;

    reset_state();
    migrate_get_current()->status = MIGRATION_STATUS_ACTIVE;
    for (int i = 0; i < MIGRATION_CAPABILITY__MAX; i++) {
        g_assert_false(migrate_set_capability(i, true, &err));
        g_assert_cmpstr(err->message, ==,
                        "There's a migration process in progress");
        g_clear_error(&err);
        g_assert_false(migrate_get_current()->capabilities[i]);
    }
    migrate_get_current()->status = MIGRATION_STATUS_POSTCOPY_ACTIVE;
    g_assert_false(migrate_set_capability(MIGRATION_CAPABILITY_EVENTS, false,
                                          &err));
    g_clear_error(&err);
    reset_state();
}

/* QEMU 7.2's query-migrate-parameters on a fresh process, in QAPI order. */
typedef struct ParamDefault {
    const char *name;
    MigrationParameterType type;
    uint64_t num;
    const char *str;
} ParamDefault;

static const ParamDefault qemu72_defaults[] = {
    { "announce-initial", MIGRATION_PARAM_SIZE, 50 },
    { "announce-max", MIGRATION_PARAM_SIZE, 550 },
    { "announce-rounds", MIGRATION_PARAM_SIZE, 5 },
    { "announce-step", MIGRATION_PARAM_SIZE, 100 },
    { "compress-level", MIGRATION_PARAM_INT, 1 },
    { "compress-threads", MIGRATION_PARAM_INT, 8 },
    { "compress-wait-thread", MIGRATION_PARAM_BOOL, true },
    { "decompress-threads", MIGRATION_PARAM_INT, 2 },
    { "throttle-trigger-threshold", MIGRATION_PARAM_INT, 50 },
    { "cpu-throttle-initial", MIGRATION_PARAM_INT, 20 },
    { "cpu-throttle-increment", MIGRATION_PARAM_INT, 10 },
    { "cpu-throttle-tailslow", MIGRATION_PARAM_BOOL, false },
    { "tls-creds", MIGRATION_PARAM_STR, 0, "" },
    { "tls-hostname", MIGRATION_PARAM_STR, 0, "" },
    { "tls-authz", MIGRATION_PARAM_STR, 0, "" },
    { "max-bandwidth", MIGRATION_PARAM_SIZE, 134217728 },
    { "downtime-limit", MIGRATION_PARAM_INT, 300 },
    { "x-checkpoint-delay", MIGRATION_PARAM_INT, 20000 },
    { "block-incremental", MIGRATION_PARAM_BOOL, false },
    { "multifd-channels", MIGRATION_PARAM_INT, 2 },
    { "xbzrle-cache-size", MIGRATION_PARAM_SIZE, 67108864 },
    { "max-postcopy-bandwidth", MIGRATION_PARAM_SIZE, 0 },
    { "max-cpu-throttle", MIGRATION_PARAM_INT, 99 },
    { "multifd-compression", MIGRATION_PARAM_STR, 0, "none" },
    { "multifd-zlib-level", MIGRATION_PARAM_INT, 1 },
    { "multifd-zstd-level", MIGRATION_PARAM_INT, 1 },
    { "block-bitmap-mapping", MIGRATION_PARAM_LIST },
    /* ferry's own, after QEMU's */
    { "x-net-timeout", MIGRATION_PARAM_SIZE, 60000 },
};

static void test_parameter_table(void)
{
    g_assert_cmpint(ARRAY_SIZE(qemu72_defaults), ==,
                    MIGRATION_PARAMETER__MAX);
    for (int i = 0; i < MIGRATION_PARAMETER__MAX; i++) {
        const MigrationParameterInfo *info = migrate_parameter_info(i);
        const ParamDefault *d = &qemu72_defaults[i];
        MigrationParameter p;

        g_assert_cmpstr(info->name, ==, d->name);
        g_assert_true(migration_parameter_parse(d->name, &p));
        g_assert_cmpint(p, ==, i);
        g_assert_cmpint(info->type, ==, d->type);
        g_assert_nonnull(info->unit);
        if (d->type == MIGRATION_PARAM_STR) {
            g_assert_cmpstr(migrate_parameter_str(i), ==, d->str);
        } else if (d->type != MIGRATION_PARAM_LIST) {
            /* As migration_state_new() left them. */
            g_assert_cmpuint(migrate_parameter_num(i), ==, d->num);
        }
        g_assert_cmpint(info->acted_on, ==,
                        i == MIGRATION_PARAMETER_MAX_BANDWIDTH ||
                        i == MIGRATION_PARAMETER_DOWNTIME_LIMIT ||
                        i == MIGRATION_PARAMETER_MAX_POSTCOPY_BANDWIDTH ||
                        i == MIGRATION_PARAMETER_X_NET_TIMEOUT);
    }
    {
        MigrationParameter p;

        g_assert_false(migration_parameter_parse("max_bandwidth", &p));
    }
}

/*
 * Bounds as QEMU 7.2 enforces them, and what it says below and above
 * (NULL: no such value can be given).  From a QEMU 7.2 process.
 */
typedef struct RangeCase {
    MigrationParameter p;
    int64_t lo, hi;
    const char *below, *above;
} RangeCase;

#define P(x) MIGRATION_PARAMETER_##x
#define BETWEEN(n, a, b) "Parameter '" n "' expects a value between " a \
    " and " b
#define RANGE(n, a, b) "Parameter '" n "' expects an integer in the range " \
    "of " a " to " b

static const RangeCase range_cases[] = {
    { P(ANNOUNCE_INITIAL), 0, 100000, NULL,
      BETWEEN("announce_initial", "0", "100000") },
    { P(ANNOUNCE_MAX), 0, 100000, NULL,
      BETWEEN("announce_max", "0", "100000") },
    { P(ANNOUNCE_ROUNDS), 0, 1000, NULL,
      BETWEEN("announce_rounds", "0", "1000") },
    { P(ANNOUNCE_STEP), 1, 10000, BETWEEN("announce_step", "0", "10000"),
      BETWEEN("announce_step", "0", "10000") },
    { P(COMPRESS_LEVEL), 0, 9, NULL, BETWEEN("compress_level", "0", "9") },
    { P(COMPRESS_THREADS), 1, 255, BETWEEN("compress_threads", "1", "255"),
      "Parameter 'compress-threads' expects uint8_t" },
    { P(DECOMPRESS_THREADS), 1, 255,
      BETWEEN("decompress_threads", "1", "255"),
      "Parameter 'decompress-threads' expects uint8_t" },
    { P(THROTTLE_TRIGGER_THRESHOLD), 1, 100,
      RANGE("throttle_trigger_threshold", "1", "100"),
      RANGE("throttle_trigger_threshold", "1", "100") },
    { P(CPU_THROTTLE_INITIAL), 1, 99, RANGE("cpu_throttle_initial", "1", "99"),
      RANGE("cpu_throttle_initial", "1", "99") },
    { P(CPU_THROTTLE_INCREMENT), 1, 99,
      RANGE("cpu_throttle_increment", "1", "99"),
      RANGE("cpu_throttle_increment", "1", "99") },
    { P(MAX_BANDWIDTH), 0, INT64_MAX, NULL, NULL },
    { P(DOWNTIME_LIMIT), 0, 2000000, NULL,
      RANGE("downtime_limit", "0", "(2000 * 1000) ms") },
    { P(X_CHECKPOINT_DELAY), 0, UINT32_MAX, NULL,
      "Parameter 'x-checkpoint-delay' expects uint32_t" },
    { P(MULTIFD_CHANNELS), 1, 255, BETWEEN("multifd_channels", "1", "255"),
      "Parameter 'multifd-channels' expects uint8_t" },
    { P(XBZRLE_CACHE_SIZE), 4096, 1LL << 62,
      "Parameter 'xbzrle_cache_size' expects a power of two no less than "
      "the target page size", NULL },
    { P(MAX_POSTCOPY_BANDWIDTH), 0, INT64_MAX, NULL, NULL },
    { P(X_NET_TIMEOUT), 0, 86400000, NULL,
      BETWEEN("x_net_timeout", "0", "86400000") },
    /* The floor is cpu-throttle-initial, 20 by default. */
    { P(MAX_CPU_THROTTLE), 20, 99,
      RANGE("max_cpu_throttle", "cpu_throttle_initial", "99"),
      RANGE("max_cpu_throttle", "cpu_throttle_initial", "99") },
    { P(MULTIFD_ZLIB_LEVEL), 0, 9, NULL,
      BETWEEN("multifd_zlib_level", "0", "9") },
    { P(MULTIFD_ZSTD_LEVEL), 0, 20, NULL,
      BETWEEN("multifd_zstd_level", "0", "20") },
};

static void expect_refused(MigrationParameter p, int64_t v, const char *msg)
{
    GError *err = NULL;
    uint64_t before = migrate_parameter_num(p);

    g_assert_false(migrate_set_parameter(p, v, &err));
    g_assert_nonnull(err);
    g_assert_cmpstr(err->message, ==, msg);
    g_clear_error(&err);
    g_assert_cmpuint(migrate_parameter_num(p), ==, before);
}

static void expect_accepted(MigrationParameter p, int64_t v)
{
    GError *err = NULL;

    g_assert_true(migrate_set_parameter(p, v, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(migrate_parameter_num(p), ==, v);
}

static void test_parameter_ranges(void)
{
    for (size_t i = 0; i < ARRAY_SIZE(range_cases); i++) {
        const RangeCase *c = &range_cases[i];

        reset_state();
        expect_accepted(c->p, c->lo);
        expect_accepted(c->p, c->hi);
        if (c->below) {
            expect_refused(c->p, c->lo - 1, c->below);
        }
        if (c->above) {
            expect_refused(c->p, c->hi + 1, c->above);
        }
    }
    reset_state();
}

/* Every int and size parameter is covered by range_cases. */
static void test_parameter_ranges_complete(void)
{
    for (int p = 0; p < MIGRATION_PARAMETER__MAX; p++) {
        MigrationParameterType t = migrate_parameter_info(p)->type;
        bool found = false;

        for (size_t i = 0; i < ARRAY_SIZE(range_cases); i++) {
            found |= range_cases[i].p == (MigrationParameter)p;
        }
        g_assert_cmpint(found, ==,
                        t == MIGRATION_PARAM_INT || t == MIGRATION_PARAM_SIZE);
    }
}

static void test_parameter_types(void)
{
    reset_state();
    expect_refused(P(MAX_BANDWIDTH), -1,
                   "Parameter 'max-bandwidth' expects uint64");
    expect_refused(P(COMPRESS_LEVEL), -1,
                   "Parameter 'compress-level' expects uint8_t");
    expect_refused(P(X_CHECKPOINT_DELAY), -1,
                   "Parameter 'x-checkpoint-delay' expects uint32_t");
    expect_refused(P(XBZRLE_CACHE_SIZE), 4097,
                   "Parameter 'xbzrle_cache_size' expects a power of two "
                   "no less than the target page size");
    expect_accepted(P(COMPRESS_WAIT_THREAD), false);
    g_assert_false(migrate_compress_wait_thread());
    expect_accepted(P(BLOCK_INCREMENTAL), true);
    g_assert_true(migrate_block_incremental());
    reset_state();
}

/* max-cpu-throttle may not fall below cpu-throttle-initial. */
static void test_parameter_cross_check(void)
{
    reset_state();
    expect_accepted(P(CPU_THROTTLE_INITIAL), 50);
    expect_refused(P(MAX_CPU_THROTTLE), 49,
                   RANGE("max_cpu_throttle", "cpu_throttle_initial", "99"));
    expect_accepted(P(MAX_CPU_THROTTLE), 50);
    /* Checked on the whole set: raising the floor above it fails too. */
    expect_refused(P(CPU_THROTTLE_INITIAL), 60,
                   RANGE("max_cpu_throttle", "cpu_throttle_initial", "99"));
    reset_state();
}

static void test_parameter_strings(void)
{
    MigrationParameters np = { 0 };
    GError *err = NULL;

    reset_state();
    migrate_params_copy(&np, &migrate_get_current()->parameters);
    g_assert_true(migrate_params_stage_str(&np, P(MULTIFD_COMPRESSION),
                                           "zstd", &err));
    g_assert_false(migrate_params_stage_str(&np, P(MULTIFD_COMPRESSION),
                                            "lz4", &err));
    g_assert_cmpstr(err->message, ==, "Parameter 'multifd-compression' "
                    "does not accept value 'lz4'");
    g_clear_error(&err);
    g_assert_true(migrate_params_stage_str(&np, P(TLS_HOSTNAME), "dst",
                                           &err));
    g_assert_false(migrate_params_stage_str(&np, P(MAX_BANDWIDTH), "1",
                                            &err));
    g_clear_error(&err);
    g_assert_true(migrate_set_parameters(&np, &err));
    migrate_params_free(&np);
    g_assert_cmpstr(migrate_multifd_compression(), ==, "zstd");
    g_assert_cmpstr(migrate_tls_hostname(), ==, "dst");
    g_assert_cmpstr(migrate_tls_creds(), ==, "");
    /* Accepted as QEMU does, but multifd itself only sends uncompressed. */
    g_assert_true(migrate_multifd_check(&err));
    g_assert_true(migrate_set_capability(MIGRATION_CAPABILITY_MULTIFD, true,
                                         &err));
    g_assert_false(migrate_multifd_check(&err));
    g_assert_cmpstr(err->message, ==, "multifd-compression 'zstd' is not "
                    "supported by this VMM (only 'none')");
    g_clear_error(&err);
    reset_state();
    g_assert_cmpstr(migrate_multifd_compression(), ==, "none");
    g_assert_true(migrate_set_capability(MIGRATION_CAPABILITY_MULTIFD, true,
                                         &err));
    g_assert_true(migrate_multifd_check(&err));
    reset_state();
}

/* One bad value in a set: nothing of the set applies. */
static void test_parameter_all_or_nothing(void)
{
    MigrationParameters np = { 0 };
    GError *err = NULL;

    reset_state();
    migrate_params_copy(&np, &migrate_get_current()->parameters);
    g_assert_true(migrate_params_stage_num(&np, P(MAX_BANDWIDTH), 1000,
                                           &err));
    g_assert_true(migrate_params_stage_num(&np, P(DOWNTIME_LIMIT), 2000001,
                                           &err));
    g_assert_false(migrate_set_parameters(&np, &err));
    g_clear_error(&err);
    migrate_params_free(&np);
    g_assert_cmpuint(migrate_max_bandwidth(), ==, 134217728);
    g_assert_cmpuint(migrate_downtime_limit(), ==, 300);
}

/* As in QEMU, parameters change during a migration (capabilities don't). */
static void test_parameter_while_running(void)
{
    reset_state();
    migrate_get_current()->status = MIGRATION_STATUS_ACTIVE;
    expect_accepted(P(MAX_BANDWIDTH), 1 << 20);
    expect_accepted(P(DOWNTIME_LIMIT), 50);
    expect_accepted(P(MAX_POSTCOPY_BANDWIDTH), 1 << 10);
    g_assert_cmpuint(migrate_max_bandwidth(), ==, 1 << 20);
    g_assert_cmpuint(migrate_downtime_limit(), ==, 50);
    g_assert_cmpuint(migrate_max_postcopy_bandwidth(), ==, 1 << 10);
    reset_state();
}

static void test_parameter_accessors(void)
{
    static uint64_t (*const acc[])(void) = {
        [P(ANNOUNCE_INITIAL)] = migrate_announce_initial,
        [P(ANNOUNCE_MAX)] = migrate_announce_max,
        [P(ANNOUNCE_ROUNDS)] = migrate_announce_rounds,
        [P(ANNOUNCE_STEP)] = migrate_announce_step,
        [P(COMPRESS_LEVEL)] = migrate_compress_level,
        [P(COMPRESS_THREADS)] = migrate_compress_threads,
        [P(DECOMPRESS_THREADS)] = migrate_decompress_threads,
        [P(THROTTLE_TRIGGER_THRESHOLD)] = migrate_throttle_trigger_threshold,
        [P(CPU_THROTTLE_INITIAL)] = migrate_cpu_throttle_initial,
        [P(CPU_THROTTLE_INCREMENT)] = migrate_cpu_throttle_increment,
        [P(MAX_BANDWIDTH)] = migrate_max_bandwidth,
        [P(DOWNTIME_LIMIT)] = migrate_downtime_limit,
        [P(X_CHECKPOINT_DELAY)] = migrate_checkpoint_delay,
        [P(MULTIFD_CHANNELS)] = migrate_multifd_channels,
        [P(XBZRLE_CACHE_SIZE)] = migrate_xbzrle_cache_size,
        [P(MAX_POSTCOPY_BANDWIDTH)] = migrate_max_postcopy_bandwidth,
        [P(MAX_CPU_THROTTLE)] = migrate_max_cpu_throttle,
        [P(MULTIFD_ZLIB_LEVEL)] = migrate_multifd_zlib_level,
        [P(MULTIFD_ZSTD_LEVEL)] = migrate_multifd_zstd_level,
        [P(X_NET_TIMEOUT)] = migrate_net_timeout,
    };

    reset_state();
    for (size_t i = 0; i < ARRAY_SIZE(range_cases); i++) {
        const RangeCase *c = &range_cases[i];

        expect_accepted(c->p, c->hi);
        g_assert_cmpuint(acc[c->p](), ==, c->hi);
    }
    reset_state();
}

#undef P

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    /* First: it checks the defaults nobody has reset yet. */
    g_test_add_func("/options/parameter/table", test_parameter_table);
    g_test_add_func("/options/capability/table", test_capability_table);
    g_test_add_func("/options/capability/set", test_capability_set);
    g_test_add_func("/options/capability/accessors",
                    test_capability_accessors);
    g_test_add_func("/options/capability/rules", test_capability_rules);
    g_test_add_func("/options/capability/background-snapshot",
                    test_capability_bg_snapshot);
    g_test_add_func("/options/capability/while-running",
                    test_capability_while_running);
    g_test_add_func("/options/parameter/ranges", test_parameter_ranges);
    g_test_add_func("/options/parameter/ranges-complete",
                    test_parameter_ranges_complete);
    g_test_add_func("/options/parameter/types", test_parameter_types);
    g_test_add_func("/options/parameter/cross-check",
                    test_parameter_cross_check);
    g_test_add_func("/options/parameter/strings", test_parameter_strings);
    g_test_add_func("/options/parameter/all-or-nothing",
                    test_parameter_all_or_nothing);
    g_test_add_func("/options/parameter/while-running",
                    test_parameter_while_running);
    g_test_add_func("/options/parameter/accessors", test_parameter_accessors);
    return g_test_run();
}

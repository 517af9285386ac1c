/*
 * Migration capabilities and parameters.
 *
 * Each set is described by one table: every member QEMU 7.2 has, so that
 * the query commands answer what libvirt expects, with a column saying
 * whether ferry implements it.  Unsupported capabilities are refused when
 * turned on; unsupported parameters are range-checked and stored only.
 * Facts (names, order, defaults, ranges, error texts) are QEMU 7.2's.
 */
#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "migration/migration.h"
#include "migration/options.h"
#include "migration/postcopy-ram.h"
#include "sysemu/runstate.h"

/* ---------------------------------------------------------------------- */
/* Capabilities */

static const MigrationCapabilityInfo capability_table[] = {
    [MIGRATION_CAPABILITY_XBZRLE] = {
        "xbzrle", false, "1.2",
        "send re-dirtied pages as XOR deltas against a cache" },
    [MIGRATION_CAPABILITY_RDMA_PIN_ALL] = {
        "rdma-pin-all", false, "2.0",
        "RDMA: lock all guest memory up front instead of on demand" },
    [MIGRATION_CAPABILITY_AUTO_CONVERGE] = {
        "auto-converge", false, "1.6",
        "slow the vCPUs down when RAM does not converge" },
    [MIGRATION_CAPABILITY_ZERO_BLOCKS] = {
        "zero-blocks", false, "1.6",
        "block migration: send all-zero blocks as a flag" },
    [MIGRATION_CAPABILITY_COMPRESS] = {
        "compress", false, "2.4",
        "zlib-compress pages in worker threads" },
    [MIGRATION_CAPABILITY_EVENTS] = {
        "events", true, "2.4",
        "emit a MIGRATION event on every status change" },
    [MIGRATION_CAPABILITY_POSTCOPY_RAM] = {
        "postcopy-ram", true, "2.6",
        "let the destination run before all RAM arrived, faulting it in" },
    [MIGRATION_CAPABILITY_X_COLO] = {
        "x-colo", false, "2.8",
        "COLO fault tolerance: checkpoint to a secondary forever" },
    [MIGRATION_CAPABILITY_RELEASE_RAM] = {
        "release-ram", false, "2.9",
        "postcopy: free source RAM as soon as it has been sent" },
    [MIGRATION_CAPABILITY_BLOCK] = {
        "block", false, "2.10",
        "copy disk contents inside the migration stream" },
    [MIGRATION_CAPABILITY_RETURN_PATH] = {
        "return-path", true, "2.10",
        "open the destination-to-source channel in precopy too" },
    [MIGRATION_CAPABILITY_PAUSE_BEFORE_SWITCHOVER] = {
        "pause-before-switchover", true, "2.11",
        "stop in pre-switchover until migrate-continue" },
    [MIGRATION_CAPABILITY_MULTIFD] = {
        "multifd", true, "4.0",
        "send RAM over several parallel channels" },
    [MIGRATION_CAPABILITY_DIRTY_BITMAPS] = {
        "dirty-bitmaps", false, "2.12",
        "carry persistent block dirty bitmaps along" },
    [MIGRATION_CAPABILITY_POSTCOPY_BLOCKTIME] = {
        "postcopy-blocktime", true, "3.0",
        "destination measures how long vCPUs wait on page faults" },
    [MIGRATION_CAPABILITY_LATE_BLOCK_ACTIVATE] = {
        "late-block-activate", true, "3.0",
        "destination leaves disks inactive until the VM is started "
        "(there are no disks: accepted, nothing to activate)" },
    [MIGRATION_CAPABILITY_X_IGNORE_SHARED] = {
        "x-ignore-shared", false, "4.0",
        "skip shared RAM the destination can map itself" },
    [MIGRATION_CAPABILITY_VALIDATE_UUID] = {
        "validate-uuid", false, "4.2",
        "destination refuses a stream from a VM with another UUID" },
    [MIGRATION_CAPABILITY_BACKGROUND_SNAPSHOT] = {
        "background-snapshot", false, "6.0",
        "save RAM as of the start while the VM keeps running" },
    [MIGRATION_CAPABILITY_ZERO_COPY_SEND] = {
        "zero-copy-send", false, "7.1",
        "multifd: send pages with MSG_ZEROCOPY" },
    [MIGRATION_CAPABILITY_POSTCOPY_PREEMPT] = {
        "postcopy-preempt", true, "7.1",
        "postcopy: faulted pages get their own channel" },
    [MIGRATION_CAPABILITY_X_AUTO_POSTCOPY] = {
        "x-auto-postcopy", true, "ferry",
        "switch to postcopy by itself when precopy is predicted not to "
        "converge (needs postcopy-ram)" },
};

G_STATIC_ASSERT(ARRAY_SIZE(capability_table) == MIGRATION_CAPABILITY__MAX);

const MigrationCapabilityInfo *migrate_capability_info(MigrationCapability c)
{
    if ((unsigned)c >= MIGRATION_CAPABILITY__MAX) {
        return NULL;
    }
    return &capability_table[c];
}

const char *MigrationCapability_str(MigrationCapability c)
{
    const MigrationCapabilityInfo *info = migrate_capability_info(c);

    return info ? info->name : "invalid";
}

bool migration_capability_parse(const char *name, MigrationCapability *out)
{
    for (int i = 0; i < MIGRATION_CAPABILITY__MAX; i++) {
        if (g_str_equal(name, capability_table[i].name)) {
            *out = i;
            return true;
        }
    }
    return false;
}

/*
 * QEMU 7.2's rules between capabilities, in the order it checks them, then
 * ferry's own.  Rules of capabilities ferry does not support are kept so
 * that supporting one more capability cannot silently skip its rule.
 */
typedef struct CapabilityRule {
    MigrationCapability cap;
    MigrationCapability other;
    bool other_required;        /* else other is incompatible with cap */
    const char *msg;            /* NULL: QEMU's generic text, see below */
} CapabilityRule;

static const CapabilityRule capability_rules[] = {
    { MIGRATION_CAPABILITY_POSTCOPY_RAM, MIGRATION_CAPABILITY_X_IGNORE_SHARED,
      false, "Postcopy is not compatible with ignore-shared" },
#define BG_SNAPSHOT_CONFLICT(c) \
    { MIGRATION_CAPABILITY_BACKGROUND_SNAPSHOT, c, false, NULL }
    BG_SNAPSHOT_CONFLICT(MIGRATION_CAPABILITY_POSTCOPY_RAM),
    BG_SNAPSHOT_CONFLICT(MIGRATION_CAPABILITY_DIRTY_BITMAPS),
    BG_SNAPSHOT_CONFLICT(MIGRATION_CAPABILITY_POSTCOPY_BLOCKTIME),
    BG_SNAPSHOT_CONFLICT(MIGRATION_CAPABILITY_LATE_BLOCK_ACTIVATE),
    BG_SNAPSHOT_CONFLICT(MIGRATION_CAPABILITY_RETURN_PATH),
    BG_SNAPSHOT_CONFLICT(MIGRATION_CAPABILITY_MULTIFD),
    BG_SNAPSHOT_CONFLICT(MIGRATION_CAPABILITY_PAUSE_BEFORE_SWITCHOVER),
    BG_SNAPSHOT_CONFLICT(MIGRATION_CAPABILITY_AUTO_CONVERGE),
    BG_SNAPSHOT_CONFLICT(MIGRATION_CAPABILITY_RELEASE_RAM),
    BG_SNAPSHOT_CONFLICT(MIGRATION_CAPABILITY_RDMA_PIN_ALL),
    BG_SNAPSHOT_CONFLICT(MIGRATION_CAPABILITY_COMPRESS),
    BG_SNAPSHOT_CONFLICT(MIGRATION_CAPABILITY_XBZRLE),
    BG_SNAPSHOT_CONFLICT(MIGRATION_CAPABILITY_X_COLO),
    BG_SNAPSHOT_CONFLICT(MIGRATION_CAPABILITY_VALIDATE_UUID),
    BG_SNAPSHOT_CONFLICT(MIGRATION_CAPABILITY_ZERO_COPY_SEND),
#undef BG_SNAPSHOT_CONFLICT
    { MIGRATION_CAPABILITY_POSTCOPY_PREEMPT, MIGRATION_CAPABILITY_POSTCOPY_RAM,
      true, "Postcopy preempt requires postcopy-ram" },
    { MIGRATION_CAPABILITY_POSTCOPY_PREEMPT, MIGRATION_CAPABILITY_COMPRESS,
      false, "Postcopy preempt not compatible with compress" },
    { MIGRATION_CAPABILITY_MULTIFD, MIGRATION_CAPABILITY_COMPRESS,
      false, "Multifd is not compatible with compress" },
    { MIGRATION_CAPABILITY_X_AUTO_POSTCOPY,
      MIGRATION_CAPABILITY_POSTCOPY_RAM, true,
      "x-auto-postcopy requires postcopy-ram" },
    /*
     * ferry's own: QEMU 7.2 takes every connection after the main one for
     * a multifd channel, so its preempt channel would be refused there.
     */
    { MIGRATION_CAPABILITY_MULTIFD, MIGRATION_CAPABILITY_POSTCOPY_PREEMPT,
      false, "multifd together with postcopy-preempt is not supported: "
      "both add connections after the main one, which the destination "
      "cannot tell apart (as QEMU 7.2)" },
};

static bool rule_broken(const CapabilityRule *r, const bool *caps)
{
    return caps[r->cap] && caps[r->other] != r->other_required;
}

bool migrate_caps_check(const bool *caps, GError **errp)
{
    for (size_t i = 0; i < ARRAY_SIZE(capability_rules); i++) {
        const CapabilityRule *r = &capability_rules[i];

        if (!rule_broken(r, caps)) {
            continue;
        }
        if (r->msg) {
            error_setg(errp, "%s", r->msg);
        } else {
            error_setg(errp, "Background-snapshot is not compatible with %s",
                       MigrationCapability_str(r->other));
        }
        return false;
    }
    return true;
}

bool migrate_multifd_check(GError **errp)
{
    if (migrate_multifd() &&
        !g_str_equal(migrate_multifd_compression(), "none")) {
        error_setg(errp, "multifd-compression '%s' is not supported by this "
                   "VMM (only 'none')", migrate_multifd_compression());
        return false;
    }
    return true;
}

bool migrate_capability_check(MigrationCapability c, bool on, GError **errp)
{
    /*
     * Only an outgoing migration blocks changes: the destination sets its
     * capabilities while it waits for the incoming connection.
     */
    if (migration_is_active(migrate_get_current())) {
        error_setg(errp, "There's a migration process in progress");
        return false;
    }
    if (on && !capability_table[c].supported) {
        error_setg(errp, "Capability '%s' is not supported by this VMM",
                   MigrationCapability_str(c));
        return false;
    }
    /* The destination must be able to take faults: check it now. */
    if (on && c == MIGRATION_CAPABILITY_POSTCOPY_RAM &&
        runstate_get() == RUN_STATE_INMIGRATE &&
        !postcopy_ram_supported_by_host(NULL, errp)) {
        error_prepend(errp, "Postcopy is not supported: ");
        return false;
    }
    return true;
}

bool migrate_set_capabilities(const bool *caps, GError **errp)
{
    MigrationState *s = migrate_get_current();

    if (migration_is_active(s)) {
        error_setg(errp, "There's a migration process in progress");
        return false;
    }
    /* As QEMU, only what is newly turned on: the host check is costly. */
    for (int c = 0; c < MIGRATION_CAPABILITY__MAX; c++) {
        if (caps[c] && !s->capabilities[c] &&
            !migrate_capability_check(c, true, errp)) {
            return false;
        }
    }
    if (!migrate_caps_check(caps, errp)) {
        return false;
    }
    memcpy(s->capabilities, caps, sizeof(s->capabilities));
    return true;
}

bool migrate_set_capability(MigrationCapability c, bool on, GError **errp)
{
    bool caps[MIGRATION_CAPABILITY__MAX];

    if ((unsigned)c >= MIGRATION_CAPABILITY__MAX) {
        error_setg(errp, "Invalid capability");
        return false;
    }
    memcpy(caps, migrate_get_current()->capabilities, sizeof(caps));
    caps[c] = on;
    return migrate_set_capabilities(caps, errp);
}

static bool migrate_cap(MigrationCapability c)
{
    return migrate_get_current()->capabilities[c];
}

bool migrate_xbzrle(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_XBZRLE);
}

bool migrate_rdma_pin_all(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_RDMA_PIN_ALL);
}

bool migrate_auto_converge(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_AUTO_CONVERGE);
}

bool migrate_zero_blocks(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_ZERO_BLOCKS);
}

bool migrate_compress(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_COMPRESS);
}

bool migrate_events(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_EVENTS);
}

bool migrate_postcopy_ram(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_POSTCOPY_RAM);
}

bool migrate_colo(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_X_COLO);
}

bool migrate_release_ram(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_RELEASE_RAM);
}

bool migrate_block(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_BLOCK);
}

bool migrate_return_path(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_RETURN_PATH);
}

bool migrate_pause_before_switchover(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_PAUSE_BEFORE_SWITCHOVER);
}

bool migrate_multifd(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_MULTIFD);
}

bool migrate_dirty_bitmaps(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_DIRTY_BITMAPS);
}

bool migrate_postcopy_blocktime(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_POSTCOPY_BLOCKTIME);
}

bool migrate_late_block_activate(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_LATE_BLOCK_ACTIVATE);
}

bool migrate_ignore_shared(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_X_IGNORE_SHARED);
}

bool migrate_validate_uuid(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_VALIDATE_UUID);
}

bool migrate_background_snapshot(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_BACKGROUND_SNAPSHOT);
}

bool migrate_zero_copy_send(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_ZERO_COPY_SEND);
}

bool migrate_x_auto_postcopy(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_X_AUTO_POSTCOPY);
}

bool migrate_postcopy_preempt(void)
{
    return migrate_cap(MIGRATION_CAPABILITY_POSTCOPY_PREEMPT);
}

/* ---------------------------------------------------------------------- */
/* Parameters */

#define KiB (1ULL << 10)
#define MiB (1ULL << 20)

/*
 * Columns: name, type, bits, default, default string, min, max, range
 * text, nullable, acted on, unit.  Ranges are what QEMU 7.2 enforces,
 * even where its error text says otherwise (announce-step's minimum).
 */
static const MigrationParameterInfo parameter_table[] = {
    [MIGRATION_PARAMETER_ANNOUNCE_INITIAL] = {
        "announce-initial", MIGRATION_PARAM_SIZE, 64, 50, NULL,
        0, 100000, "a value between 0 and 100000", false, false, "ms" },
    [MIGRATION_PARAMETER_ANNOUNCE_MAX] = {
        "announce-max", MIGRATION_PARAM_SIZE, 64, 550, NULL,
        0, 100000, "a value between 0 and 100000", false, false, "ms" },
    [MIGRATION_PARAMETER_ANNOUNCE_ROUNDS] = {
        "announce-rounds", MIGRATION_PARAM_SIZE, 64, 5, NULL,
        0, 1000, "a value between 0 and 1000", false, false, "packets" },
    [MIGRATION_PARAMETER_ANNOUNCE_STEP] = {
        "announce-step", MIGRATION_PARAM_SIZE, 64, 100, NULL,
        1, 10000, "a value between 0 and 10000", false, false, "ms" },
    [MIGRATION_PARAMETER_COMPRESS_LEVEL] = {
        "compress-level", MIGRATION_PARAM_INT, 8, 1, NULL,
        0, 9, "a value between 0 and 9", false, false, "zlib level" },
    [MIGRATION_PARAMETER_COMPRESS_THREADS] = {
        "compress-threads", MIGRATION_PARAM_INT, 8, 8, NULL,
        1, 255, "a value between 1 and 255", false, false, "threads" },
    [MIGRATION_PARAMETER_COMPRESS_WAIT_THREAD] = {
        "compress-wait-thread", MIGRATION_PARAM_BOOL, 0, true, NULL,
        0, 1, NULL, false, false, "" },
    [MIGRATION_PARAMETER_DECOMPRESS_THREADS] = {
        "decompress-threads", MIGRATION_PARAM_INT, 8, 2, NULL,
        1, 255, "a value between 1 and 255", false, false, "threads" },
    [MIGRATION_PARAMETER_THROTTLE_TRIGGER_THRESHOLD] = {
        "throttle-trigger-threshold", MIGRATION_PARAM_INT, 8, 50, NULL,
        1, 100, "an integer in the range of 1 to 100", false, false, "%" },
    [MIGRATION_PARAMETER_CPU_THROTTLE_INITIAL] = {
        "cpu-throttle-initial", MIGRATION_PARAM_INT, 8, 20, NULL,
        1, 99, "an integer in the range of 1 to 99", false, false, "%" },
    [MIGRATION_PARAMETER_CPU_THROTTLE_INCREMENT] = {
        "cpu-throttle-increment", MIGRATION_PARAM_INT, 8, 10, NULL,
        1, 99, "an integer in the range of 1 to 99", false, false, "%" },
    [MIGRATION_PARAMETER_CPU_THROTTLE_TAILSLOW] = {
        "cpu-throttle-tailslow", MIGRATION_PARAM_BOOL, 0, false, NULL,
        0, 1, NULL, false, false, "" },
    [MIGRATION_PARAMETER_TLS_CREDS] = {
        "tls-creds", MIGRATION_PARAM_STR, 0, 0, "",
        0, 0, NULL, true, false, "object id" },
    [MIGRATION_PARAMETER_TLS_HOSTNAME] = {
        "tls-hostname", MIGRATION_PARAM_STR, 0, 0, "",
        0, 0, NULL, true, false, "host name" },
    [MIGRATION_PARAMETER_TLS_AUTHZ] = {
        "tls-authz", MIGRATION_PARAM_STR, 0, 0, "",
        0, 0, NULL, true, false, "object id" },
    [MIGRATION_PARAMETER_MAX_BANDWIDTH] = {
        "max-bandwidth", MIGRATION_PARAM_SIZE, 64, 128 * MiB, NULL,
        0, UINT64_MAX, NULL, false, true, "bytes/s" },
    [MIGRATION_PARAMETER_DOWNTIME_LIMIT] = {
        "downtime-limit", MIGRATION_PARAM_INT, 64, 300, NULL,
        0, MIGRATION_MAX_DOWNTIME_LIMIT,
        "an integer in the range of 0 to (2000 * 1000) ms",
        false, true, "ms" },
    [MIGRATION_PARAMETER_X_CHECKPOINT_DELAY] = {
        "x-checkpoint-delay", MIGRATION_PARAM_INT, 32, 20000, NULL,
        0, UINT32_MAX, NULL, false, false, "ms" },
    [MIGRATION_PARAMETER_BLOCK_INCREMENTAL] = {
        "block-incremental", MIGRATION_PARAM_BOOL, 0, false, NULL,
        0, 1, NULL, false, false, "" },
    [MIGRATION_PARAMETER_MULTIFD_CHANNELS] = {
        "multifd-channels", MIGRATION_PARAM_INT, 8, 2, NULL,
        1, 255, "a value between 1 and 255", false, false, "channels" },
    [MIGRATION_PARAMETER_XBZRLE_CACHE_SIZE] = {
        "xbzrle-cache-size", MIGRATION_PARAM_SIZE, 64, 64 * MiB, NULL,
        4 * KiB, UINT64_MAX,
        "a power of two no less than the target page size",
        false, false, "bytes" },
    [MIGRATION_PARAMETER_MAX_POSTCOPY_BANDWIDTH] = {
        "max-postcopy-bandwidth", MIGRATION_PARAM_SIZE, 64, 0, NULL,
        0, UINT64_MAX, NULL, false, true, "bytes/s (0: unlimited)" },
    [MIGRATION_PARAMETER_MAX_CPU_THROTTLE] = {
        "max-cpu-throttle", MIGRATION_PARAM_INT, 8, 99, NULL,
        1, 99, "an integer in the range of cpu_throttle_initial to 99",
        false, false, "%" },
    [MIGRATION_PARAMETER_MULTIFD_COMPRESSION] = {
        "multifd-compression", MIGRATION_PARAM_STR, 0, 0, "none",
        0, 0, NULL, false, false, "none, zlib or zstd" },
    [MIGRATION_PARAMETER_MULTIFD_ZLIB_LEVEL] = {
        "multifd-zlib-level", MIGRATION_PARAM_INT, 8, 1, NULL,
        0, 9, "a value between 0 and 9", false, false, "zlib level" },
    [MIGRATION_PARAMETER_MULTIFD_ZSTD_LEVEL] = {
        "multifd-zstd-level", MIGRATION_PARAM_INT, 8, 1, NULL,
        0, 20, "a value between 0 and 20", false, false, "zstd level" },
    [MIGRATION_PARAMETER_BLOCK_BITMAP_MAPPING] = {
        "block-bitmap-mapping", MIGRATION_PARAM_LIST, 0, 0, NULL,
        0, 0, NULL, false, false, "" },
    /*
     * Without it a source that stops sending leaves the destination
     * blocked in read for ever (TCP never times out an idle socket).
     * 60 s rides out a routing change or a busy peer; a day at most.
     */
    [MIGRATION_PARAMETER_X_NET_TIMEOUT] = {
        "x-net-timeout", MIGRATION_PARAM_SIZE, 64, 60000, NULL,
        0, 86400000, "a value between 0 and 86400000", false, true,
        "ms (0: off)" },
};

G_STATIC_ASSERT(ARRAY_SIZE(parameter_table) == MIGRATION_PARAMETER__MAX);

static const char *const multifd_compression_names[] = {
    "none", "zlib", "zstd",
};

const MigrationParameterInfo *migrate_parameter_info(MigrationParameter p)
{
    if ((unsigned)p >= MIGRATION_PARAMETER__MAX) {
        return NULL;
    }
    return &parameter_table[p];
}

bool migration_parameter_parse(const char *name, MigrationParameter *out)
{
    for (int i = 0; i < MIGRATION_PARAMETER__MAX; i++) {
        if (g_str_equal(name, parameter_table[i].name)) {
            *out = i;
            return true;
        }
    }
    return false;
}

static bool param_is_num(MigrationParameter p)
{
    MigrationParameterType t = parameter_table[p].type;

    return t == MIGRATION_PARAM_BOOL || t == MIGRATION_PARAM_INT ||
           t == MIGRATION_PARAM_SIZE;
}

void migrate_params_init(MigrationParameters *params)
{
    migrate_params_free(params);
    for (int i = 0; i < MIGRATION_PARAMETER__MAX; i++) {
        params->num[i] = parameter_table[i].def;
    }
}

void migrate_params_copy(MigrationParameters *dst,
                         const MigrationParameters *src)
{
    for (int i = 0; i < MIGRATION_PARAMETER__MAX; i++) {
        dst->num[i] = qatomic_read(&src->num[i]);
        dst->str[i] = g_strdup(src->str[i]);
    }
}

void migrate_params_free(MigrationParameters *params)
{
    for (int i = 0; i < MIGRATION_PARAMETER__MAX; i++) {
        g_clear_pointer(&params->str[i], g_free);
    }
}

/* QEMU reports the QAPI integer type when a value does not fit it. */
static bool param_fits_type(const MigrationParameterInfo *info, int64_t v,
                            GError **errp)
{
    /* QEMU would wrap a negative uint64; json-glib could not show it. */
    if (v < 0 && info->bits == 64) {
        error_setg(errp, "Parameter '%s' expects uint64", info->name);
        return false;
    }
    if (info->bits < 64 && (v < 0 || (uint64_t)v >> info->bits)) {
        error_setg(errp, "Parameter '%s' expects uint%u_t", info->name,
                   info->bits);
        return false;
    }
    return true;
}

bool migrate_params_stage_num(MigrationParameters *params,
                              MigrationParameter p, int64_t v,
                              GError **errp)
{
    const MigrationParameterInfo *info = &parameter_table[p];

    if (!param_is_num(p)) {
        error_setg(errp, "Parameter '%s' is not a number", info->name);
        return false;
    }
    if (info->type != MIGRATION_PARAM_BOOL &&
        !param_fits_type(info, v, errp)) {
        return false;
    }
    params->num[p] = info->type == MIGRATION_PARAM_BOOL ? !!v : (uint64_t)v;
    return true;
}

static bool multifd_compression_valid(const char *v)
{
    for (size_t i = 0; i < ARRAY_SIZE(multifd_compression_names); i++) {
        if (g_str_equal(v, multifd_compression_names[i])) {
            return true;
        }
    }
    return false;
}

bool migrate_params_stage_str(MigrationParameters *params,
                              MigrationParameter p, const char *v,
                              GError **errp)
{
    const MigrationParameterInfo *info = &parameter_table[p];

    if (info->type != MIGRATION_PARAM_STR) {
        error_setg(errp, "Parameter '%s' is not a string", info->name);
        return false;
    }
    if (p == MIGRATION_PARAMETER_MULTIFD_COMPRESSION &&
        !multifd_compression_valid(v)) {
        error_setg(errp, "Parameter '%s' does not accept value '%s'",
                   info->name, v);
        return false;
    }
    g_free(params->str[p]);
    params->str[p] = g_strdup(v);
    return true;
}

static bool param_in_range(const MigrationParameters *params,
                           MigrationParameter p)
{
    const MigrationParameterInfo *info = &parameter_table[p];
    uint64_t v = params->num[p];
    uint64_t min = info->min;

    if (p == MIGRATION_PARAMETER_XBZRLE_CACHE_SIZE && (v & (v - 1))) {
        return false;
    }
    /* QEMU keeps the ceiling at or above where throttling starts. */
    if (p == MIGRATION_PARAMETER_MAX_CPU_THROTTLE) {
        min = MAX(min, params->num[MIGRATION_PARAMETER_CPU_THROTTLE_INITIAL]);
    }
    return v >= min && v <= info->max;
}

/* QEMU names parameters with underscores in its range errors. */
static char *underscored(const char *name)
{
    char *r = g_strdup(name);

    g_strdelimit(r, "-", '_');
    return r;
}

bool migrate_params_check(const MigrationParameters *params, GError **errp)
{
    for (int p = 0; p < MIGRATION_PARAMETER__MAX; p++) {
        const MigrationParameterInfo *info = &parameter_table[p];
        g_autofree char *u = NULL;

        if (!param_is_num(p) || info->type == MIGRATION_PARAM_BOOL ||
            param_in_range(params, p)) {
            continue;
        }
        u = underscored(info->name);
        error_setg(errp, "Parameter '%s' expects %s", u, info->range_text);
        return false;
    }
    return true;
}

bool migrate_set_parameters(MigrationParameters *params, GError **errp)
{
    MigrationParameters *cur = &migrate_get_current()->parameters;

    if (!migrate_params_check(params, errp)) {
        return false;
    }
    /* The migration thread may be reading: one atomic store each. */
    for (int i = 0; i < MIGRATION_PARAMETER__MAX; i++) {
        qatomic_set(&cur->num[i], params->num[i]);
        g_free(cur->str[i]);
        cur->str[i] = g_steal_pointer(&params->str[i]);
    }
    return true;
}

bool migrate_set_parameter(MigrationParameter p, int64_t v, GError **errp)
{
    MigrationParameters np = { 0 };
    bool ok;

    if ((unsigned)p >= MIGRATION_PARAMETER__MAX) {
        error_setg(errp, "Invalid parameter");
        return false;
    }
    migrate_params_copy(&np, &migrate_get_current()->parameters);
    ok = migrate_params_stage_num(&np, p, v, errp) &&
         migrate_set_parameters(&np, errp);
    migrate_params_free(&np);
    return ok;
}

uint64_t migrate_parameter_num(MigrationParameter p)
{
    return qatomic_read(&migrate_get_current()->parameters.num[p]);
}

const char *migrate_parameter_str(MigrationParameter p)
{
    const char *v = migrate_get_current()->parameters.str[p];

    return v ? v : parameter_table[p].def_str;
}

uint64_t migrate_announce_initial(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_ANNOUNCE_INITIAL);
}

uint64_t migrate_announce_max(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_ANNOUNCE_MAX);
}

uint64_t migrate_announce_rounds(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_ANNOUNCE_ROUNDS);
}

uint64_t migrate_announce_step(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_ANNOUNCE_STEP);
}

uint64_t migrate_compress_level(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_COMPRESS_LEVEL);
}

uint64_t migrate_compress_threads(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_COMPRESS_THREADS);
}

bool migrate_compress_wait_thread(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_COMPRESS_WAIT_THREAD);
}

uint64_t migrate_decompress_threads(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_DECOMPRESS_THREADS);
}

uint64_t migrate_throttle_trigger_threshold(void)
{
    return migrate_parameter_num(
        MIGRATION_PARAMETER_THROTTLE_TRIGGER_THRESHOLD);
}

uint64_t migrate_cpu_throttle_initial(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_CPU_THROTTLE_INITIAL);
}

uint64_t migrate_cpu_throttle_increment(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_CPU_THROTTLE_INCREMENT);
}

bool migrate_cpu_throttle_tailslow(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_CPU_THROTTLE_TAILSLOW);
}

const char *migrate_tls_creds(void)
{
    return migrate_parameter_str(MIGRATION_PARAMETER_TLS_CREDS);
}

const char *migrate_tls_hostname(void)
{
    return migrate_parameter_str(MIGRATION_PARAMETER_TLS_HOSTNAME);
}

const char *migrate_tls_authz(void)
{
    return migrate_parameter_str(MIGRATION_PARAMETER_TLS_AUTHZ);
}

uint64_t migrate_max_bandwidth(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_MAX_BANDWIDTH);
}

uint64_t migrate_downtime_limit(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_DOWNTIME_LIMIT);
}

uint64_t migrate_checkpoint_delay(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_X_CHECKPOINT_DELAY);
}

bool migrate_block_incremental(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_BLOCK_INCREMENTAL);
}

uint64_t migrate_multifd_channels(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_MULTIFD_CHANNELS);
}

uint64_t migrate_xbzrle_cache_size(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_XBZRLE_CACHE_SIZE);
}

uint64_t migrate_max_postcopy_bandwidth(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_MAX_POSTCOPY_BANDWIDTH);
}

uint64_t migrate_max_cpu_throttle(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_MAX_CPU_THROTTLE);
}

const char *migrate_multifd_compression(void)
{
    return migrate_parameter_str(MIGRATION_PARAMETER_MULTIFD_COMPRESSION);
}

uint64_t migrate_multifd_zlib_level(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_MULTIFD_ZLIB_LEVEL);
}

uint64_t migrate_multifd_zstd_level(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_MULTIFD_ZSTD_LEVEL);
}

uint64_t migrate_net_timeout(void)
{
    return migrate_parameter_num(MIGRATION_PARAMETER_X_NET_TIMEOUT);
}

/*
 * Migration capabilities and parameters: QEMU 7.2's full sets, described
 * by one table each in migration/options.c, with one accessor per member.
 * The values live in MigrationState (capabilities[], parameters).
 */
#ifndef MIGRATION_OPTIONS_H
#define MIGRATION_OPTIONS_H

#include "qemu/osdep.h"

/* QEMU 7.2 MigrationCapability, in QAPI order. */
typedef enum MigrationCapability {
    MIGRATION_CAPABILITY_XBZRLE,
    MIGRATION_CAPABILITY_RDMA_PIN_ALL,
    MIGRATION_CAPABILITY_AUTO_CONVERGE,
    MIGRATION_CAPABILITY_ZERO_BLOCKS,
    MIGRATION_CAPABILITY_COMPRESS,
    MIGRATION_CAPABILITY_EVENTS,
    MIGRATION_CAPABILITY_POSTCOPY_RAM,
    MIGRATION_CAPABILITY_X_COLO,
    MIGRATION_CAPABILITY_RELEASE_RAM,
    MIGRATION_CAPABILITY_BLOCK,
    MIGRATION_CAPABILITY_RETURN_PATH,
    MIGRATION_CAPABILITY_PAUSE_BEFORE_SWITCHOVER,
    MIGRATION_CAPABILITY_MULTIFD,
    MIGRATION_CAPABILITY_DIRTY_BITMAPS,
    MIGRATION_CAPABILITY_POSTCOPY_BLOCKTIME,
    MIGRATION_CAPABILITY_LATE_BLOCK_ACTIVATE,
    MIGRATION_CAPABILITY_X_IGNORE_SHARED,
    MIGRATION_CAPABILITY_VALIDATE_UUID,
    MIGRATION_CAPABILITY_BACKGROUND_SNAPSHOT,
    MIGRATION_CAPABILITY_ZERO_COPY_SEND,
    MIGRATION_CAPABILITY_POSTCOPY_PREEMPT,
    /* ferry's own, after QEMU 7.2's */
    MIGRATION_CAPABILITY_X_AUTO_POSTCOPY,
    MIGRATION_CAPABILITY__MAX
} MigrationCapability;

typedef struct MigrationCapabilityInfo {
    const char *name;           /* QAPI name */
    bool supported;             /* ferry can turn it on */
    const char *since;          /* QEMU version that introduced it */
    const char *desc;
} MigrationCapabilityInfo;

/* QEMU 7.2 MigrationParameters members, in QAPI order. */
typedef enum MigrationParameter {
    MIGRATION_PARAMETER_ANNOUNCE_INITIAL,
    MIGRATION_PARAMETER_ANNOUNCE_MAX,
    MIGRATION_PARAMETER_ANNOUNCE_ROUNDS,
    MIGRATION_PARAMETER_ANNOUNCE_STEP,
    MIGRATION_PARAMETER_COMPRESS_LEVEL,
    MIGRATION_PARAMETER_COMPRESS_THREADS,
    MIGRATION_PARAMETER_COMPRESS_WAIT_THREAD,
    MIGRATION_PARAMETER_DECOMPRESS_THREADS,
    MIGRATION_PARAMETER_THROTTLE_TRIGGER_THRESHOLD,
    MIGRATION_PARAMETER_CPU_THROTTLE_INITIAL,
    MIGRATION_PARAMETER_CPU_THROTTLE_INCREMENT,
    MIGRATION_PARAMETER_CPU_THROTTLE_TAILSLOW,
    MIGRATION_PARAMETER_TLS_CREDS,
    MIGRATION_PARAMETER_TLS_HOSTNAME,
    MIGRATION_PARAMETER_TLS_AUTHZ,
    MIGRATION_PARAMETER_MAX_BANDWIDTH,
    MIGRATION_PARAMETER_DOWNTIME_LIMIT,
    MIGRATION_PARAMETER_X_CHECKPOINT_DELAY,
    MIGRATION_PARAMETER_BLOCK_INCREMENTAL,
    MIGRATION_PARAMETER_MULTIFD_CHANNELS,
    MIGRATION_PARAMETER_XBZRLE_CACHE_SIZE,
    MIGRATION_PARAMETER_MAX_POSTCOPY_BANDWIDTH,
    MIGRATION_PARAMETER_MAX_CPU_THROTTLE,
    MIGRATION_PARAMETER_MULTIFD_COMPRESSION,
    MIGRATION_PARAMETER_MULTIFD_ZLIB_LEVEL,
    MIGRATION_PARAMETER_MULTIFD_ZSTD_LEVEL,
    MIGRATION_PARAMETER_BLOCK_BITMAP_MAPPING,
    /* ferry's own, not in QEMU 7.2 (x- prefix: may change) */
    MIGRATION_PARAMETER_X_NET_TIMEOUT,
    MIGRATION_PARAMETER__MAX
} MigrationParameter;

typedef enum MigrationParameterType {
    MIGRATION_PARAM_BOOL,
    MIGRATION_PARAM_INT,        /* QAPI uint8, uint32 or uint64 */
    MIGRATION_PARAM_SIZE,       /* QAPI size: uint64 */
    MIGRATION_PARAM_STR,
    MIGRATION_PARAM_LIST,       /* block-bitmap-mapping: refused */
} MigrationParameterType;

typedef struct MigrationParameterInfo {
    const char *name;           /* QAPI name */
    MigrationParameterType type;
    unsigned bits;              /* INT: width of the QAPI integer type */
    uint64_t def;               /* BOOL, INT, SIZE */
    const char *def_str;        /* STR */
    uint64_t min, max;          /* INT, SIZE: valid range, inclusive */
    /* What QEMU 7.2 says after "Parameter 'x_y' expects " when out of range. */
    const char *range_text;
    bool nullable;              /* STR: QAPI StrOrNull, null meaning "" */
    bool acted_on;              /* ferry uses it; else stored and reported */
    const char *unit;
} MigrationParameterInfo;

/*
 * Parameter values.  bool, int and size members sit in num[] (other
 * threads read them with atomic loads); str members in str[] (main loop
 * only; NULL means the default).
 */
typedef struct MigrationParameters {
    uint64_t num[MIGRATION_PARAMETER__MAX];
    char *str[MIGRATION_PARAMETER__MAX];
} MigrationParameters;

/* QEMU 7.2's upper bound of downtime-limit, in ms. */
#define MIGRATION_MAX_DOWNTIME_LIMIT 2000000

const MigrationCapabilityInfo *migrate_capability_info(MigrationCapability c);
const char *MigrationCapability_str(MigrationCapability c);
bool migration_capability_parse(const char *name, MigrationCapability *out);

/*
 * Whether caps (a full candidate set) satisfies QEMU 7.2's rules between
 * capabilities; errors use QEMU's text.  Ignores support and idleness.
 */
bool migrate_caps_check(const bool *caps, GError **errp);
/* multifd's parameters, checked when a migration starts (either side). */
bool migrate_multifd_check(GError **errp);
/* Whether c may be set to on now (support, no migration running). */
bool migrate_capability_check(MigrationCapability c, bool on, GError **errp);
/* Check a full candidate set (support, rules, idleness), then apply it. */
bool migrate_set_capabilities(const bool *caps, GError **errp);
/* Set capability c to on, checked as part of the current set. */
bool migrate_set_capability(MigrationCapability c, bool on, GError **errp);

/* Capability accessors. */
bool migrate_xbzrle(void);
bool migrate_rdma_pin_all(void);
bool migrate_auto_converge(void);
bool migrate_zero_blocks(void);
bool migrate_compress(void);
bool migrate_events(void);
bool migrate_postcopy_ram(void);
bool migrate_colo(void);
bool migrate_release_ram(void);
bool migrate_block(void);
bool migrate_return_path(void);
bool migrate_pause_before_switchover(void);
bool migrate_multifd(void);
bool migrate_dirty_bitmaps(void);
bool migrate_postcopy_blocktime(void);
bool migrate_late_block_activate(void);
bool migrate_ignore_shared(void);
bool migrate_validate_uuid(void);
bool migrate_background_snapshot(void);
bool migrate_zero_copy_send(void);
bool migrate_postcopy_preempt(void);
bool migrate_x_auto_postcopy(void);

const MigrationParameterInfo *migrate_parameter_info(MigrationParameter p);
bool migration_parameter_parse(const char *name, MigrationParameter *out);

/*
 * Reset params to QEMU 7.2's defaults (frees its strings); a new
 * MigrationState gets them this way.
 */
void migrate_params_init(MigrationParameters *params);
void migrate_params_copy(MigrationParameters *dst,
                         const MigrationParameters *src);
void migrate_params_free(MigrationParameters *params);
/*
 * Stage one value into params (a copy of the current ones).  These check
 * only the QAPI type; migrate_set_parameters checks the ranges.
 */
bool migrate_params_stage_num(MigrationParameters *params,
                              MigrationParameter p, int64_t v,
                              GError **errp);
bool migrate_params_stage_str(MigrationParameters *params,
                              MigrationParameter p, const char *v,
                              GError **errp);
/* Check every range of params; errors use QEMU 7.2's text. */
bool migrate_params_check(const MigrationParameters *params, GError **errp);
/* Check params, then make them current (takes its strings). */
bool migrate_set_parameters(MigrationParameters *params, GError **errp);
/* Convenience for one bool, int or size parameter. */
bool migrate_set_parameter(MigrationParameter p, int64_t v, GError **errp);
/* Current value of a bool, int or size parameter. */
uint64_t migrate_parameter_num(MigrationParameter p);
/* Current value of a str parameter, never NULL. */
const char *migrate_parameter_str(MigrationParameter p);

/* Parameter accessors; the units are those of the table. */
uint64_t migrate_announce_initial(void);
uint64_t migrate_announce_max(void);
uint64_t migrate_announce_rounds(void);
uint64_t migrate_announce_step(void);
uint64_t migrate_compress_level(void);
uint64_t migrate_compress_threads(void);
bool migrate_compress_wait_thread(void);
uint64_t migrate_decompress_threads(void);
uint64_t migrate_throttle_trigger_threshold(void);
uint64_t migrate_cpu_throttle_initial(void);
uint64_t migrate_cpu_throttle_increment(void);
bool migrate_cpu_throttle_tailslow(void);
const char *migrate_tls_creds(void);
const char *migrate_tls_hostname(void);
const char *migrate_tls_authz(void);
uint64_t migrate_max_bandwidth(void);
uint64_t migrate_downtime_limit(void);
uint64_t migrate_checkpoint_delay(void);
bool migrate_block_incremental(void);
uint64_t migrate_multifd_channels(void);
uint64_t migrate_xbzrle_cache_size(void);
uint64_t migrate_max_postcopy_bandwidth(void);
uint64_t migrate_max_cpu_throttle(void);
const char *migrate_multifd_compression(void);
uint64_t migrate_multifd_zlib_level(void);
uint64_t migrate_multifd_zstd_level(void);
/*
 * x-net-timeout, ms (0: off): how long a TCP migration socket may go
 * without sign of life from the peer (keepalive and TCP_USER_TIMEOUT)
 * before reads and writes on it fail.
 */
uint64_t migrate_net_timeout(void);

#endif

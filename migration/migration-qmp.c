/*
 * QMP commands of migration: argument parsing and replies only; the work
 * is done in migration.c.
 */
#include "qemu/osdep.h"
#include "migration/migration.h"
#include "migration/misc.h"
#include "migration/savevm.h"
#include "migration/ram.h"
#include "migration/postcopy-ram.h"
#include "migration/channel.h"
#include "qemu/sockets.h"
#include "monitor/qmp.h"

static bool qmp_migrate(JsonObject *args, JsonNode **ret, GError **errp)
{
    static const char *const known[] = {
        "uri", "detach", "blk", "inc", "resume", NULL
    };
    const char *uri = NULL;
    bool blk = false, inc = false, resume = false, detach = false;

    if (!qmp_args_check_known(args, known, errp) ||
        !qmp_arg_str(args, "uri", true, &uri, errp) ||
        !qmp_arg_bool(args, "detach", false, &detach, errp) ||
        !qmp_arg_bool(args, "blk", false, &blk, errp) ||
        !qmp_arg_bool(args, "inc", false, &inc, errp) ||
        !qmp_arg_bool(args, "resume", false, &resume, errp)) {
        return false;
    }
    if (blk || inc) {
        error_setg(errp, "Block migration is not supported by this VMM");
        return false;
    }
    if (resume) {
        error_setg(errp, "Postcopy recovery (resume) is not supported yet");
        return false;
    }
    return migrate_start(uri, errp);
}

static bool qmp_migrate_incoming(JsonObject *args, JsonNode **ret,
                                 GError **errp)
{
    static const char *const known[] = { "uri", NULL };
    const char *uri = NULL;

    if (!qmp_args_check_known(args, known, errp) ||
        !qmp_arg_str(args, "uri", true, &uri, errp)) {
        return false;
    }
    return migrate_incoming_qmp(uri, errp);
}

static bool qmp_migrate_cancel(JsonObject *args, JsonNode **ret,
                               GError **errp)
{
    static const char *const known[] = { NULL };

    if (!qmp_args_check_known(args, known, errp)) {
        return false;
    }
    migrate_cancel();
    return true;
}

static bool qmp_migrate_continue(JsonObject *args, JsonNode **ret,
                                 GError **errp)
{
    static const char *const known[] = { "state", NULL };
    const char *name = NULL;
    MigrationStatus st;

    if (!qmp_args_check_known(args, known, errp) ||
        !qmp_arg_str(args, "state", true, &name, errp)) {
        return false;
    }
    if (!migration_status_parse(name, &st)) {
        error_setg(errp, "Parameter 'state' does not accept value '%s'",
                   name);
        return false;
    }
    return migrate_continue(st, errp);
}

static bool qmp_migrate_start_postcopy(JsonObject *args, JsonNode **ret,
                                       GError **errp)
{
    static const char *const known[] = { NULL };

    if (!qmp_args_check_known(args, known, errp)) {
        return false;
    }
    return migrate_start_postcopy(errp);
}

/* ---------------------------------------------------------------------- */
/* Events */

void qapi_event_send_migration(MigrationStatus status)
{
    JsonObject *data = json_object_new();

    json_object_set_string_member(data, "status",
                                  MigrationStatus_str(status));
    qmp_event_emit("MIGRATION", data);
}

void qapi_event_send_migration_pass(uint64_t pass)
{
    JsonObject *data = json_object_new();

    json_object_set_int_member(data, "pass", pass);
    qmp_event_emit("MIGRATION_PASS", data);
}

/* ---------------------------------------------------------------------- */
/* query-migrate */

static int64_t now_ms(void)
{
    return g_get_monotonic_time() / 1000;
}

static JsonObject *ram_info(MigrationState *s)
{
    JsonObject *ram = json_object_new();
    RAMCounters c;

    ram_counters_get(s->ram, &c);
    json_object_set_int_member(ram, "transferred", c.transferred);
    json_object_set_int_member(ram, "remaining", c.remaining);
    json_object_set_int_member(ram, "total", c.total);
    json_object_set_int_member(ram, "duplicate", c.duplicate);
    json_object_set_int_member(ram, "skipped", 0);
    json_object_set_int_member(ram, "normal", c.normal);
    json_object_set_int_member(ram, "normal-bytes",
                               c.normal << TARGET_PAGE_BITS);
    json_object_set_int_member(ram, "dirty-pages-rate", c.dirty_pages_rate);
    json_object_set_double_member(ram, "mbps", s->mbps);
    json_object_set_int_member(ram, "dirty-sync-count", c.dirty_sync_count);
    json_object_set_int_member(ram, "postcopy-requests",
                               c.postcopy_requests);
    json_object_set_int_member(ram, "page-size", TARGET_PAGE_SIZE);
    json_object_set_int_member(ram, "multifd-bytes", 0);
    json_object_set_int_member(ram, "pages-per-second", c.pages_per_second);
    json_object_set_int_member(ram, "precopy-bytes", c.precopy_bytes);
    json_object_set_int_member(ram, "downtime-bytes", c.downtime_bytes);
    json_object_set_int_member(ram, "postcopy-bytes", c.postcopy_bytes);
    json_object_set_int_member(ram, "dirty-sync-missed-zero-copy", 0);
    return ram;
}

static void fill_source_info(JsonObject *o, MigrationState *s)
{
    MigrationStatus st = migrate_get_state(&s->status);
    g_autofree char *desc = NULL;

    if (st == MIGRATION_STATUS_NONE) {
        return;
    }
    json_object_set_string_member(o, "status", MigrationStatus_str(st));
    if (st == MIGRATION_STATUS_SETUP) {
        return;
    }
    if (st == MIGRATION_STATUS_FAILED || st == MIGRATION_STATUS_CANCELLED ||
        st == MIGRATION_STATUS_CANCELLING) {
        desc = migrate_get_error_desc(s);
        if (desc && st == MIGRATION_STATUS_FAILED) {
            json_object_set_string_member(o, "error-desc", desc);
        }
        return;
    }
    json_object_set_int_member(o, "setup-time", s->setup_time);
    if (st == MIGRATION_STATUS_COMPLETED) {
        json_object_set_int_member(o, "total-time", s->total_time);
        json_object_set_int_member(o, "downtime", s->downtime);
    } else {
        json_object_set_int_member(o, "total-time",
                                   now_ms() - s->start_time);
        json_object_set_int_member(o, "expected-downtime",
                                   s->expected_downtime);
    }
    json_object_set_object_member(o, "ram", ram_info(s));
}

/*
 * QEMU's "socket-address" of a listening destination: the only way for a
 * client that asked for port 0 to learn the port it got.
 */
static JsonArray *listen_socket_address(MigrationListener *listener)
{
    JsonArray *a = json_array_new();
    JsonObject *sa = json_object_new();
    SocketAddressQmp q;

    socket_address_to_qmp(migration_listener_address(listener), &q);
    json_object_set_string_member(sa, "type", q.type);
    if (q.path) {
        json_object_set_string_member(sa, "path", q.path);
    } else {
        json_object_set_string_member(sa, "host", q.host);
        json_object_set_string_member(sa, "port", q.port);
        json_object_set_boolean_member(sa, q.ipv6 ? "ipv6" : "ipv4", true);
    }
    json_array_add_object_element(a, sa);
    return a;
}

static void fill_postcopy_info(JsonObject *o, MigrationIncomingState *mis)
{
    PostcopyStatsInfo info;
    JsonArray *arr;

    postcopy_stats_get(mis, &info);
    if (info.blocktime) {
        arr = json_array_new();
        for (int i = 0; i < info.nvcpus; i++) {
            json_array_add_int_element(arr, info.vcpu_blocktime_ms[i]);
        }
        json_object_set_int_member(o, "postcopy-blocktime",
                                   info.blocktime_ms);
        json_object_set_array_member(o, "postcopy-vcpu-blocktime", arr);
    }
    if (info.did_postcopy) {
        json_object_set_int_member(o, "postcopy-faults", info.faults);
        json_object_set_int_member(o, "postcopy-latency-max-us",
                                   info.latency_max_us);
        arr = json_array_new();
        for (int i = 0; i < POSTCOPY_LATENCY_BUCKETS; i++) {
            json_array_add_int_element(arr, info.histogram[i]);
        }
        json_object_set_array_member(o, "postcopy-latency-histogram", arr);
        json_object_set_int_member(o, "postcopy-latency-p50-us",
                                   info.latency_p50_us);
        json_object_set_int_member(o, "postcopy-latency-p99-us",
                                   info.latency_p99_us);
    }
    postcopy_stats_info_clear(&info);
}

static void fill_destination_info(JsonObject *o, MigrationIncomingState *mis)
{
    MigrationStatus st = migrate_get_state(&mis->status);

    json_object_set_string_member(o, "status", MigrationStatus_str(st));
    if (st == MIGRATION_STATUS_FAILED) {
        g_autofree char *desc = migration_incoming_get_error_desc(mis);

        if (desc) {
            json_object_set_string_member(o, "error-desc", desc);
        }
    }
    if (mis->listener && migration_listener_address(mis->listener) &&
        st != MIGRATION_STATUS_COMPLETED && st != MIGRATION_STATUS_FAILED) {
        json_object_set_array_member(o, "socket-address",
                                     listen_socket_address(mis->listener));
    }
    fill_postcopy_info(o, mis);
}

static bool qmp_query_migrate(JsonObject *args, JsonNode **ret,
                              GError **errp)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    JsonObject *o = json_object_new();

    if (migrate_get_state(&mis->status) != MIGRATION_STATUS_NONE) {
        fill_destination_info(o, mis);
    } else {
        fill_source_info(o, migrate_get_current());
    }
    *ret = json_node_init_object(json_node_alloc(), o);
    json_object_unref(o);
    return true;
}

/* ---------------------------------------------------------------------- */
/* Capabilities */

static bool qmp_query_migrate_capabilities(JsonObject *args, JsonNode **ret,
                                           GError **errp)
{
    MigrationState *s = migrate_get_current();
    JsonArray *arr = json_array_new();

    for (int i = 0; i < MIGRATION_CAPABILITY__MAX; i++) {
        JsonObject *o = json_object_new();

        json_object_set_string_member(o, "capability",
                                      MigrationCapability_str(i));
        json_object_set_boolean_member(o, "state", s->capabilities[i]);
        json_array_add_object_element(arr, o);
    }
    *ret = json_node_init_array(json_node_alloc(), arr);
    json_array_unref(arr);
    return true;
}

/* Parse one {"capability": name, "state": bool} element. */
static bool parse_capability(JsonNode *n, MigrationCapability *c, bool *on,
                             GError **errp)
{
    static const char *const known[] = { "capability", "state", NULL };
    JsonObject *o;
    const char *name = NULL;

    if (!JSON_NODE_HOLDS_OBJECT(n)) {
        error_setg(errp, "Invalid parameter type for 'capabilities', "
                   "expected: object");
        return false;
    }
    o = json_node_get_object(n);
    if (!qmp_args_check_known(o, known, errp) ||
        !qmp_arg_str(o, "capability", true, &name, errp) ||
        !qmp_arg_bool(o, "state", true, on, errp)) {
        return false;
    }
    if (!migration_capability_parse(name, c)) {
        error_setg(errp, "Parameter 'capability' does not accept value "
                   "'%s'", name);
        return false;
    }
    return true;
}

static bool qmp_migrate_set_capabilities(JsonObject *args, JsonNode **ret,
                                         GError **errp)
{
    static const char *const known[] = { "capabilities", NULL };
    MigrationState *s = migrate_get_current();
    bool newcaps[MIGRATION_CAPABILITY__MAX];
    JsonNode *list;
    JsonArray *arr;

    if (!qmp_args_check_known(args, known, errp)) {
        return false;
    }
    list = json_object_get_member(args, "capabilities");
    if (!list) {
        error_setg(errp, "Parameter 'capabilities' is missing");
        return false;
    }
    if (!JSON_NODE_HOLDS_ARRAY(list)) {
        error_setg(errp, "Invalid parameter type for 'capabilities', "
                   "expected: array");
        return false;
    }
    if (migration_is_active(s)) {
        error_setg(errp, "There's a migration process in progress");
        return false;
    }
    /* All or nothing: check every element before applying any. */
    memcpy(newcaps, s->capabilities, sizeof(newcaps));
    arr = json_node_get_array(list);
    for (guint i = 0; i < json_array_get_length(arr); i++) {
        MigrationCapability c;
        bool on;

        if (!parse_capability(json_array_get_element(arr, i), &c, &on,
                              errp)) {
            return false;
        }
        newcaps[c] = on;
    }
    for (int c = 0; c < MIGRATION_CAPABILITY__MAX; c++) {
        if (newcaps[c] && !migrate_capability_check(c, true, errp)) {
            return false;
        }
    }
    memcpy(s->capabilities, newcaps, sizeof(newcaps));
    return true;
}

/* ---------------------------------------------------------------------- */
/* Parameters */

/* Parameters we report with QEMU 7.2's defaults but do not act on. */
typedef enum ParamKind { P_INT, P_BOOL, P_STR } ParamKind;
typedef struct OtherParam {
    const char *name;
    ParamKind kind;
    int64_t def_int;
    int64_t min, max;
    const char *def_str;
} OtherParam;

static const OtherParam other_params[] = {
    { "announce-initial", P_INT, 50, 1, 100000 },
    { "announce-max", P_INT, 550, 1, 100000 },
    { "announce-rounds", P_INT, 5, 1, 1000 },
    { "announce-step", P_INT, 100, 1, 10000 },
    { "compress-level", P_INT, 1, 0, 9 },
    { "compress-threads", P_INT, 8, 1, 255 },
    { "compress-wait-thread", P_BOOL, 1 },
    { "decompress-threads", P_INT, 2, 1, 255 },
    { "throttle-trigger-threshold", P_INT, 50, 1, 100 },
    { "cpu-throttle-initial", P_INT, 20, 1, 99 },
    { "cpu-throttle-increment", P_INT, 10, 1, 99 },
    { "cpu-throttle-tailslow", P_BOOL, 0 },
    { "tls-creds", P_STR, 0, 0, 0, "" },
    { "tls-hostname", P_STR, 0, 0, 0, "" },
    { "tls-authz", P_STR, 0, 0, 0, "" },
    { "x-checkpoint-delay", P_INT, 20000, 0, UINT32_MAX },
    { "block-incremental", P_BOOL, 0 },
    { "multifd-channels", P_INT, 2, 1, 255 },
    { "xbzrle-cache-size", P_INT, 67108864, 4096, INT64_MAX },
    { "max-cpu-throttle", P_INT, 99, 1, 99 },
    { "multifd-compression", P_STR, 0, 0, 0, "none" },
    { "multifd-zlib-level", P_INT, 1, 0, 9 },
    { "multifd-zstd-level", P_INT, 1, 0, 20 },
};

static JsonObject *other_values;

static JsonObject *other_param_values(void)
{
    if (other_values) {
        return other_values;
    }
    other_values = json_object_new();
    for (size_t i = 0; i < ARRAY_SIZE(other_params); i++) {
        const OtherParam *p = &other_params[i];

        switch (p->kind) {
        case P_INT:
            json_object_set_int_member(other_values, p->name, p->def_int);
            break;
        case P_BOOL:
            json_object_set_boolean_member(other_values, p->name,
                                           p->def_int);
            break;
        case P_STR:
            json_object_set_string_member(other_values, p->name, p->def_str);
            break;
        }
    }
    return other_values;
}

static bool qmp_query_migrate_parameters(JsonObject *args, JsonNode **ret,
                                         GError **errp)
{
    MigrationState *s = migrate_get_current();
    JsonObject *o = json_object_new();
    JsonObject *other = other_param_values();
    GList *members = json_object_get_members(other);

    for (GList *l = members; l; l = l->next) {
        json_object_set_member(o, l->data,
                               json_object_dup_member(other, l->data));
    }
    g_list_free(members);
    json_object_set_int_member(o, "max-bandwidth", s->params.max_bandwidth);
    json_object_set_int_member(o, "downtime-limit",
                               s->params.downtime_limit);
    json_object_set_int_member(o, "max-postcopy-bandwidth",
                               s->params.max_postcopy_bandwidth);
    *ret = json_node_init_object(json_node_alloc(), o);
    json_object_unref(o);
    return true;
}

static const OtherParam *find_other_param(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(other_params); i++) {
        if (g_str_equal(other_params[i].name, name)) {
            return &other_params[i];
        }
    }
    return NULL;
}

/* QEMU names parameters with underscores in its range errors. */
static char *underscored(const char *name)
{
    char *r = g_strdup(name);

    g_strdelimit(r, "-", '_');
    return r;
}

/* Check one "other" parameter; on success store it in staged. */
static bool check_other_param(JsonObject *args, const OtherParam *p,
                              JsonObject *staged, GError **errp)
{
    int64_t iv;
    bool bv;
    const char *sv;

    switch (p->kind) {
    case P_INT:
        if (!qmp_arg_int(args, p->name, true, &iv, errp)) {
            return false;
        }
        if (iv < p->min || iv > p->max) {
            g_autofree char *u = underscored(p->name);

            error_setg(errp, "Parameter '%s' expects an integer in the "
                       "range of %" PRId64 " to %" PRId64, u, p->min, p->max);
            return false;
        }
        json_object_set_int_member(staged, p->name, iv);
        return true;
    case P_BOOL:
        if (!qmp_arg_bool(args, p->name, true, &bv, errp)) {
            return false;
        }
        json_object_set_boolean_member(staged, p->name, bv);
        return true;
    case P_STR:
        if (!qmp_arg_str(args, p->name, true, &sv, errp)) {
            return false;
        }
        if (g_str_equal(p->name, "multifd-compression") &&
            !g_str_equal(sv, "none") && !g_str_equal(sv, "zlib") &&
            !g_str_equal(sv, "zstd")) {
            error_setg(errp, "Parameter 'multifd-compression' does not "
                       "accept value '%s'", sv);
            return false;
        }
        json_object_set_string_member(staged, p->name, sv);
        return true;
    }
    return false;
}

static bool qmp_migrate_set_parameters(JsonObject *args, JsonNode **ret,
                                       GError **errp)
{
    MigrationState *s = migrate_get_current();
    MigrationParameters np = s->params;
    g_autoptr(JsonObject) staged = json_object_new();
    GList *members = json_object_get_members(args);
    bool ok = true;

    for (GList *l = members; l && ok; l = l->next) {
        const char *name = l->data;
        const OtherParam *p;

        if (g_str_equal(name, "max-bandwidth")) {
            ok = qmp_arg_uint(args, name, true, &np.max_bandwidth, errp);
        } else if (g_str_equal(name, "max-postcopy-bandwidth")) {
            ok = qmp_arg_uint(args, name, true, &np.max_postcopy_bandwidth,
                              errp);
        } else if (g_str_equal(name, "downtime-limit")) {
            ok = qmp_arg_uint(args, name, true, &np.downtime_limit, errp);
            if (ok && np.downtime_limit > MIGRATION_MAX_DOWNTIME_LIMIT) {
                error_setg(errp, "Parameter 'downtime_limit' expects an "
                           "integer in the range of 0 to %d milliseconds",
                           MIGRATION_MAX_DOWNTIME_LIMIT);
                ok = false;
            }
        } else if ((p = find_other_param(name))) {
            ok = check_other_param(args, p, staged, errp);
        } else {
            error_setg(errp, "Parameter '%s' is unexpected", name);
            ok = false;
        }
    }
    g_list_free(members);
    if (!ok) {
        return false;
    }
    /* Everything checked: apply.  The thread reads these atomically. */
    __atomic_store_n(&s->params.max_bandwidth, np.max_bandwidth,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&s->params.downtime_limit, np.downtime_limit,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&s->params.max_postcopy_bandwidth,
                     np.max_postcopy_bandwidth, __ATOMIC_RELAXED);
    members = json_object_get_members(staged);
    for (GList *l = members; l; l = l->next) {
        json_object_set_member(other_param_values(), l->data,
                               json_object_dup_member(staged, l->data));
    }
    g_list_free(members);
    return true;
}

void migration_register_qmp(void)
{
    /* Device sections first, as QEMU registers them before RAM's. */
    migration_register_core_sections();
    qmp_register_command("migrate", qmp_migrate);
    qmp_register_command("migrate-incoming", qmp_migrate_incoming);
    qmp_register_command("migrate_cancel", qmp_migrate_cancel);
    qmp_register_command("migrate-continue", qmp_migrate_continue);
    qmp_register_command("migrate-start-postcopy",
                         qmp_migrate_start_postcopy);
    qmp_register_command("query-migrate", qmp_query_migrate);
    qmp_register_command("query-migrate-capabilities",
                         qmp_query_migrate_capabilities);
    qmp_register_command("migrate-set-capabilities",
                         qmp_migrate_set_capabilities);
    qmp_register_command("query-migrate-parameters",
                         qmp_query_migrate_parameters);
    qmp_register_command("migrate-set-parameters",
                         qmp_migrate_set_parameters);
}

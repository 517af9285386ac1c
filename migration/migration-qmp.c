/*
 * QMP commands of migration: argument parsing and replies only; the work
 * is done in migration.c.
 */
#include "qemu/osdep.h"
#include "migration/migration.h"
#include "migration/options.h"
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
    return migrate_start(uri, resume, errp);
}

static bool qmp_migrate_pause(JsonObject *args, JsonNode **ret,
                              GError **errp)
{
    static const char *const known[] = { NULL };

    if (!qmp_args_check_known(args, known, errp)) {
        return false;
    }
    return migrate_pause(errp);
}

static bool qmp_migrate_recover(JsonObject *args, JsonNode **ret,
                                GError **errp)
{
    static const char *const known[] = { "uri", NULL };
    const char *uri = NULL;

    if (!qmp_args_check_known(args, known, errp) ||
        !qmp_arg_str(args, "uri", true, &uri, errp)) {
        return false;
    }
    return migrate_recover(uri, errp);
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
    return migrate_cancel(errp);
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

static JsonObject *ram_info(MigrationState *s, const MigrationStats *st)
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
    json_object_set_double_member(ram, "mbps", st->mbps);
    json_object_set_int_member(ram, "dirty-sync-count", c.dirty_sync_count);
    json_object_set_int_member(ram, "postcopy-requests",
                               c.postcopy_requests);
    json_object_set_int_member(ram, "page-size", TARGET_PAGE_SIZE);
    json_object_set_int_member(ram, "multifd-bytes", c.multifd_bytes);
    json_object_set_int_member(ram, "pages-per-second", c.pages_per_second);
    json_object_set_int_member(ram, "precopy-bytes", c.precopy_bytes);
    json_object_set_int_member(ram, "downtime-bytes", c.downtime_bytes);
    json_object_set_int_member(ram, "postcopy-bytes", c.postcopy_bytes);
    json_object_set_int_member(ram, "dirty-sync-missed-zero-copy", 0);
    return ram;
}

/*
 * ferry's own (x-) figures of postcopy recovery, once postcopy began:
 * how often it paused and for how long in all (ms, the current pause
 * included).
 */
static void fill_pause_info(JsonObject *o, MigrationStatus st,
                            uint64_t pauses, MigrationState *s,
                            MigrationIncomingState *mis)
{
    uint64_t n;
    int64_t ms;

    if (!pauses && st != MIGRATION_STATUS_POSTCOPY_ACTIVE &&
        st != MIGRATION_STATUS_POSTCOPY_PAUSED &&
        st != MIGRATION_STATUS_POSTCOPY_RECOVER) {
        return;
    }
    if (s) {
        migration_source_pause_stats(s, &n, &ms);
    } else {
        migration_incoming_pause_stats(mis, &n, &ms);
    }
    json_object_set_int_member(o, "x-postcopy-pauses", n);
    json_object_set_int_member(o, "x-postcopy-paused-time", ms);
}

static void fill_source_info(JsonObject *o, MigrationState *s)
{
    MigrationStatus st = migrate_get_state(&s->status);
    g_autofree char *desc = NULL;
    MigrationStats stats;

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
    migration_stats_get(s, &stats);
    json_object_set_int_member(o, "setup-time", stats.setup_time);
    if (st == MIGRATION_STATUS_COMPLETED) {
        json_object_set_int_member(o, "total-time", stats.total_time);
        json_object_set_int_member(o, "downtime", stats.downtime);
    } else {
        json_object_set_int_member(o, "total-time",
                                   now_ms() - stats.start_time);
        json_object_set_int_member(o, "expected-downtime",
                                   stats.expected_downtime);
    }
    json_object_set_object_member(o, "ram", ram_info(s, &stats));
    fill_pause_info(o, st, stats.postcopy_pauses, s, NULL);
    if (stats.auto_switch) {
        JsonObject *a = json_object_new();

        json_object_set_int_member(a, "time", stats.auto_switch_ms);
        json_object_set_int_member(a, "dirty-rate",
                                   (int64_t)stats.auto_switch_dirty_rate);
        json_object_set_int_member(a, "bandwidth",
                                   (int64_t)stats.auto_switch_bandwidth);
        json_object_set_object_member(o, "x-auto-postcopy", a);
    }
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

/*
 * x-postcopy-recent-faults: the destination's last faults (at most
 * POSTCOPY_FAULT_RING) for a poller to place on address and time axes.
 * "total" numbers the faults since postcopy began, so that a poller can
 * tell the new ones from those it saw at its last look; two arrays rather
 * than one object per fault keep a full ring's reply small.
 */
static JsonObject *recent_faults_json(const PostcopyStatsInfo *info)
{
    JsonObject *o = json_object_new();
    JsonArray *offs = json_array_new(), *ages = json_array_new();

    for (guint i = 0; i < info->recent_count; i++) {
        json_array_add_int_element(offs, info->recent_offset[i]);
        json_array_add_int_element(ages, info->recent_age_us[i]);
    }
    json_object_set_int_member(o, "total", info->faults);
    json_object_set_array_member(o, "offsets", offs);
    json_object_set_array_member(o, "ages-us", ages);
    return o;
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
        json_object_set_object_member(o, "x-postcopy-recent-faults",
                                      recent_faults_json(&info));
    }
    postcopy_stats_info_clear(&info);
}

/* Listening or loading: anything but over (or cancelled). */
static bool status_is_live(MigrationStatus st)
{
    return st != MIGRATION_STATUS_COMPLETED && st != MIGRATION_STATUS_FAILED &&
           st != MIGRATION_STATUS_CANCELLED &&
           st != MIGRATION_STATUS_CANCELLING;
}

static void fill_destination_info(JsonObject *o, MigrationIncomingState *mis)
{
    MigrationStatus st = migrate_get_state(&mis->status);

    json_object_set_string_member(o, "status", MigrationStatus_str(st));
    /*
     * QEMU's destination is never cancelled; ferry's is (migrate_cancel),
     * and says so in error-desc as for a failure.
     */
    if (st == MIGRATION_STATUS_FAILED || st == MIGRATION_STATUS_CANCELLED ||
        st == MIGRATION_STATUS_CANCELLING) {
        g_autofree char *desc = migration_incoming_get_error_desc(mis);

        if (desc) {
            json_object_set_string_member(o, "error-desc", desc);
        }
    }
    if (mis->listener && migration_listener_address(mis->listener) &&
        status_is_live(st)) {
        json_object_set_array_member(o, "socket-address",
                                     listen_socket_address(mis->listener));
    }
    fill_postcopy_info(o, mis);
    {
        uint64_t n;
        int64_t ms;

        migration_incoming_pause_stats(mis, &n, &ms);
        fill_pause_info(o, st, n, NULL, mis);
    }
}

static bool qmp_query_migrate(JsonObject *args, JsonNode **ret,
                              GError **errp)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    MigrationState *s = migrate_get_current();
    JsonObject *o = json_object_new();

    /*
     * A VM started by an incoming migration may migrate on: from then on
     * its outgoing migration is what management asks about (libvirt waits
     * on it), as in QEMU.
     */
    if (migrate_get_state(&s->status) == MIGRATION_STATUS_NONE &&
        migrate_get_state(&mis->status) != MIGRATION_STATUS_NONE) {
        fill_destination_info(o, mis);
    } else {
        fill_source_info(o, s);
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
    /* All or nothing: the whole new set is checked before any applies. */
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
    return migrate_set_capabilities(newcaps, errp);
}

/* ---------------------------------------------------------------------- */
/* Parameters */

static void add_parameter(JsonObject *o, MigrationParameter p)
{
    const MigrationParameterInfo *info = migrate_parameter_info(p);

    switch (info->type) {
    case MIGRATION_PARAM_BOOL:
        json_object_set_boolean_member(o, info->name,
                                       migrate_parameter_num(p));
        break;
    case MIGRATION_PARAM_INT:
    case MIGRATION_PARAM_SIZE:
        /* Values above INT64_MAX cannot be set through json-glib. */
        json_object_set_int_member(o, info->name, migrate_parameter_num(p));
        break;
    case MIGRATION_PARAM_STR:
        json_object_set_string_member(o, info->name,
                                      migrate_parameter_str(p));
        break;
    case MIGRATION_PARAM_LIST:
        /* QEMU leaves block-bitmap-mapping out until it is set. */
        break;
    }
}

static bool qmp_query_migrate_parameters(JsonObject *args, JsonNode **ret,
                                         GError **errp)
{
    JsonObject *o = json_object_new();

    for (int p = 0; p < MIGRATION_PARAMETER__MAX; p++) {
        add_parameter(o, p);
    }
    *ret = json_node_init_object(json_node_alloc(), o);
    json_object_unref(o);
    return true;
}

static bool stage_int(JsonObject *args, MigrationParameters *np,
                      MigrationParameter p, GError **errp)
{
    const char *name = migrate_parameter_info(p)->name;
    int64_t v;

    /* QEMU's wording for any non-integer, whatever the member's width. */
    if (!qmp_arg_int(args, name, true, &v, NULL)) {
        error_setg(errp, "Parameter '%s' expects uint64", name);
        return false;
    }
    return migrate_params_stage_num(np, p, v, errp);
}

static bool stage_bool(JsonObject *args, MigrationParameters *np,
                       MigrationParameter p, GError **errp)
{
    const char *name = migrate_parameter_info(p)->name;
    bool v;

    return qmp_arg_bool(args, name, true, &v, errp) &&
           migrate_params_stage_num(np, p, v, errp);
}

/* tls-* are StrOrNull in QAPI: null resets them to "". */
static bool stage_str(JsonObject *args, MigrationParameters *np,
                      MigrationParameter p, GError **errp)
{
    const MigrationParameterInfo *info = migrate_parameter_info(p);
    JsonNode *n = json_object_get_member(args, info->name);
    const char *v;

    if (info->nullable && JSON_NODE_HOLDS_NULL(n)) {
        return migrate_params_stage_str(np, p, "", errp);
    }
    return qmp_arg_str(args, info->name, true, &v, errp) &&
           migrate_params_stage_str(np, p, v, errp);
}

static bool stage_parameter(JsonObject *args, const char *name,
                            MigrationParameters *np, GError **errp)
{
    MigrationParameter p;

    if (!migration_parameter_parse(name, &p)) {
        error_setg(errp, "Parameter '%s' is unexpected", name);
        return false;
    }
    switch (migrate_parameter_info(p)->type) {
    case MIGRATION_PARAM_BOOL:
        return stage_bool(args, np, p, errp);
    case MIGRATION_PARAM_INT:
    case MIGRATION_PARAM_SIZE:
        return stage_int(args, np, p, errp);
    case MIGRATION_PARAM_STR:
        return stage_str(args, np, p, errp);
    case MIGRATION_PARAM_LIST:
        break;
    }
    error_setg(errp, "Parameter '%s' is not supported by this VMM", name);
    return false;
}

/*
 * Allowed while a migration runs, as in QEMU: that is how max-bandwidth
 * and downtime-limit are changed on the fly.
 */
static bool qmp_migrate_set_parameters(JsonObject *args, JsonNode **ret,
                                       GError **errp)
{
    MigrationParameters np = { 0 };
    GList *members = json_object_get_members(args);
    bool ok = true;

    migrate_params_copy(&np, &migrate_get_current()->parameters);
    for (GList *l = members; l && ok; l = l->next) {
        ok = stage_parameter(args, l->data, &np, errp);
    }
    g_list_free(members);
    ok = ok && migrate_set_parameters(&np, errp);
    migrate_params_free(&np);
    return ok;
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
    /* As in QEMU, out of band: the main thread may be stuck on a fault. */
    qmp_register_command_oob("migrate-pause", qmp_migrate_pause);
    qmp_register_command_oob("migrate-recover", qmp_migrate_recover);
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

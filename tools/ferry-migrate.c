/*
 * ferry-migrate: migrate a VM between two QMP-speaking VMMs (ferry or
 * QEMU) with one command.  It drives both monitors, switches to postcopy
 * by policy, shows progress and prints a summary (or JSON).
 *
 * Exit status: 0 completed, 1 failed/cancelled/timed out, 2 usage or
 * connection errors.  See docs/tools.md.
 */
#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qemu/sockets.h"
#include "qemu/trace.h"
#include <signal.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <json-glib/json-glib.h>
#include "qmp-client.h"
#include "migrate-report.h"

enum { EXIT_OK = 0, EXIT_MIGRATION_FAILED = 1, EXIT_USAGE = 2 };

typedef enum SwitchPolicy {
    SWITCH_NEVER,           /* plain precopy */
    SWITCH_IMMEDIATE,       /* migrate-start-postcopy right after migrate */
    SWITCH_AFTER_PRECOPY,   /* after the first full pass */
    SWITCH_AUTO,            /* when precopy stops converging */
} SwitchPolicy;

/* auto policy: passes without a 5% drop in "remaining" before switching */
#define AUTO_STALL_PASSES 3
/* auto policy: expected-downtime above this many downtime-limits */
#define AUTO_DOWNTIME_FACTOR 10
#define POLL_INTERVAL_MS 100
/* recovery: how long migrate-pause may take to show on a side */
#define PAUSE_WAIT_S 10
/* recovery: a resumed source still paused after this never connected */
#define RESUME_CONNECT_GRACE_S 5
/*
 * recovery: QEMU 7.2 says nothing when a resume's connect fails, and a
 * connect to a black-holed host stays pending until the kernel gives up
 * (tcp_syn_retries 6: 127 s).  If such a stale connect failed after a new
 * one succeeded, the source would abort (7.2's migrate_fd_error asserts
 * that no channel is open), so no new tcp resume goes out before this
 * long.
 */
#define RESUME_CONNECT_GAP_S 130

typedef struct Options {
    char *src, *dst, *uri, *dst_cmd, *dst_log;
    char *max_bw, *max_pc_bw;
    char *switch_policy;
    char **caps;
    gboolean postcopy, postcopy_after_precopy, json, quiet;
    gint64 downtime_limit;
    int64_t max_bw_bytes, max_pc_bw_bytes;     /* -1: leave as is */
    int timeout;
    SwitchPolicy policy;
    char *recover, *recover_uri;
    char *report;               /* --report FILE.html */
    bool recover_auto;
    int recover_retries, recover_delay_ms, recover_timeout;
} Options;

/* One postcopy pause, from noticing it to both sides active again. */
typedef struct PauseRecord {
    const char *noticed_by;     /* "source", "destination" */
    gint64 paused_us;
    int attempts;
    bool recovered;
} PauseRecord;

typedef struct Migration {
    Options *opts;
    QmpClient *src, *dst;
    GPid dst_pid;               /* 0 unless we started the destination */
    char *uri;
    gint64 start_us;
    int64_t pass;
    int64_t downtime_limit;     /* ms, as the source reports it */
    bool postcopy_requested;
    gint64 postcopy_at_us;      /* when we asked for the switch */
    int64_t best_remaining;
    int stall_passes;
    int64_t last_pass_seen;
    bool src_auto;              /* the source switches by itself (ferry) */
    bool cancel_sent;
    bool timed_out;
    bool interrupted;
    bool tty;
    gint64 last_progress_us;
    JsonObject *src_info;       /* last query-migrate of the source */
    JsonObject *dst_info;
    char *dst_lost;             /* why the destination's QMP went away */
    char *dst_log_tmp;          /* our temporary log of a --dst-cmd child */
    bool progress_open;         /* a tty progress line awaits its newline */
    bool dst_paused_seen;       /* MIGRATION postcopy-paused from the dst */
    GArray *pauses;             /* PauseRecord, one per pause */
    int recover_seq;            /* recovery URIs derived so far */
    char *recover_uri;          /* the last one the source was given */
    gint64 unanswered_resume_us; /* a tcp resume that never connected */
    MigrateReport *rep;         /* samples and faults for --report/--json */
} Migration;

static volatile sig_atomic_t got_sigint;

static void on_sigint(int sig)
{
    got_sigint = 1;
}

static void report(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void report(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("ferry-migrate: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* A progress-like line: not in --quiet or --json, not inside the bar. */
static void notice(Migration *m, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void notice(Migration *m, const char *fmt, ...)
{
    va_list ap;

    if (m->opts->quiet || m->opts->json) {
        return;
    }
    if (m->progress_open) {
        fputc('\n', stderr);
        m->progress_open = false;
    }
    va_start(ap, fmt);
    fputs("ferry-migrate: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- small JSON helpers: QMP numbers may arrive as int or double ---- */

static bool jo_has(JsonObject *o, const char *m)
{
    return o && json_object_has_member(o, m) &&
           JSON_NODE_HOLDS_VALUE(json_object_get_member(o, m));
}

static int64_t jo_int(JsonObject *o, const char *m, int64_t def)
{
    JsonNode *n;

    if (!jo_has(o, m)) {
        return def;
    }
    n = json_object_get_member(o, m);
    switch (json_node_get_value_type(n)) {
    case G_TYPE_INT64:
        return json_node_get_int(n);
    case G_TYPE_DOUBLE:
        return (int64_t)json_node_get_double(n);
    default:
        return def;
    }
}

static double jo_double(JsonObject *o, const char *m, double def)
{
    JsonNode *n;

    if (!jo_has(o, m)) {
        return def;
    }
    n = json_object_get_member(o, m);
    if (json_node_get_value_type(n) == G_TYPE_INT64) {
        return json_node_get_int(n);
    }
    return json_node_get_value_type(n) == G_TYPE_DOUBLE ?
           json_node_get_double(n) : def;
}

static const char *jo_str(JsonObject *o, const char *m)
{
    if (!jo_has(o, m) ||
        json_node_get_value_type(json_object_get_member(o, m)) !=
        G_TYPE_STRING) {
        return NULL;
    }
    return json_object_get_string_member(o, m);
}

static JsonObject *jo_obj(JsonObject *o, const char *m)
{
    JsonNode *n = o ? json_object_get_member(o, m) : NULL;

    return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

static const char *status_of(JsonObject *info)
{
    const char *s = jo_str(info, "status");

    return s ? s : "none";
}

static bool status_is_final(const char *s)
{
    return !strcmp(s, "completed") || !strcmp(s, "failed") ||
           !strcmp(s, "cancelled");
}

/* ---- option parsing ---- */

static bool parse_policy(Options *o, GError **errp)
{
    if (o->switch_policy) {
        static const struct { const char *name; SwitchPolicy p; } t[] = {
            { "never", SWITCH_NEVER }, { "immediate", SWITCH_IMMEDIATE },
            { "after-precopy", SWITCH_AFTER_PRECOPY }, { "auto", SWITCH_AUTO },
        };
        for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
            if (!strcmp(o->switch_policy, t[i].name)) {
                o->policy = t[i].p;
                return true;
            }
        }
        error_setg(errp, "unknown --switch-policy '%s' (never, immediate, "
                   "after-precopy, auto)", o->switch_policy);
        return false;
    }
    o->policy = o->postcopy ? SWITCH_IMMEDIATE :
                o->postcopy_after_precopy ? SWITCH_AFTER_PRECOPY :
                SWITCH_NEVER;
    return true;
}

static bool parse_recover(Options *o, GError **errp)
{
    if (!o->recover || !strcmp(o->recover, "auto")) {
        o->recover_auto = true;
    } else if (strcmp(o->recover, "off")) {
        error_setg(errp, "unknown --recover '%s' (auto, off)", o->recover);
        return false;
    }
    if (o->recover_retries < 1 || o->recover_delay_ms < 0 ||
        o->recover_timeout < 1) {
        error_setg(errp, "--recover-retries and --recover-timeout must be "
                   "at least 1, --recover-delay not negative");
        return false;
    }
    return true;
}

static bool parse_cap(const char *spec, char **name, bool *state,
                      GError **errp)
{
    const char *eq = strchr(spec, '=');

    if (!eq || eq == spec) {
        error_setg(errp, "--cap expects NAME=on|off, got '%s'", spec);
        return false;
    }
    if (!qemu_parse_bool(eq + 1, state, errp)) {
        g_prefix_error(errp, "--cap %s: ", spec);
        return false;
    }
    *name = g_strndup(spec, eq - spec);
    return true;
}

/* Bytes per second with an optional K/M/G suffix (QEMU's unit). */
static bool parse_rate(const char *opt, const char *str, int64_t *out,
                       GError **errp)
{
    uint64_t v;

    *out = -1;
    if (!str) {
        return true;
    }
    if (!qemu_strtosz(str, 'B', &v, errp)) {
        g_prefix_error(errp, "%s: ", opt);
        return false;
    }
    if (v > INT64_MAX) {
        error_setg(errp, "%s: %s is too large", opt, str);
        return false;
    }
    *out = v;
    return true;
}

static bool parse_options(int argc, char **argv, Options *o, GError **errp)
{
    GOptionEntry entries[] = {
        { "src", 0, 0, G_OPTION_ARG_STRING, &o->src,
          "Source QMP address (unix:PATH, PATH or tcp:HOST:PORT)", "QMP" },
        { "dst", 0, 0, G_OPTION_ARG_STRING, &o->dst,
          "Destination QMP address", "QMP" },
        { "dst-cmd", 0, 0, G_OPTION_ARG_STRING, &o->dst_cmd,
          "Start the destination with this command line", "CMD" },
        { "dst-log", 0, 0, G_OPTION_ARG_FILENAME, &o->dst_log,
          "Output file for a --dst-cmd destination (default /dev/null)",
          "FILE" },
        { "uri", 0, 0, G_OPTION_ARG_STRING, &o->uri,
          "Migration URI (default tcp:127.0.0.1:0 for a deferred "
          "destination, a free port)", "URI" },
        { "postcopy", 0, 0, G_OPTION_ARG_NONE, &o->postcopy,
          "Switch to postcopy right after starting", NULL },
        { "postcopy-after-precopy", 0, 0, G_OPTION_ARG_NONE,
          &o->postcopy_after_precopy,
          "Switch to postcopy after the first precopy pass", NULL },
        { "switch-policy", 0, 0, G_OPTION_ARG_STRING, &o->switch_policy,
          "never, immediate, after-precopy or auto", "POLICY" },
        { "max-bandwidth", 0, 0, G_OPTION_ARG_STRING, &o->max_bw,
          "Precopy bandwidth limit, bytes/s (K/M/G suffixes)", "SIZE" },
        { "max-postcopy-bandwidth", 0, 0, G_OPTION_ARG_STRING, &o->max_pc_bw,
          "Postcopy background bandwidth limit, bytes/s", "SIZE" },
        { "downtime-limit", 0, 0, G_OPTION_ARG_INT64, &o->downtime_limit,
          "Maximum downtime in ms", "MS" },
        { "cap", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o->caps,
          "Set a capability on both sides (repeatable)", "NAME=on|off" },
        { "timeout", 0, 0, G_OPTION_ARG_INT, &o->timeout,
          "Cancel if not finished after this many seconds", "SECONDS" },
        { "recover", 0, 0, G_OPTION_ARG_STRING, &o->recover,
          "Recover a paused postcopy: auto (default) or off", "MODE" },
        { "recover-retries", 0, 0, G_OPTION_ARG_INT, &o->recover_retries,
          "Recovery attempts per pause (default 5)", "N" },
        { "recover-delay", 0, 0, G_OPTION_ARG_INT, &o->recover_delay_ms,
          "Wait between recovery attempts (default 1000)", "MS" },
        { "recover-timeout", 0, 0, G_OPTION_ARG_INT, &o->recover_timeout,
          "Give up on one recovery attempt after this long (default 30)",
          "SECONDS" },
        { "recover-uri", 0, 0, G_OPTION_ARG_STRING, &o->recover_uri,
          "Where the destination listens to recover (default: derived "
          "from the migration URI)", "URI" },
        { "report", 0, 0, G_OPTION_ARG_FILENAME, &o->report,
          "Write an HTML report (charts, fault latencies) to FILE",
          "FILE" },
        { "json", 0, 0, G_OPTION_ARG_NONE, &o->json,
          "Print the result as one JSON object on stdout", NULL },
        { "quiet", 'q', 0, G_OPTION_ARG_NONE, &o->quiet,
          "No progress and no human summary", NULL },
        { NULL }
    };
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("- migrate a VM between two QMP monitors");

    o->downtime_limit = -1;
    o->recover_retries = 5;
    o->recover_delay_ms = 1000;
    o->recover_timeout = 30;
    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, errp)) {
        return false;
    }
    if (argc > 1) {
        error_setg(errp, "unexpected argument '%s'", argv[1]);
        return false;
    }
    if (!o->src) {
        error_setg(errp, "--src is required");
        return false;
    }
    if (!o->dst && !o->dst_cmd) {
        error_setg(errp, "--dst (or --dst-cmd) is required");
        return false;
    }
    if (o->postcopy && o->postcopy_after_precopy) {
        error_setg(errp, "--postcopy and --postcopy-after-precopy exclude "
                   "each other");
        return false;
    }
    if (o->timeout < 0 || o->downtime_limit < -1) {
        error_setg(errp, "--timeout and --downtime-limit must not be "
                   "negative");
        return false;
    }
    for (char **c = o->caps; c && *c; c++) {
        g_autofree char *name = NULL;
        bool state;
        if (!parse_cap(*c, &name, &state, errp)) {
            return false;
        }
    }
    if (!parse_rate("--max-bandwidth", o->max_bw, &o->max_bw_bytes, errp) ||
        !parse_rate("--max-postcopy-bandwidth", o->max_pc_bw,
                    &o->max_pc_bw_bytes, errp)) {
        return false;
    }
    return parse_policy(o, errp) && parse_recover(o, errp);
}

/* ---- destination process started by us ---- */

/* The QMP address in a "-qmp unix:P,server=on,..." command line. */
static char *qmp_addr_from_cmd(char **argv)
{
    for (int i = 0; argv[i]; i++) {
        if ((!strcmp(argv[i], "-qmp") || !strcmp(argv[i], "--qmp")) &&
            argv[i + 1]) {
            return g_strndup(argv[i + 1], strcspn(argv[i + 1], ","));
        }
    }
    return NULL;
}

typedef struct ChildSetup {
    int out_fd;
} ChildSetup;

static void dst_child_setup(gpointer opaque)
{
    ChildSetup *cs = opaque;

    /* Own session: a Ctrl-C on the tool must not kill the new VM. */
    setsid();
    if (cs->out_fd >= 0) {
        dup2(cs->out_fd, STDOUT_FILENO);
        dup2(cs->out_fd, STDERR_FILENO);
    }
}

static bool start_destination(Migration *m, GError **errp)
{
    Options *o = m->opts;
    g_auto(GStrv) argv = NULL;
    ChildSetup cs = { -1 };
    bool ok;

    if (!g_shell_parse_argv(o->dst_cmd, NULL, &argv, errp)) {
        g_prefix_error(errp, "--dst-cmd: ");
        return false;
    }
    if (!o->dst) {
        o->dst = qmp_addr_from_cmd(argv);
        if (!o->dst) {
            error_setg(errp, "--dst-cmd has no -qmp option; give --dst");
            return false;
        }
    }
    if (o->dst_log) {
        cs.out_fd = open(o->dst_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                         0644);
        if (cs.out_fd < 0) {
            error_setg_errno(errp, errno, "cannot open %s", o->dst_log);
            return false;
        }
    } else {
        /* Kept only to show the destination's complaints on failure. */
        cs.out_fd = g_file_open_tmp("ferry-migrate-dst-XXXXXX.log",
                                    &m->dst_log_tmp, errp);
        if (cs.out_fd < 0) {
            return false;
        }
    }
    ok = g_spawn_async(NULL, argv, NULL,
                       G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD |
                       G_SPAWN_STDIN_FROM_DEV_NULL,
                       dst_child_setup, &cs, &m->dst_pid, errp);
    close(cs.out_fd);
    if (!ok) {
        g_prefix_error(errp, "cannot start the destination: ");
        return false;
    }
    return true;
}

/* Did our destination process exit?  Fills a description if so. */
static bool dst_exited(Migration *m, char **why)
{
    int status;

    if (!m->dst_pid || waitpid(m->dst_pid, &status, WNOHANG) != m->dst_pid) {
        return false;
    }
    m->dst_pid = 0;
    *why = WIFEXITED(status) ?
        g_strdup_printf("exited with status %d", WEXITSTATUS(status)) :
        g_strdup_printf("killed by signal %d", WTERMSIG(status));
    return true;
}

static void kill_destination(Migration *m)
{
    if (!m->dst_pid) {
        return;
    }
    kill(m->dst_pid, SIGTERM);
    for (int i = 0; i < 50; i++) {
        if (waitpid(m->dst_pid, NULL, WNOHANG) == m->dst_pid) {
            m->dst_pid = 0;
            return;
        }
        g_usleep(100 * 1000);
    }
    kill(m->dst_pid, SIGKILL);
    waitpid(m->dst_pid, NULL, 0);
    m->dst_pid = 0;
}

/* Print the end of a --dst-cmd destination's output after a failure. */
static void show_dst_log(Migration *m)
{
    const char *path = m->dst_log_tmp ? m->dst_log_tmp : m->opts->dst_log;
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    gsize len;
    int n, first;

    if (!path || !g_file_get_contents(path, &text, &len, NULL) || !len) {
        return;
    }
    lines = g_strsplit(g_strchomp(text), "\n", -1);
    n = g_strv_length(lines);
    first = MAX(0, n - 8);
    fprintf(stderr, "ferry-migrate: destination output (%s):\n", path);
    for (int i = first; i < n; i++) {
        fprintf(stderr, "  | %s\n", lines[i]);
    }
}

static bool connect_destination(Migration *m, GError **errp)
{
    gint64 deadline = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;

    if (!m->dst_pid) {
        m->dst = qmpc_connect(m->opts->dst, "destination", 2000, errp);
        return m->dst != NULL;
    }
    /* Our own child: keep trying while it is alive and starting up. */
    for (;;) {
        g_autofree char *why = NULL;
        GError *local = NULL;

        m->dst = qmpc_connect(m->opts->dst, "destination", 200, &local);
        if (m->dst) {
            return true;
        }
        if (dst_exited(m, &why)) {
            error_setg(errp, "destination process %s before its QMP socket "
                       "came up (%s)", why, local->message);
            g_error_free(local);
            return false;
        }
        if (g_get_monotonic_time() >= deadline) {
            g_propagate_prefixed_error(errp, local, "after 30 s: ");
            return false;
        }
        g_error_free(local);
    }
}

/* ---- setting up both sides ---- */

static void add_cap(JsonArray *arr, const char *name, bool state)
{
    JsonObject *c = json_object_new();

    json_object_set_string_member(c, "capability", name);
    json_object_set_boolean_member(c, "state", state);
    json_array_add_object_element(arr, c);
}

/* Does this VMM list a capability (ferry's own x- ones, say)? */
static bool has_cap(QmpClient *q, const char *name)
{
    g_autoptr(JsonNode) ret = NULL;
    JsonArray *a;

    if (!qmpc_execute(q, "query-migrate-capabilities", NULL, &ret, NULL) ||
        !JSON_NODE_HOLDS_ARRAY(ret)) {
        return false;
    }
    a = json_node_get_array(ret);
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *c = json_array_get_object_element(a, i);
        const char *n = c ? json_object_get_string_member_with_default(
                                c, "capability", "") : "";

        if (!strcmp(n, name)) {
            return true;
        }
    }
    return false;
}

static bool set_caps(Migration *m, QmpClient *q, GError **errp)
{
    Options *o = m->opts;
    g_autoptr(JsonObject) args = json_object_new();
    JsonArray *arr = json_array_new();

    add_cap(arr, "events", true);
    /*
     * Without a return path the source declares success once the stream
     * is written, before the destination has loaded it.
     */
    add_cap(arr, "return-path", true);
    if (o->policy != SWITCH_NEVER) {
        add_cap(arr, "postcopy-ram", true);
    }
    /*
     * auto: a ferry source predicts the non-convergence itself, from the
     * dirty rate it samples during the first pass; a QEMU source gets the
     * switch from us once passes stop making progress.
     */
    if (o->policy == SWITCH_AUTO && q == m->src &&
        has_cap(q, "x-auto-postcopy")) {
        add_cap(arr, "x-auto-postcopy", true);
        m->src_auto = true;
    }
    for (char **c = o->caps; c && *c; c++) {
        g_autofree char *name = NULL;
        bool state = false;
        parse_cap(*c, &name, &state, NULL);     /* validated already */
        add_cap(arr, name, state);
    }
    json_object_set_array_member(args, "capabilities", arr);
    return qmpc_execute(q, "migrate-set-capabilities", args, NULL, errp);
}

static bool set_params(Migration *m, GError **errp)
{
    Options *o = m->opts;
    g_autoptr(JsonObject) args = json_object_new();
    g_autoptr(JsonObject) params = NULL;

    if (o->max_bw_bytes >= 0) {
        json_object_set_int_member(args, "max-bandwidth", o->max_bw_bytes);
    }
    if (o->max_pc_bw_bytes >= 0) {
        json_object_set_int_member(args, "max-postcopy-bandwidth",
                                   o->max_pc_bw_bytes);
    }
    if (o->downtime_limit >= 0) {
        json_object_set_int_member(args, "downtime-limit", o->downtime_limit);
    }
    if (json_object_get_size(args) &&
        !qmpc_execute(m->src, "migrate-set-parameters", args, NULL, errp)) {
        g_prefix_error(errp, "source: ");
        return false;
    }
    /* The auto policy compares against the limit actually in force. */
    params = qmpc_execute_obj(m->src, "query-migrate-parameters", NULL, NULL);
    m->downtime_limit = jo_int(params, "downtime-limit", 300);
    return true;
}

/* The port a destination reports after listening on port 0. */
static char *dst_listen_uri(Migration *m, const char *uri, GError **errp)
{
    g_autoptr(JsonObject) info = NULL;
    JsonNode *sa;
    JsonArray *arr;
    JsonObject *a0;
    const char *host, *port;
    g_autoptr(SocketAddress) addr = NULL;

    if (!g_str_has_prefix(uri, "tcp:") || !g_str_has_suffix(uri, ":0")) {
        return g_strdup(uri);
    }
    info = qmpc_execute_obj(m->dst, "query-migrate", NULL, errp);
    if (!info) {
        return NULL;
    }
    sa = json_object_get_member(info, "socket-address");
    arr = sa && JSON_NODE_HOLDS_ARRAY(sa) ? json_node_get_array(sa) : NULL;
    a0 = arr && json_array_get_length(arr) ?
         json_array_get_object_element(arr, 0) : NULL;
    host = jo_str(a0, "host");
    port = jo_str(a0, "port");
    if (!host || !port) {
        error_setg(errp, "destination listens on %s but does not report its "
                   "port; give --uri with a fixed port", uri);
        return NULL;
    }
    addr = socket_address_new_inet(host, port, errp);
    if (!addr) {
        error_prepend(errp, "destination reports an unusable socket-address: ");
        return NULL;
    }
    return socket_address_to_uri(addr);
}

/*
 * A destination started with "-incoming defer" needs migrate-incoming; one
 * started with "-incoming URI" refuses it and already listens.
 */
static bool prepare_incoming(Migration *m, GError **errp)
{
    g_autoptr(JsonObject) info = NULL;
    g_autoptr(JsonObject) args = json_object_new();
    const char *want = m->opts->uri ? m->opts->uri : "tcp:127.0.0.1:0";
    GError *local = NULL;

    info = qmpc_execute_obj(m->dst, "query-migrate", NULL, errp);
    if (!info) {
        g_prefix_error(errp, "destination: ");
        return false;
    }
    if (strcmp(status_of(info), "none")) {
        m->uri = g_strdup(m->opts->uri ? m->opts->uri : "tcp:127.0.0.1:4444");
        return true;
    }
    json_object_set_string_member(args, "uri", want);
    if (!qmpc_execute(m->dst, "migrate-incoming", args, NULL, &local)) {
        if (!m->opts->quiet && !m->opts->json) {
            report("note: destination refused migrate-incoming (%s); "
                   "assuming it already listens", local->message);
        }
        g_error_free(local);
        m->uri = g_strdup(m->opts->uri ? m->opts->uri : "tcp:127.0.0.1:4444");
        return true;
    }
    m->uri = dst_listen_uri(m, want, errp);
    return m->uri != NULL;
}

/* ---- progress ---- */

static void human_bytes(char *buf, size_t len, double b)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    int u = 0;

    while (b >= 1024 && u < (int)ARRAY_SIZE(units) - 1) {
        b /= 1024;
        u++;
    }
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", b, units[u]);
}

static void show_progress(Migration *m, bool final)
{
    JsonObject *ram = jo_obj(m->src_info, "ram");
    const char *st = status_of(m->src_info);
    double total = jo_double(ram, "total", 0);
    /*
     * RAM dealt with, not bytes sent: zero pages cost a few bytes, and
     * after the switch to postcopy more than "total" has already been
     * sent while the discarded pages are still to come.
     */
    double done = total - jo_double(ram, "remaining", total);
    double pct = g_str_equal(st, "completed") ? 100.0 :
                 total > 0 ? CLAMP(100.0 * done / total, 0.0, 100.0) : 0;
    double elapsed = (g_get_monotonic_time() - m->start_us) / 1e6;
    bool pc = g_str_has_prefix(st, "postcopy");
    char rem[32], line[256];
    gint64 now = g_get_monotonic_time();

    if (m->opts->quiet || m->opts->json) {
        return;
    }
    human_bytes(rem, sizeof(rem), jo_double(ram, "remaining", 0));
    if (pc) {
        snprintf(line, sizeof(line), "%3.0f%% %s pass %" PRId64
                 " %.0f Mbps remaining %s requests %" PRId64 " %.1fs",
                 pct, st, m->pass, jo_double(ram, "mbps", 0), rem,
                 jo_int(ram, "postcopy-requests", 0), elapsed);
    } else {
        snprintf(line, sizeof(line), "%3.0f%% %s pass %" PRId64
                 " %.0f Mbps remaining %s %.1fs", pct, st, m->pass,
                 jo_double(ram, "mbps", 0), rem, elapsed);
    }
    if (m->tty) {
        char bar[31];
        int fill = (int)(pct * 30 / 100);
        memset(bar, '#', fill);
        memset(bar + fill, '.', 30 - fill);
        bar[30] = 0;
        fprintf(stderr, "\r[%s] %s\033[K%s", bar, line, final ? "\n" : "");
        m->progress_open = !final;
    } else if (final || now - m->last_progress_us >= G_USEC_PER_SEC) {
        fprintf(stderr, "progress: %s\n", line);
        m->last_progress_us = now;
    }
    fflush(stderr);
}

/* ---- the switch policy ---- */

static bool want_postcopy(Migration *m)
{
    JsonObject *ram = jo_obj(m->src_info, "ram");
    int64_t remaining = jo_int(ram, "remaining", 0);
    int64_t expected = jo_int(m->src_info, "expected-downtime", 0);

    if (strcmp(status_of(m->src_info), "active")) {
        return false;
    }
    switch (m->opts->policy) {
    case SWITCH_IMMEDIATE:
        return true;
    case SWITCH_AFTER_PRECOPY:
        return m->pass >= 2;
    case SWITCH_AUTO:
        if (m->src_auto) {
            return false;       /* the source decides (x-auto-postcopy) */
        }
        if (m->pass < 2) {
            return false;       /* the first pass always looks bad */
        }
        if (m->pass != m->last_pass_seen) {
            m->last_pass_seen = m->pass;
            if (m->best_remaining < 0 ||
                remaining < m->best_remaining - m->best_remaining / 20) {
                m->best_remaining = remaining;
                m->stall_passes = 0;
            } else {
                m->stall_passes++;
            }
        }
        return m->stall_passes >= AUTO_STALL_PASSES ||
               (m->pass >= 3 && m->downtime_limit > 0 &&
                expected > AUTO_DOWNTIME_FACTOR * m->downtime_limit);
    default:
        return false;
    }
}

/* The source switched by itself: record when, as if we had asked. */
static void note_auto_switch(Migration *m)
{
    JsonObject *a = jo_obj(m->src_info, "x-auto-postcopy");

    if (!a) {
        return;
    }
    m->postcopy_requested = true;
    m->postcopy_at_us = m->start_us + jo_int(a, "time", 0) * 1000;
    mreport_set_postcopy(m->rep, (m->postcopy_at_us - m->start_us) / 1e6);
    if (!m->opts->quiet && !m->opts->json) {
        report("source switches to postcopy by itself: dirty rate %.0f "
               "MB/s against %.0f MB/s of bandwidth",
               jo_int(a, "dirty-rate", 0) / 1e6,
               jo_int(a, "bandwidth", 0) / 1e6);
    }
}

static void start_postcopy(Migration *m)
{
    GError *err = NULL;

    m->postcopy_requested = true;
    m->postcopy_at_us = g_get_monotonic_time();
    mreport_set_postcopy(m->rep, (m->postcopy_at_us - m->start_us) / 1e6);
    if (!qmpc_execute(m->src, "migrate-start-postcopy", NULL, NULL, &err)) {
        /* Precopy may simply have finished first; the status will say. */
        if (!m->opts->quiet && !m->opts->json) {
            report("note: migrate-start-postcopy: %s", err->message);
        }
        g_error_free(err);
    }
}


/* ---- watching the monitors ---- */

static double since_start(Migration *m)
{
    return (g_get_monotonic_time() - m->start_us) / 1e6;
}

/* A new source query-migrate reply: keep it for the summary and series. */
static void set_src_info(Migration *m, JsonObject *info)
{
    if (m->src_info) {
        json_object_unref(m->src_info);
    }
    m->src_info = info;
    mreport_add_sample(m->rep, since_start(m), info);
}

/*
 * In postcopy, and only when a report or JSON wants them, the faults the
 * destination placed since the last look (ferry's recent-faults ring); a
 * destination without the ring (QEMU) is asked once.
 */
static void poll_dst_faults(Migration *m, bool *no_ring)
{
    g_autoptr(JsonObject) info = NULL;
    GError *err = NULL;

    if (!m->dst || *no_ring || (!m->opts->report && !m->opts->json) ||
        !g_str_has_prefix(status_of(m->src_info), "postcopy")) {
        return;
    }
    info = qmpc_execute_obj(m->dst, "query-migrate", NULL, &err);
    if (!info) {
        /* as lose_dst_if_gone: the source will say what went wrong */
        m->dst_lost = g_strdup(err->message);
        g_error_free(err);
        qmpc_free(m->dst);
        m->dst = NULL;
        return;
    }
    *no_ring = !mreport_add_faults(m->rep, since_start(m), info) &&
               !strcmp(status_of(info), "postcopy-active");
}

static void drain_events(Migration *m)
{
    JsonObject *ev;

    while ((ev = qmpc_pop_event(m->src))) {
        if (!g_strcmp0(jo_str(ev, "event"), "MIGRATION_PASS")) {
            m->pass = MAX(m->pass, jo_int(jo_obj(ev, "data"), "pass", 0));
        }
        json_object_unref(ev);
    }
    while (m->dst && (ev = qmpc_pop_event(m->dst))) {
        /* The source's status is polled; the destination's is not. */
        if (!g_strcmp0(jo_str(ev, "event"), "MIGRATION") &&
            !g_strcmp0(jo_str(jo_obj(ev, "data"), "status"),
                       "postcopy-paused")) {
            m->dst_paused_seen = true;
        }
        json_object_unref(ev);
    }
}

static void cancel(Migration *m)
{
    GError *err = NULL;

    m->cancel_sent = true;
    if (!qmpc_execute(m->src, "migrate_cancel", NULL, NULL, &err)) {
        report("migrate_cancel failed: %s", err->message);
        g_error_free(err);
    }
}

/*
 * A destination that fails to load usually exits; the source then fails
 * too and says why, so losing the destination's QMP is not an error here.
 */
static void lose_dst_if_gone(Migration *m)
{
    GError *err = NULL;

    if (m->dst && !qmpc_pump(m->dst, 0, &err)) {
        m->dst_lost = g_strdup(err->message);
        g_error_free(err);
        qmpc_free(m->dst);
        m->dst = NULL;
    }
}

/* ---- postcopy recovery ---- */

typedef enum Step {
    STEP_OK,
    STEP_RETRY,                 /* this attempt failed; another may work */
    STEP_FATAL,                 /* no attempt can work (or interrupted) */
} Step;

typedef struct SideStates {
    char src[32], dst[32];
} SideStates;

static bool is_paused(const char *st)
{
    return !strcmp(st, "postcopy-paused");
}

/*
 * The destination's events queued while recovering still tell of the
 * pause just handled; the main loop must not take them for a new one.
 */
static void forget_dst_events(Migration *m)
{
    JsonObject *ev;

    while (m->dst && (ev = qmpc_pop_event(m->dst))) {
        json_object_unref(ev);
    }
    m->dst_paused_seen = false;
}

static bool query_states(Migration *m, SideStates *s, GError **errp)
{
    JsonObject *info;

    if (!m->dst) {
        error_setg(errp, "the destination's QMP went away (%s)",
                   m->dst_lost ? m->dst_lost : "?");
        return false;
    }
    info = qmpc_execute_obj(m->src, "query-migrate", NULL, errp);
    if (!info) {
        g_prefix_error(errp, "source: ");
        return false;
    }
    set_src_info(m, info);      /* the summary wants the latest */
    g_strlcpy(s->src, status_of(info), sizeof(s->src));
    info = qmpc_execute_obj(m->dst, "query-migrate", NULL, errp);
    if (!info) {
        g_prefix_error(errp, "destination: ");
        return false;
    }
    g_strlcpy(s->dst, status_of(info), sizeof(s->dst));
    json_object_unref(info);
    return true;
}

/* Sleep up to ms, keeping the monitors read; false on SIGINT. */
static bool recover_sleep(Migration *m, int ms, GError **errp)
{
    gint64 end = g_get_monotonic_time() + (gint64)ms * 1000;

    while (g_get_monotonic_time() < end) {
        if (got_sigint) {
            m->interrupted = true;
            error_setg(errp, "interrupted during postcopy recovery");
            return false;
        }
        if (!qmpc_pump(m->src, MIN(ms, POLL_INTERVAL_MS), errp)) {
            return false;
        }
        lose_dst_if_gone(m);
    }
    return true;
}

/* "tcp:HOST" of "tcp:HOST:PORT" (HOST may be "[v6]"). */
static int tcp_host_len(const char *uri)
{
    return strrchr(uri, ':') - uri;
}

/* What to type when the tool does not (or no longer) recover. */
static char *manual_hint(Migration *m)
{
    g_autofree char *uri = NULL;

    if (m->recover_uri || m->opts->recover_uri) {
        uri = g_strdup(m->recover_uri ? m->recover_uri : m->opts->recover_uri);
    } else if (g_str_has_prefix(m->uri, "tcp:")) {
        uri = g_strdup_printf("%.*s:PORT", tcp_host_len(m->uri), m->uri);
    } else if (g_str_has_prefix(m->uri, "unix:")) {
        uri = g_strdup_printf("%s.recover", m->uri);
    } else {
        uri = g_strdup("URI");
    }
    return g_strdup_printf(
        "to recover by hand: on a side still postcopy-active "
        "{\"execute\":\"migrate-pause\"}; then on the destination "
        "{\"execute\":\"migrate-recover\",\"arguments\":{\"uri\":\"%s\"}} "
        "and on the source {\"execute\":\"migrate\",\"arguments\":"
        "{\"uri\":\"%s\",\"resume\":true}}", uri, uri);
}

static void pause_side(Migration *m, QmpClient *q, const char *name)
{
    GError *err = NULL;

    notice(m, "the %s is still postcopy-active: migrate-pause on it", name);
    if (!qmpc_execute(q, "migrate-pause", NULL, NULL, &err)) {
        notice(m, "%s: migrate-pause: %s", name, err->message);
        g_error_free(err);
    }
}

/*
 * Both sides must be paused before migrate-recover/resume are accepted.
 * A black-holed link is often noticed by one side only (the other keeps
 * waiting on a socket that will never speak again): migrate-pause tells it.
 */
static Step pause_both(Migration *m, GError **errp)
{
    gint64 deadline = g_get_monotonic_time() + PAUSE_WAIT_S * G_USEC_PER_SEC;
    bool asked_src = false, asked_dst = false;
    SideStates s;

    for (;;) {
        if (!query_states(m, &s, errp)) {
            return STEP_FATAL;
        }
        if (is_paused(s.src) && is_paused(s.dst)) {
            return STEP_OK;
        }
        if (status_is_final(s.src) || status_is_final(s.dst)) {
            error_setg(errp, "cannot recover: source %s, destination %s",
                       s.src, s.dst);
            return STEP_FATAL;
        }
        if (!asked_src && !strcmp(s.src, "postcopy-active")) {
            pause_side(m, m->src, "source");
            asked_src = true;
        }
        if (!asked_dst && !strcmp(s.dst, "postcopy-active")) {
            pause_side(m, m->dst, "destination");
            asked_dst = true;
        }
        if (g_get_monotonic_time() > deadline) {
            error_setg(errp, "not both paused after %d s (source %s, "
                       "destination %s)", PAUSE_WAIT_S, s.src, s.dst);
            return STEP_RETRY;
        }
        if (!recover_sleep(m, POLL_INTERVAL_MS, errp)) {
            return STEP_FATAL;
        }
    }
}

/*
 * Where the destination listens for this attempt: --recover-uri, else the
 * migration URI's host with port 0 (a fresh free port each time, read back
 * from the destination) or its unix path with a ".recover-N" suffix.
 */
static char *recover_listen_uri(Migration *m, GError **errp)
{
    if (m->opts->recover_uri) {
        return g_strdup(m->opts->recover_uri);
    }
    if (g_str_has_prefix(m->uri, "tcp:")) {
        return g_strdup_printf("%.*s:0", tcp_host_len(m->uri), m->uri);
    }
    if (g_str_has_prefix(m->uri, "unix:")) {
        return g_strdup_printf("%s.recover-%d", m->uri, ++m->recover_seq);
    }
    error_setg(errp, "cannot derive a recovery address from %s; give "
               "--recover-uri", m->uri);
    return NULL;
}

/* See RESUME_CONNECT_GAP_S: never two tcp connects from the source. */
static bool wait_resume_gap(Migration *m, GError **errp)
{
    gint64 at = m->unanswered_resume_us;
    gint64 left_ms;

    if (!at || !g_str_has_prefix(m->recover_uri, "tcp:")) {
        return true;
    }
    left_ms = (at + RESUME_CONNECT_GAP_S * G_USEC_PER_SEC -
               g_get_monotonic_time()) / 1000;
    if (left_ms > 0) {
        notice(m, "the last resume may still be connecting: waiting %.0f s "
               "before the next", left_ms / 1000.0);
        if (!recover_sleep(m, left_ms, errp)) {
            return false;
        }
    }
    m->unanswered_resume_us = 0;
    return true;
}

/* migrate-recover on the destination, then migrate resume on the source. */
static Step start_recovery(Migration *m, GError **errp)
{
    g_autoptr(JsonObject) args = json_object_new();
    g_autofree char *listen = recover_listen_uri(m, errp);
    char *connect;

    if (!listen) {
        return STEP_FATAL;
    }
    json_object_set_string_member(args, "uri", listen);
    if (!qmpc_execute(m->dst, "migrate-recover", args, NULL, errp)) {
        g_prefix_error(errp, "destination refused migrate-recover %s: ",
                       listen);
        return STEP_RETRY;
    }
    connect = dst_listen_uri(m, listen, errp);
    if (!connect) {
        return STEP_RETRY;
    }
    g_free(m->recover_uri);
    m->recover_uri = connect;
    if (!wait_resume_gap(m, errp)) {
        return STEP_FATAL;
    }
    notice(m, "destination listens on %s; resuming the source", connect);
    json_object_set_string_member(args, "uri", connect);
    json_object_set_boolean_member(args, "resume", true);
    if (!qmpc_execute(m->src, "migrate", args, NULL, errp)) {
        g_prefix_error(errp, "source refused migrate resume to %s: ",
                       connect);
        return STEP_RETRY;
    }
    return STEP_OK;
}

static bool recovered(const SideStates *s)
{
    return (!strcmp(s->src, "postcopy-active") ||
            !strcmp(s->src, "completed")) &&
           (!strcmp(s->dst, "postcopy-active") ||
            !strcmp(s->dst, "completed"));
}

/* After the resume: wait for both sides to be postcopy-active again. */
static Step wait_recovered(Migration *m, GError **errp)
{
    gint64 start = g_get_monotonic_time();
    gint64 deadline = start + m->opts->recover_timeout * G_USEC_PER_SEC;
    bool left_paused = false;
    SideStates s;

    for (;;) {
        if (!recover_sleep(m, POLL_INTERVAL_MS, errp) ||
            !query_states(m, &s, errp)) {
            return STEP_FATAL;
        }
        if (recovered(&s)) {
            return STEP_OK;
        }
        if (!strcmp(s.src, "failed") || !strcmp(s.dst, "failed")) {
            error_setg(errp, "failed during recovery (source %s, "
                       "destination %s)", s.src, s.dst);
            return STEP_FATAL;
        }
        if (!is_paused(s.src) || !is_paused(s.dst)) {
            left_paused = true;
        } else if (left_paused) {
            error_setg(errp, "the link broke again during the handshake");
            return STEP_RETRY;
        } else if (g_get_monotonic_time() - start >
                   MIN(RESUME_CONNECT_GRACE_S, m->opts->recover_timeout) *
                   G_USEC_PER_SEC) {
            /* QEMU 7.2 only prints a failed resume connect on stderr */
            m->unanswered_resume_us = start;
            error_setg(errp, "the source did not connect to %s within %d s "
                       "(refused or unreachable?)", m->recover_uri,
                       RESUME_CONNECT_GRACE_S);
            return STEP_RETRY;
        }
        if (g_get_monotonic_time() > deadline) {
            error_setg(errp, "not recovered within %d s (source %s, "
                       "destination %s)", m->opts->recover_timeout,
                       s.src, s.dst);
            return STEP_RETRY;
        }
    }
}

static Step recover_attempt(Migration *m, GError **errp)
{
    Step r = pause_both(m, errp);

    if (r == STEP_OK) {
        r = start_recovery(m, errp);
    }
    return r == STEP_OK ? wait_recovered(m, errp) : r;
}

/*
 * Both sides paused (or one noticed a broken link): re-establish the link,
 * up to --recover-retries times, and time the pause.
 */
static bool recover(Migration *m, const char *noticed_by, GError **errp)
{
    PauseRecord rec = { .noticed_by = noticed_by };
    gint64 t0 = g_get_monotonic_time();
    g_autofree char *hint = NULL;
    g_autoptr(GError) last = NULL;
    Step r = STEP_FATAL;

    forget_dst_events(m);
    if (!m->opts->recover_auto) {
        hint = manual_hint(m);
        error_setg(errp, "migration paused in postcopy (the %s noticed a "
                   "broken link) and --recover=off; %s", noticed_by, hint);
        g_array_append_val(m->pauses, rec);
        mreport_add_pause(m->rep, (t0 - m->start_us) / 1e6, 0, noticed_by,
                          false);
        return false;
    }
    notice(m, "postcopy paused (pause %u, noticed by the %s): recovering",
           m->pauses->len + 1, noticed_by);
    while (rec.attempts < m->opts->recover_retries) {
        g_clear_error(&last);
        rec.attempts++;
        r = recover_attempt(m, &last);
        if (r != STEP_RETRY || rec.attempts == m->opts->recover_retries) {
            break;
        }
        notice(m, "recovery attempt %d/%d failed: %s; retrying in %d ms",
               rec.attempts, m->opts->recover_retries, last->message,
               m->opts->recover_delay_ms);
        g_clear_error(&last);
        if (!recover_sleep(m, m->opts->recover_delay_ms, &last)) {
            r = STEP_FATAL;
            break;
        }
    }
    rec.paused_us = g_get_monotonic_time() - t0;
    rec.recovered = r == STEP_OK;
    mreport_add_pause(m->rep, (t0 - m->start_us) / 1e6, rec.paused_us / 1e6,
                      noticed_by, rec.recovered);
    forget_dst_events(m);
    g_array_append_val(m->pauses, rec);
    if (!rec.recovered) {
        hint = manual_hint(m);
        error_setg(errp, "postcopy recovery gave up after %d attempt(s) and "
                   "%.1f s: %s; %s", rec.attempts, rec.paused_us / 1e6,
                   last->message, hint);
        return false;
    }
    notice(m, "recovered from pause %u in %.3f s (%d attempt%s)",
           m->pauses->len, rec.paused_us / 1e6, rec.attempts,
           rec.attempts == 1 ? "" : "s");
    return true;
}

/* ---- the main loop ---- */

/* Poll until the source reaches a final state; false on a QMP error. */
static bool wait_for_completion(Migration *m, GError **errp)
{
    gint64 deadline = m->opts->timeout ?
        m->start_us + (gint64)m->opts->timeout * G_USEC_PER_SEC : 0;
    bool no_ring = false;

    for (;;) {
        JsonObject *info;
        const char *st;

        if (!qmpc_pump(m->src, POLL_INTERVAL_MS, errp)) {
            return false;
        }
        lose_dst_if_gone(m);
        info = qmpc_execute_obj(m->src, "query-migrate", NULL, errp);
        if (!info) {
            return false;
        }
        set_src_info(m, info);
        poll_dst_faults(m, &no_ring);
        drain_events(m);
        m->pass = MAX(m->pass, jo_int(jo_obj(info, "ram"),
                                      "dirty-sync-count", 0));
        st = status_of(info);
        show_progress(m, status_is_final(st));
        if (status_is_final(st)) {
            return true;
        }
        if (!strcmp(st, "postcopy-paused") ||
            (m->dst_paused_seen && !strcmp(st, "postcopy-active"))) {
            if (!recover(m, strcmp(st, "postcopy-paused") ? "destination" :
                         "source", errp)) {
                return false;
            }
            continue;
        }
        if (got_sigint && !m->cancel_sent) {
            m->interrupted = true;
            if (g_str_has_prefix(st, "postcopy")) {
                report("interrupted, but a migration in postcopy cannot be "
                       "cancelled; waiting for it to finish");
                m->cancel_sent = true;
            } else {
                cancel(m);
            }
        }
        if (deadline && !m->cancel_sent &&
            g_get_monotonic_time() > deadline) {
            m->timed_out = true;
            if (g_str_has_prefix(st, "postcopy")) {
                error_setg(errp, "timed out after %d s in postcopy (cannot "
                           "cancel)", m->opts->timeout);
                return false;
            }
            cancel(m);
        }
        if (!m->postcopy_requested && !m->cancel_sent && want_postcopy(m)) {
            start_postcopy(m);
        }
        if (m->src_auto && !m->postcopy_requested) {
            note_auto_switch(m);
        }
    }
}

/* The destination lags the source by a little; let it settle. */
static void fetch_dst_info(Migration *m)
{
    gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;

    while (m->dst) {
        GError *err = NULL;
        JsonObject *info = qmpc_execute_obj(m->dst, "query-migrate", NULL,
                                            &err);
        if (!info) {
            if (!m->dst_lost) {
                m->dst_lost = g_strdup(err->message);
            }
            g_error_free(err);
            return;
        }
        if (m->dst_info) {
            json_object_unref(m->dst_info);
        }
        m->dst_info = info;
        mreport_add_faults(m->rep, since_start(m), info);
        if (status_is_final(status_of(info)) ||
            g_get_monotonic_time() > deadline) {
            return;
        }
        g_usleep(POLL_INTERVAL_MS * 1000);
    }
}

/* ---- results ---- */

/* ferry extension fields on the destination, printed when present */

static const char *policy_name(SwitchPolicy p)
{
    static const char *const names[] = {
        "never", "immediate", "after-precopy", "auto",
    };
    return names[p];
}

static bool went_postcopy(Migration *m)
{
    JsonObject *ram = jo_obj(m->src_info, "ram");

    return m->postcopy_requested &&
           (jo_int(ram, "postcopy-bytes", 0) > 0 ||
            jo_int(ram, "postcopy-requests", 0) > 0 ||
            jo_has(m->dst_info, "postcopy-blocktime"));
}

/*
 * ferry's destination reports per-fault figures beyond QEMU 7.2's
 * blocktime: the fault count, latency percentiles and a histogram of
 * [2^N, 2^(N+1)) microsecond buckets.  Print whatever is present.
 */
static void print_fault_latency(JsonObject *dst)
{
    JsonArray *hist;
    GString *line;

    if (!jo_has(dst, "postcopy-faults")) {
        return;
    }
    printf("  dst faults         %" PRId64 "\n",
           jo_int(dst, "postcopy-faults", 0));
    if (jo_has(dst, "postcopy-latency-p50-us")) {
        printf("  fault latency      p50 %" PRId64 " us, p99 %" PRId64
               " us, max %" PRId64 " us\n",
               jo_int(dst, "postcopy-latency-p50-us", 0),
               jo_int(dst, "postcopy-latency-p99-us", 0),
               jo_int(dst, "postcopy-latency-max-us", 0));
    }
    if (!json_object_has_member(dst, "postcopy-latency-histogram") ||
        !JSON_NODE_HOLDS_ARRAY(json_object_get_member(
            dst, "postcopy-latency-histogram"))) {
        return;
    }
    hist = json_object_get_array_member(dst, "postcopy-latency-histogram");
    line = g_string_new(NULL);
    for (guint i = 0; i < json_array_get_length(hist); i++) {
        int64_t n = json_node_get_int(json_array_get_element(hist, i));

        if (n > 0) {
            g_string_append_printf(line, " %" PRIu64 "us:%" PRId64,
                                   (uint64_t)1 << i, n);
        }
    }
    if (line->len) {
        printf("  latency histogram %s  (bucket start: faults)\n", line->str);
    }
    g_string_free(line, TRUE);
}

static gint64 paused_total_us(Migration *m)
{
    gint64 t = 0;

    for (guint i = 0; i < m->pauses->len; i++) {
        t += g_array_index(m->pauses, PauseRecord, i).paused_us;
    }
    return t;
}

static void print_pauses(Migration *m)
{
    if (!m->pauses->len) {
        return;
    }
    printf("  postcopy pauses    %u (paused %.3f s in all)\n", m->pauses->len,
           paused_total_us(m) / 1e6);
    for (guint i = 0; i < m->pauses->len; i++) {
        PauseRecord *p = &g_array_index(m->pauses, PauseRecord, i);

        printf("    pause %u          noticed by the %s, %s in %.3f s, "
               "%d attempt%s\n", i + 1, p->noticed_by,
               p->recovered ? "recovered" : "not recovered",
               p->paused_us / 1e6, p->attempts, p->attempts == 1 ? "" : "s");
    }
}

static JsonArray *pauses_json(Migration *m)
{
    JsonArray *a = json_array_new();

    for (guint i = 0; i < m->pauses->len; i++) {
        PauseRecord *p = &g_array_index(m->pauses, PauseRecord, i);
        JsonObject *o = json_object_new();

        json_object_set_string_member(o, "noticed-by", p->noticed_by);
        json_object_set_int_member(o, "paused-ms", p->paused_us / 1000);
        json_object_set_int_member(o, "attempts", p->attempts);
        json_object_set_boolean_member(o, "recovered", p->recovered);
        json_array_add_object_element(a, o);
    }
    return a;
}

/*
 * After a postcopy recovery QEMU 7.2's source may report a downtime of
 * its clock's whole reading (the host's uptime: its start mark was lost),
 * far beyond the total time; printed as such it would mislead.
 */
static void print_downtime(JsonObject *s, double total_ms)
{
    int64_t d = jo_int(s, "downtime", -1);

    if (d < 0) {
        return;
    }
    if (d > total_ms) {
        printf("  downtime           unknown (the source reports %" PRId64
               " ms, more than the total time)\n", d);
        return;
    }
    printf("  downtime           %" PRId64 " ms\n", d);
}

static void print_summary(Migration *m)
{
    JsonObject *s = m->src_info, *ram = jo_obj(s, "ram");
    const char *st = status_of(s);
    /* a failed or cancelled QEMU reports no total-time: use ours */
    double total_ms = jo_double(s, "total-time",
                        (g_get_monotonic_time() - m->start_us) / 1000.0);
    double xfer = jo_double(ram, "transferred", 0);
    double bps = total_ms > 0 ? xfer * 1000 / total_ms : 0;
    char buf[32];

    printf("Migration %s in %.3f s (%s)\n", st, total_ms / 1000,
           went_postcopy(m) ? "postcopy" : "precopy");
    if (jo_str(s, "error-desc")) {
        printf("  error              %s\n", jo_str(s, "error-desc"));
    }
    print_downtime(s, total_ms);
    printf("  setup time         %" PRId64 " ms\n", jo_int(s, "setup-time", 0));
    human_bytes(buf, sizeof(buf), xfer);
    printf("  transferred        %s (%.0f bytes)\n", buf, xfer);
    printf("  throughput         %.1f MB/s (%.3f Gbit/s)\n", bps / 1e6,
           bps * 8 / 1e9);
    printf("  passes             %" PRId64 "\n",
           jo_int(ram, "dirty-sync-count", 0));
    printf("  pages              %" PRId64 " normal, %" PRId64
           " duplicate (zero)\n", jo_int(ram, "normal", 0),
           jo_int(ram, "duplicate", 0));
    if (m->postcopy_requested) {
        printf("  postcopy requests  %" PRId64 "\n",
               jo_int(ram, "postcopy-requests", 0));
    }
    if (jo_has(m->dst_info, "postcopy-blocktime")) {
        printf("  dst blocktime      %" PRId64 " ms\n",
               jo_int(m->dst_info, "postcopy-blocktime", 0));
    }
    if (m->dst_info && json_object_has_member(m->dst_info,
                                              "postcopy-vcpu-blocktime")) {
        JsonNode *n = json_object_get_member(m->dst_info,
                                             "postcopy-vcpu-blocktime");
        g_autofree char *t = json_to_string(n, FALSE);
        printf("  dst vCPU blocktime %s ms\n", t);
    }
    print_fault_latency(m->dst_info);
    print_pauses(m);
}

static JsonObject *report_json(Migration *m)
{
    return mreport_to_json(m->rep, m->src_info, m->dst_info,
                           m->start_us ? since_start(m) : 0);
}

/* --report: the same object --json prints under "report", as a page. */
static bool write_report(Migration *m)
{
    g_autoptr(JsonObject) rep = NULL;
    g_autoptr(GError) err = NULL;

    if (!m->opts->report) {
        return true;
    }
    rep = report_json(m);
    if (!mreport_write_html(rep, m->opts->report, &err)) {
        report("%s", err->message);
        return false;
    }
    notice(m, "report written to %s", m->opts->report);
    return true;
}

static void print_json(Migration *m, const char *error)
{
    g_autoptr(JsonObject) o = json_object_new();
    g_autoptr(JsonNode) root = json_node_new(JSON_NODE_OBJECT);
    JsonObject *d = json_object_new();
    JsonObject *ram = jo_obj(m->src_info, "ram");
    double total_ms = jo_double(m->src_info, "total-time", 0);
    double xfer = jo_double(ram, "transferred", 0);
    double bps = total_ms > 0 ? xfer * 1000 / total_ms : 0;
    g_autofree char *text = NULL;

    json_object_set_string_member(o, "status", status_of(m->src_info));
    if (error) {
        json_object_set_string_member(o, "error", error);
    } else if (jo_str(m->src_info, "error-desc")) {
        json_object_set_string_member(o, "error",
                                      jo_str(m->src_info, "error-desc"));
    }
    json_object_set_string_member(o, "uri", m->uri ? m->uri : "");
    json_object_set_object_member(o, "source", m->src_info ?
        json_object_ref(m->src_info) : json_object_new());
    json_object_set_object_member(o, "destination", m->dst_info ?
        json_object_ref(m->dst_info) : json_object_new());
    json_object_set_string_member(d, "switch-policy",
                                  policy_name(m->opts->policy));
    json_object_set_boolean_member(d, "postcopy", went_postcopy(m));
    if (m->postcopy_requested) {
        json_object_set_int_member(d, "postcopy-requested-after-ms",
                                   (m->postcopy_at_us - m->start_us) / 1000);
    }
    json_object_set_int_member(d, "passes", m->pass);
    json_object_set_double_member(d, "throughput-MBps", bps / 1e6);
    json_object_set_double_member(d, "throughput-gbps", bps * 8 / 1e9);
    json_object_set_int_member(d, "wall-time-ms",
                               (g_get_monotonic_time() - m->start_us) / 1000);
    json_object_set_boolean_member(d, "timed-out", m->timed_out);
    json_object_set_boolean_member(d, "interrupted", m->interrupted);
    json_object_set_string_member(d, "recover",
                                  m->opts->recover_auto ? "auto" : "off");
    json_object_set_int_member(d, "pauses", m->pauses->len);
    json_object_set_int_member(d, "paused-ms", paused_total_us(m) / 1000);
    json_object_set_array_member(d, "recoveries", pauses_json(m));
    json_object_set_object_member(o, "derived", d);
    json_object_set_object_member(o, "report", report_json(m));
    json_node_set_object(root, o);
    text = json_to_string(root, TRUE);
    printf("%s\n", text);
}

/* ---- main ---- */

static int run(Migration *m)
{
    Options *o = m->opts;
    g_autoptr(JsonObject) args = json_object_new();
    g_autoptr(GError) err = NULL;
    const char *st;

    if (o->dst_cmd && !start_destination(m, &err)) {
        goto usage_error;
    }
    m->src = qmpc_connect(o->src, "source", 2000, &err);
    if (!m->src || !connect_destination(m, &err)) {
        goto usage_error;
    }
    if (!set_caps(m, m->src, &err)) {
        g_prefix_error(&err, "source: migrate-set-capabilities: ");
        goto usage_error;
    }
    if (!set_caps(m, m->dst, &err)) {
        g_prefix_error(&err, "destination: migrate-set-capabilities: ");
        goto usage_error;
    }
    if (!set_params(m, &err) || !prepare_incoming(m, &err)) {
        goto usage_error;
    }

    m->start_us = g_get_monotonic_time();
    json_object_set_string_member(args, "uri", m->uri);
    if (!qmpc_execute(m->src, "migrate", args, NULL, &err)) {
        g_prefix_error(&err, "source refused migrate to %s: ", m->uri);
        goto failed;
    }
    if (o->policy == SWITCH_IMMEDIATE) {
        start_postcopy(m);
    }
    if (!wait_for_completion(m, &err)) {
        goto failed;
    }
    fetch_dst_info(m);
    st = status_of(m->src_info);
    if (!strcmp(st, "completed") &&
        (m->dst_lost || !strcmp(status_of(m->dst_info), "failed"))) {
        g_set_error(&err, FERRY_ERROR, 0, "the source completed but the "
                    "destination %s", m->dst_lost ? "went away" :
                    "failed to load the stream");
        goto failed;
    }
    if (!strcmp(st, "completed")) {
        if (o->json) {
            print_json(m, NULL);
        } else if (!o->quiet) {
            print_summary(m);
        }
        /* the migration went well: only the report's path was wrong */
        return write_report(m) ? EXIT_OK : EXIT_USAGE;
    }
    if (m->timed_out) {
        g_set_error(&err, FERRY_ERROR, 0, "timed out after %d s; migration "
                    "%s", o->timeout, st);
    } else if (m->interrupted) {
        g_set_error(&err, FERRY_ERROR, 0, "interrupted; migration %s", st);
    } else {
        const char *desc = jo_str(m->src_info, "error-desc");
        g_set_error(&err, FERRY_ERROR, 0, "migration %s: %s", st,
                    desc ? desc : "no error description from the source");
    }

failed:
    report("%s", err->message);
    if (m->dst_lost) {
        report("the destination's QMP went away during the migration (%s)",
               m->dst_lost);
    }
    show_dst_log(m);
    if (!m->dst_info && m->dst) {
        m->dst_info = qmpc_execute_obj(m->dst, "query-migrate", NULL, NULL);
    }
    if (o->json) {
        print_json(m, err->message);
    } else if (!o->quiet && m->src_info &&
               status_is_final(status_of(m->src_info))) {
        print_summary(m);
    }
    write_report(m);
    kill_destination(m);
    return EXIT_MIGRATION_FAILED;

usage_error:
    report("%s", err->message);
    show_dst_log(m);
    kill_destination(m);
    return EXIT_USAGE;
}

static void options_free(Options *o)
{
    g_free(o->src);
    g_free(o->dst);
    g_free(o->uri);
    g_free(o->dst_cmd);
    g_free(o->dst_log);
    g_free(o->max_bw);
    g_free(o->max_pc_bw);
    g_free(o->switch_policy);
    g_free(o->recover);
    g_free(o->recover_uri);
    g_free(o->report);
    g_strfreev(o->caps);
}

int main(int argc, char **argv)
{
    Options opts = { 0 };
    Migration m = { .opts = &opts, .best_remaining = -1 };
    struct sigaction sa = { .sa_handler = on_sigint };
    g_autoptr(GError) err = NULL;
    int ret;

    if (!trace_init_from_env(&err)) {
        report("%s", err->message);
        return 1;
    }
    if (!parse_options(argc, argv, &opts, &err)) {
        report("%s (see --help)", err->message);
        options_free(&opts);
        return EXIT_USAGE;
    }
    /* Only now: a usage error above must not leave them behind. */
    m.pauses = g_array_new(FALSE, TRUE, sizeof(PauseRecord));
    m.rep = mreport_new();
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    m.tty = isatty(STDERR_FILENO);

    ret = run(&m);

    qmpc_free(m.src);
    qmpc_free(m.dst);
    if (m.src_info) {
        json_object_unref(m.src_info);
    }
    if (m.dst_info) {
        json_object_unref(m.dst_info);
    }
    if (m.dst_log_tmp) {
        unlink(m.dst_log_tmp);
        g_free(m.dst_log_tmp);
    }
    g_free(m.dst_lost);
    g_free(m.uri);
    g_free(m.recover_uri);
    g_array_free(m.pauses, TRUE);
    mreport_free(m.rep);
    options_free(&opts);
    return ret;
}

/*
 * QMP server: listening sockets, per-client sessions, input framing,
 * request checking, dispatch through the command registry, replies and
 * events.
 *
 * Everything here runs in the thread that iterates the GLib default main
 * context, except qmp_event_emit(), which may be called from any thread
 * and hands the finished event line over through a locked queue.
 *
 * The protocol commands that need the session (qmp_capabilities) or
 * nothing at all (query-version, query-commands) live here too, so that a
 * program linking only the monitor gets a working server.
 */
#include "qemu/osdep.h"
#include "qemu/thread.h"
#include "monitor/qmp.h"
#include "migration/channel.h"
#include "qemu/sockets.h"
#include "qemu/cutils.h"

#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <sys/socket.h>
#include <glib-unix.h>

#define QMP_VERSION_MAJOR 7
#define QMP_VERSION_MINOR 2
#define QMP_VERSION_MICRO 0
#define QMP_PACKAGE "ferry-0.1"

/* One request may not be larger than this, nor nest deeper. */
#define QMP_MAX_MESSAGE (10 * 1024 * 1024)
#define QMP_MAX_DEPTH 1024
/* Stop reading a client's requests while this much output is pending. */
#define QMP_OUT_HIGH_WATER (1024 * 1024)
/* A client that lets this much output pile up (events) is dropped. */
#define QMP_OUT_HARD_LIMIT (64 * 1024 * 1024)
#define QMP_MAX_CLIENTS 64
/*
 * Memory for input, summed over all clients (capacity of their buffers,
 * not just what is in them): when a read takes the sum over this, the
 * client with the largest buffer is dropped, the oldest first among
 * equals.  A request of QMP_MAX_MESSAGE (a 16 MiB buffer) always fits;
 * 64 clients with partial requests no longer cost 64 of them.
 */
#define QMP_INPUT_BUDGET (32 * 1024 * 1024)
/* A buffer this much larger than what it holds is given back. */
#define QMP_INBUF_SHRINK (4 * QMP_READ_CHUNK)
/* A tcp: server listens on every address family the host has. */
#define QMP_MAX_LISTEN_FDS 8
#define QMP_LISTEN_BACKLOG 16
#define QMP_READ_CHUNK 16384
/* Descriptors a client may have in flight (received, not yet consumed). */
#define QMP_MAX_CLIENT_FDS 16
/* Room for one recvmsg; the kernel discards what does not fit. */
#define QMP_CMSG_FDS 32
/*
 * Named descriptors (getfd) one client may keep, and all clients together.
 * Management passes one or two per migration; the bounds leave plenty of
 * room for that and keep a hostile client from eating the process's
 * RLIMIT_NOFILE (commonly 1024), which vCPUs and migration channels need.
 */
#define QMP_MAX_CLIENT_NAMED_FDS 32
#define QMP_MAX_NAMED_FDS 128

typedef struct QmpCommand {
    char *name;
    QmpCommandFunc fn;
    bool allow_oob;             /* may run as exec-oob (QEMU's allow-oob) */
} QmpCommand;

/*
 * In-band requests that arrived while the client's previous one waits
 * for a deferred reply: run in order once it is answered.  Beyond this
 * many the client's input is not read further (as QEMU's monitor does).
 */
#define QMP_MAX_QUEUED 8

typedef struct QmpQueued {
    JsonNode *root;
    uint64_t cmd_end;
} QmpQueued;

/* A request whose handler answers later (qmp_defer). */
struct QmpDeferred {
    uint64_t client;            /* QmpClient.id; it may be gone by then */
    JsonNode *id;               /* the request's "id", or NULL */
};

/*
 * A descriptor received with SCM_RIGHTS.  It belongs to the request that
 * contains (or, for a blank chunk, follows) the stream offset "owner": the
 * last non-blank byte that arrived with it.
 */
typedef struct QmpPendingFd {
    int fd;
    uint64_t owner;
} QmpPendingFd;

typedef struct QmpListener {
    int fd;
    guint watch;
    char *unix_path;            /* to unlink at shutdown, or NULL */
} QmpListener;

typedef struct QmpClient {
    uint64_t id;                /* unique over the process's lifetime */
    int fd;
    guint in_watch;
    guint out_watch;
    bool negotiated;
    bool oob_enabled;
    bool dead;                  /* closed; freed by the reaper */

    /* Input framing: bytes [start, inbuf->len) are not consumed yet. */
    GString *inbuf;
    size_t start;               /* first byte of the value being cut */
    size_t pos;                 /* next byte to scan */
    bool in_value;
    bool in_scalar;             /* top-level number/keyword */
    char quote;                 /* inside a string quoted with this */
    bool escape;
    bool resync;                /* skipping garbage until '{' or '\n' */
    GByteArray *nest;           /* open brackets, innermost last */

    GString *outbuf;
    size_t out_off;             /* bytes of outbuf already sent */

    uint64_t in_base;           /* stream offset of inbuf->str[0] */
    uint64_t cmd_end;           /* stream offset just past the request */
    GArray *fds;                /* QmpPendingFd, in arrival order */

    /* An in-band request's reply is deferred: later ones queue. */
    bool busy;
    GQueue queued;              /* QmpQueued */
    QmpDeferred *deferring;     /* set by qmp_defer() during dispatch */
} QmpClient;

static GHashTable *qmp_commands;        /* name -> QmpCommand */
static GPtrArray *qmp_listeners;        /* QmpListener */
static GPtrArray *qmp_clients;          /* QmpClient, dead ones included */
static guint qmp_reaper;
static QmpClient *qmp_cur_client;       /* during dispatch */

/*
 * getfd's table, monitor-wide: name -> QmpNamedFd.  The owner is the id of
 * the client that stored it, to count against that client's limit; a
 * client that leaves does not take its names along (QEMU keeps a
 * monitor's descriptors across reconnections), they only stop counting
 * against anyone but the total.
 */
typedef struct QmpNamedFd {
    int fd;
    uint64_t owner;
} QmpNamedFd;

static QemuMutex qmp_named_fds_lock = QEMU_MUTEX_INITIALIZER;
static GHashTable *qmp_named_fds;
static uint64_t qmp_next_client_id = 1;

/* Events handed over from other threads. */
static QemuMutex qmp_event_lock = QEMU_MUTEX_INITIALIZER;
static GQueue qmp_event_queue = G_QUEUE_INIT;   /* char * lines */
static GSource *qmp_event_source;

static void qmp_register_protocol_commands(void);
static void qmp_client_process_input(QmpClient *c);
static void qmp_client_drop_fds(QmpClient *c, uint64_t upto);
static void qmp_named_fds_clear(void);

/* ---- JSON output ------------------------------------------------------ */

static void json_append_string(GString *out, const char *s)
{
    const char *p = s;

    g_string_append_c(out, '"');
    while (*p) {
        unsigned char ch = *p;
        gunichar uc;

        if (ch < 0x80) {
            switch (ch) {
            case '"':  g_string_append(out, "\\\""); break;
            case '\\': g_string_append(out, "\\\\"); break;
            case '\b': g_string_append(out, "\\b"); break;
            case '\f': g_string_append(out, "\\f"); break;
            case '\n': g_string_append(out, "\\n"); break;
            case '\r': g_string_append(out, "\\r"); break;
            case '\t': g_string_append(out, "\\t"); break;
            default:
                if (ch < 0x20 || ch == 0x7f) {
                    g_string_append_printf(out, "\\u%04x", ch);
                } else {
                    g_string_append_c(out, ch);
                }
            }
            p++;
            continue;
        }
        /*
         * Keep the output plain ASCII: escape non-ASCII characters, and
         * replace bytes that are not UTF-8 (file names in error messages
         * can be anything) rather than emit invalid JSON.
         */
        uc = g_utf8_get_char_validated(p, -1);
        if (uc == (gunichar)-1 || uc == (gunichar)-2) {
            g_string_append(out, "\\ufffd");
            p++;
            continue;
        }
        if (uc >= 0x10000) {
            uc -= 0x10000;
            g_string_append_printf(out, "\\u%04x\\u%04x",
                                   0xd800 + (uc >> 10), 0xdc00 + (uc & 0x3ff));
        } else {
            g_string_append_printf(out, "\\u%04x", uc);
        }
        p = g_utf8_next_char(p);
    }
    g_string_append_c(out, '"');
}

static void json_append_node(GString *out, JsonNode *node);

static void json_append_object(GString *out, JsonObject *obj)
{
    GList *members = json_object_get_members(obj);
    const char *sep = "";

    g_string_append_c(out, '{');
    for (GList *l = members; l; l = l->next) {
        g_string_append(out, sep);
        json_append_string(out, l->data);
        g_string_append(out, ": ");
        json_append_node(out, json_object_get_member(obj, l->data));
        sep = ", ";
    }
    g_string_append_c(out, '}');
    g_list_free(members);
}

static void json_append_value(GString *out, JsonNode *node)
{
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    double d;

    switch (json_node_get_value_type(node)) {
    case G_TYPE_INT64:
        g_string_append_printf(out, "%" PRId64, json_node_get_int(node));
        break;
    case G_TYPE_DOUBLE:
        d = json_node_get_double(node);
        if (!isfinite(d)) {
            /* JSON has no spelling for these. */
            g_string_append(out, "null");
            break;
        }
        g_ascii_formatd(buf, sizeof(buf), "%.17g", d);
        g_string_append(out, buf);
        break;
    case G_TYPE_BOOLEAN:
        g_string_append(out, json_node_get_boolean(node) ? "true" : "false");
        break;
    case G_TYPE_STRING:
        json_append_string(out, json_node_get_string(node));
        break;
    default:
        g_string_append(out, "null");
    }
}

static void json_append_node(GString *out, JsonNode *node)
{
    JsonArray *arr;
    const char *sep = "";

    if (!node) {
        g_string_append(out, "null");
        return;
    }
    switch (json_node_get_node_type(node)) {
    case JSON_NODE_OBJECT:
        json_append_object(out, json_node_get_object(node));
        break;
    case JSON_NODE_ARRAY:
        arr = json_node_get_array(node);
        g_string_append_c(out, '[');
        for (guint i = 0; i < json_array_get_length(arr); i++) {
            g_string_append(out, sep);
            json_append_node(out, json_array_get_element(arr, i));
            sep = ", ";
        }
        g_string_append_c(out, ']');
        break;
    case JSON_NODE_VALUE:
        json_append_value(out, node);
        break;
    case JSON_NODE_NULL:
        g_string_append(out, "null");
        break;
    }
}

/* ---- output buffering -------------------------------------------------- */

static void qmp_client_close(QmpClient *c);
static void qmp_client_update_watches(QmpClient *c);

/* Send what the socket takes now; false if the client is gone. */
static bool qmp_client_flush(QmpClient *c)
{
    while (c->out_off < c->outbuf->len) {
        ssize_t n = send(c->fd, c->outbuf->str + c->out_off,
                         c->outbuf->len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            qmp_client_close(c);
            return false;
        }
        c->out_off += n;
    }
    if (c->out_off == c->outbuf->len) {
        g_string_truncate(c->outbuf, 0);
        c->out_off = 0;
    } else if (c->out_off > QMP_OUT_HIGH_WATER) {
        /* Drop the sent prefix now and then, not on every short write. */
        g_string_erase(c->outbuf, 0, c->out_off);
        c->out_off = 0;
    }
    return true;
}

static void qmp_client_send_line(QmpClient *c, GString *line)
{
    if (c->dead) {
        return;
    }
    if (c->outbuf->len - c->out_off + line->len > QMP_OUT_HARD_LIMIT) {
        /* It has stopped reading: do not let it eat our memory. */
        qmp_client_close(c);
        return;
    }
    g_string_append_len(c->outbuf, line->str, line->len);
    if (!c->out_watch && !qmp_client_flush(c)) {
        return;
    }
    qmp_client_update_watches(c);
}

static void qmp_client_send_node(QmpClient *c, JsonNode *node)
{
    g_autoptr(GString) line = g_string_new(NULL);

    json_append_node(line, node);
    g_string_append(line, "\r\n");
    qmp_client_send_line(c, line);
}

static gboolean qmp_client_out_ready(gint fd, GIOCondition cond,
                                     gpointer opaque)
{
    QmpClient *c = opaque;

    bool drained;

    if (!qmp_client_flush(c)) {
        return G_SOURCE_REMOVE;     /* the watch is already gone */
    }
    drained = c->out_off == c->outbuf->len;
    if (drained) {
        c->out_watch = 0;
    }
    /* Requests may have waited in inbuf for the output to drain. */
    qmp_client_process_input(c);
    return drained ? G_SOURCE_REMOVE : G_SOURCE_CONTINUE;
}

/* ---- replies ----------------------------------------------------------- */

static JsonNode *qmp_error_node(int cls, const char *desc)
{
    JsonObject *err = json_object_new();
    JsonObject *resp = json_object_new();
    JsonNode *node = json_node_new(JSON_NODE_OBJECT);

    json_object_set_string_member(err, "class", error_class_name(cls));
    json_object_set_string_member(err, "desc", desc);
    json_object_set_object_member(resp, "error", err);
    json_node_take_object(node, resp);
    return node;
}

static void qmp_client_send_error(QmpClient *c, int cls, const char *desc)
{
    g_autoptr(JsonNode) node = qmp_error_node(cls, desc);

    qmp_client_send_node(c, node);
}

/* ---- command registry -------------------------------------------------- */

static void qmp_command_free(gpointer p)
{
    QmpCommand *cmd = p;

    g_free(cmd->name);
    g_free(cmd);
}

static void qmp_commands_init(void)
{
    if (!qmp_commands) {
        qmp_commands = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                             qmp_command_free);
        qmp_register_protocol_commands();
    }
}

static void qmp_register(const char *name, QmpCommandFunc fn, bool oob)
{
    QmpCommand *cmd = g_new0(QmpCommand, 1);

    qmp_commands_init();
    cmd->name = g_strdup(name);
    cmd->fn = fn;
    cmd->allow_oob = oob;
    /* A later registration replaces an earlier one. */
    g_hash_table_replace(qmp_commands, cmd->name, cmd);
}

void qmp_register_command(const char *name, QmpCommandFunc fn)
{
    qmp_register(name, fn, false);
}

void qmp_register_command_oob(const char *name, QmpCommandFunc fn)
{
    qmp_register(name, fn, true);
}

bool qmp_command_exists(const char *name)
{
    qmp_commands_init();
    return g_hash_table_contains(qmp_commands, name);
}

/* ---- request checking and dispatch ------------------------------------- */

/*
 * Check the shape of a request as QEMU does; on success *name is the
 * command, *oob whether it came as exec-oob, *args its arguments or NULL.
 */
static bool qmp_check_request(QmpClient *c, JsonObject *req,
                              const char **name, bool *oob,
                              JsonObject **args, GError **errp)
{
    g_autoptr(GList) members = json_object_get_members(req);
    const char *exec = NULL, *exec_oob = NULL;

    *args = NULL;
    for (GList *l = members; l; l = l->next) {
        const char *key = l->data;
        JsonNode *val = json_object_get_member(req, key);

        if (!strcmp(key, "execute") ||
            (!strcmp(key, "exec-oob") && c->oob_enabled)) {
            if (!JSON_NODE_HOLDS_VALUE(val) ||
                json_node_get_value_type(val) != G_TYPE_STRING) {
                error_setg(errp, "QMP input member '%s' must be a string",
                           key);
                return false;
            }
            if (!strcmp(key, "execute")) {
                exec = json_node_get_string(val);
            } else {
                exec_oob = json_node_get_string(val);
            }
        } else if (!strcmp(key, "arguments")) {
            if (!JSON_NODE_HOLDS_OBJECT(val)) {
                error_setg(errp,
                           "QMP input member 'arguments' must be an object");
                return false;
            }
            *args = json_node_get_object(val);
        } else if (strcmp(key, "id")) {
            error_setg(errp, "QMP input member '%s' is unexpected", key);
            return false;
        }
    }
    if (exec && exec_oob) {
        error_setg(errp, "QMP input must not contain both 'execute' and "
                   "'exec-oob'");
        return false;
    }
    if (!exec && !exec_oob) {
        error_setg(errp, "QMP input lacks member 'execute'");
        return false;
    }
    *name = exec ? exec : exec_oob;
    *oob = !exec;
    return true;
}

static bool qmp_run_command(QmpClient *c, const char *name, bool oob,
                            JsonObject *args, JsonNode **ret, GError **errp)
{
    QmpCommand *cmd;
    g_autoptr(JsonObject) empty = NULL;
    GError *err = NULL;
    bool ok;

    qmp_commands_init();
    cmd = g_hash_table_lookup(qmp_commands, name);
    if (!c->negotiated && g_strcmp0(name, "qmp_capabilities")) {
        g_set_error(errp, FERRY_ERROR, ERROR_CLASS_COMMAND_NOT_FOUND,
                    "Expecting capabilities negotiation with "
                    "'qmp_capabilities'");
        return false;
    }
    if (!cmd) {
        g_set_error(errp, FERRY_ERROR, ERROR_CLASS_COMMAND_NOT_FOUND,
                    "The command %s has not been found", name);
        return false;
    }
    if (oob && !cmd->allow_oob) {
        error_setg(errp, "The command %s does not support OOB", name);
        return false;
    }
    if (!args) {
        args = empty = json_object_new();
    }
    qmp_cur_client = c;
    ok = cmd->fn(args, ret, &err);
    qmp_cur_client = NULL;
    if (!ok) {
        if (!err) {
            error_setg(&err, "Command %s failed", name);
        }
        if (*ret) {
            json_node_unref(*ret);
            *ret = NULL;
        }
        g_propagate_error(errp, err);
        return false;
    }
    if (err) {
        /* A handler that succeeded and left an error: succeed. */
        g_error_free(err);
    }
    return true;
}

/* An exec-oob request (checked later: this only decides the queue). */
static bool qmp_request_is_oob(QmpClient *c, JsonNode *root)
{
    return c->oob_enabled && JSON_NODE_HOLDS_OBJECT(root) &&
           json_object_has_member(json_node_get_object(root), "exec-oob");
}

QmpDeferred *qmp_defer(void)
{
    QmpClient *c = qmp_cur_client;
    QmpDeferred *d;

    g_assert(c && !c->deferring);
    d = g_new0(QmpDeferred, 1);
    d->client = c->id;
    c->deferring = d;
    return d;
}

/* Answer req now (ret or err, both taken), with its id. */
static void qmp_reply(QmpClient *c, JsonNode *id, JsonNode *ret, GError *err)
{
    g_autoptr(JsonNode) resp_node = NULL;
    JsonObject *resp;

    if (!err) {
        resp_node = json_node_new(JSON_NODE_OBJECT);
        resp = json_object_new();
        json_node_take_object(resp_node, resp);
        if (!ret) {
            ret = json_node_new(JSON_NODE_OBJECT);
            json_node_take_object(ret, json_object_new());
        }
        json_object_set_member(resp, "return", ret);
    } else {
        resp_node = qmp_error_node(err->code, err->message);
        resp = json_node_get_object(resp_node);
        g_error_free(err);
    }
    if (id) {
        json_object_set_member(resp, "id", json_node_copy(id));
    }
    qmp_client_send_node(c, resp_node);
}

static void qmp_handle_request(QmpClient *c, JsonNode *root)
{
    JsonObject *req;
    JsonNode *ret = NULL;
    JsonNode *id;
    const char *name;
    JsonObject *args;
    bool oob;
    GError *err = NULL;

    if (!JSON_NODE_HOLDS_OBJECT(root)) {
        qmp_client_send_error(c, ERROR_CLASS_GENERIC_ERROR,
                              "QMP input must be a JSON object");
        return;
    }
    req = json_node_get_object(root);
    id = json_object_has_member(req, "id") ?
         json_object_get_member(req, "id") : NULL;
    if (qmp_check_request(c, req, &name, &oob, &args, &err) &&
        qmp_run_command(c, name, oob, args, &ret, &err) && c->deferring) {
        /* The handler answers later; in-band requests wait till then. */
        c->deferring->id = id ? json_node_copy(id) : NULL;
        c->deferring = NULL;
        c->busy = true;
        g_assert(!ret);
        return;
    }
    if (c->deferring) {
        /* It failed after all: forget the deferral. */
        g_free(c->deferring);
        c->deferring = NULL;
    }
    qmp_reply(c, id, ret, err);
}

static void qmp_handle_message(QmpClient *c, const char *text, size_t len)
{
    g_autoptr(JsonParser) parser = json_parser_new_immutable();
    g_autoptr(GError) err = NULL;
    g_autofree char *desc = NULL;
    JsonNode *root;

    if (!json_parser_load_from_data(parser, text, len, &err)) {
        desc = g_strdup_printf("JSON parse error, %s", err->message);
        qmp_client_send_error(c, ERROR_CLASS_GENERIC_ERROR, desc);
        c->resync = true;
        return;
    }
    root = json_parser_get_root(parser);
    if (!root) {
        return;         /* nothing but blanks or comments */
    }
    if (c->busy && !qmp_request_is_oob(c, root)) {
        QmpQueued *q = g_new(QmpQueued, 1);

        q->root = json_node_copy(root);
        q->cmd_end = c->cmd_end;
        g_queue_push_tail(&c->queued, q);
        return;
    }
    qmp_handle_request(c, root);
}

/* Run the queued in-band requests until one defers again. */
static void qmp_client_run_queued(QmpClient *c)
{
    while (!c->dead && !c->busy && !g_queue_is_empty(&c->queued)) {
        QmpQueued *q = g_queue_pop_head(&c->queued);

        c->cmd_end = q->cmd_end;
        qmp_handle_request(c, q->root);
        if (!c->busy) {
            qmp_client_drop_fds(c, q->cmd_end);
        }
        json_node_unref(q->root);
        g_free(q);
    }
}

static void qmp_client_clear_queue(QmpClient *c)
{
    QmpQueued *q;

    while ((q = g_queue_pop_head(&c->queued))) {
        json_node_unref(q->root);
        g_free(q);
    }
}

static QmpClient *qmp_client_by_id(uint64_t id)
{
    for (guint i = 0; qmp_clients && i < qmp_clients->len; i++) {
        QmpClient *c = g_ptr_array_index(qmp_clients, i);

        if (c->id == id && !c->dead) {
            return c;
        }
    }
    return NULL;
}

void qmp_deferred_return(QmpDeferred *d, JsonNode *ret, GError *err)
{
    QmpClient *c = qmp_client_by_id(d->client);

    if (!c) {
        /* The client left meanwhile: nobody to tell. */
        if (ret) {
            json_node_unref(ret);
        }
        if (err) {
            g_error_free(err);
        }
    } else {
        qmp_reply(c, d->id, ret, err);
        c->busy = false;
        qmp_client_run_queued(c);
        qmp_client_process_input(c);
    }
    if (d->id) {
        json_node_unref(d->id);
    }
    g_free(d);
}

/* ---- descriptors passed with SCM_RIGHTS -------------------------------- */

/* Close the pending descriptors that belong to requests before "upto". */
static void qmp_client_drop_fds(QmpClient *c, uint64_t upto)
{
    guint keep = 0;

    for (guint i = 0; i < c->fds->len; i++) {
        QmpPendingFd *p = &g_array_index(c->fds, QmpPendingFd, i);

        if (p->owner < upto) {
            close(p->fd);
        } else {
            g_array_index(c->fds, QmpPendingFd, keep++) = *p;
        }
    }
    g_array_set_size(c->fds, keep);
}

/*
 * The oldest descriptor that came with the request being dispatched, now
 * owned by the caller; -1 if there is none.  Older requests' leftovers
 * were closed when they finished, so "owner < cmd_end" is enough.
 */
static int qmp_client_take_fd(QmpClient *c)
{
    int fd;

    if (!c || !c->fds->len) {
        return -1;
    }
    if (g_array_index(c->fds, QmpPendingFd, 0).owner >= c->cmd_end) {
        return -1;
    }
    fd = g_array_index(c->fds, QmpPendingFd, 0).fd;
    g_array_remove_index(c->fds, 0);
    return fd;
}

static void qmp_client_hold_fd(QmpClient *c, int fd, uint64_t owner)
{
    QmpPendingFd p = { .fd = fd, .owner = owner };

    if (c->fds->len >= QMP_MAX_CLIENT_FDS) {
        /* A client hoarding descriptors does not get to exhaust ours. */
        close(fd);
        return;
    }
    g_array_append_val(c->fds, p);
}

/*
 * Read into inbuf at offset old (room for QMP_READ_CHUNK bytes), keeping
 * the descriptors that come along.  MSG_CMSG_CLOEXEC: none of them may
 * leak into an exec: migration child.
 */
static ssize_t qmp_client_recv(QmpClient *c, size_t old)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * QMP_CMSG_FDS)];
    } ctl;
    struct iovec iov = {
        .iov_base = c->inbuf->str + old,
        .iov_len = QMP_READ_CHUNK,
    };
    struct msghdr msg = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = ctl.buf,
        .msg_controllen = sizeof(ctl.buf),
    };
    uint64_t owner;
    ssize_t n;

    do {
        n = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return n;
    }
    /*
     * The kernel ends a read at the end of the data sent with descriptors,
     * so they belong to the request holding the last non-blank byte read,
     * or to the next one if only blanks came with them.
     */
    owner = c->in_base + old + n;
    for (ssize_t i = n - 1; i >= 0; i--) {
        if (!g_ascii_isspace(c->inbuf->str[old + i])) {
            owner = c->in_base + old + i;
            break;
        }
    }
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm;
         cm = CMSG_NXTHDR(&msg, cm)) {
        size_t nfds;

        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
            cm->cmsg_len < CMSG_LEN(0)) {
            continue;
        }
        nfds = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < nfds; i++) {
            int fd;

            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            qmp_client_hold_fd(c, fd, owner);
        }
    }
    return n;
}

/* ---- input framing ----------------------------------------------------- */

static void qmp_client_reset_value(QmpClient *c)
{
    c->in_value = false;
    c->in_scalar = false;
    c->quote = 0;
    c->escape = false;
    g_byte_array_set_size(c->nest, 0);
}

/* The value [start, end) is complete: consume and handle it. */
static void qmp_client_take_value(QmpClient *c, size_t end)
{
    size_t begin = c->start;

    c->start = c->pos = end;
    c->cmd_end = c->in_base + end;
    qmp_client_reset_value(c);
    qmp_handle_message(c, c->inbuf->str + begin, end - begin);
    /*
     * What came with this request and was not taken is of no use now;
     * unless requests wait in the queue (they still own theirs).
     */
    if (!c->busy && g_queue_is_empty(&c->queued)) {
        qmp_client_drop_fds(c, c->cmd_end);
    }
}

static void qmp_client_framing_error(QmpClient *c, const char *desc)
{
    qmp_client_send_error(c, ERROR_CLASS_GENERIC_ERROR, desc);
    qmp_client_reset_value(c);
    c->start = c->pos;
    c->resync = true;
    /* Descriptors sent with the garbage are not for the next request. */
    qmp_client_drop_fds(c, c->in_base + c->pos);
}

static void qmp_client_fatal(QmpClient *c, const char *desc)
{
    qmp_client_send_error(c, ERROR_CLASS_GENERIC_ERROR, desc);
    qmp_client_close(c);
}

static bool qmp_is_delimiter(char ch)
{
    return g_ascii_isspace(ch) || strchr("{}[]\"',:", ch);
}

/* Scan one byte inside a container or a string. */
static void qmp_scan_nested(QmpClient *c, char ch)
{
    char open;

    if (c->quote) {
        if (c->escape) {
            c->escape = false;
        } else if (ch == '\\') {
            c->escape = true;
        } else if (ch == c->quote) {
            c->quote = 0;
            if (!c->nest->len) {
                qmp_client_take_value(c, c->pos + 1);
                return;
            }
        }
        c->pos++;
        return;
    }
    switch (ch) {
    case '"':
    case '\'':
        c->quote = ch;
        break;
    case '{':
    case '[':
        if (c->nest->len >= QMP_MAX_DEPTH) {
            qmp_client_fatal(c, "JSON parse error, nesting too deep");
            return;
        }
        g_byte_array_append(c->nest, (guint8 *)&ch, 1);
        break;
    case '}':
    case ']':
        open = c->nest->data[c->nest->len - 1];
        if ((ch == '}') != (open == '{')) {
            c->pos++;
            qmp_client_framing_error(c, "JSON parse error, mismatched "
                                     "brackets");
            return;
        }
        g_byte_array_set_size(c->nest, c->nest->len - 1);
        if (!c->nest->len) {
            qmp_client_take_value(c, c->pos + 1);
            return;
        }
        break;
    }
    c->pos++;
}

/* Cut the next value, or consume one byte of whatever precedes it. */
static void qmp_scan_byte(QmpClient *c)
{
    char ch = c->inbuf->str[c->pos];

    if ((unsigned char)ch == 0xff) {
        /* Never valid in UTF-8: clients send it to reset the parser. */
        qmp_client_reset_value(c);
        c->resync = false;
        c->start = ++c->pos;
        return;
    }
    if (c->in_scalar) {
        if (qmp_is_delimiter(ch)) {
            qmp_client_take_value(c, c->pos);
        } else {
            c->pos++;
        }
        return;
    }
    if (c->in_value) {
        qmp_scan_nested(c, ch);
        return;
    }
    if (c->resync && ch != '{') {
        /* Garbage ends where a new object or a new line starts. */
        c->resync = ch != '\n';
        c->start = ++c->pos;
        return;
    }
    if (g_ascii_isspace(ch)) {
        c->start = ++c->pos;
        return;
    }
    c->resync = false;
    c->in_value = true;
    switch (ch) {
    case '{':
    case '[':
        g_byte_array_append(c->nest, (guint8 *)&ch, 1);
        break;
    case '"':
    case '\'':
        c->quote = ch;
        break;
    case '}':
    case ']':
        c->pos++;
        qmp_client_framing_error(c, "JSON parse error, stray closing "
                                 "bracket");
        return;
    default:
        c->in_scalar = true;
        break;
    }
    c->pos++;
}

static bool qmp_client_output_full(QmpClient *c)
{
    return c->outbuf->len - c->out_off > QMP_OUT_HIGH_WATER;
}

/* After a large request, do not keep its buffer for the small ones. */
static void qmp_client_shrink_input(QmpClient *c)
{
    GString *small;

    if (c->inbuf->allocated_len <= QMP_INBUF_SHRINK ||
        c->inbuf->len >= c->inbuf->allocated_len / 4) {
        return;
    }
    small = g_string_sized_new(MAX(c->inbuf->len, QMP_READ_CHUNK));
    g_string_append_len(small, c->inbuf->str, c->inbuf->len);
    g_string_free(c->inbuf, TRUE);
    c->inbuf = small;
}

/* Busy with a full queue: read no further until the reply. */
static bool qmp_client_queue_full(QmpClient *c)
{
    return c->busy && g_queue_get_length(&c->queued) >= QMP_MAX_QUEUED;
}

static void qmp_client_process_input(QmpClient *c)
{
    while (!c->dead && c->pos < c->inbuf->len &&
           !qmp_client_output_full(c) && !qmp_client_queue_full(c)) {
        qmp_scan_byte(c);
        if (!c->dead && c->pos - c->start > QMP_MAX_MESSAGE) {
            qmp_client_fatal(c, "JSON parse error, message too large");
        }
    }
    if (c->dead) {
        return;
    }
    if (c->start) {
        g_string_erase(c->inbuf, 0, c->start);
        c->in_base += c->start;
        c->pos -= c->start;
        c->start = 0;
    }
    qmp_client_shrink_input(c);
    qmp_client_update_watches(c);
}

/*
 * Drop clients, largest input buffer first, until all of them together
 * fit in QMP_INPUT_BUDGET.  The largest is the one a flood of partial
 * requests comes from; management's small requests are never it.
 */
static void qmp_enforce_input_budget(void)
{
    size_t total = 0;

    for (guint i = 0; i < qmp_clients->len; i++) {
        QmpClient *c = g_ptr_array_index(qmp_clients, i);

        total += c->dead ? 0 : c->inbuf->allocated_len;
    }
    while (total > QMP_INPUT_BUDGET) {
        QmpClient *victim = NULL;
        g_autofree char *desc = NULL;

        for (guint i = 0; i < qmp_clients->len; i++) {
            QmpClient *c = g_ptr_array_index(qmp_clients, i);

            if (c->dead) {
                continue;
            }
            if (!victim ||
                c->inbuf->allocated_len > victim->inbuf->allocated_len ||
                (c->inbuf->allocated_len == victim->inbuf->allocated_len &&
                 c->id < victim->id)) {
                victim = c;
            }
        }
        total -= victim->inbuf->allocated_len;
        desc = g_strdup_printf("Input of all QMP clients exceeds the limit "
                               "of %d MiB: dropping the client with the "
                               "largest partial request",
                               QMP_INPUT_BUDGET >> 20);
        qmp_client_fatal(victim, desc);
    }
}

static gboolean qmp_client_in_ready(gint fd, GIOCondition cond,
                                    gpointer opaque)
{
    QmpClient *c = opaque;
    size_t old = c->inbuf->len;
    ssize_t n;

    g_string_set_size(c->inbuf, old + QMP_READ_CHUNK);
    n = qmp_client_recv(c, old);
    g_string_set_size(c->inbuf, old + MAX(n, 0));
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return G_SOURCE_CONTINUE;
    }
    if (n <= 0) {
        /* Gone, possibly in the middle of a request: forget it. */
        c->in_watch = 0;
        qmp_client_close(c);
        return G_SOURCE_REMOVE;
    }
    qmp_client_process_input(c);
    /* Only what is still buffered counts, so after the requests are cut. */
    qmp_enforce_input_budget();
    return G_SOURCE_CONTINUE;
}

/*
 * Read requests only while the output drains, so that a client that never
 * reads its replies throttles itself instead of growing our buffers.
 */
static void qmp_client_update_watches(QmpClient *c)
{
    bool want_in = !c->dead && !qmp_client_output_full(c) &&
                   !qmp_client_queue_full(c);
    bool want_out = !c->dead && c->out_off < c->outbuf->len;

    if (want_in && !c->in_watch) {
        c->in_watch = g_unix_fd_add(c->fd, G_IO_IN | G_IO_HUP | G_IO_ERR,
                                    qmp_client_in_ready, c);
    } else if (!want_in && c->in_watch) {
        g_source_remove(c->in_watch);
        c->in_watch = 0;
    }
    if (want_out && !c->out_watch) {
        c->out_watch = g_unix_fd_add(c->fd, G_IO_OUT, qmp_client_out_ready,
                                     c);
    } else if (!want_out && c->out_watch) {
        g_source_remove(c->out_watch);
        c->out_watch = 0;
    }
}

/* ---- clients ----------------------------------------------------------- */

static void qmp_client_free(QmpClient *c)
{
    g_array_unref(c->fds);
    g_string_free(c->inbuf, TRUE);
    g_string_free(c->outbuf, TRUE);
    g_byte_array_unref(c->nest);
    g_free(c);
}

static gboolean qmp_reap_clients(gpointer opaque)
{
    for (guint i = 0; i < qmp_clients->len;) {
        QmpClient *c = g_ptr_array_index(qmp_clients, i);

        if (c->dead) {
            g_ptr_array_remove_index_fast(qmp_clients, i);
            qmp_client_free(c);
        } else {
            i++;
        }
    }
    qmp_reaper = 0;
    return G_SOURCE_REMOVE;
}

/*
 * Close now, free later: the caller's stack (a read handler, a command
 * handler emitting an event) may still hold the client.
 */
static void qmp_client_close(QmpClient *c)
{
    if (c->dead) {
        return;
    }
    if (c->out_off < c->outbuf->len) {
        /* A last error message, if the socket takes it. */
        (void)send(c->fd, c->outbuf->str + c->out_off,
                   c->outbuf->len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    c->dead = true;
    qmp_client_update_watches(c);
    qmp_client_clear_queue(c);
    qmp_client_drop_fds(c, UINT64_MAX);
    close(c->fd);
    c->fd = -1;
    /*
     * Give the buffers back now: while other clients keep sending, the
     * idle reaper may not run for a while, and a flood of clients dropped
     * for their input would otherwise still hold all of it.
     */
    g_string_free(c->inbuf, TRUE);
    c->inbuf = g_string_new(NULL);
    g_string_free(c->outbuf, TRUE);
    c->outbuf = g_string_new(NULL);
    c->out_off = 0;
    c->start = c->pos = 0;
    if (!qmp_reaper) {
        qmp_reaper = g_idle_add(qmp_reap_clients, NULL);
    }
}

static void qmp_client_greet(QmpClient *c)
{
    g_autoptr(GString) line = g_string_new(NULL);

    g_string_printf(line, "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": %d, "
                    "\"minor\": %d, \"major\": %d}, \"package\": \"%s\"}, "
                    "\"capabilities\": [\"oob\"]}}\r\n", QMP_VERSION_MICRO,
                    QMP_VERSION_MINOR, QMP_VERSION_MAJOR, QMP_PACKAGE);
    qmp_client_send_line(c, line);
}

static unsigned qmp_live_clients(void)
{
    unsigned n = 0;

    for (guint i = 0; i < qmp_clients->len; i++) {
        n += !((QmpClient *)g_ptr_array_index(qmp_clients, i))->dead;
    }
    return n;
}

/*
 * All slots taken: make room for the newcomer, which may be management,
 * by dropping the oldest client that has not negotiated capabilities.
 * Real clients negotiate right after the greeting, so one that has not is
 * a stuck or hostile peer; taking the oldest rather than the quietest
 * means trickling bytes does not protect it, and a newcomer that is still
 * negotiating is the last to go.  False if every client has negotiated.
 */
static bool qmp_evict_for_newcomer(void)
{
    QmpClient *victim = NULL;

    for (guint i = 0; i < qmp_clients->len; i++) {
        QmpClient *c = g_ptr_array_index(qmp_clients, i);

        if (!c->dead && !c->negotiated && (!victim || c->id < victim->id)) {
            victim = c;
        }
    }
    if (!victim) {
        return false;
    }
    qmp_client_fatal(victim, "Too many QMP clients: dropping the oldest one "
                     "that has not negotiated capabilities");
    return true;
}

static gboolean qmp_listener_ready(gint fd, GIOCondition cond,
                                   gpointer opaque)
{
    QmpClient *c;
    int cfd;

    cfd = socket_accept(fd, true);
    if (cfd < 0) {
        /* EAGAIN, a client that left already, or out of fds: retry later. */
        return G_SOURCE_CONTINUE;
    }
    if (qmp_live_clients() >= QMP_MAX_CLIENTS && !qmp_evict_for_newcomer()) {
        close(cfd);
        return G_SOURCE_CONTINUE;
    }
    c = g_new0(QmpClient, 1);
    c->id = qmp_next_client_id++;
    c->fd = cfd;
    c->inbuf = g_string_sized_new(QMP_READ_CHUNK);
    c->outbuf = g_string_new(NULL);
    c->nest = g_byte_array_new();
    c->fds = g_array_new(FALSE, FALSE, sizeof(QmpPendingFd));
    g_ptr_array_add(qmp_clients, c);
    qmp_client_greet(c);
    qmp_client_update_watches(c);
    return G_SOURCE_CONTINUE;
}

/* ---- listeners --------------------------------------------------------- */

static void qmp_listener_add(int fd, const char *unix_path)
{
    QmpListener *l = g_new0(QmpListener, 1);

    l->fd = fd;
    l->unix_path = g_strdup(unix_path);
    l->watch = g_unix_fd_add(fd, G_IO_IN, qmp_listener_ready, NULL);
    g_ptr_array_add(qmp_listeners, l);
}

/* What QEMU's -qmp accepts that we cannot do is refused, not ignored. */
static bool qmp_check_options(const SocketAddress *addr, GError **errp)
{
    if (addr->has_wait && addr->wait) {
        error_setg(errp, "QMP socket option 'wait=on' is not "
                   "supported: use wait=off");
        return false;
    }
    /*
     * Without wait=off QEMU would block at start-up for a client; we never
     * block, and accept that spelling too.
     */
    if (!addr->server) {
        error_setg(errp, "QMP socket must be a listening server: add "
                   "',server=on,wait=off'");
        return false;
    }
    return true;
}

/* "fd:N": a listening socket inherited from the parent (libvirt). */
static bool qmp_server_start_fd(const char *num, GError **errp)
{
    int listening = 0;
    socklen_t len = sizeof(listening);
    uint64_t n;
    int fd;

    if (!qemu_strtou64(num, &n, NULL) || n > INT_MAX) {
        error_setg(errp, "QMP: invalid descriptor number '%s'", num);
        return false;
    }
    fd = (int)n;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 ||
        !listening) {
        error_setg(errp, "QMP: descriptor %d is not a listening socket", fd);
        return false;
    }
    if (!socket_set_cloexec(fd, errp) ||
        !socket_set_nonblocking(fd, true, errp)) {
        return false;
    }
    qmp_listener_add(fd, NULL);
    return true;
}

/*
 * "unix:PATH,server=on,wait=off", "tcp:HOST:PORT,server,nowait"..., or
 * "fd:N" for an inherited listening socket.
 */
bool qmp_server_start(const char *spec, GError **errp)
{
    g_autoptr(SocketAddress) addr = NULL;
    int fds[QMP_MAX_LISTEN_FDS];
    int n;

    qmp_commands_init();
    if (!qmp_listeners) {
        qmp_listeners = g_ptr_array_new();
        qmp_clients = g_ptr_array_new();
    }
    if (g_str_has_prefix(spec, "fd:")) {
        return qmp_server_start_fd(spec + 3, errp);
    }
    addr = socket_address_parse(spec, SOCKET_PARSE_OPTIONS, errp);
    if (!addr) {
        error_prepend(errp, "QMP ");
        return false;
    }
    if (!qmp_check_options(addr, errp)) {
        return false;
    }
    /* a stale socket file is replaced, anything else at the path kept */
    n = socket_listen(addr, QMP_LISTEN_BACKLOG, 0, fds, G_N_ELEMENTS(fds),
                      errp);
    if (n < 0) {
        error_prepend(errp, "QMP socket: ");
        return false;
    }
    for (int i = 0; i < n; i++) {
        qmp_listener_add(fds[i], addr->path);
    }
    return true;
}

/* Give a departing client a moment to take its last replies. */
static void qmp_client_drain(QmpClient *c, gint64 deadline)
{
    while (!c->dead && c->out_off < c->outbuf->len) {
        struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };
        gint64 left = deadline - g_get_monotonic_time();

        if (left <= 0 || poll(&pfd, 1, left / 1000 + 1) <= 0) {
            return;
        }
        if (!qmp_client_flush(c)) {
            return;
        }
    }
}

static gboolean qmp_event_flush(gpointer opaque);

void qmp_server_shutdown(void)
{
    gint64 deadline = g_get_monotonic_time() + G_USEC_PER_SEC / 2;

    if (!qmp_listeners) {
        return;
    }
    qmp_event_flush(NULL);
    for (guint i = 0; i < qmp_listeners->len; i++) {
        QmpListener *l = g_ptr_array_index(qmp_listeners, i);

        g_source_remove(l->watch);
        close(l->fd);
        if (l->unix_path) {
            unlink(l->unix_path);
        }
        g_free(l->unix_path);
        g_free(l);
    }
    g_ptr_array_free(qmp_listeners, TRUE);
    qmp_listeners = NULL;
    for (guint i = 0; i < qmp_clients->len; i++) {
        QmpClient *c = g_ptr_array_index(qmp_clients, i);

        qmp_client_drain(c, deadline);
        qmp_client_close(c);
    }
    if (qmp_reaper) {
        g_source_remove(qmp_reaper);
    }
    qmp_reap_clients(NULL);
    g_ptr_array_free(qmp_clients, TRUE);
    qmp_clients = NULL;
    qmp_named_fds_clear();
}

/* ---- events ------------------------------------------------------------ */

/* Runs in the main loop: hand every queued event to negotiated clients. */
static gboolean qmp_event_flush(gpointer opaque)
{
    GQueue lines = G_QUEUE_INIT;
    char *text;

    qemu_mutex_lock(&qmp_event_lock);
    lines = qmp_event_queue;
    g_queue_init(&qmp_event_queue);
    if (qmp_event_source) {
        g_source_destroy(qmp_event_source);
        g_source_unref(qmp_event_source);
        qmp_event_source = NULL;
    }
    qemu_mutex_unlock(&qmp_event_lock);

    while ((text = g_queue_pop_head(&lines))) {
        GString line = { .str = text, .len = strlen(text) };

        for (guint i = 0; qmp_clients && i < qmp_clients->len; i++) {
            QmpClient *c = g_ptr_array_index(qmp_clients, i);

            if (c->negotiated) {
                qmp_client_send_line(c, &line);
            }
        }
        g_free(text);
    }
    return G_SOURCE_REMOVE;
}

void qmp_event_emit(const char *event, JsonObject *data)
{
    gint64 now = g_get_real_time();
    GString *line = g_string_new(NULL);

    g_string_printf(line, "{\"timestamp\": {\"seconds\": %" PRId64 ", "
                    "\"microseconds\": %" PRId64 "}, \"event\": ",
                    now / G_USEC_PER_SEC, now % G_USEC_PER_SEC);
    json_append_string(line, event);
    if (data) {
        g_string_append(line, ", \"data\": ");
        json_append_object(line, data);
        json_object_unref(data);
    }
    g_string_append(line, "}\r\n");

    qemu_mutex_lock(&qmp_event_lock);
    g_queue_push_tail(&qmp_event_queue, g_string_free(line, FALSE));
    if (!qmp_event_source) {
        qmp_event_source = g_idle_source_new();
        g_source_set_callback(qmp_event_source, qmp_event_flush, NULL, NULL);
        g_source_attach(qmp_event_source, NULL);
    }
    qemu_mutex_unlock(&qmp_event_lock);

    /*
     * In the main loop (a command handler stopping the VM), deliver now so
     * that the event precedes the command's reply, as in QEMU.
     */
    if (g_main_context_is_owner(g_main_context_default())) {
        qmp_event_flush(NULL);
    }
}

/* ---- argument helpers -------------------------------------------------- */

static JsonNode *qmp_arg_get(JsonObject *args, const char *name,
                             bool required, GError **errp)
{
    JsonNode *node = args ? json_object_get_member(args, name) : NULL;

    if (!node && required) {
        error_setg(errp, "Parameter '%s' is missing", name);
    }
    return node;
}

/* A missing member: an error if it was required, else nothing to do. */
static bool qmp_arg_absent(GError *err, GError **errp)
{
    if (err) {
        g_propagate_error(errp, err);
        return false;
    }
    return true;
}

static bool qmp_arg_type_error(const char *name, const char *type,
                               GError **errp)
{
    error_setg(errp, "Invalid parameter type for '%s', expected: %s", name,
               type);
    return false;
}

static bool qmp_node_is(JsonNode *node, GType type)
{
    return JSON_NODE_HOLDS_VALUE(node) &&
           json_node_get_value_type(node) == type;
}

bool qmp_arg_str(JsonObject *args, const char *name, bool required,
                 const char **out, GError **errp)
{
    GError *err = NULL;
    JsonNode *node = qmp_arg_get(args, name, required, &err);

    if (!node) {
        return qmp_arg_absent(err, errp);
    }
    if (!qmp_node_is(node, G_TYPE_STRING)) {
        return qmp_arg_type_error(name, "string", errp);
    }
    *out = json_node_get_string(node);
    return true;
}

bool qmp_arg_int(JsonObject *args, const char *name, bool required,
                 int64_t *out, GError **errp)
{
    GError *err = NULL;
    JsonNode *node = qmp_arg_get(args, name, required, &err);

    if (!node) {
        return qmp_arg_absent(err, errp);
    }
    if (!qmp_node_is(node, G_TYPE_INT64)) {
        return qmp_arg_type_error(name, "integer", errp);
    }
    *out = json_node_get_int(node);
    return true;
}

bool qmp_arg_uint(JsonObject *args, const char *name, bool required,
                  uint64_t *out, GError **errp)
{
    GError *err = NULL;
    JsonNode *node = qmp_arg_get(args, name, required, &err);

    if (!node) {
        return qmp_arg_absent(err, errp);
    }
    if (!qmp_node_is(node, G_TYPE_INT64) || json_node_get_int(node) < 0) {
        return qmp_arg_type_error(name, "uint64", errp);
    }
    *out = json_node_get_int(node);
    return true;
}

bool qmp_arg_bool(JsonObject *args, const char *name, bool required,
                  bool *out, GError **errp)
{
    GError *err = NULL;
    JsonNode *node = qmp_arg_get(args, name, required, &err);

    if (!node) {
        return qmp_arg_absent(err, errp);
    }
    if (!qmp_node_is(node, G_TYPE_BOOLEAN)) {
        return qmp_arg_type_error(name, "boolean", errp);
    }
    *out = json_node_get_boolean(node);
    return true;
}

bool qmp_args_check_known(JsonObject *args, const char *const *known,
                          GError **errp)
{
    g_autoptr(GList) members = args ? json_object_get_members(args) : NULL;

    for (GList *l = members; l; l = l->next) {
        const char *const *k = known;

        while (*k && strcmp(*k, l->data)) {
            k++;
        }
        if (!*k) {
            error_setg(errp, "Parameter '%s' is unexpected",
                       (const char *)l->data);
            return false;
        }
    }
    return true;
}

/* ---- protocol commands ------------------------------------------------- */

static bool qmp_cmd_capabilities(JsonObject *args, JsonNode **ret,
                                 GError **errp)
{
    static const char *const known[] = { "enable", NULL };
    QmpClient *c = qmp_cur_client;
    JsonNode *enable;
    JsonArray *caps;
    bool oob = false;

    if (!c || c->negotiated) {
        g_set_error(errp, FERRY_ERROR, ERROR_CLASS_COMMAND_NOT_FOUND,
                    "Capabilities negotiation is already complete, command "
                    "ignored");
        return false;
    }
    if (!qmp_args_check_known(args, known, errp)) {
        return false;
    }
    enable = json_object_get_member(args, "enable");
    if (enable) {
        if (!JSON_NODE_HOLDS_ARRAY(enable)) {
            return qmp_arg_type_error("enable", "array", errp);
        }
        caps = json_node_get_array(enable);
        for (guint i = 0; i < json_array_get_length(caps); i++) {
            JsonNode *cap = json_array_get_element(caps, i);

            if (!qmp_node_is(cap, G_TYPE_STRING)) {
                error_setg(errp, "Invalid parameter type for 'enable[%u]', "
                           "expected: string", i);
                return false;
            }
            if (strcmp(json_node_get_string(cap), "oob")) {
                error_setg(errp, "Parameter 'enable[%u]' does not accept "
                           "value '%s'", i, json_node_get_string(cap));
                return false;
            }
            oob = true;
        }
    }
    c->negotiated = true;
    c->oob_enabled = oob;
    return true;
}

static bool qmp_cmd_query_version(JsonObject *args, JsonNode **ret,
                                  GError **errp)
{
    JsonObject *qemu = json_object_new();
    JsonObject *res = json_object_new();

    if (!qmp_args_check_known(args, (const char *const[]){ NULL }, errp)) {
        json_object_unref(qemu);
        json_object_unref(res);
        return false;
    }
    json_object_set_int_member(qemu, "micro", QMP_VERSION_MICRO);
    json_object_set_int_member(qemu, "minor", QMP_VERSION_MINOR);
    json_object_set_int_member(qemu, "major", QMP_VERSION_MAJOR);
    json_object_set_object_member(res, "qemu", qemu);
    json_object_set_string_member(res, "package", QMP_PACKAGE);
    *ret = json_node_init_object(json_node_alloc(), res);
    json_object_unref(res);
    return true;
}

static gint qmp_strcmp(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool qmp_cmd_query_commands(JsonObject *args, JsonNode **ret,
                                   GError **errp)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new();
    JsonArray *list = json_array_new();
    GHashTableIter it;
    gpointer key;

    g_hash_table_iter_init(&it, qmp_commands);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        g_ptr_array_add(names, key);
    }
    g_ptr_array_sort(names, qmp_strcmp);
    for (guint i = 0; i < names->len; i++) {
        JsonObject *o = json_object_new();

        json_object_set_string_member(o, "name", g_ptr_array_index(names, i));
        json_array_add_object_element(list, o);
    }
    *ret = json_node_init_array(json_node_alloc(), list);
    json_array_unref(list);
    return true;
}

/* ---- named descriptors (getfd, closefd, fd: URIs) ---------------------- */

/* Names the client owner keeps in the table; the caller holds the lock. */
static unsigned qmp_named_fds_owned(uint64_t owner)
{
    GHashTableIter it;
    gpointer val;
    unsigned n = 0;

    g_hash_table_iter_init(&it, qmp_named_fds);
    while (g_hash_table_iter_next(&it, NULL, &val)) {
        n += ((QmpNamedFd *)val)->owner == owner;
    }
    return n;
}

/*
 * Store fd under name for client owner, closing the one it replaces.
 * Takes ownership of fd: closes it when the limits refuse it.
 */
static bool qmp_named_fd_set(uint64_t owner, const char *name, int fd,
                             GError **errp)
{
    QmpNamedFd *old, *nfd;
    unsigned owned;
    bool ok = false;

    qemu_mutex_lock(&qmp_named_fds_lock);
    if (!qmp_named_fds) {
        qmp_named_fds = g_hash_table_new_full(g_str_hash, g_str_equal,
                                              g_free, g_free);
    }
    old = g_hash_table_lookup(qmp_named_fds, name);
    /* Replacing one of its own names costs the client nothing. */
    if (!old || old->owner != owner) {
        owned = qmp_named_fds_owned(owner);
        if (owned >= QMP_MAX_CLIENT_NAMED_FDS) {
            error_setg(errp, "This QMP client already holds %u named file "
                       "descriptors, the limit per client is %d: close "
                       "some with closefd", owned,
                       QMP_MAX_CLIENT_NAMED_FDS);
            goto out;
        }
        if (!old && g_hash_table_size(qmp_named_fds) >= QMP_MAX_NAMED_FDS) {
            error_setg(errp, "%u named file descriptors are held, the limit "
                       "for all QMP clients is %d: close some with closefd",
                       g_hash_table_size(qmp_named_fds), QMP_MAX_NAMED_FDS);
            goto out;
        }
    }
    nfd = g_new(QmpNamedFd, 1);
    nfd->fd = fd;
    nfd->owner = owner;
    if (old) {
        close(old->fd);
    }
    g_hash_table_insert(qmp_named_fds, g_strdup(name), nfd);
    fd = -1;
    ok = true;
out:
    qemu_mutex_unlock(&qmp_named_fds_lock);
    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

/* Remove name from the table: its fd (now the caller's), or -1. */
static int qmp_named_fd_take(const char *name)
{
    QmpNamedFd *nfd;
    int fd = -1;

    qemu_mutex_lock(&qmp_named_fds_lock);
    nfd = qmp_named_fds ? g_hash_table_lookup(qmp_named_fds, name) : NULL;
    if (nfd) {
        fd = nfd->fd;
        g_hash_table_remove(qmp_named_fds, name);
    }
    qemu_mutex_unlock(&qmp_named_fds_lock);
    return fd;
}

static void qmp_named_fds_clear(void)
{
    GHashTableIter it;
    gpointer val;

    qemu_mutex_lock(&qmp_named_fds_lock);
    if (qmp_named_fds) {
        g_hash_table_iter_init(&it, qmp_named_fds);
        while (g_hash_table_iter_next(&it, NULL, &val)) {
            close(((QmpNamedFd *)val)->fd);
        }
        g_clear_pointer(&qmp_named_fds, g_hash_table_destroy);
    }
    qemu_mutex_unlock(&qmp_named_fds_lock);
}

/* The fd: migration transport takes the descriptor, as in QEMU. */
int monitor_get_fd(const char *name)
{
    int fd = qmp_named_fd_take(name);

    if (fd < 0) {
        errno = ENOENT;
    }
    return fd;
}

static bool qmp_arg_fdname(JsonObject *args, const char **name,
                           GError **errp)
{
    static const char *const known[] = { "fdname", NULL };

    return qmp_args_check_known(args, known, errp) &&
           qmp_arg_str(args, "fdname", true, name, errp);
}

static bool qmp_cmd_getfd(JsonObject *args, JsonNode **ret, GError **errp)
{
    const char *name;
    int fd;

    if (!qmp_arg_fdname(args, &name, errp)) {
        return false;
    }
    /* Digits are how fd: URIs name an inherited descriptor by number. */
    if (g_ascii_isdigit(name[0])) {
        error_setg(errp, "Parameter 'fdname' expects a name not starting "
                   "with a digit");
        return false;
    }
    fd = qmp_client_take_fd(qmp_cur_client);
    if (fd < 0) {
        error_setg(errp, "No file descriptor supplied via SCM_RIGHTS");
        return false;
    }
    return qmp_named_fd_set(qmp_cur_client->id, name, fd, errp);
}

static bool qmp_cmd_closefd(JsonObject *args, JsonNode **ret, GError **errp)
{
    const char *name;
    int fd;

    if (!qmp_arg_fdname(args, &name, errp)) {
        return false;
    }
    fd = qmp_named_fd_take(name);
    if (fd < 0) {
        error_setg(errp, "File descriptor named '%s' not found", name);
        return false;
    }
    close(fd);
    return true;
}

static void qmp_register_protocol_commands(void)
{
    qmp_register_command("qmp_capabilities", qmp_cmd_capabilities);
    qmp_register_command("query-version", qmp_cmd_query_version);
    qmp_register_command("query-commands", qmp_cmd_query_commands);
    qmp_register_command("getfd", qmp_cmd_getfd);
    qmp_register_command("closefd", qmp_cmd_closefd);
}

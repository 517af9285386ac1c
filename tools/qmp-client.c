/*
 * Blocking QMP client used by ferry-migrate.
 *
 * Messages are newline-delimited JSON objects.  Every read goes through
 * poll() with a deadline, so a hung peer turns into an error rather than a
 * hung tool.
 */
#include "qemu/osdep.h"
#include <poll.h>
#include <sys/socket.h>
#include "qemu/sockets.h"
#include "qmp-client.h"

/* A QMP message line larger than this is taken as a broken peer. */
#define QMPC_MAX_LINE (16 * 1024 * 1024)

struct QmpClient {
    int fd;
    char *name;
    char *addr;
    GString *inbuf;
    GQueue events;
};

/*
 * "unix:PATH", a bare path or "tcp:HOST:PORT"; the server's spelling
 * "unix:P,server=on,wait=off" is tolerated (its options ignored).
 */
static SocketAddress *parse_addr(const char *addr, GError **errp)
{
    SocketAddress *sa = socket_address_parse(
        addr, SOCKET_PARSE_BARE_PATH | SOCKET_PARSE_IGNORE_OPTIONS, errp);

    /* unlike a migration URI, a QMP client never means "localhost" */
    if (sa && sa->type == SOCKET_ADDRESS_TYPE_INET && !*sa->host) {
        error_setg(errp, "QMP address '%s' must be tcp:HOST:PORT", addr);
        socket_address_free(sa);
        return NULL;
    }
    return sa;
}

/* Connect, waiting up to the deadline for a server that is not up yet. */
static int connect_retry(const char *addr, const SocketAddress *sa,
                         const char *name, gint64 deadline, GError **errp)
{
    g_autoptr(GError) local = NULL;
    int fd, err;

    for (;;) {
        g_clear_error(&local);
        fd = socket_connect(sa, &local);
        if (fd >= 0) {
            return fd;
        }
        err = errno;
        /* Only "not there yet" is worth waiting for. */
        if ((err != ENOENT && err != ECONNREFUSED) ||
            g_get_monotonic_time() >= deadline) {
            break;
        }
        g_usleep(50 * 1000);
    }
    if (err) {
        error_setg(errp, "cannot connect to %s QMP at %s: %s", name, addr,
                   g_strerror(err));
    } else {
        g_propagate_prefixed_error(errp, g_steal_pointer(&local),
                                   "cannot connect to %s QMP at %s: ", name,
                                   addr);
    }
    return -1;
}

/* Pull one line out of the input buffer, or NULL if none is complete. */
static char *take_line(QmpClient *c)
{
    char *nl = memchr(c->inbuf->str, '\n', c->inbuf->len);
    char *line;

    if (!nl) {
        return NULL;
    }
    line = g_strndup(c->inbuf->str, nl - c->inbuf->str);
    g_string_erase(c->inbuf, 0, nl - c->inbuf->str + 1);
    return g_strstrip(line);
}

/* Read more bytes; false on timeout (errp unset) or error (errp set). */
static bool fill(QmpClient *c, int timeout_ms, GError **errp)
{
    struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
    char buf[65536];
    ssize_t n;
    int rc;

    do {
        rc = poll(&pfd, 1, timeout_ms);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        error_setg_errno(errp, errno, "%s QMP: poll failed", c->name);
        return false;
    }
    if (rc == 0) {
        return false;
    }
    do {
        n = read(c->fd, buf, sizeof(buf));
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        error_setg_errno(errp, errno, "%s QMP at %s: read failed", c->name,
                         c->addr);
        return false;
    }
    if (n == 0) {
        error_setg(errp, "%s QMP at %s: connection closed by the peer",
                   c->name, c->addr);
        return false;
    }
    if (c->inbuf->len + n > QMPC_MAX_LINE) {
        error_setg(errp, "%s QMP: message too long", c->name);
        return false;
    }
    g_string_append_len(c->inbuf, buf, n);
    return true;
}

/*
 * Next message as an object, waiting up to timeout_ms (-1: forever).
 * Returns NULL on timeout (errp unset) or error (errp set).
 */
static JsonObject *next_message(QmpClient *c, int timeout_ms, GError **errp)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

    for (;;) {
        g_autofree char *line = take_line(c);
        GError *local = NULL;

        if (line) {
            g_autoptr(JsonParser) p = NULL;
            JsonNode *root;

            if (!*line) {
                continue;
            }
            p = json_parser_new();
            if (!json_parser_load_from_data(p, line, -1, &local)) {
                error_setg(errp, "%s QMP: bad JSON from peer: %s", c->name,
                           local->message);
                g_error_free(local);
                return NULL;
            }
            root = json_parser_get_root(p);
            if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
                error_setg(errp, "%s QMP: message is not a JSON object",
                           c->name);
                return NULL;
            }
            return json_object_ref(json_node_get_object(root));
        }
        int left = timeout_ms < 0 ? -1 :
            (int)MAX(0, (deadline - g_get_monotonic_time()) / 1000);
        if (!fill(c, left, &local)) {
            if (local) {
                g_propagate_error(errp, local);
            }
            return NULL;
        }
    }
}

QmpClient *qmpc_connect(const char *addr, const char *name, int timeout_ms,
                        GError **errp)
{
    g_autoptr(SocketAddress) sa = NULL;
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    QmpClient *c;
    JsonObject *greeting;
    int fd;

    sa = parse_addr(addr, errp);
    if (!sa) {
        g_prefix_error(errp, "%s: ", name);
        return NULL;
    }
    fd = connect_retry(addr, sa, name, deadline, errp);
    if (fd < 0) {
        return NULL;
    }

    c = g_new0(QmpClient, 1);
    c->fd = fd;
    c->name = g_strdup(name);
    c->addr = g_strdup(addr);
    c->inbuf = g_string_new(NULL);
    g_queue_init(&c->events);

    greeting = next_message(c, 10000, errp);
    if (!greeting) {
        if (errp && !*errp) {
            error_setg(errp, "%s QMP at %s: no greeting within 10 s", name,
                       addr);
        }
        goto fail;
    }
    if (!json_object_has_member(greeting, "QMP")) {
        json_object_unref(greeting);
        error_setg(errp, "%s at %s does not speak QMP (bad greeting)", name,
                   addr);
        goto fail;
    }
    json_object_unref(greeting);
    if (!qmpc_execute(c, "qmp_capabilities", NULL, NULL, errp)) {
        g_prefix_error(errp, "%s QMP at %s: ", name, addr);
        goto fail;
    }
    return c;

fail:
    qmpc_free(c);
    return NULL;
}

void qmpc_free(QmpClient *c)
{
    JsonObject *ev;

    if (!c) {
        return;
    }
    while ((ev = g_queue_pop_head(&c->events))) {
        json_object_unref(ev);
    }
    close(c->fd);
    g_string_free(c->inbuf, TRUE);
    g_free(c->name);
    g_free(c->addr);
    g_free(c);
}

static bool send_command(QmpClient *c, const char *cmd, JsonObject *args,
                         GError **errp)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    g_autoptr(JsonGenerator) gen = json_generator_new();
    g_autoptr(JsonNode) root = NULL;
    g_autofree char *text = NULL;
    size_t off = 0, len;

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "execute");
    json_builder_add_string_value(b, cmd);
    if (args) {
        JsonNode *n = json_node_new(JSON_NODE_OBJECT);
        json_node_set_object(n, args);
        json_builder_set_member_name(b, "arguments");
        json_builder_add_value(b, n);
    }
    json_builder_end_object(b);
    root = json_builder_get_root(b);
    json_generator_set_root(gen, root);
    text = json_generator_to_data(gen, NULL);
    len = strlen(text);
    text[len++] = '\n';     /* replaces the NUL; we send by length */
    while (off < len) {
        ssize_t n = send(c->fd, text + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            error_setg_errno(errp, errno, "%s QMP: cannot send '%s'", c->name,
                             cmd);
            return false;
        }
        off += n;
    }
    return true;
}

bool qmpc_execute(QmpClient *c, const char *cmd, JsonObject *args,
                  JsonNode **ret, GError **errp)
{
    if (!send_command(c, cmd, args, errp)) {
        return false;
    }
    for (;;) {
        GError *local = NULL;
        JsonObject *msg = next_message(c, 60000, &local);

        if (!msg) {
            if (!local) {
                error_setg(errp, "%s QMP: no reply to '%s' within 60 s",
                           c->name, cmd);
            } else {
                g_propagate_error(errp, local);
            }
            return false;
        }
        if (json_object_has_member(msg, "event")) {
            g_queue_push_tail(&c->events, msg);
            continue;
        }
        if (json_object_has_member(msg, "error")) {
            JsonObject *e = json_object_get_object_member(msg, "error");
            const char *desc = e && json_object_has_member(e, "desc") ?
                json_object_get_string_member(e, "desc") : NULL;
            error_setg(errp, "%s", desc ? desc : "unknown QMP error");
            json_object_unref(msg);
            return false;
        }
        if (ret) {
            JsonNode *r = json_object_get_member(msg, "return");
            *ret = r ? json_node_copy(r) : json_node_new(JSON_NODE_NULL);
        }
        json_object_unref(msg);
        return true;
    }
}

JsonObject *qmpc_execute_obj(QmpClient *c, const char *cmd, JsonObject *args,
                             GError **errp)
{
    g_autoptr(JsonNode) ret = NULL;

    if (!qmpc_execute(c, cmd, args, &ret, errp)) {
        return NULL;
    }
    if (!JSON_NODE_HOLDS_OBJECT(ret)) {
        error_setg(errp, "%s QMP: '%s' did not return an object", c->name,
                   cmd);
        return NULL;
    }
    return json_object_ref(json_node_get_object(ret));
}

bool qmpc_pump(QmpClient *c, int timeout_ms, GError **errp)
{
    for (;;) {
        GError *local = NULL;
        JsonObject *msg = next_message(c, timeout_ms, &local);

        if (!msg) {
            if (local) {
                g_propagate_error(errp, local);
                return false;
            }
            return true;
        }
        /* A stray reply cannot happen without a command; keep events. */
        if (json_object_has_member(msg, "event")) {
            g_queue_push_tail(&c->events, msg);
        } else {
            json_object_unref(msg);
        }
        timeout_ms = 0;
    }
}

JsonObject *qmpc_pop_event(QmpClient *c)
{
    return g_queue_pop_head(&c->events);
}

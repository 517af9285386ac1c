/*
 * QMP server tests: real sockets, the server driven by the default main
 * context of this thread; the test's clients are non-blocking sockets that
 * iterate the context while they wait.
 */
#include "qemu/osdep.h"
#include "monitor/qmp.h"
#include "migration/channel.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#define WAIT_MS 5000

typedef struct TestClient {
    int fd;
    GString *buf;
    bool eof;
} TestClient;

static char *tmpdir;
static char *sock_path;

/* ---- fixture ---------------------------------------------------------- */

static void server_up(void)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *spec = NULL;

    tmpdir = g_dir_make_tmp("test-qmp-XXXXXX", &err);
    g_assert_no_error(err);
    sock_path = g_build_filename(tmpdir, "qmp.sock", NULL);
    spec = g_strdup_printf("unix:%s,server=on,wait=off", sock_path);
    g_assert_true(qmp_server_start(spec, &err));
    g_assert_no_error(err);
}

static void server_down(void)
{
    qmp_server_shutdown();
    /* The socket file must be gone, so rmdir succeeds. */
    g_assert_false(g_file_test(sock_path, G_FILE_TEST_EXISTS));
    g_assert_cmpint(rmdir(tmpdir), ==, 0);
    g_clear_pointer(&sock_path, g_free);
    g_clear_pointer(&tmpdir, g_free);
}

static void spin(int ms)
{
    gint64 end = g_get_monotonic_time() + ms * 1000;

    while (g_get_monotonic_time() < end) {
        g_main_context_iteration(NULL, FALSE);
        g_usleep(1000);
    }
}

/* ---- the test client -------------------------------------------------- */

static TestClient *tc_new_fd(int fd)
{
    TestClient *c = g_new0(TestClient, 1);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(fcntl(fd, F_SETFL, O_NONBLOCK), ==, 0);
    c->fd = fd;
    c->buf = g_string_new(NULL);
    return c;
}

static TestClient *tc_connect_raw(const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_strlcpy(sun.sun_path, path, sizeof(sun.sun_path));
    g_assert_cmpint(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), ==, 0);
    return tc_new_fd(fd);
}

static void tc_free(TestClient *c)
{
    close(c->fd);
    g_string_free(c->buf, TRUE);
    g_free(c);
}

/* Read what is there; true if something arrived. */
static bool tc_pump(TestClient *c)
{
    char chunk[65536];
    ssize_t n;
    bool got = false;

    g_main_context_iteration(NULL, FALSE);
    while ((n = recv(c->fd, chunk, sizeof(chunk), 0)) > 0) {
        g_string_append_len(c->buf, chunk, n);
        got = true;
    }
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
        c->eof = true;
    }
    return got;
}

/* Send everything, running the server while the socket is full. */
static void tc_send_len(TestClient *c, const char *data, size_t len)
{
    gint64 end = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;

    while (len) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EPIPE || errno == ECONNRESET) {
                return;         /* the server dropped us: callers check */
            }
            g_assert_cmpint(errno, ==, EAGAIN);
            g_assert_cmpint(g_get_monotonic_time(), <, end);
            tc_pump(c);
            g_usleep(100);
            continue;
        }
        data += n;
        len -= n;
    }
}

static void tc_send(TestClient *c, const char *text)
{
    tc_send_len(c, text, strlen(text));
}

/* Next raw line (without "\r\n"), or NULL on timeout/EOF. */
static char *tc_line(TestClient *c, int timeout_ms)
{
    gint64 end = g_get_monotonic_time() + timeout_ms * 1000;
    char *nl;

    while (!(nl = strstr(c->buf->str, "\n"))) {
        if (c->eof || g_get_monotonic_time() > end) {
            return NULL;
        }
        if (!tc_pump(c)) {
            struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

            poll(&pfd, 1, 1);
        }
    }
    {
        size_t len = nl - c->buf->str;
        char *line;

        /* Replies and events end in CRLF, as QEMU's do. */
        g_assert_cmpint(len, >, 0);
        g_assert_cmpint(c->buf->str[len - 1], ==, '\r');
        line = g_strndup(c->buf->str, len - 1);
        g_string_erase(c->buf, 0, len + 1);
        return line;
    }
}

static JsonNode *tc_recv(TestClient *c)
{
    g_autofree char *line = tc_line(c, WAIT_MS);
    g_autoptr(JsonParser) p = json_parser_new();
    g_autoptr(GError) err = NULL;

    g_assert_nonnull(line);
    g_assert_true(json_parser_load_from_data(p, line, -1, &err));
    g_assert_no_error(err);
    g_assert_true(JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)));
    return json_node_copy(json_parser_get_root(p));
}

/* Nothing may arrive within ms. */
static void tc_assert_silent(TestClient *c, int ms)
{
    g_autofree char *line = tc_line(c, ms);

    g_assert_null(line);
}

/* The server must close the connection. */
static void tc_assert_eof(TestClient *c)
{
    gint64 end = g_get_monotonic_time() + WAIT_MS * 1000;

    while (!c->eof) {
        g_assert_cmpint(g_get_monotonic_time(), <, end);
        tc_pump(c);
        g_usleep(500);
    }
}

static TestClient *tc_connect(bool negotiate)
{
    TestClient *c = tc_connect_raw(sock_path);
    g_autoptr(JsonNode) greeting = tc_recv(c);

    g_assert_true(json_object_has_member(json_node_get_object(greeting),
                                         "QMP"));
    if (negotiate) {
        g_autoptr(JsonNode) r = NULL;

        tc_send(c, "{\"execute\": \"qmp_capabilities\"}\n");
        r = tc_recv(c);
        g_assert_true(json_object_has_member(json_node_get_object(r),
                                             "return"));
    }
    return c;
}

/* Run one request, return the reply. */
static JsonNode *tc_cmd(TestClient *c, const char *json)
{
    tc_send(c, json);
    return tc_recv(c);
}

static JsonObject *reply_return(JsonNode *reply)
{
    JsonObject *o = json_node_get_object(reply);

    if (!json_object_has_member(o, "return")) {
        g_autofree char *s = json_to_string(reply, FALSE);
        g_error("expected a return, got %s", s);
    }
    return json_object_get_object_member(o, "return");
}

static void assert_error(JsonNode *reply, const char *cls, const char *desc)
{
    JsonObject *o = json_node_get_object(reply);
    JsonObject *err;

    if (!json_object_has_member(o, "error")) {
        g_autofree char *s = json_to_string(reply, FALSE);
        g_error("expected an error (%s), got %s", desc, s);
    }
    g_assert_false(json_object_has_member(o, "return"));
    err = json_object_get_object_member(o, "error");
    g_assert_cmpstr(json_object_get_string_member(err, "class"), ==, cls);
    if (g_str_has_suffix(desc, "*")) {
        g_autofree char *prefix = g_strndup(desc, strlen(desc) - 1);

        g_assert_true(g_str_has_prefix(
            json_object_get_string_member(err, "desc"), prefix));
    } else {
        g_assert_cmpstr(json_object_get_string_member(err, "desc"), ==, desc);
    }
}

static void cmd_expect_error(TestClient *c, const char *json, const char *cls,
                             const char *desc)
{
    g_autoptr(JsonNode) r = tc_cmd(c, json);

    assert_error(r, cls, desc);
}

/* ---- a fake command for the argument helpers -------------------------- */

static bool test_args_cmd(JsonObject *args, JsonNode **ret, GError **errp)
{
    static const char *const known[] = { "s", "i", "u", "b", NULL };
    const char *s = NULL;
    int64_t i = -7;
    uint64_t u = 7;
    bool b = false;
    JsonObject *res;

    if (!qmp_args_check_known(args, known, errp) ||
        !qmp_arg_str(args, "s", true, &s, errp) ||
        !qmp_arg_int(args, "i", false, &i, errp) ||
        !qmp_arg_uint(args, "u", false, &u, errp) ||
        !qmp_arg_bool(args, "b", false, &b, errp)) {
        return false;
    }
    if (!strcmp(s, "fail")) {
        g_set_error(errp, FERRY_ERROR, ERROR_CLASS_DEVICE_NOT_FOUND,
                    "asked to fail");
        return false;
    }
    res = json_object_new();
    json_object_set_string_member(res, "s", s);
    json_object_set_int_member(res, "i", i);
    json_object_set_int_member(res, "u", u);
    json_object_set_boolean_member(res, "b", b);
    *ret = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(*ret, res);
    return true;
}

/* ---- tests ------------------------------------------------------------ */

static void test_greeting(void)
{
    TestClient *c;
    g_autofree char *line = NULL;
    g_autoptr(JsonParser) p = json_parser_new();
    JsonObject *qmp, *ver, *qemu;
    JsonArray *caps;

    server_up();
    c = tc_connect_raw(sock_path);
    line = tc_line(c, WAIT_MS);
    g_assert_nonnull(line);
    g_assert_true(json_parser_load_from_data(p, line, -1, NULL));
    qmp = json_object_get_object_member(
        json_node_get_object(json_parser_get_root(p)), "QMP");
    g_assert_nonnull(qmp);
    ver = json_object_get_object_member(qmp, "version");
    qemu = json_object_get_object_member(ver, "qemu");
    g_assert_cmpint(json_object_get_int_member(qemu, "major"), ==, 7);
    g_assert_cmpint(json_object_get_int_member(qemu, "minor"), ==, 2);
    g_assert_cmpint(json_object_get_int_member(qemu, "micro"), ==, 0);
    g_assert_true(g_str_has_prefix(
        json_object_get_string_member(ver, "package"), "ferry"));
    caps = json_object_get_array_member(qmp, "capabilities");
    g_assert_cmpint(json_array_get_length(caps), ==, 1);
    g_assert_cmpstr(json_array_get_string_element(caps, 0), ==, "oob");
    /* Nothing else until the client speaks. */
    tc_assert_silent(c, 50);
    tc_free(c);
    server_down();
}

static void test_negotiation(void)
{
    TestClient *c;
    g_autoptr(JsonNode) r = NULL;

    server_up();
    c = tc_connect(false);
    cmd_expect_error(c, "{\"execute\": \"query-version\"}", "CommandNotFound",
                     "Expecting capabilities negotiation with "
                     "'qmp_capabilities'");
    cmd_expect_error(c, "{\"execute\": \"no-such\"}", "CommandNotFound",
                     "Expecting capabilities negotiation with "
                     "'qmp_capabilities'");
    cmd_expect_error(c, "{\"execute\": \"qmp_capabilities\", \"arguments\": "
                     "{\"enable\": [\"bogus\"]}}", "GenericError",
                     "Parameter 'enable[0]' does not accept value 'bogus'");
    r = tc_cmd(c, "{\"execute\": \"qmp_capabilities\"}");
    g_assert_cmpint(json_object_get_size(reply_return(r)), ==, 0);
    cmd_expect_error(c, "{\"execute\": \"qmp_capabilities\"}",
                     "CommandNotFound", "Capabilities negotiation is already "
                     "complete, command ignored");
    g_clear_pointer(&r, json_node_unref);
    r = tc_cmd(c, "{\"execute\": \"query-version\"}");
    g_assert_cmpint(json_object_get_int_member(
        json_object_get_object_member(reply_return(r), "qemu"), "major"),
        ==, 7);
    g_clear_pointer(&r, json_node_unref);
    r = tc_cmd(c, "{\"execute\": \"query-commands\"}");
    {
        JsonArray *list = json_object_get_array_member(
            json_node_get_object(r), "return");
        bool seen = false;

        for (guint i = 0; i < json_array_get_length(list); i++) {
            JsonObject *o = json_array_get_object_element(list, i);

            seen |= !strcmp(json_object_get_string_member(o, "name"),
                            "test-args");
        }
        g_assert_true(seen);
    }
    tc_free(c);
    server_down();
}

static void test_oob(void)
{
    TestClient *c;
    g_autoptr(JsonNode) r = NULL;

    server_up();
    c = tc_connect(true);
    cmd_expect_error(c, "{\"exec-oob\": \"query-version\"}", "GenericError",
                     "QMP input member 'exec-oob' is unexpected");
    tc_free(c);

    c = tc_connect(false);
    r = tc_cmd(c, "{\"execute\": \"qmp_capabilities\", \"arguments\": "
               "{\"enable\": [\"oob\"]}}");
    reply_return(r);
    cmd_expect_error(c, "{\"exec-oob\": \"query-version\"}", "GenericError",
                     "The command query-version does not support OOB");
    cmd_expect_error(c, "{\"exec-oob\": \"x\", \"execute\": \"x\"}",
                     "GenericError", "QMP input must not contain both "
                     "'execute' and 'exec-oob'");
    tc_free(c);
    server_down();
}

static void test_id_echo(void)
{
    TestClient *c;
    g_autoptr(JsonNode) r1 = NULL, r2 = NULL, r3 = NULL, r4 = NULL;
    JsonObject *id;

    server_up();
    c = tc_connect(true);
    r1 = tc_cmd(c, "{\"execute\": \"query-version\", \"id\": 42}");
    g_assert_cmpint(json_object_get_int_member(json_node_get_object(r1),
                                               "id"), ==, 42);
    r2 = tc_cmd(c, "{\"id\": \"abc\", \"execute\": \"query-version\"}");
    g_assert_cmpstr(json_object_get_string_member(json_node_get_object(r2),
                                                  "id"), ==, "abc");
    r3 = tc_cmd(c, "{\"execute\": \"query-version\", "
                "\"id\": {\"a\": [1, \"x\"]}}");
    id = json_object_get_object_member(json_node_get_object(r3), "id");
    g_assert_cmpint(json_array_get_int_element(
        json_object_get_array_member(id, "a"), 0), ==, 1);
    /* Errors carry the id too. */
    r4 = tc_cmd(c, "{\"execute\": \"nope\", \"id\": 5}");
    assert_error(r4, "CommandNotFound", "The command nope has not been found");
    g_assert_cmpint(json_object_get_int_member(json_node_get_object(r4),
                                               "id"), ==, 5);
    tc_free(c);
    server_down();
}

static void test_framing(void)
{
    TestClient *c;
    g_autoptr(JsonNode) r1 = NULL, r2 = NULL, r3 = NULL, r4 = NULL;
    g_autoptr(JsonNode) r5 = NULL;

    server_up();
    c = tc_connect(true);

    /* One request in three writes: no reply before the last piece. */
    tc_send(c, "  {\"execute\": \"test-a");
    tc_assert_silent(c, 30);
    tc_send(c, "rgs\", \"arguments\": {\"s\": \"}{\\\"");
    tc_assert_silent(c, 30);
    tc_send(c, "\"}, \"id\": 1}");
    r1 = tc_recv(c);
    g_assert_cmpstr(json_object_get_string_member(reply_return(r1), "s"),
                    ==, "}{\"");

    /* Two requests in one write, with no separator; replies in order. */
    tc_send(c, "{\"execute\": \"query-version\", \"id\": 2}"
            "{\"execute\": \"test-args\", \"arguments\": {\"s\": \"x\"}, "
            "\"id\": 3}\r\n");
    r2 = tc_recv(c);
    r3 = tc_recv(c);
    g_assert_cmpint(json_object_get_int_member(json_node_get_object(r2),
                                               "id"), ==, 2);
    g_assert_cmpint(json_object_get_int_member(json_node_get_object(r3),
                                               "id"), ==, 3);

    /* Single quotes and escaped quotes do not end a value early. */
    r4 = tc_cmd(c, "{'execute': 'test-args', 'arguments': "
                "{'s': 'a\"}'}}");
    g_assert_cmpstr(json_object_get_string_member(reply_return(r4), "s"),
                    ==, "a\"}");

    /* 0xff drops a half-sent request. */
    tc_send(c, "{\"execute\": \"nope\", \"arg");
    tc_send(c, "\xff");
    r5 = tc_cmd(c, "{\"execute\": \"query-version\", \"id\": 9}");
    g_assert_cmpint(json_object_get_int_member(json_node_get_object(r5),
                                               "id"), ==, 9);
    tc_assert_silent(c, 30);
    tc_free(c);
    server_down();
}

static void test_malformed(void)
{
    TestClient *c;
    g_autoptr(JsonNode) r = NULL, r2 = NULL;

    server_up();
    c = tc_connect(true);
    cmd_expect_error(c, "{\"execute\": }", "GenericError",
                     "JSON parse error, *");
    r = tc_cmd(c, "{\"execute\": \"query-version\", \"id\": 1}");
    reply_return(r);

    /* A run of garbage gives one error, then the session goes on. */
    cmd_expect_error(c, "]]]] garbage ,,,, ]\n", "GenericError",
                     "JSON parse error, *");
    r2 = tc_cmd(c, "{\"execute\": \"query-version\", \"id\": 2}");
    g_assert_cmpint(json_object_get_int_member(json_node_get_object(r2),
                                               "id"), ==, 2);
    cmd_expect_error(c, "tru {\"execute\": \"query-version\", \"id\": 3}",
                     "GenericError", "JSON parse error, *");
    g_clear_pointer(&r2, json_node_unref);
    r2 = tc_recv(c);
    g_assert_cmpint(json_object_get_int_member(json_node_get_object(r2),
                                               "id"), ==, 3);
    cmd_expect_error(c, "{\"a\": [1}\n", "GenericError",
                     "JSON parse error, *");

    /* Requests of the wrong shape. */
    cmd_expect_error(c, "[1, 2]", "GenericError",
                     "QMP input must be a JSON object");
    cmd_expect_error(c, "42 ", "GenericError",
                     "QMP input must be a JSON object");
    cmd_expect_error(c, "\"str\"", "GenericError",
                     "QMP input must be a JSON object");
    cmd_expect_error(c, "{\"arguments\": {}}", "GenericError",
                     "QMP input lacks member 'execute'");
    cmd_expect_error(c, "{\"execute\": \"query-version\", \"foo\": 1}",
                     "GenericError", "QMP input member 'foo' is unexpected");
    cmd_expect_error(c, "{\"execute\": \"query-version\", \"arguments\": 1}",
                     "GenericError",
                     "QMP input member 'arguments' must be an object");
    cmd_expect_error(c, "{\"execute\": 3}", "GenericError",
                     "QMP input member 'execute' must be a string");
    cmd_expect_error(c, "{\"execute\": \"foo\"}", "CommandNotFound",
                     "The command foo has not been found");
    tc_free(c);
    server_down();
}

static void test_arguments(void)
{
    TestClient *c;
    g_autoptr(JsonNode) r = NULL, r2 = NULL;
    JsonObject *ret;

    server_up();
    c = tc_connect(true);
    r = tc_cmd(c, "{\"execute\": \"test-args\", \"arguments\": {\"s\": "
               "\"h\\u00e9\\n\\u0001\\ud83d\\ude00\", \"i\": -5, "
               "\"u\": 9007199254740993, \"b\": true}}");
    ret = reply_return(r);
    g_assert_cmpstr(json_object_get_string_member(ret, "s"), ==,
                    "h\xc3\xa9\n\x01\xf0\x9f\x98\x80");
    g_assert_cmpint(json_object_get_int_member(ret, "i"), ==, -5);
    g_assert_cmpint(json_object_get_int_member(ret, "u"), ==,
                    9007199254740993LL);
    g_assert_true(json_object_get_boolean_member(ret, "b"));
    /* Optional members left out keep the caller's defaults. */
    r2 = tc_cmd(c, "{\"execute\": \"test-args\", \"arguments\": "
                "{\"s\": \"\"}}");
    g_assert_cmpint(json_object_get_int_member(reply_return(r2), "i"), ==, -7);
    g_assert_cmpint(json_object_get_int_member(reply_return(r2), "u"), ==, 7);

    cmd_expect_error(c, "{\"execute\": \"test-args\"}", "GenericError",
                     "Parameter 's' is missing");
    cmd_expect_error(c, "{\"execute\": \"test-args\", \"arguments\": "
                     "{\"s\": 1}}", "GenericError",
                     "Invalid parameter type for 's', expected: string");
    cmd_expect_error(c, "{\"execute\": \"test-args\", \"arguments\": "
                     "{\"s\": \"x\", \"i\": \"1\"}}", "GenericError",
                     "Invalid parameter type for 'i', expected: integer");
    cmd_expect_error(c, "{\"execute\": \"test-args\", \"arguments\": "
                     "{\"s\": \"x\", \"i\": 1.5}}", "GenericError",
                     "Invalid parameter type for 'i', expected: integer");
    cmd_expect_error(c, "{\"execute\": \"test-args\", \"arguments\": "
                     "{\"s\": \"x\", \"u\": -1}}", "GenericError",
                     "Invalid parameter type for 'u', expected: uint64");
    cmd_expect_error(c, "{\"execute\": \"test-args\", \"arguments\": "
                     "{\"s\": \"x\", \"b\": 1}}", "GenericError",
                     "Invalid parameter type for 'b', expected: boolean");
    cmd_expect_error(c, "{\"execute\": \"test-args\", \"arguments\": "
                     "{\"s\": \"x\", \"zz\": 1}}", "GenericError",
                     "Parameter 'zz' is unexpected");
    /* The handler's error class reaches the client. */
    cmd_expect_error(c, "{\"execute\": \"test-args\", \"arguments\": "
                     "{\"s\": \"fail\"}}", "DeviceNotFound", "asked to fail");
    tc_free(c);
    server_down();
}

static void test_two_clients(void)
{
    TestClient *a, *b;
    g_autoptr(JsonNode) ra = NULL, rb = NULL;

    server_up();
    a = tc_connect(true);
    b = tc_connect(false);
    /* b's state is its own: still not negotiated. */
    cmd_expect_error(b, "{\"execute\": \"query-version\"}", "CommandNotFound",
                     "Expecting capabilities negotiation with "
                     "'qmp_capabilities'");
    /* Interleave half requests. */
    tc_send(a, "{\"execute\": \"test-args\", \"id\": \"a\", ");
    tc_send(b, "{\"execute\": \"qmp_capabilities\", \"id\": \"b\"");
    tc_send(a, "\"arguments\": {\"s\": \"A\"}}");
    tc_send(b, "}");
    ra = tc_recv(a);
    rb = tc_recv(b);
    g_assert_cmpstr(json_object_get_string_member(reply_return(ra), "s"),
                    ==, "A");
    g_assert_cmpstr(json_object_get_string_member(json_node_get_object(rb),
                                                  "id"), ==, "b");
    reply_return(rb);
    tc_free(a);
    /* b carries on after a left. */
    g_clear_pointer(&rb, json_node_unref);
    rb = tc_cmd(b, "{\"execute\": \"query-version\"}");
    reply_return(rb);
    tc_free(b);
    server_down();
}

static gpointer emit_thread(gpointer opaque)
{
    JsonObject *data = json_object_new();

    json_object_set_int_member(data, "n", 1);
    qmp_event_emit("TEST_EVENT", data);
    qmp_event_emit("TEST_PLAIN", NULL);
    return NULL;
}

static void test_events(void)
{
    TestClient *a, *b;
    g_autoptr(JsonNode) e1 = NULL, e2 = NULL;
    JsonObject *o, *ts;
    gint64 before = g_get_real_time(), at;
    GThread *t;

    server_up();
    a = tc_connect(true);
    b = tc_connect(false);
    t = g_thread_new("emit", emit_thread, NULL);
    g_thread_join(t);

    e1 = tc_recv(a);
    o = json_node_get_object(e1);
    g_assert_cmpstr(json_object_get_string_member(o, "event"), ==,
                    "TEST_EVENT");
    g_assert_cmpint(json_object_get_int_member(
        json_object_get_object_member(o, "data"), "n"), ==, 1);
    ts = json_object_get_object_member(o, "timestamp");
    at = json_object_get_int_member(ts, "seconds") * G_USEC_PER_SEC +
         json_object_get_int_member(ts, "microseconds");
    g_assert_cmpint(json_object_get_int_member(ts, "microseconds"), <,
                    G_USEC_PER_SEC);
    g_assert_cmpint(at, >=, before);
    g_assert_cmpint(at, <=, g_get_real_time());

    e2 = tc_recv(a);
    o = json_node_get_object(e2);
    g_assert_cmpstr(json_object_get_string_member(o, "event"), ==,
                    "TEST_PLAIN");
    g_assert_false(json_object_has_member(o, "data"));
    g_assert_true(json_object_has_member(o, "timestamp"));

    /* Not negotiated, no events. */
    tc_assert_silent(b, 50);
    tc_free(a);
    tc_free(b);
    server_down();
}

static void test_limits(void)
{
    TestClient *c, *ok;
    g_autoptr(JsonNode) r = NULL, r2 = NULL;
    g_autofree char *deep = g_strnfill(2000, '[');
    size_t big_len = 11 * 1024 * 1024;
    g_autofree char *big = g_malloc(big_len);

    server_up();
    ok = tc_connect(true);

    /* Too deep: an error, then the connection is dropped. */
    c = tc_connect(true);
    tc_send(c, deep);
    r = tc_recv(c);
    assert_error(r, "GenericError", "JSON parse error, *");
    tc_assert_eof(c);
    tc_free(c);

    /* Too large, in one token. */
    memset(big, 'a', big_len);
    c = tc_connect(true);
    tc_send_len(c, big, big_len);
    tc_assert_eof(c);
    tc_free(c);

    /* Too large, inside an object. */
    big[0] = '{';
    big[1] = '"';
    c = tc_connect(true);
    tc_send_len(c, big, big_len);
    tc_assert_eof(c);
    tc_free(c);

    /* Gone in the middle of a request. */
    c = tc_connect(true);
    tc_send(c, "{\"execute\": \"query-ver");
    tc_free(c);
    spin(20);

    r2 = tc_cmd(ok, "{\"execute\": \"query-version\", \"id\": 1}");
    reply_return(r2);
    tc_free(ok);
    server_down();
}

/* A client that never reads its replies must not wedge the others. */
static void test_slow_reader(void)
{
    TestClient *lazy, *ok;
    g_autoptr(GString) burst = g_string_new(NULL);
    g_autoptr(JsonNode) r = NULL;
    struct pollfd pfd;
    size_t sent = 0;
    int round;

    server_up();
    lazy = tc_connect(true);
    ok = tc_connect(true);
    for (int i = 0; i < 1000; i++) {
        g_string_append(burst, "{\"execute\": \"query-commands\"}");
    }
    /* Keep sending until the server stops taking our requests. */
    for (round = 0; round < 2000; round++) {
        ssize_t n = send(lazy->fd, burst->str, burst->len, MSG_NOSIGNAL);

        if (n > 0) {
            sent += n;
        }
        g_main_context_iteration(NULL, FALSE);
        pfd = (struct pollfd){ .fd = lazy->fd, .events = POLLOUT };
        if (poll(&pfd, 1, 0) == 0 && round > 50) {
            break;
        }
    }
    /*
     * The server stopped reading once its output for us piled up, rather
     * than buffering replies without bound.
     */
    g_assert_cmpint(round, <, 2000);
    g_assert_cmpuint(sent, >, 0);
    g_assert_cmpuint(sent, <, 16 * 1024 * 1024);
    g_test_message("lazy client got %zu bytes in before the server paused",
                   sent);
    spin(50);
    r = tc_cmd(ok, "{\"execute\": \"query-version\", \"id\": 1}");
    reply_return(r);
    tc_free(lazy);
    spin(20);
    tc_free(ok);
    server_down();
}

static void test_specs(void)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *dir = g_dir_make_tmp("test-qmp-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "s.sock", NULL);
    g_autofree char *file = g_build_filename(dir, "plain", NULL);
    g_autofree char *spec = NULL;
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    TestClient *c;
    int fd;

    /* A stale socket file from a dead process is replaced. */
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    g_strlcpy(sun.sun_path, path, sizeof(sun.sun_path));
    g_assert_cmpint(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), ==, 0);
    close(fd);
    spec = g_strdup_printf("unix:%s,server,nowait", path);
    g_assert_true(qmp_server_start(spec, &err));
    g_assert_no_error(err);
    c = tc_connect_raw(path);
    tc_free(c);
    qmp_server_shutdown();
    g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));

    /* Never delete something that is not a socket. */
    g_assert_true(g_file_set_contents(file, "keep", -1, NULL));
    g_free(spec);
    spec = g_strdup_printf("unix:%s,server=on,wait=off", file);
    g_assert_false(qmp_server_start(spec, &err));
    g_assert_nonnull(strstr(err->message, "not a socket"));
    g_clear_error(&err);
    g_assert_true(g_file_test(file, G_FILE_TEST_IS_REGULAR));
    unlink(file);

    g_free(spec);
    spec = g_strdup_printf("unix:%s,server=on,wait=on", path);
    g_assert_false(qmp_server_start(spec, &err));
    g_assert_nonnull(strstr(err->message, "wait=on"));
    g_clear_error(&err);
    g_free(spec);
    spec = g_strdup_printf("unix:%s", path);
    g_assert_false(qmp_server_start(spec, &err));
    g_assert_nonnull(strstr(err->message, "server"));
    g_clear_error(&err);
    g_assert_false(qmp_server_start("stdio", &err));
    g_clear_error(&err);
    g_assert_false(qmp_server_start("", &err));
    g_clear_error(&err);
    g_assert_false(qmp_server_start("tcp:127.0.0.1,server=on,wait=off",
                                    &err));
    g_clear_error(&err);
    g_assert_false(qmp_server_start("unix:/x,server=on,telnet=on", &err));
    g_clear_error(&err);
    g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
    qmp_server_shutdown();
    g_assert_cmpint(rmdir(dir), ==, 0);
}

static int free_port(int family)
{
    struct sockaddr_storage ss = { .ss_family = family };
    socklen_t len = sizeof(ss);
    int fd = socket(family, SOCK_STREAM, 0), port;

    if (fd < 0 || bind(fd, (struct sockaddr *)&ss, family == AF_INET ?
                       sizeof(struct sockaddr_in) :
                       sizeof(struct sockaddr_in6)) < 0) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    getsockname(fd, (struct sockaddr *)&ss, &len);
    port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port :
                 ((struct sockaddr_in6 *)&ss)->sin6_port);
    close(fd);
    return port;
}

static void tcp_roundtrip(int family, const char *host, const char *connect_to)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *spec = NULL;
    struct sockaddr_storage ss = { .ss_family = family };
    int port = free_port(family), fd;
    TestClient *c;
    g_autoptr(JsonNode) greeting = NULL, r = NULL;

    if (port < 0) {
        g_test_message("no %s: skipped", host);
        return;
    }
    spec = g_strdup_printf("tcp:%s:%d,server=on,wait=off", host, port);
    g_assert_true(qmp_server_start(spec, &err));
    g_assert_no_error(err);
    fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

        sin->sin_port = htons(port);
        inet_pton(AF_INET, connect_to, &sin->sin_addr);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

        sin6->sin6_port = htons(port);
        inet_pton(AF_INET6, connect_to, &sin6->sin6_addr);
    }
    g_assert_cmpint(connect(fd, (struct sockaddr *)&ss, sizeof(ss)), ==, 0);
    c = tc_new_fd(fd);
    greeting = tc_recv(c);
    g_assert_true(json_object_has_member(json_node_get_object(greeting),
                                         "QMP"));
    tc_send(c, "{\"execute\": \"qmp_capabilities\"}");
    r = tc_recv(c);
    reply_return(r);
    tc_free(c);
    qmp_server_shutdown();
}

static void test_tcp(void)
{
    tcp_roundtrip(AF_INET, "127.0.0.1", "127.0.0.1");
    tcp_roundtrip(AF_INET, "", "127.0.0.1");
    tcp_roundtrip(AF_INET6, "[::1]", "::1");
}

/* ---- descriptor passing (getfd, closefd, fd: URIs) -------------------- */

/* Send text with the descriptors attached (SCM_RIGHTS), in one sendmsg. */
static void tc_send_fds(TestClient *c, const char *text, const int *fds,
                        int nfds)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * 32)];
    } ctl;
    struct iovec iov = { .iov_base = (void *)text, .iov_len = strlen(text) };
    struct msghdr msg = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = ctl.buf,
        .msg_controllen = CMSG_SPACE(sizeof(int) * nfds),
    };
    struct cmsghdr *cm;

    g_assert_cmpint(nfds, >, 0);
    g_assert_cmpint(nfds, <=, 32);
    memset(&ctl, 0, sizeof(ctl));
    cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    g_assert_cmpint(sendmsg(c->fd, &msg, MSG_NOSIGNAL), ==, iov.iov_len);
}

static int open_fd_count(void)
{
    g_autoptr(GDir) dir = g_dir_open("/proc/self/fd", 0, NULL);
    int n = 0;

    g_assert_nonnull(dir);
    while (g_dir_read_name(dir)) {
        n++;
    }
    return n;
}

/* A pipe whose read end does not block: EOF tells the writers are gone. */
static void test_pipe(int p[2])
{
    g_assert_cmpint(pipe2(p, O_CLOEXEC), ==, 0);
    g_assert_cmpint(fcntl(p[0], F_SETFL, O_NONBLOCK), ==, 0);
}

/* Our write end is closed: is the server's copy still open? */
static bool writer_alive(int rfd)
{
    char ch;
    ssize_t n = read(rfd, &ch, 1);

    g_assert_cmpint(n, <=, 0);
    if (n < 0) {
        g_assert_cmpint(errno, ==, EAGAIN);
    }
    return n < 0;
}

/* Pass p[1] to the server with a request, keeping only the read end. */
static JsonNode *cmd_with_pipe(TestClient *c, const char *json, int p[2])
{
    test_pipe(p);
    tc_send_fds(c, json, &p[1], 1);
    close(p[1]);
    p[1] = -1;
    return tc_recv(c);
}

static void test_getfd(void)
{
    TestClient *c;
    JsonNode *r;
    int p[2], q[2], fd, base;
    char ch = 0;

    server_up();
    c = tc_connect(true);
    base = open_fd_count();

    cmd_expect_error(c, "{\"execute\": \"getfd\", \"arguments\": "
                     "{\"fdname\": \"x\"}}", "GenericError",
                     "No file descriptor supplied via SCM_RIGHTS");
    cmd_expect_error(c, "{\"execute\": \"getfd\"}", "GenericError",
                     "Parameter 'fdname' is missing");
    cmd_expect_error(c, "{\"execute\": \"getfd\", \"arguments\": "
                     "{\"fdname\": 1}}", "GenericError",
                     "Invalid parameter type for 'fdname', expected: string");

    /* The fd the monitor keeps is our pipe, close-on-exec. */
    r = cmd_with_pipe(c, "{\"execute\": \"getfd\", \"arguments\": "
                      "{\"fdname\": \"pipe\"}}", p);
    reply_return(r);
    json_node_unref(r);
    g_assert_true(writer_alive(p[0]));
    fd = monitor_get_fd("pipe");
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(fcntl(fd, F_GETFD) & FD_CLOEXEC, ==, FD_CLOEXEC);
    g_assert_cmpint(write(fd, "z", 1), ==, 1);
    g_assert_cmpint(read(p[0], &ch, 1), ==, 1);
    g_assert_cmpint(ch, ==, 'z');
    /* Taken: the name is gone. */
    g_assert_cmpint(monitor_get_fd("pipe"), ==, -1);
    g_assert_cmpint(errno, ==, ENOENT);
    close(fd);
    g_assert_false(writer_alive(p[0]));
    close(p[0]);

    /* closefd closes it; a second time the name is unknown. */
    r = cmd_with_pipe(c, "{\"execute\": \"getfd\", \"arguments\": "
                      "{\"fdname\": \"a\"}}", p);
    reply_return(r);
    json_node_unref(r);
    g_assert_true(writer_alive(p[0]));
    r = tc_cmd(c, "{\"execute\": \"closefd\", \"arguments\": "
               "{\"fdname\": \"a\"}}");
    reply_return(r);
    json_node_unref(r);
    g_assert_false(writer_alive(p[0]));
    close(p[0]);
    cmd_expect_error(c, "{\"execute\": \"closefd\", \"arguments\": "
                     "{\"fdname\": \"a\"}}", "GenericError",
                     "File descriptor named 'a' not found");
    cmd_expect_error(c, "{\"execute\": \"closefd\", \"arguments\": "
                     "{\"fdname\": \"a\", \"x\": 1}}", "GenericError",
                     "Parameter 'x' is unexpected");

    /* The same name again replaces (and closes) the older fd. */
    r = cmd_with_pipe(c, "{\"execute\": \"getfd\", \"arguments\": "
                      "{\"fdname\": \"r\"}}", p);
    json_node_unref(r);
    r = cmd_with_pipe(c, "{\"execute\": \"getfd\", \"arguments\": "
                      "{\"fdname\": \"r\"}}", q);
    reply_return(r);
    json_node_unref(r);
    g_assert_false(writer_alive(p[0]));
    g_assert_true(writer_alive(q[0]));
    r = tc_cmd(c, "{\"execute\": \"closefd\", \"arguments\": "
               "{\"fdname\": \"r\"}}");
    reply_return(r);
    json_node_unref(r);
    g_assert_false(writer_alive(q[0]));
    close(p[0]);
    close(q[0]);

    /* A name starting with a digit is refused and its fd closed. */
    r = cmd_with_pipe(c, "{\"execute\": \"getfd\", \"arguments\": "
                      "{\"fdname\": \"1x\"}}", p);
    assert_error(r, "GenericError", "Parameter 'fdname' expects a name not "
                 "starting with a digit");
    json_node_unref(r);
    g_assert_false(writer_alive(p[0]));
    close(p[0]);

    /* A command that takes no fd closes the one sent with it... */
    r = cmd_with_pipe(c, "{\"execute\": \"query-version\"}\n", p);
    reply_return(r);
    json_node_unref(r);
    g_assert_false(writer_alive(p[0]));
    close(p[0]);
    /* ...so that it is not there for the next getfd. */
    cmd_expect_error(c, "{\"execute\": \"getfd\", \"arguments\": "
                     "{\"fdname\": \"x\"}}", "GenericError",
                     "No file descriptor supplied via SCM_RIGHTS");

    g_assert_cmpint(open_fd_count(), ==, base);
    tc_free(c);
    server_down();
}

/* Requests in one read: each fd goes to the request it was sent with. */
static void test_getfd_pipelined(void)
{
    TestClient *c;
    JsonNode *r;
    int p[2], q[2], fd, base;

    server_up();
    c = tc_connect(true);
    base = open_fd_count();

    /* Sent before the server reads: a plain request, then getfd + fd. */
    test_pipe(p);
    tc_send(c, "{\"execute\": \"query-version\", \"id\": 1}\n");
    tc_send_fds(c, "{\"execute\": \"getfd\", \"arguments\": "
                "{\"fdname\": \"late\"}, \"id\": 2}\n", &p[1], 1);
    close(p[1]);
    r = tc_recv(c);
    reply_return(r);
    json_node_unref(r);
    r = tc_recv(c);
    reply_return(r);
    json_node_unref(r);
    fd = monitor_get_fd("late");
    g_assert_cmpint(fd, >=, 0);
    close(fd);
    g_assert_false(writer_alive(p[0]));
    close(p[0]);

    /* getfd without one, then another request with one: not taken. */
    test_pipe(q);
    tc_send(c, "{\"execute\": \"getfd\", \"arguments\": "
            "{\"fdname\": \"early\"}}\n");
    tc_send_fds(c, "{\"execute\": \"query-version\"}\n", &q[1], 1);
    close(q[1]);
    r = tc_recv(c);
    assert_error(r, "GenericError",
                 "No file descriptor supplied via SCM_RIGHTS");
    json_node_unref(r);
    r = tc_recv(c);
    reply_return(r);
    json_node_unref(r);
    g_assert_false(writer_alive(q[0]));
    close(q[0]);
    g_assert_cmpint(monitor_get_fd("early"), ==, -1);

    /* Nor does one sent with garbage. */
    test_pipe(q);
    tc_send_fds(c, "]\n", &q[1], 1);
    close(q[1]);
    r = tc_recv(c);
    assert_error(r, "GenericError", "JSON parse error, stray closing bracket");
    json_node_unref(r);
    g_assert_false(writer_alive(q[0]));
    close(q[0]);
    cmd_expect_error(c, "{\"execute\": \"getfd\", \"arguments\": "
                     "{\"fdname\": \"x\"}}", "GenericError",
                     "No file descriptor supplied via SCM_RIGHTS");

    /* An fd sent with blanks only goes with the next request. */
    test_pipe(p);
    tc_send_fds(c, "\n", &p[1], 1);
    close(p[1]);
    spin(20);
    r = tc_cmd(c, "{\"execute\": \"getfd\", \"arguments\": "
               "{\"fdname\": \"blank\"}}");
    reply_return(r);
    json_node_unref(r);
    g_assert_true(writer_alive(p[0]));
    fd = monitor_get_fd("blank");
    g_assert_cmpint(fd, >=, 0);
    close(fd);
    close(p[0]);

    g_assert_cmpint(open_fd_count(), ==, base);
    tc_free(c);
    server_down();
}

/* A client holds at most 16 fds; leaving closes them; shutdown too. */
static void test_getfd_limits(void)
{
    TestClient *c, *c2;
    JsonNode *r;
    int p[2], q[2], many[20], base, held;

    server_up();
    c = tc_connect(true);
    base = open_fd_count();

    /* 20 fds with the first half of a getfd: the server keeps 16. */
    test_pipe(p);
    for (int i = 0; i < 20; i++) {
        many[i] = dup(p[1]);
        g_assert_cmpint(many[i], >=, 0);
    }
    close(p[1]);
    tc_send_fds(c, "{\"execute\": \"getfd\",", many, 20);
    for (int i = 0; i < 20; i++) {
        close(many[i]);
    }
    spin(50);
    held = open_fd_count() - base;
    g_assert_cmpint(held, ==, 1 + 16);         /* p[0] + what is held */
    tc_send(c, " \"arguments\": {\"fdname\": \"many\"}}");
    r = tc_recv(c);
    reply_return(r);
    json_node_unref(r);
    /* One kept under the name, the other 15 closed. */
    g_assert_cmpint(open_fd_count() - base, ==, 1 + 1);
    g_assert_true(writer_alive(p[0]));

    /* A client that leaves mid-request: its fds are closed. */
    c2 = tc_connect(true);
    test_pipe(q);
    tc_send_fds(c2, "{\"execute\": \"getfd\",", &q[1], 1);
    close(q[1]);
    spin(50);
    g_assert_true(writer_alive(q[0]));
    tc_free(c2);
    spin(50);
    g_assert_false(writer_alive(q[0]));
    close(q[0]);

    /* Shutdown closes the named ones. */
    tc_free(c);
    server_down();
    g_assert_false(writer_alive(p[0]));
    close(p[0]);
    g_assert_cmpint(monitor_get_fd("many"), ==, -1);
}

/* fd:NAME migration URIs take the descriptor from the table. */
static void test_getfd_migration_uri(void)
{
    g_autoptr(GError) err = NULL;
    QIOChannel *ioc = NULL;
    TestClient *c;
    JsonNode *r;
    int sp[2];
    char buf[4] = { 0 };

    server_up();
    c = tc_connect(true);
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp),
                    ==, 0);
    tc_send_fds(c, "{\"execute\": \"getfd\", \"arguments\": "
                "{\"fdname\": \"mig\"}}", &sp[1], 1);
    close(sp[1]);
    r = tc_recv(c);
    reply_return(r);
    json_node_unref(r);

    g_assert_true(migration_channel_connect("fd:mig", &ioc, &err));
    g_assert_no_error(err);
    g_assert_true(qio_channel_is_socket(ioc));
    g_assert_true(qio_channel_write_all(ioc, "abc", 3, &err));
    g_assert_no_error(err);
    g_assert_cmpint(read(sp[0], buf, 3), ==, 3);
    g_assert_cmpstr(buf, ==, "abc");
    qio_channel_unref(ioc);
    g_assert_cmpint(read(sp[0], buf, 1), ==, 0);      /* closed with it */
    close(sp[0]);

    /* Taken by the first use; closefd no longer knows it either. */
    g_assert_false(migration_channel_connect("fd:mig", &ioc, &err));
    g_assert_nonnull(err);
    g_assert_cmpstr(err->message, ==,
                    "File descriptor named 'mig' has not been found");
    g_assert_null(ioc);
    cmd_expect_error(c, "{\"execute\": \"closefd\", \"arguments\": "
                     "{\"fdname\": \"mig\"}}", "GenericError",
                     "File descriptor named 'mig' not found");
    tc_free(c);
    server_down();
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    qmp_register_command("test-args", test_args_cmd);

    g_test_add_func("/qmp/greeting", test_greeting);
    g_test_add_func("/qmp/negotiation", test_negotiation);
    g_test_add_func("/qmp/oob", test_oob);
    g_test_add_func("/qmp/id-echo", test_id_echo);
    g_test_add_func("/qmp/framing", test_framing);
    g_test_add_func("/qmp/malformed", test_malformed);
    g_test_add_func("/qmp/arguments", test_arguments);
    g_test_add_func("/qmp/two-clients", test_two_clients);
    g_test_add_func("/qmp/events", test_events);
    g_test_add_func("/qmp/limits", test_limits);
    g_test_add_func("/qmp/slow-reader", test_slow_reader);
    g_test_add_func("/qmp/specs", test_specs);
    g_test_add_func("/qmp/tcp", test_tcp);
    g_test_add_func("/qmp/getfd", test_getfd);
    g_test_add_func("/qmp/getfd-pipelined", test_getfd_pipelined);
    g_test_add_func("/qmp/getfd-limits", test_getfd_limits);
    g_test_add_func("/qmp/getfd-migration-uri", test_getfd_migration_uri);
    return g_test_run();
}

/*
 * Fuzz target: QMP input framing and dispatch.  Each input is what one
 * client sends on a fresh connection to a real QMP server (a unix socket
 * in a private directory); the main context is iterated until the server
 * has answered everything and closed the connection.
 *
 * Besides the protocol commands (qmp_capabilities, query-version,
 * query-commands) two test commands exercise the argument helpers.
 */
#include "qemu/osdep.h"
#include "monitor/qmp.h"
#include "fuzz.h"

#include <sys/socket.h>
#include <sys/un.h>

/* Iterations without progress before a connection counts as hung. */
#define FUZZ_QMP_IDLE_LIMIT 100000

static char *sock_dir;
static char *sock_path;

/* The server is never shut down: remove its socket and directory at exit. */
static void fuzz_qmp_cleanup(void)
{
    unlink(sock_path);
    rmdir(sock_dir);
}

static bool fuzz_cmd_args(JsonObject *args, JsonNode **ret, GError **errp)
{
    static const char *const known[] = { "s", "i", "u", "b", NULL };
    const char *s = "";
    int64_t i = 0;
    uint64_t u = 0;
    bool b = false;

    if (!qmp_args_check_known(args, known, errp) ||
        !qmp_arg_str(args, "s", true, &s, errp) ||
        !qmp_arg_int(args, "i", false, &i, errp) ||
        !qmp_arg_uint(args, "u", false, &u, errp) ||
        !qmp_arg_bool(args, "b", false, &b, errp)) {
        return false;
    }
    *ret = json_node_init_string(json_node_alloc(), s);
    return true;
}

static bool fuzz_cmd_event(JsonObject *args, JsonNode **ret, GError **errp)
{
    qmp_event_emit("FUZZ_EVENT", json_object_ref(args));
    return true;
}

static void fuzz_qmp_init(void)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *spec = NULL;

    if (sock_path) {
        return;
    }
    sock_dir = g_dir_make_tmp("fuzz-qmp-XXXXXX", &err);
    g_assert_no_error(err);
    sock_path = g_build_filename(sock_dir, "qmp.sock", NULL);
    atexit(fuzz_qmp_cleanup);
    spec = g_strdup_printf("unix:%s,server=on,wait=off", sock_path);
    qmp_register_command("x-fuzz-args", fuzz_cmd_args);
    qmp_register_command("x-fuzz-event", fuzz_cmd_event);
    if (!qmp_server_start(spec, &err)) {
        g_error("fuzz-qmp: %s", err->message);
    }
}

static int fuzz_connect(void)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    g_assert(fd >= 0);
    g_strlcpy(sa.sun_path, sock_path, sizeof(sa.sun_path));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        g_error("fuzz-qmp: connect: %s", g_strerror(errno));
    }
    return fd;
}

/* One client: send data, read until the server has answered and closed. */
static void fuzz_qmp_session(const uint8_t *data, size_t size)
{
    size_t sent = 0;
    bool shut = false;
    unsigned idle = 0;
    int fd;

    fd = fuzz_connect();
    while (idle < FUZZ_QMP_IDLE_LIMIT) {
        uint8_t buf[65536];
        bool progress = false;
        ssize_t n;

        if (sent < size) {
            n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
            if (n > 0) {
                sent += n;
                progress = true;
            } else if (n < 0 && errno != EAGAIN) {
                break;          /* the server dropped us (fatal framing) */
            }
        } else if (!shut) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0) {
            break;              /* served and closed */
        }
        if (n < 0 && errno != EAGAIN) {
            break;
        }
        progress |= n > 0;
        progress |= g_main_context_iteration(NULL, FALSE);
        idle = progress ? 0 : idle + 1;
    }
    g_assert(idle < FUZZ_QMP_IDLE_LIMIT);
    close(fd);
    /* Let the server reap the closed client. */
    while (g_main_context_iteration(NULL, FALSE)) {
    }
}

/*
 * GLib and json-glib allocate for good on first use (types, quarks, error
 * domains).  Using them all once before the first input keeps those out of
 * the per-input leak check, so this target can record allocations with the
 * fast unwinder (scripts/fuzz.sh): GLib has no frame pointers, and a
 * suppression could not match what such a stack leaves out.
 */
static void fuzz_qmp_warm_up(void)
{
    static const char *const sessions[] = {
        "{\"execute\":\"qmp_capabilities\"}\n"
        "{\"execute\":\"query-version\"}{\"execute\":\"query-commands\"}"
        "{\"execute\":\"x-fuzz-args\",\"arguments\":{\"s\":\"x\",\"i\":-1,"
        "\"u\":1,\"b\":true}}{\"execute\":\"x-fuzz-event\",\"arguments\":"
        "{\"a\":[1.5,null,\"\\u00e9\"]}}{\"exec-oob\":\"nope\",\"id\":1}"
        "{\"execute\":\"x-fuzz-args\"}{\"execute\":\"x-fuzz-args\","
        "\"arguments\":{\"s\":1}}{\"execute\":\"nope\"}[1]\"s\" 12 {\"a\": }",
        "{\"execute\":\"query-version\"}",
        "\xff\x00{}}}]]",
    };

    for (size_t i = 0; i < G_N_ELEMENTS(sessions); i++) {
        fuzz_qmp_session((const uint8_t *)sessions[i], strlen(sessions[i]));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!sock_path) {
        fuzz_qmp_init();
        fuzz_qmp_warm_up();
    }
    fuzz_qmp_session(data, size);
    return 0;
}

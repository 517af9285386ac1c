/*
 * Trace events: patterns, the output line format, silence when off, and
 * whole lines under concurrent emitters.
 */
#include "qemu/osdep.h"
#include "qemu/trace.h"
#include "trace/trace-util.h"
#include <pthread.h>

#define NTHREADS 4
#define LINES_PER_THREAD 2000

static char *trace_path;

/* Every test starts with all events off and an empty trace file. */
static void reset(void)
{
    g_autoptr(GError) err = NULL;

    trace_enable_pattern("*", false);
    if (!trace_path) {
        int fd = g_file_open_tmp("test-trace-XXXXXX", &trace_path, &err);

        g_assert_no_error(err);
        close(fd);
    }
    g_assert_true(g_file_set_contents(trace_path, "", 0, &err));
    g_assert_true(trace_set_file(trace_path, &err));
    g_assert_no_error(err);
}

static char *read_trace(void)
{
    g_autoptr(GError) err = NULL;
    char *text = NULL;

    g_assert_true(g_file_get_contents(trace_path, &text, NULL, &err));
    return text;
}

static void test_patterns(void)
{
    TraceEventIter it;
    const TraceEvent *ev;
    int n = 0;

    reset();
    g_assert_cmpuint(trace_enable_pattern("trace_test_*", true), ==, 2);
    g_assert_true(trace_event_get_state("trace_test_event"));
    g_assert_true(trace_event_get_state("trace_test_void"));
    g_assert_false(trace_event_get_state("trace_file_opened"));
    g_assert_false(trace_event_get_state("no_such_event"));

    /* Applied in order: the later "-" wins, a later enable wins back. */
    trace_enable_patterns("trace_*,-trace_test_*");
    g_assert_true(trace_event_get_state("trace_file_opened"));
    g_assert_false(trace_event_get_state("trace_test_event"));
    trace_enable_patterns("-*,trace_test_?oid");
    g_assert_false(trace_event_get_state("trace_file_opened"));
    g_assert_true(trace_event_get_state("trace_test_void"));

    /* No match is only a warning. */
    g_assert_cmpuint(trace_enable_pattern("nothing_like_this*", true), ==, 0);
    trace_enable_patterns("nothing_like_this*,,");

    trace_event_iter_init(&it, "migrate_*");
    while ((ev = trace_event_iter_next(&it))) {
        g_assert_true(g_str_has_prefix(ev->name, "migrate_"));
        n++;
    }
    g_assert_cmpint(n, >=, 1);
}

/* "PID@SEC.USEC:NAME args" as QEMU's log backend writes it. */
static void assert_line(const char *line, const char *name, const char *args)
{
    g_autofree char *re = g_strdup_printf("^%d@[0-9]+\\.[0-9]{6}:%s %s$",
                                          (int)getpid(), name, args);

    if (!g_regex_match_simple(re, line, 0, 0)) {
        g_error("trace line '%s' does not match '%s'", line, re);
    }
}

static void test_output_format(void)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;

    reset();
    trace_enable_patterns("trace_test_*");
    errno = EBADF;
    trace_trace_test_event(-7, 0xdeadbeef00ULL, "hello world");
    g_assert_cmpint(errno, ==, EBADF);
    trace_trace_test_void();
    text = read_trace();
#ifdef CONFIG_TRACE
    lines = g_strsplit(text, "\n", -1);
    g_assert_cmpuint(g_strv_length(lines), ==, 3);
    assert_line(lines[0], "trace_test_event",
                "n -7 v 0xdeadbeef00 s hello world");
    assert_line(lines[1], "trace_test_void", "");
    g_assert_cmpstr(lines[2], ==, "");
#else
    g_assert_cmpstr(text, ==, "");
#endif
}

/* Longer than the emitter's stack buffer: still one whole line. */
static void test_long_line(void)
{
    g_autofree char *big = g_strnfill(5000, 'x');
    g_autofree char *args = g_strdup_printf("n 1 v 0x2 s %s", big);
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;

#ifndef CONFIG_TRACE
    g_test_skip("built with -Dtrace=false");
    return;
#endif
    reset();
    trace_enable_patterns("trace_test_event");
    trace_trace_test_event(1, 2, big);
    text = read_trace();
    lines = g_strsplit(text, "\n", -1);
    g_assert_cmpuint(g_strv_length(lines), ==, 2);
    assert_line(lines[0], "trace_test_event", args);
}

static void test_disabled_silent(void)
{
    g_autofree char *text = NULL;

    reset();
    trace_enable_patterns("trace_test_void");
    trace_trace_test_event(1, 2, "must not appear");
    trace_enable_patterns("-trace_test_void");
    trace_trace_test_void();
    text = read_trace();
    g_assert_cmpstr(text, ==, "");
}

static void test_init_from_env(void)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *text = NULL;

    reset();
    g_setenv("FERRY_TRACE", "trace_test_*,-trace_test_void", TRUE);
    g_setenv("FERRY_TRACE_FILE", trace_path, TRUE);
    g_assert_true(trace_init_from_env(&err));
    g_assert_true(trace_event_get_state("trace_test_event"));
    g_assert_false(trace_event_get_state("trace_test_void"));

    g_setenv("FERRY_TRACE_FILE", "/nonexistent/dir/trace.log", TRUE);
    g_assert_false(trace_init_from_env(&err));
    g_assert_nonnull(strstr(err->message, "/nonexistent/dir/trace.log"));
    g_unsetenv("FERRY_TRACE");
    g_unsetenv("FERRY_TRACE_FILE");
}

static void *emit_thread(void *opaque)
{
    int id = GPOINTER_TO_INT(opaque);
    /* Long lines make a torn write more likely to show. */
    g_autofree char *pad = g_strnfill(200, 'a' + id);
    int i;

    for (i = 0; i < LINES_PER_THREAD; i++) {
        trace_trace_test_event(id, i, pad);
    }
    return NULL;
}

static void check_concurrent_line(const char *line, int *count)
{
    int id, i;
    char pad[256];

    if (sscanf(line, "%*d@%*d.%*d:trace_test_event n %d v 0x%x s %255s",
               &id, &i, pad) != 3) {
        g_error("torn trace line '%s'", line);
    }
    g_assert_cmpint(id, >=, 0);
    g_assert_cmpint(id, <, NTHREADS);
    g_assert_cmpuint(strlen(pad), ==, 200);
    g_assert_cmpuint(strspn(pad, (char[]){ 'a' + id, 0 }), ==, 200);
    g_assert_cmpint(i, ==, count[id]);   /* per-thread order is kept */
    count[id]++;
}

static void test_concurrent(void)
{
    pthread_t th[NTHREADS];
    int count[NTHREADS] = { 0 };
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    int i;

#ifndef CONFIG_TRACE
    g_test_skip("built with -Dtrace=false");
    return;
#endif
    reset();
    trace_enable_patterns("trace_test_event");
    for (i = 0; i < NTHREADS; i++) {
        pthread_create(&th[i], NULL, emit_thread, GINT_TO_POINTER(i));
    }
    for (i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
    }
    text = read_trace();
    lines = g_strsplit(text, "\n", -1);
    g_assert_cmpuint(g_strv_length(lines), ==,
                     NTHREADS * LINES_PER_THREAD + 1);
    for (i = 0; lines[i + 1]; i++) {
        check_concurrent_line(lines[i], count);
    }
    for (i = 0; i < NTHREADS; i++) {
        g_assert_cmpint(count[i], ==, LINES_PER_THREAD);
    }
}

int main(int argc, char **argv)
{
    int ret;

    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/trace/patterns", test_patterns);
    g_test_add_func("/trace/output-format", test_output_format);
    g_test_add_func("/trace/long-line", test_long_line);
    g_test_add_func("/trace/disabled-silent", test_disabled_silent);
    g_test_add_func("/trace/init-from-env", test_init_from_env);
    g_test_add_func("/trace/concurrent", test_concurrent);
    ret = g_test_run();
    trace_set_file(NULL, NULL);
    if (trace_path) {
        unlink(trace_path);
        g_free(trace_path);
    }
    return ret;
}

/*
 * Trace event runtime: which events are on, and where their lines go.
 */
#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "qemu/trace.h"
#include "trace/trace-util.h"
#include <fcntl.h>
#include <pthread.h>
#include <sys/time.h>

/*
 * Emitters hold the read side while they write, so trace_set_file() can
 * close the previous file without a line landing in a reused descriptor.
 */
static pthread_rwlock_t trace_fd_lock = PTHREAD_RWLOCK_INITIALIZER;
static int trace_fd = STDERR_FILENO;

void trace_event_iter_init(TraceEventIter *iter, const char *pattern)
{
    iter->group = 0;
    iter->index = 0;
    iter->pattern = pattern;
}

const TraceEvent *trace_event_iter_next(TraceEventIter *iter)
{
    while (trace_event_groups[iter->group]) {
        const TraceEvent *ev = &trace_event_groups[iter->group][iter->index];

        if (!ev->name) {
            iter->group++;
            iter->index = 0;
            continue;
        }
        iter->index++;
        if (!iter->pattern ||
            g_pattern_match_simple(iter->pattern, ev->name)) {
            return ev;
        }
    }
    return NULL;
}

size_t trace_enable_pattern(const char *pattern, bool on)
{
    TraceEventIter it;
    const TraceEvent *ev;
    size_t n = 0;

    trace_event_iter_init(&it, pattern);
    while ((ev = trace_event_iter_next(&it))) {
        qatomic_set(ev->dstate, on);
        n++;
    }
    return n;
}

void trace_enable_patterns(const char *list)
{
    g_auto(GStrv) pats = g_strsplit(list, ",", -1);
    size_t i;

    for (i = 0; pats[i]; i++) {
        const char *p = g_strstrip(pats[i]);
        bool on = *p != '-';

        if (!on) {
            p++;
        }
        if (!*p) {
            continue;
        }
        if (!trace_enable_pattern(p, on)) {
            warn_report("trace: pattern '%s' matches no trace event", p);
        }
    }
}

bool trace_event_get_state(const char *name)
{
    TraceEventIter it;
    const TraceEvent *ev;

    trace_event_iter_init(&it, NULL);
    while ((ev = trace_event_iter_next(&it))) {
        if (!strcmp(ev->name, name)) {
            return trace_event_is_enabled(ev);
        }
    }
    return false;
}

bool trace_set_file(const char *path, GError **errp)
{
    int fd = STDERR_FILENO;
    int old;

    if (path) {
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
            error_setg_errno(errp, errno, "cannot open trace file '%s'",
                             path);
            return false;
        }
    }
    pthread_rwlock_wrlock(&trace_fd_lock);
    old = trace_fd;
    trace_fd = fd;
    pthread_rwlock_unlock(&trace_fd_lock);
    if (old != STDERR_FILENO) {
        close(old);
    }
    trace_trace_file_opened(path ? path : "stderr");
    return true;
}

bool trace_init_from_env(GError **errp)
{
    const char *file = g_getenv("FERRY_TRACE_FILE");
    const char *events = g_getenv("FERRY_TRACE");

    if (file && *file && !trace_set_file(file, errp)) {
        g_prefix_error(errp, "FERRY_TRACE_FILE: ");
        return false;
    }
    if (events) {
        trace_enable_patterns(events);
    }
    return true;
}

/* The whole line goes out in one write: threads never interleave lines. */
static void trace_write_line(const char *buf, size_t len)
{
    ssize_t n;

    pthread_rwlock_rdlock(&trace_fd_lock);
    do {
        n = write(trace_fd, buf, len);
    } while (n < 0 && errno == EINTR);
    pthread_rwlock_unlock(&trace_fd_lock);
}

/*
 * Plain malloc, not GString: GString comes from GLib 2.74's slice
 * allocator, whose per-thread magazines TSan cannot see, so reused blocks
 * would show up as races here.  Most lines fit the stack buffer.
 */
void trace_emit(const char *name, const char *fmt, ...)
{
    int saved_errno = errno;     /* callers trace between a call and errno */
    char stack[512];
    char *buf = stack;
    struct timeval tv;
    int hlen, alen;
    va_list ap;

    gettimeofday(&tv, NULL);
    hlen = snprintf(stack, sizeof(stack), "%d@%lld.%06ld:%s ", (int)getpid(),
                    (long long)tv.tv_sec, (long)tv.tv_usec, name);
    if (hlen < 0 || hlen >= (int)sizeof(stack)) {
        errno = saved_errno;
        return;
    }
    va_start(ap, fmt);
    alen = vsnprintf(stack + hlen, sizeof(stack) - hlen, fmt, ap);
    va_end(ap);
    if (alen < 0) {
        errno = saved_errno;
        return;
    }
    if (hlen + alen + 1 >= (int)sizeof(stack)) {
        buf = g_malloc(hlen + alen + 2);
        memcpy(buf, stack, hlen);
        va_start(ap, fmt);
        vsnprintf(buf + hlen, alen + 1, fmt, ap);
        va_end(ap);
    }
    buf[hlen + alen] = '\n';
    trace_write_line(buf, hlen + alen + 1);
    if (buf != stack) {
        g_free(buf);
    }
    errno = saved_errno;
}

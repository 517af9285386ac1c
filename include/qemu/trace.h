/*
 * Trace events: declared in each directory's trace-events file, turned
 * into inline trace_NAME() functions by scripts/tracetool.py (include
 * "trace/trace-<dir>.h").  A disabled event costs one relaxed load and a
 * predicted branch; see docs/tracing.md.
 */
#ifndef QEMU_TRACE_H
#define QEMU_TRACE_H

#include "qemu/osdep.h"
#include "qemu/atomic.h"

typedef struct TraceEvent {
    const char *name;
    bool *dstate;               /* read by trace_NAME() without a lock */
} TraceEvent;

/* Generated: NULL-terminated list of NULL-name-terminated tables. */
extern const TraceEvent *const trace_event_groups[];

/*
 * Write "PID@SEC.USEC:NAME formatted\n" to the trace file in one write(2).
 * Only the generated trace_NAME() functions call this.
 */
void trace_emit(const char *name, const char *fmt, ...)
    G_GNUC_PRINTF_ATTR(2, 3);

/*
 * FERRY_TRACE (comma-separated patterns, see trace_enable_patterns) and
 * FERRY_TRACE_FILE (output path; default stderr).  Fails only if the file
 * cannot be opened.
 */
bool trace_init_from_env(GError **errp);

/*
 * Enable (on) or disable the events whose name matches the glob pattern
 * ('*' and '?').  Returns how many matched.
 */
size_t trace_enable_pattern(const char *pattern, bool on);

/*
 * Comma-separated patterns applied in order; "-PATTERN" disables.  A
 * pattern that matches no event is warned about, not an error.
 */
void trace_enable_patterns(const char *list);

/* Append trace lines to path from now on; NULL means stderr again. */
bool trace_set_file(const char *path, GError **errp);

/* Whether the named event is enabled; false for unknown names. */
bool trace_event_get_state(const char *name);

/* Iterate over the events matching pattern (NULL: all of them). */
typedef struct TraceEventIter {
    size_t group;
    size_t index;
    const char *pattern;
} TraceEventIter;

void trace_event_iter_init(TraceEventIter *iter, const char *pattern);
const TraceEvent *trace_event_iter_next(TraceEventIter *iter);

static inline bool trace_event_is_enabled(const TraceEvent *ev)
{
    return qatomic_read(ev->dstate);
}

#endif

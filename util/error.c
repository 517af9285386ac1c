/*
 * Error domain and reporting at the edges.
 */
#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include <stdarg.h>

/*
 * G_DEFINE_QUARK caches the quark in a static that two threads may fill
 * at once (a plain race, seen by ThreadSanitizer); this one is atomic.
 */
GQuark ferry_error_quark(void)
{
    static GQuark q;
    GQuark v = qatomic_load_acquire(&q);

    if (!v) {
        v = g_quark_from_static_string("ferry-error-quark");
        qatomic_store_release(&q, v);
    }
    return v;
}

const char *error_class_name(int code)
{
    switch (code) {
    case ERROR_CLASS_COMMAND_NOT_FOUND:
        return "CommandNotFound";
    case ERROR_CLASS_DEVICE_NOT_ACTIVE:
        return "DeviceNotActive";
    case ERROR_CLASS_DEVICE_NOT_FOUND:
        return "DeviceNotFound";
    case ERROR_CLASS_KVM_MISSING_CAP:
        return "KVMMissingCap";
    default:
        return "GenericError";
    }
}

void error_setg_errno(GError **errp, int errnum, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    if (!errp) {
        return;
    }
    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(errp, FERRY_ERROR, ERROR_CLASS_GENERIC_ERROR, "%s: %s", msg,
                g_strerror(errnum));
}

/* Set once from the command line, before any thread exists. */
static bool report_timestamps;

void error_set_timestamps(bool on)
{
    report_timestamps = on;
}

static void vreport(const char *kind, const char *fmt, va_list ap)
{
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    g_autofree char *stamp = NULL;

    if (report_timestamps) {
        g_autoptr(GDateTime) now = g_date_time_new_now_utc();

        stamp = g_date_time_format_iso8601(now);
    }
    fprintf(stderr, "%s%sferry: %s%s\n", stamp ? stamp : "",
            stamp ? " " : "", kind, msg);
}

void error_report(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport("", fmt, ap);
    va_end(ap);
}

void warn_report(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport("warning: ", fmt, ap);
    va_end(ap);
}

void info_report(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport("info: ", fmt, ap);
    va_end(ap);
}

void error_report_err(GError *err)
{
    if (err) {
        error_report("%s", err->message);
        g_error_free(err);
    }
}

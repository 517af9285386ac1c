/*
 * Errors are GErrors in the FERRY_ERROR domain; the code is the QMP error
 * class, so the monitor can report an error with the class QEMU would use.
 * Functions take a trailing "GError **errp", fail by returning false/NULL/-1
 * and leave reporting to the caller at the edge (QMP reply, main(), thread
 * exit).
 */
#ifndef QEMU_ERROR_H
#define QEMU_ERROR_H

#include <glib.h>

typedef enum QapiErrorClass {
    ERROR_CLASS_GENERIC_ERROR = 0,
    ERROR_CLASS_COMMAND_NOT_FOUND,
    ERROR_CLASS_DEVICE_NOT_ACTIVE,
    ERROR_CLASS_DEVICE_NOT_FOUND,
    ERROR_CLASS_KVM_MISSING_CAP,
} QapiErrorClass;

GQuark ferry_error_quark(void);
#define FERRY_ERROR ferry_error_quark()

/* QMP name of an error class ("GenericError", "CommandNotFound", ...). */
const char *error_class_name(int code);

#define error_setg(errp, ...) \
    g_set_error((errp), FERRY_ERROR, ERROR_CLASS_GENERIC_ERROR, __VA_ARGS__)
/* Like error_setg, appending ": strerror(errnum)". */
void error_setg_errno(GError **errp, int errnum, const char *fmt, ...)
    G_GNUC_PRINTF_ATTR(3, 4);
#define error_prepend(errp, ...) g_prefix_error((errp), __VA_ARGS__)

/* Print "ferry: <message>" on stderr: the edge where errors are reported. */
void error_report(const char *fmt, ...) G_GNUC_PRINTF_ATTR(1, 2);
void warn_report(const char *fmt, ...) G_GNUC_PRINTF_ATTR(1, 2);
void info_report(const char *fmt, ...) G_GNUC_PRINTF_ATTR(1, 2);
/* -msg timestamp=on: prefix every report with the UTC time, as QEMU. */
void error_set_timestamps(bool on);
/* Report err (if set) with an optional prefix and free it. */
void error_report_err(GError *err);

#endif

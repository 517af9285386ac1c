/*
 * QMP: a JSON monitor over unix and tcp sockets, with QEMU's greeting,
 * capability negotiation, replies, error classes and events.  Commands run
 * in the main loop thread (a handler may defer its reply, see qmp_defer).
 */
#ifndef MONITOR_QMP_H
#define MONITOR_QMP_H

#include "qemu/osdep.h"
#include <json-glib/json-glib.h>

/*
 * A command handler.  args is the "arguments" object (an empty object if the
 * client sent none).  On success return true and optionally set *ret to the
 * "return" value (NULL means {}); on failure return false and set errp: the
 * GError code is the QMP error class (qemu/error.h).
 */
typedef bool (*QmpCommandFunc)(JsonObject *args, JsonNode **ret,
                               GError **errp);

void qmp_register_command(const char *name, QmpCommandFunc fn);
/*
 * Also accepted as "exec-oob" (QEMU's allow-oob), even while the client
 * waits for a deferred reply: the handler must never block.
 */
void qmp_register_command_oob(const char *name, QmpCommandFunc fn);
bool qmp_command_exists(const char *name);

/*
 * A handler that cannot answer at once (its work blocks: pmemsave of RAM
 * a paused postcopy has not received yet) calls qmp_defer(), returns
 * true without *ret, and later, from the main loop, answers with
 * qmp_deferred_return() (ret or err, taken; the handle is freed).  Until
 * then that client's in-band requests wait in a queue (its exec-oob ones
 * run), and other clients are served as usual.
 */
typedef struct QmpDeferred QmpDeferred;
QmpDeferred *qmp_defer(void);
void qmp_deferred_return(QmpDeferred *d, JsonNode *ret, GError *err);

/* Start a server: "unix:PATH,server=on,wait=off" or "tcp:HOST:PORT,...". */
bool qmp_server_start(const char *spec, GError **errp);
void qmp_server_shutdown(void);

/*
 * Emit an event to every negotiated client, with a timestamp.  Thread-safe;
 * takes ownership of data (may be NULL for no "data" member).
 */
void qmp_event_emit(const char *event, JsonObject *data);

/*
 * Argument helpers: check the member's type; a missing optional member
 * leaves *out unchanged and returns true.  Errors use QEMU's words:
 * "Parameter 'uri' is missing", "Invalid parameter type for 'uri',
 * expected: string" (integer, uint64, boolean for the others).
 */
bool qmp_arg_str(JsonObject *args, const char *name, bool required,
                 const char **out, GError **errp);
bool qmp_arg_int(JsonObject *args, const char *name, bool required,
                 int64_t *out, GError **errp);
bool qmp_arg_uint(JsonObject *args, const char *name, bool required,
                  uint64_t *out, GError **errp);
bool qmp_arg_bool(JsonObject *args, const char *name, bool required,
                  bool *out, GError **errp);
/* Fail if args holds a member not in the NULL-terminated list. */
bool qmp_args_check_known(JsonObject *args, const char *const *known,
                          GError **errp);

/*
 * Register the VM commands of monitor/qmp-cmds.c (query-status, stop, cont,
 * system_reset, quit, query-name, query-cpus-fast, pmemsave) and the
 * introspection ones below.  main() calls
 * it once.  qmp_capabilities, query-version, query-commands, getfd and
 * closefd are always there without it.
 *
 * getfd takes a descriptor sent with SCM_RIGHTS on a unix socket client,
 * in the same sendmsg as the request, and stores it under a name that
 * migration's fd:NAME URIs take with monitor_get_fd() (migration/channel.h).
 */
void qmp_register_core_commands(void);

/*
 * The introspection commands of monitor/qmp-introspect.c, which libvirt
 * probes and uses (query-target, query-kvm, query-machines, qom-list-types,
 * qom-list, ...); qmp_register_core_commands() registers them.
 */
void qmp_register_introspect_commands(void);

#endif

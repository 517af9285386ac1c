/*
 * A small blocking QMP client for the tools: connect to a unix or tcp
 * monitor, negotiate, run commands and collect the events that arrive in
 * between.  Not thread-safe; one client per connection.
 */
#ifndef TOOLS_QMP_CLIENT_H
#define TOOLS_QMP_CLIENT_H

#include "qemu/osdep.h"
#include <json-glib/json-glib.h>

typedef struct QmpClient QmpClient;

/*
 * Connect to addr ("unix:PATH", a plain path, or "tcp:HOST:PORT"), retrying
 * for up to timeout_ms while the socket does not exist or refuses (the peer
 * may still be starting).  Reads the greeting and sends qmp_capabilities.
 * name ("source", "destination") is used in error messages.
 */
QmpClient *qmpc_connect(const char *addr, const char *name, int timeout_ms,
                        GError **errp);
void qmpc_free(QmpClient *c);

/*
 * Run a command; args may be NULL and is not consumed.  On success returns
 * true and, if ret is non-NULL, stores the "return" value (caller frees).
 * A QMP error reply sets errp to the server's description.
 */
bool qmpc_execute(QmpClient *c, const char *cmd, JsonObject *args,
                  JsonNode **ret, GError **errp);
/* Same, returning the "return" member as an object (NULL on error). */
JsonObject *qmpc_execute_obj(QmpClient *c, const char *cmd, JsonObject *args,
                             GError **errp);

/* Read whatever arrives within timeout_ms and queue the events. */
bool qmpc_pump(QmpClient *c, int timeout_ms, GError **errp);
/* Next queued event (caller unrefs), or NULL. */
JsonObject *qmpc_pop_event(QmpClient *c);

#endif

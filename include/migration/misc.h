/*
 * What the rest of the VMM (main, machine code) calls into migration.
 */
#ifndef MIGRATION_MISC_H
#define MIGRATION_MISC_H

#include "qemu/osdep.h"
#include "qemu/uuid.h"

/*
 * -incoming URI: start listening (tcp:, unix:, ...) and load the stream in a
 * background thread.  "defer" only allows a later QMP migrate-incoming.
 * Returns false (errp set) if the URI is bad or the listen fails.
 */
bool migration_incoming_start(const char *uri, GError **errp);

/*
 * The VM's -uuid (16 bytes), which multifd channels carry and check on
 * both sides, as QEMU does; all zero when -uuid is not given.
 */
void migration_set_uuid(const uint8_t uuid[UUID_LEN]);

/* Register the migration QMP commands (migrate, query-migrate, ...). */
void migration_register_qmp(void);

/* Register the "ram" live section with savevm. */
void ram_mig_init(void);

/*
 * "cont" on a source whose postcopy failed: the operator declares this
 * copy the live one, and a new migrate is allowed again.
 */
void migration_postcopy_failure_reset(void);

/* True while an outgoing or incoming migration is in progress. */
bool migration_is_running_any(void);

#endif

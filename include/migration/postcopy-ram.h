/*
 * Postcopy RAM, destination side: the postcopy state machine, the host
 * check, userfaultfd registration, the fault thread, page placement and
 * the fault statistics (blocktime, latency).
 */
#ifndef MIGRATION_POSTCOPY_RAM_H
#define MIGRATION_POSTCOPY_RAM_H

#include "qemu/osdep.h"
#include "exec/ramblock.h"
#include <json-glib/json-glib.h>

/* The destination's postcopy state; the numbers appear in messages. */
typedef enum PostcopyState {
    POSTCOPY_INCOMING_NONE = 0,
    POSTCOPY_INCOMING_ADVISE,
    POSTCOPY_INCOMING_DISCARD,
    POSTCOPY_INCOMING_LISTENING,
    POSTCOPY_INCOMING_RUNNING,
    POSTCOPY_INCOMING_END,
} PostcopyState;

const char *postcopy_state_str(PostcopyState s);
PostcopyState postcopy_state_get(void);
/* Unconditional: reset at the start of an incoming migration (and tests). */
void postcopy_state_set(PostcopyState s);
/* Compare-and-swap transition; false if the state was not old. */
bool postcopy_state_cas(PostcopyState old, PostcopyState new_state);
/* LISTENING or RUNNING: RAM records are placed with userfaultfd. */
bool postcopy_is_running(void);

/*
 * Can this host do postcopy?  userfaultfd syscall, API handshake, a test
 * area registered in MISSING mode offering WAKE/COPY/ZEROPAGE, target page
 * <= host page.  The error names the failing step.
 */
bool postcopy_ram_supported_by_host(GError **errp);

/* Register the POSTCOPY_* command handlers with savevm (idempotent). */
void postcopy_ram_init(void);
/* Forget everything of a previous incoming migration. */
void postcopy_incoming_reset(void);
/*
 * The incoming (main) loader returned after POSTCOPY_RUN: the listen
 * thread may now finish.  Then wait for the listen thread (it sends SHUT
 * and sets "completed").
 */
void postcopy_incoming_main_done(void);
void postcopy_incoming_wait(void);

/*
 * Place a whole host page of rb at offset (aligned to rb->page_size)
 * atomically: UFFDIO_COPY from `from`, or a zero page.  Marks it received,
 * drops it from the requested set, records the fault latency.  An already
 * present page (EEXIST) is an error naming block and offset.
 */
bool postcopy_place_page(RAMBlock *rb, ram_addr_t offset, const void *from,
                         GError **errp);
bool postcopy_place_page_zero(RAMBlock *rb, ram_addr_t offset,
                              GError **errp);

/*
 * The in-flight set (requested host pages) of the fault thread; exposed
 * for tests.  mark returns false if the host page was already requested.
 */
bool postcopy_request_mark(RAMBlock *rb, ram_addr_t offset);
bool postcopy_request_pending(RAMBlock *rb, ram_addr_t offset);

/* query-migrate fields of the destination (blocktime, latency). */
void postcopy_fill_query(JsonObject *o);

/* Latency histogram buckets: [2^N, 2^(N+1)) us, N = 0..23 */
#define POSTCOPY_LATENCY_BUCKETS 24

#endif

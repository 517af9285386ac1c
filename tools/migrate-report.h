/*
 * What ferry-migrate --report draws and --json carries under "report":
 * the source's query-migrate samples over time, the passes, the phases,
 * the postcopy switch and pauses, the destination's fault-latency
 * histogram and a heat map of faults over RAM offset and time.
 *
 * MigrateReport collects while the tool polls; mreport_to_json() turns it
 * into one JSON object, and the HTML is rendered from that object (not
 * from MigrateReport), so that the page and the JSON cannot disagree.
 * See docs/tools.md.
 */
#ifndef TOOLS_MIGRATE_REPORT_H
#define TOOLS_MIGRATE_REPORT_H

#include "qemu/osdep.h"
#include <json-glib/json-glib.h>

/* ferry's postcopy-latency-histogram: [2^N, 2^(N+1)) us, N = 0..23 */
#define MREPORT_LATENCY_BUCKETS 24
/* heat map: address bins x at most this many time bins (widths double) */
#define MREPORT_HEAT_ADDR_BINS 64
#define MREPORT_HEAT_TIME_BINS 120

/* Said wherever the destination has no per-fault figures (QEMU). */
#define MREPORT_NO_FAULT_DATA "no per-fault data from this destination"

typedef struct MigrateReport MigrateReport;

MigrateReport *mreport_new(void);
void mreport_free(MigrateReport *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigrateReport, mreport_free)

/* The source's query-migrate reply at t seconds after the migrate. */
void mreport_add_sample(MigrateReport *r, double t, JsonObject *src_info);
/* migrate-start-postcopy was sent at t. */
void mreport_set_postcopy(MigrateReport *r, double t);
/* A postcopy pause noticed at t, over (or given up) duration s later. */
void mreport_add_pause(MigrateReport *r, double t, double duration,
                       const char *noticed_by, bool recovered);
/*
 * The destination's query-migrate at t: takes the faults of its
 * x-postcopy-recent-faults ring not seen at an earlier call.  Returns
 * false if the destination has no such ring (QEMU, or not in postcopy).
 */
bool mreport_add_faults(MigrateReport *r, double t, JsonObject *dst_info);

/*
 * The "report" object, from what was collected and the final replies of
 * both sides (either may be NULL).  wall_s: the tool's own elapsed time,
 * used when the source gives no total-time.  Caller unrefs.
 */
JsonObject *mreport_to_json(MigrateReport *r, JsonObject *src_info,
                            JsonObject *dst_info, double wall_s);

/* The self-contained HTML page for a "report" object.  Caller frees. */
char *mreport_html(JsonObject *report);
bool mreport_write_html(JsonObject *report, const char *path, GError **errp);

#endif

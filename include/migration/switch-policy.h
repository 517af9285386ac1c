/*
 * The automatic switch to postcopy (ferry's x-auto-postcopy capability).
 *
 * QEMU leaves the switch to the operator.  A guest that dirties memory
 * faster than the link carries it never converges in precopy, and every
 * pass spent finding that out costs a full pass of bandwidth: switching
 * after the first pass costs about twice RAM/bandwidth in total.  So the
 * source samples the dirty rate from the start, while the first pass is
 * still running: it syncs the dirty log in short windows and looks at how
 * many of the pages already sent (clean) were dirtied again.  Scaled to
 * all of RAM, that estimates the rate at which the guest dirties memory
 * and a lower bound of its working set.  When the rate is at least
 * SWITCH_POLICY_RATE_RATIO of the bandwidth and the working set does not
 * fit in the downtime, precopy is predicted not to converge and the
 * migration switches now; a guest below that completes in precopy.
 */
#ifndef MIGRATION_SWITCH_POLICY_H
#define MIGRATION_SWITCH_POLICY_H

#include "qemu/osdep.h"

/* Dirty rate / bandwidth at or above which precopy is given up. */
#define SWITCH_POLICY_RATE_RATIO 0.8
/* A window is at least this long and sees this share of RAM clean. */
#define SWITCH_POLICY_MIN_WINDOW_MS 250
#define SWITCH_POLICY_MIN_CLEAN_DIV 64

/* One sampling window: what the dirty log said at its two ends. */
typedef struct SwitchSample {
    int64_t elapsed_ms;
    uint64_t newly_dirty;       /* pages clean at some point, dirtied since */
    uint64_t clean_start;       /* clean pages when the window began */
    uint64_t clean_end;         /* clean pages before the closing sync */
    uint64_t total_pages;
    uint64_t page_size;
    double bandwidth;           /* bytes/s, measured */
    uint64_t threshold;         /* bytes that fit in the downtime limit */
} SwitchSample;

typedef struct SwitchVerdict {
    bool switch_now;
    double dirty_rate;          /* bytes/s, estimated for all of RAM */
    uint64_t working_set;       /* bytes, lower bound */
} SwitchVerdict;

/* The decision on one window (pure; unit-tested). */
SwitchVerdict switch_policy_judge(const SwitchSample *x);

typedef struct RAMState RAMState;

/* The migration thread's sampling state, for one migration. */
typedef struct SwitchPolicy {
    bool window_open;
    int64_t window_start_ms;
    uint64_t clean_start;
    SwitchVerdict last;         /* of the last closed window */
    unsigned windows;
} SwitchPolicy;

/*
 * Called by the migration thread between iterations of precopy: opens or
 * closes a sampling window (each end is a dirty-log sync) and returns
 * true when the migration should switch to postcopy now.
 */
bool switch_policy_step(SwitchPolicy *p, RAMState *rs, double bandwidth,
                        uint64_t threshold, GError **errp);

#endif

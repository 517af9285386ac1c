/*
 * The automatic switch to postcopy: see include/migration/switch-policy.h.
 */
#include "qemu/osdep.h"
#include "migration/ram.h"
#include "migration/switch-policy.h"
#include "trace/trace-migration.h"

SwitchVerdict switch_policy_judge(const SwitchSample *x)
{
    SwitchVerdict v = { 0 };
    double clean = (x->clean_start + x->clean_end) / 2.0;
    double scale;

    if (clean * SWITCH_POLICY_MIN_CLEAN_DIV < x->total_pages ||
        x->elapsed_ms < SWITCH_POLICY_MIN_WINDOW_MS || x->bandwidth <= 0) {
        return v;               /* too little seen to judge */
    }
    /* What was dirtied among the clean pages, as if all RAM were clean. */
    scale = x->total_pages / clean;
    v.working_set = (uint64_t)(x->newly_dirty * scale) * x->page_size;
    v.dirty_rate = v.working_set * 1000.0 / x->elapsed_ms;
    v.switch_now = v.dirty_rate >= SWITCH_POLICY_RATE_RATIO * x->bandwidth &&
                   v.working_set > x->threshold;
    return v;
}

bool switch_policy_step(SwitchPolicy *p, RAMState *rs, double bandwidth,
                        uint64_t threshold, GError **errp)
{
    int64_t now = g_get_monotonic_time() / 1000;
    uint64_t total = ram_total_pages(rs);
    uint64_t newly, clean;
    SwitchSample x;

    if (!p->window_open) {
        /* Open once some pages are clean: their re-dirtying is the signal. */
        if ((total - ram_dirty_pages(rs)) * SWITCH_POLICY_MIN_CLEAN_DIV <
            total) {
            return false;
        }
        if (!ram_dirty_sample(rs, &newly, &clean, errp)) {
            return false;
        }
        p->window_open = true;
        p->window_start_ms = now;
        p->clean_start = total - ram_dirty_pages(rs);
        return false;
    }
    if (now - p->window_start_ms < SWITCH_POLICY_MIN_WINDOW_MS) {
        return false;
    }
    x = (SwitchSample) {
        .elapsed_ms = now - p->window_start_ms,
        .clean_start = p->clean_start,
        .total_pages = total,
        .page_size = TARGET_PAGE_SIZE,
        .bandwidth = bandwidth,
        .threshold = threshold,
    };
    if (!ram_dirty_sample(rs, &newly, &clean, errp)) {
        return false;
    }
    x.newly_dirty = newly;
    x.clean_end = clean;
    p->last = switch_policy_judge(&x);
    p->windows++;
    trace_switch_policy_window(x.elapsed_ms, newly, x.clean_start, clean,
                               p->last.dirty_rate, bandwidth,
                               p->last.working_set, threshold,
                               p->last.switch_now);
    /* The next window starts at this sync. */
    p->window_start_ms = now;
    p->clean_start = total - ram_dirty_pages(rs);
    return p->last.switch_now;
}

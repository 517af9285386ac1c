/*
 * The automatic switch's judgement on one sampling window.
 */
#include "qemu/osdep.h"
#include "migration/switch-policy.h"

#define MiB (1024.0 * 1024)
#define PAGES_1G (262144u)
#define GBIT (125e6)

/*
 * A window of a guest writing rate bytes/s over a working set of ws bytes
 * (uniformly), half of RAM clean on average, bandwidth 1 Gbit/s and a
 * 300 ms downtime limit.
 */
static SwitchSample window(double rate, double ws, int64_t ms)
{
    double written = rate * ms / 1000.0;
    double pages = MIN(written, ws) / 4096;

    return (SwitchSample) {
        .elapsed_ms = ms, .newly_dirty = (uint64_t)(pages / 2),
        .clean_start = PAGES_1G / 4, .clean_end = PAGES_1G * 3 / 4,
        .total_pages = PAGES_1G, .page_size = 4096,
        .bandwidth = GBIT, .threshold = (uint64_t)(GBIT * 0.3),
    };
}

static void test_outdirtying_guest_switches(void)
{
    SwitchSample x = window(200 * MiB, 1024 * MiB, 500);
    SwitchVerdict v = switch_policy_judge(&x);

    g_assert_true(v.switch_now);
    /* Half the writes land on clean pages: scaled back, the full rate. */
    g_assert_cmpfloat(v.dirty_rate, >, 190 * MiB);
    g_assert_cmpfloat(v.dirty_rate, <, 210 * MiB);
    g_assert_cmpuint(v.working_set, >, 95 * MiB);
}

static void test_converging_guest_stays(void)
{
    SwitchSample x = window(40 * MiB, 1024 * MiB, 500);

    g_assert_false(switch_policy_judge(&x).switch_now);
    /* Just below the ratio: still precopy. */
    x = window(0.75 * GBIT, 1024 * MiB, 1000);
    g_assert_false(switch_policy_judge(&x).switch_now);
    x = window(0.85 * GBIT, 1024 * MiB, 1000);
    g_assert_true(switch_policy_judge(&x).switch_now);
}

/* Fast but small: the rest fits in the downtime, precopy converges. */
static void test_small_hot_set_stays(void)
{
    SwitchSample x = window(1000 * MiB, 16 * MiB, 500);
    SwitchVerdict v = switch_policy_judge(&x);

    g_assert_false(v.switch_now);
    g_assert_cmpuint(v.working_set, <=, 16 * MiB);
}

static void test_too_little_seen(void)
{
    SwitchSample x = window(500 * MiB, 1024 * MiB, 100);

    g_assert_false(switch_policy_judge(&x).switch_now);     /* too short */
    x = window(500 * MiB, 1024 * MiB, 500);
    x.clean_start = x.clean_end = PAGES_1G / 128;            /* too few */
    g_assert_false(switch_policy_judge(&x).switch_now);
    x = window(500 * MiB, 1024 * MiB, 500);
    x.bandwidth = 0;                                         /* unknown */
    g_assert_false(switch_policy_judge(&x).switch_now);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/switch-policy/outdirtying",
                    test_outdirtying_guest_switches);
    g_test_add_func("/switch-policy/converging",
                    test_converging_guest_stays);
    g_test_add_func("/switch-policy/small-hot-set",
                    test_small_hot_set_stays);
    g_test_add_func("/switch-policy/too-little", test_too_little_seen);
    return g_test_run();
}

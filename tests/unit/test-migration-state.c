/*
 * Migration statuses: QEMU's names and order, atomic transitions,
 * idleness rules (capabilities and parameters: test-options.c).
 */
#include "qemu/osdep.h"
#include "migration/migration.h"

static void test_status_names(void)
{
    static const char *const want[] = {
        "none", "setup", "cancelling", "cancelled", "active",
        "postcopy-active", "postcopy-paused", "postcopy-recover",
        "completed", "failed", "colo", "pre-switchover", "device",
        "wait-unplug",
    };

    g_assert_cmpint(ARRAY_SIZE(want), ==, MIGRATION_STATUS__MAX);
    for (int i = 0; i < MIGRATION_STATUS__MAX; i++) {
        MigrationStatus s;

        g_assert_cmpstr(MigrationStatus_str(i), ==, want[i]);
        g_assert_true(migration_status_parse(want[i], &s));
        g_assert_cmpint(s, ==, i);
    }
    g_assert_cmpstr(MigrationStatus_str(MIGRATION_STATUS__MAX), ==,
                    "invalid");
    g_assert_cmpstr(MigrationStatus_str(-1), ==, "invalid");
    {
        MigrationStatus s = MIGRATION_STATUS_ACTIVE;

        g_assert_false(migration_status_parse("Active", &s));
        g_assert_false(migration_status_parse("", &s));
        g_assert_cmpint(s, ==, MIGRATION_STATUS_ACTIVE);
    }
}

static void test_transitions(void)
{
    MigrationStatus st = MIGRATION_STATUS_NONE;

    g_assert_true(migrate_set_state(&st, MIGRATION_STATUS_NONE,
                                    MIGRATION_STATUS_SETUP));
    g_assert_cmpint(migrate_get_state(&st), ==, MIGRATION_STATUS_SETUP);
    /* The wrong "old" state: nothing changes. */
    g_assert_false(migrate_set_state(&st, MIGRATION_STATUS_ACTIVE,
                                     MIGRATION_STATUS_COMPLETED));
    g_assert_cmpint(st, ==, MIGRATION_STATUS_SETUP);
    g_assert_true(migrate_set_state(&st, MIGRATION_STATUS_SETUP,
                                    MIGRATION_STATUS_ACTIVE));
    g_assert_true(migrate_set_state(&st, MIGRATION_STATUS_ACTIVE,
                                    MIGRATION_STATUS_CANCELLING));
    /* A completion racing with a cancel loses. */
    g_assert_false(migrate_set_state(&st, MIGRATION_STATUS_ACTIVE,
                                     MIGRATION_STATUS_COMPLETED));
    g_assert_true(migrate_set_state(&st, MIGRATION_STATUS_CANCELLING,
                                    MIGRATION_STATUS_CANCELLED));
}

typedef struct Racer {
    MigrationStatus *st;
    MigrationStatus to;
    int wins;
} Racer;

static gpointer race(gpointer opaque)
{
    Racer *r = opaque;

    for (int i = 0; i < 10000; i++) {
        if (migrate_set_state(r->st, MIGRATION_STATUS_ACTIVE, r->to)) {
            r->wins++;
        }
    }
    return NULL;
}

/* Two threads race from ACTIVE: exactly one transition happens. */
static void test_transition_race(void)
{
    for (int round = 0; round < 50; round++) {
        MigrationStatus st = MIGRATION_STATUS_ACTIVE;
        Racer a = { &st, MIGRATION_STATUS_COMPLETED, 0 };
        Racer b = { &st, MIGRATION_STATUS_CANCELLING, 0 };
        GThread *ta = g_thread_new("a", race, &a);
        GThread *tb = g_thread_new("b", race, &b);

        g_thread_join(ta);
        g_thread_join(tb);
        g_assert_cmpint(a.wins + b.wins, ==, 1);
        g_assert_cmpint(st, ==, a.wins ? MIGRATION_STATUS_COMPLETED
                                       : MIGRATION_STATUS_CANCELLING);
    }
}

static void test_idle(void)
{
    MigrationState s = { 0 };
    static const MigrationStatus idle[] = {
        MIGRATION_STATUS_NONE, MIGRATION_STATUS_COMPLETED,
        MIGRATION_STATUS_FAILED, MIGRATION_STATUS_CANCELLED,
    };

    for (int i = 0; i < MIGRATION_STATUS__MAX; i++) {
        bool want = false;

        for (size_t j = 0; j < ARRAY_SIZE(idle); j++) {
            want |= idle[j] == (MigrationStatus)i;
        }
        s.status = i;
        g_assert_cmpint(migration_is_idle(&s), ==, want);
        g_assert_cmpint(migration_is_active(&s), ==, !want);
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/migration-state/status-names", test_status_names);
    g_test_add_func("/migration-state/transitions", test_transitions);
    g_test_add_func("/migration-state/transition-race", test_transition_race);
    g_test_add_func("/migration-state/idle", test_idle);
    return g_test_run();
}

/*
 * Size, integer and boolean parsers.
 */
#include "qemu/osdep.h"
#include "qemu/cutils.h"

static void check_size(const char *s, char unit, uint64_t want)
{
    GError *err = NULL;
    uint64_t v = 0;

    if (!qemu_strtosz(s, unit, &v, &err)) {
        g_error("'%s' rejected: %s", s, err->message);
    }
    g_assert_cmpuint(v, ==, want);
}

/* Must fail, leave the result alone, and name the value in the message. */
static void check_size_bad(const char *s, char unit, const char *needle)
{
    GError *err = NULL;
    uint64_t v = 12345;

    g_assert_false(qemu_strtosz(s, unit, &v, &err));
    g_assert_nonnull(err);
    g_assert_cmpuint(v, ==, 12345);
    g_assert_nonnull(strstr(err->message, s));
    if (needle && !strstr(err->message, needle)) {
        g_error("'%s': message '%s' lacks '%s'", s, err->message, needle);
    }
    g_error_free(err);
}

static void test_strtosz_good(void)
{
    check_size("0", 'B', 0);
    check_size("1", 'B', 1);
    check_size("12345", 'B', 12345);
    check_size("1K", 'B', 1024);
    check_size("1k", 'B', 1024);
    check_size("64M", 'B', 64ULL << 20);
    check_size("64m", 'B', 64ULL << 20);
    check_size("2G", 'B', 2ULL << 30);
    check_size("3T", 'B', 3ULL << 40);
    check_size("1P", 'B', 1ULL << 50);
    check_size("15E", 'B', 15ULL << 60);
    check_size("512B", 'M', 512);
    check_size("64", 'M', 64ULL << 20);
    check_size("2", 'G', 2ULL << 30);
    check_size("1.5G", 'B', 3ULL << 29);
    check_size("0.5K", 'B', 512);
    check_size("1.5", 'M', 3ULL << 19);
    check_size(".5M", 'B', 1ULL << 19);
    check_size("0x1000", 'B', 4096);
    check_size("0X10", 'B', 16);
    check_size("0x10M", 'B', 16ULL << 20);
    check_size("0xff", 'B', 255);
    check_size("18446744073709551615", 'B', UINT64_MAX);
    check_size("0xffffffffffffffff", 'B', UINT64_MAX);
}

static void test_strtosz_bad(void)
{
    GError *err = NULL;
    uint64_t v;

    g_assert_false(qemu_strtosz("", 'B', &v, &err));
    g_assert_nonnull(strstr(err->message, "empty"));
    g_clear_error(&err);

    check_size_bad("-1", 'B', "negative");
    check_size_bad("-0", 'M', "negative");
    check_size_bad("abc", 'B', NULL);
    check_size_bad("12Q", 'B', "suffix");
    check_size_bad("12KB", 'B', "suffix");
    check_size_bad("1 G", 'B', NULL);
    check_size_bad(" 1", 'B', NULL);
    check_size_bad("1.5", 'B', "fraction");
    check_size_bad("0x", 'B', NULL);
    check_size_bad(".", 'B', NULL);
    check_size_bad("16E", 'B', "too large");
    check_size_bad("18446744073709551616", 'B', "too large");
    check_size_bad("0x10000000000000000", 'B', "too large");
    check_size_bad("99999999999999999999999", 'M', "too large");
    check_size_bad("17179869184G", 'B', "too large");
}

static void test_strtou64(void)
{
    GError *err = NULL;
    uint64_t v = 0;

    g_assert_true(qemu_strtou64("0", &v, &err));
    g_assert_cmpuint(v, ==, 0);
    g_assert_true(qemu_strtou64("4096", &v, &err));
    g_assert_cmpuint(v, ==, 4096);
    g_assert_true(qemu_strtou64("0x100000", &v, &err));
    g_assert_cmpuint(v, ==, 0x100000);
    g_assert_true(qemu_strtou64("18446744073709551615", &v, &err));
    g_assert_cmpuint(v, ==, UINT64_MAX);
    g_assert_no_error(err);

    v = 7;
    g_assert_false(qemu_strtou64("18446744073709551616", &v, &err));
    g_assert_nonnull(strstr(err->message, "18446744073709551616"));
    g_clear_error(&err);
    g_assert_false(qemu_strtou64("-1", &v, &err));
    g_clear_error(&err);
    g_assert_false(qemu_strtou64("12a", &v, &err));
    g_clear_error(&err);
    g_assert_false(qemu_strtou64("", &v, &err));
    g_clear_error(&err);
    g_assert_false(qemu_strtou64("0x", &v, &err));
    g_clear_error(&err);
    g_assert_false(qemu_strtou64("1K", &v, &err));
    g_clear_error(&err);
    g_assert_cmpuint(v, ==, 7);
}

static void test_parse_bool(void)
{
    const char *yes[] = { "on", "yes", "true" };
    const char *no[] = { "off", "no", "false" };
    GError *err = NULL;
    bool b;
    size_t i;

    for (i = 0; i < ARRAY_SIZE(yes); i++) {
        b = false;
        g_assert_true(qemu_parse_bool(yes[i], &b, &err));
        g_assert_true(b);
        g_assert_true(qemu_parse_bool(no[i], &b, &err));
        g_assert_false(b);
    }
    g_assert_false(qemu_parse_bool("On ", &b, &err));
    g_assert_nonnull(strstr(err->message, "On "));
    g_clear_error(&err);
    g_assert_false(qemu_parse_bool("1", &b, &err));
    g_clear_error(&err);
    g_assert_false(qemu_parse_bool("", &b, &err));
    g_clear_error(&err);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/cutils/strtosz/good", test_strtosz_good);
    g_test_add_func("/cutils/strtosz/bad", test_strtosz_bad);
    g_test_add_func("/cutils/strtou64", test_strtou64);
    g_test_add_func("/cutils/parse-bool", test_parse_bool);
    return g_test_run();
}

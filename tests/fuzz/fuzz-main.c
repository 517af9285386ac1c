/*
 * Replay driver for the fuzz targets when libFuzzer is not linked in:
 * runs LLVMFuzzerTestOneInput() once per file given, or per file of each
 * directory given.  A crash or sanitizer report fails the run, which is
 * what the 'fuzz' test suite checks on every build.  "--seed DIR" writes
 * valid inputs there, for targets that define fuzz_write_seeds().
 */
#include "qemu/osdep.h"
#include "fuzz.h"

static int run_file(const char *path, unsigned *count)
{
    g_autoptr(GError) err = NULL;
    gchar *data;
    gsize len;

    if (!g_file_get_contents(path, &data, &len, &err)) {
        fprintf(stderr, "%s: %s\n", path, err->message);
        return 1;
    }
    LLVMFuzzerTestOneInput((const uint8_t *)data, MIN(len, FUZZ_MAX_INPUT));
    g_free(data);
    (*count)++;
    return 0;
}

static int run_path(const char *path, unsigned *count)
{
    GDir *dir = g_dir_open(path, 0, NULL);
    const char *name;
    int failures = 0;

    if (!dir) {
        return run_file(path, count);
    }
    while ((name = g_dir_read_name(dir))) {
        g_autofree char *sub = g_build_filename(path, name, NULL);

        if (!g_file_test(sub, G_FILE_TEST_IS_DIR)) {
            failures += run_file(sub, count);
        }
    }
    g_dir_close(dir);
    return failures;
}

int main(int argc, char **argv)
{
    unsigned count = 0;
    int failures = 0;

    if (argc == 3 && !strcmp(argv[1], "--seed") && fuzz_write_seeds) {
        g_mkdir_with_parents(argv[2], 0755);
        fuzz_write_seeds(argv[2]);
        return 0;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        failures += run_path(argv[i], &count);
    }
    if (!count) {
        fprintf(stderr, "%s: no inputs found\n", argv[0]);
        return 1;
    }
    printf("%u inputs replayed, %d unreadable\n", count, failures);
    return failures ? 1 : 0;
}

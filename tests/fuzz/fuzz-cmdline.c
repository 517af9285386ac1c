/*
 * Fuzz target: the command line parser (qemu_parse_options).  The input
 * is split into arguments at NUL and newline bytes; argv[0] is added.
 * Parsing only records what was asked (no file is opened, nothing is
 * created), so every option can be exercised here.
 */
#include "qemu/osdep.h"
#include "sysemu/sysemu.h"
#include "fuzz.h"

#define FUZZ_MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autofree char *text = g_malloc(size + 1);
    char *argv[FUZZ_MAX_ARGS + 2];
    int argc = 0;
    char *p = text;
    size_t left = size;
    g_autoptr(GError) err = NULL;
    VMOptions opts = { 0 };
    bool ok;

    argv[argc++] = (char *)"ferry";
    memcpy(text, data, size);
    text[size] = '\0';
    while (left && argc <= FUZZ_MAX_ARGS) {
        size_t n = 0;

        while (n < left && p[n] != '\0' && p[n] != '\n') {
            n++;
        }
        argv[argc++] = p;
        if (n == left) {
            break;
        }
        p[n] = '\0';
        p += n + 1;
        left -= n + 1;
    }
    argv[argc] = NULL;

    ok = qemu_parse_options(argc, argv, &opts, &err);
    g_assert(ok == (err == NULL));
    if (err) {
        g_assert(err->message && *err->message);
    }
    qemu_free_options(&opts);
    return 0;
}

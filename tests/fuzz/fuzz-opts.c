/*
 * Fuzz target: the "key=value,..." option arguments (-object, -machine,
 * -device, -smp, -m, -accel, -qmp, -serial...).  The first byte picks
 * the option; the rest is its argument, given once or twice (options
 * that merge across repeats, like -machine, are then exercised too).
 */
#include "qemu/osdep.h"
#include "sysemu/sysemu.h"
#include "fuzz.h"

static const char *const fuzz_options[] = {
    "-object", "-machine", "-device", "-smp", "-m", "-accel", "-qmp",
    "-serial", "-incoming", "-name", "-display", "-M",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(GError) err = NULL;
    VMOptions opts = { 0 };
    g_autofree char *arg = NULL;
    char *argv[6];
    int argc = 0;
    const char *opt;

    if (!size) {
        return 0;
    }
    opt = fuzz_options[(data[0] & 0x7f) % G_N_ELEMENTS(fuzz_options)];
    arg = g_strndup((const char *)data + 1, size - 1);
    argv[argc++] = (char *)"ferry";
    argv[argc++] = (char *)opt;
    argv[argc++] = arg;
    if (data[0] & 0x80) {
        argv[argc++] = (char *)opt;
        argv[argc++] = arg;
    }
    argv[argc] = NULL;
    if (!qemu_parse_options(argc, argv, &opts, &err)) {
        g_assert(err && *err->message);
    }
    qemu_free_options(&opts);
    return 0;
}

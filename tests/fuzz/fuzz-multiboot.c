/*
 * Fuzz target: the Multiboot v1 loader (address-field header and ELF32)
 * on an image buffer.  Guest RAM is a heap buffer of exactly low_size
 * bytes, so any write outside it is a sanitizer report.
 */
#include "qemu/osdep.h"
#include "hw/multiboot.h"
#include "fuzz.h"

#define FUZZ_RAM_SIZE (4u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t *ram;
    g_autoptr(GError) err = NULL;
    MultibootBoot boot;
    /*
     * The first byte picks a command line and whether RAM lies above 4G;
     * the image follows.
     */
    const char *cmdline = size && (data[0] & 1) ? "ncpus=2 seed=7" : NULL;
    uint64_t high = size && (data[0] & 2) ? (1ull << 32) : 0;

    if (!size) {
        return 0;
    }
    if (!ram) {
        ram = g_malloc0(FUZZ_RAM_SIZE);
    }
    if (multiboot_load_image("fuzz.bin", data + 1, size - 1, cmdline, ram,
                             FUZZ_RAM_SIZE, high, &boot, &err)) {
        /* What the loader reports must lie inside guest RAM. */
        g_assert(boot.load_start <= boot.load_end);
        g_assert(boot.load_end <= FUZZ_RAM_SIZE);   /* exclusive */
        g_assert(boot.mbi_addr < FUZZ_RAM_SIZE);
    }
    return 0;
}

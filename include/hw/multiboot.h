/*
 * Multiboot v1 kernel loading, independent of the accelerator: the loader
 * writes into a host buffer that stands for guest-physical [0, low_size).
 */
#ifndef HW_MULTIBOOT_H
#define HW_MULTIBOOT_H

#include "qemu/osdep.h"

#define MULTIBOOT_HEADER_MAGIC     0x1BADB002
#define MULTIBOOT_BOOTLOADER_MAGIC 0x2BADB002
#define MULTIBOOT_SEARCH           8192

/* Where the loader puts the boot information; images must stay clear. */
#define MULTIBOOT_INFO_ADDR        0x9000
#define MULTIBOOT_MMAP_ADDR        0x9100
#define MULTIBOOT_CMDLINE_ADDR     0x9400
#define MULTIBOOT_RESERVED_END     0xb000
/* Lowest address an image may load at (the BIOS data area stays clear). */
#define MULTIBOOT_MIN_LOAD_ADDR    0x1000

typedef struct MultibootBoot {
    uint32_t entry;             /* EIP for the boot CPU */
    uint32_t mbi_addr;          /* EBX */
    uint32_t load_start;        /* lowest and highest byte written */
    uint32_t load_end;
} MultibootBoot;

/*
 * Load a Multiboot v1 image (address-field header or ELF32) from a buffer.
 * ram/low_size: guest-physical [0, low_size) (low_size <= 4 GiB);
 * high_size: RAM mapped at 4 GiB (reported in the memory map only).
 * name is used in error messages; the command line handed to the guest is
 * "<name>" or "<name> <cmdline>", as QEMU builds it.
 */
bool multiboot_load_image(const char *name, const uint8_t *image, size_t len,
                          const char *cmdline, uint8_t *ram,
                          uint64_t low_size, uint64_t high_size,
                          MultibootBoot *boot, GError **errp);
/* Same, reading the image from a file. */
bool multiboot_load_file(const char *filename, const char *cmdline,
                         uint8_t *ram, uint64_t low_size, uint64_t high_size,
                         MultibootBoot *boot, GError **errp);

#endif

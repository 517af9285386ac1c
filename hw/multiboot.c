/*
 * Multiboot v1 loader.  The image is untrusted input: every offset and
 * length read from it is checked against the file and against guest RAM
 * before anything is copied.
 */
#include "qemu/osdep.h"
#include "hw/multiboot.h"
#include <elf.h>

#define MB_FLAG_PAGE_ALIGN  (1u << 0)
#define MB_FLAG_MEMINFO     (1u << 1)
#define MB_FLAG_VIDEO       (1u << 2)
#define MB_FLAG_ADDRESSES   (1u << 16)
/* Bits 0-15 are requirements; we meet 0-2 (video is advisory for us). */
#define MB_FLAGS_KNOWN_REQ  (MB_FLAG_PAGE_ALIGN | MB_FLAG_MEMINFO | \
                             MB_FLAG_VIDEO)

#define MBI_MEM             (1u << 0)
#define MBI_CMDLINE         (1u << 2)
#define MBI_MMAP            (1u << 6)

#define MBI_SIZE            52      /* up to mmap_addr */
#define MMAP_ENTRY_SIZE     24      /* size field + 20 bytes */

#define MiB (1024ULL * 1024)
#define GiB (1024 * MiB)

typedef struct MbHeader {
    size_t offset;              /* in the file */
    uint32_t flags;
    uint32_t header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr;
} MbHeader;

static uint32_t ldl_le(const uint8_t *p)
{
    return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void stl_le(uint8_t *p, uint32_t v)
{
    p[0] = v;
    p[1] = v >> 8;
    p[2] = v >> 16;
    p[3] = v >> 24;
}

static void stq_le(uint8_t *p, uint64_t v)
{
    stl_le(p, (uint32_t)v);
    stl_le(p + 4, (uint32_t)(v >> 32));
}

static bool mb_find_header(const char *name, const uint8_t *img, size_t len,
                           MbHeader *h, GError **errp)
{
    size_t limit = MIN(len, (size_t)MULTIBOOT_SEARCH);
    bool bad_sum = false;

    for (size_t off = 0; off + 12 <= limit; off += 4) {
        uint32_t magic = ldl_le(img + off);
        uint32_t flags = ldl_le(img + off + 4);

        if (magic != MULTIBOOT_HEADER_MAGIC) {
            continue;
        }
        if ((uint32_t)(magic + flags + ldl_le(img + off + 8)) != 0) {
            bad_sum = true;
            continue;
        }
        memset(h, 0, sizeof(*h));
        h->offset = off;
        h->flags = flags;
        return true;
    }
    error_setg(errp, "%s: %s", name,
               bad_sum ? "Multiboot header has a bad checksum"
                       : "no Multiboot header in the first 8192 bytes");
    return false;
}

/* [start, start+size) must be RAM we may load into. */
static bool mb_check_range(const char *name, uint64_t start, uint64_t size,
                           uint64_t low_size, GError **errp)
{
    uint64_t end = start + size;

    if (start < MULTIBOOT_MIN_LOAD_ADDR || end > low_size) {
        error_setg(errp, "%s: segment [0x%" PRIx64 ", 0x%" PRIx64 ") is "
                   "outside guest RAM [0x%x, 0x%" PRIx64 ")", name, start,
                   end, MULTIBOOT_MIN_LOAD_ADDR, low_size);
        return false;
    }
    if (start < MULTIBOOT_RESERVED_END && end > MULTIBOOT_INFO_ADDR) {
        error_setg(errp, "%s: segment [0x%" PRIx64 ", 0x%" PRIx64 ") "
                   "overlaps the boot information area [0x%x, 0x%x)",
                   name, start, end, MULTIBOOT_INFO_ADDR,
                   MULTIBOOT_RESERVED_END);
        return false;
    }
    return true;
}

static void mb_note_range(MultibootBoot *boot, uint64_t start, uint64_t end)
{
    if (boot->load_end == 0 || start < boot->load_start) {
        boot->load_start = start;
    }
    if (end > boot->load_end) {
        boot->load_end = end;
    }
}

static bool mb_load_addresses(const char *name, const uint8_t *img,
                              size_t len, MbHeader *h, uint8_t *ram,
                              uint64_t low_size, MultibootBoot *boot,
                              GError **errp)
{
    const uint8_t *f = img + h->offset;
    uint64_t load_off, load_size, mem_end;

    if (h->offset + 32 > len) {
        error_setg(errp, "%s: truncated Multiboot header", name);
        return false;
    }
    h->header_addr = ldl_le(f + 12);
    h->load_addr = ldl_le(f + 16);
    h->load_end_addr = ldl_le(f + 20);
    h->bss_end_addr = ldl_le(f + 24);
    h->entry_addr = ldl_le(f + 28);

    if (h->load_addr > h->header_addr ||
        h->header_addr - h->load_addr > h->offset) {
        error_setg(errp, "%s: Multiboot header_addr 0x%x / load_addr 0x%x "
                   "do not match the header's file offset 0x%zx", name,
                   h->header_addr, h->load_addr, h->offset);
        return false;
    }
    load_off = h->offset - (h->header_addr - h->load_addr);
    if (h->load_end_addr == 0) {
        load_size = len - load_off;
    } else if (h->load_end_addr < h->load_addr) {
        error_setg(errp, "%s: Multiboot load_end_addr 0x%x is below "
                   "load_addr 0x%x", name, h->load_end_addr, h->load_addr);
        return false;
    } else {
        load_size = h->load_end_addr - h->load_addr;
    }
    if (load_off + load_size > len) {
        error_setg(errp, "%s: file truncated: the Multiboot header asks "
                   "for 0x%" PRIx64 " bytes at offset 0x%" PRIx64
                   ", the file has 0x%zx", name, load_size, load_off, len);
        return false;
    }
    mem_end = h->load_addr + load_size;
    if (h->bss_end_addr) {
        if (h->bss_end_addr < mem_end) {
            error_setg(errp, "%s: Multiboot bss_end_addr 0x%x is below the "
                       "end of the loaded image 0x%" PRIx64, name,
                       h->bss_end_addr, mem_end);
            return false;
        }
        mem_end = h->bss_end_addr;
    }
    if (!mb_check_range(name, h->load_addr, mem_end - h->load_addr,
                        low_size, errp)) {
        return false;
    }
    memcpy(ram + h->load_addr, img + load_off, load_size);
    memset(ram + h->load_addr + load_size, 0,
           mem_end - h->load_addr - load_size);
    mb_note_range(boot, h->load_addr, mem_end);
    boot->entry = h->entry_addr;
    return true;
}

static bool mb_elf_check_ident(const char *name, const uint8_t *img,
                               size_t len, GError **errp)
{
    /* A copy: img has no alignment guarantee (UBSan flags the cast). */
    Elf32_Ehdr ehdr = { 0 };
    const Elf32_Ehdr *eh = &ehdr;

    memcpy(&ehdr, img, MIN(len, sizeof(ehdr)));

    if (len < EI_NIDENT || memcmp(img, ELFMAG, SELFMAG) != 0) {
        error_setg(errp, "%s: Multiboot header without address fields "
                   "(flags bit 16) and not an ELF file", name);
        return false;
    }
    if (img[EI_CLASS] == ELFCLASS64) {
        error_setg(errp, "%s: 64-bit ELF images cannot be loaded with "
                   "Multiboot, use a 32-bit image", name);
        return false;
    }
    if (img[EI_CLASS] != ELFCLASS32 || img[EI_DATA] != ELFDATA2LSB ||
        len < sizeof(Elf32_Ehdr) || eh->e_machine != EM_386) {
        error_setg(errp, "%s: not a little-endian i386 ELF32 image", name);
        return false;
    }
    if (eh->e_phentsize < sizeof(Elf32_Phdr) ||
        (uint64_t)eh->e_phoff + (uint64_t)eh->e_phnum * eh->e_phentsize >
        len) {
        error_setg(errp, "%s: ELF program headers are truncated or "
                   "malformed", name);
        return false;
    }
    return true;
}

static bool mb_elf_load_segment(const char *name, const uint8_t *img,
                                size_t len, const Elf32_Phdr *ph,
                                uint8_t *ram, uint64_t low_size,
                                MultibootBoot *boot, GError **errp)
{
    if (ph->p_filesz > ph->p_memsz ||
        (uint64_t)ph->p_offset + ph->p_filesz > len) {
        error_setg(errp, "%s: ELF segment at offset 0x%x (file size 0x%x, "
                   "memory size 0x%x) is truncated or malformed", name,
                   ph->p_offset, ph->p_filesz, ph->p_memsz);
        return false;
    }
    if (!mb_check_range(name, ph->p_paddr, ph->p_memsz, low_size, errp)) {
        return false;
    }
    memcpy(ram + ph->p_paddr, img + ph->p_offset, ph->p_filesz);
    memset(ram + ph->p_paddr + ph->p_filesz, 0, ph->p_memsz - ph->p_filesz);
    mb_note_range(boot, ph->p_paddr, (uint64_t)ph->p_paddr + ph->p_memsz);
    return true;
}

static bool mb_load_elf(const char *name, const uint8_t *img, size_t len,
                        uint8_t *ram, uint64_t low_size, MultibootBoot *boot,
                        GError **errp)
{
    Elf32_Ehdr ehdr;
    const Elf32_Ehdr *eh = &ehdr;
    unsigned loaded = 0;

    if (!mb_elf_check_ident(name, img, len, errp)) {
        return false;
    }
    memcpy(&ehdr, img, sizeof(ehdr));
    boot->entry = eh->e_entry;
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        Elf32_Phdr ph;

        memcpy(&ph, img + eh->e_phoff + (size_t)i * eh->e_phentsize,
               sizeof(ph));
        if (ph.p_type != PT_LOAD || ph.p_memsz == 0) {
            continue;
        }
        if (!mb_elf_load_segment(name, img, len, &ph, ram, low_size, boot,
                                 errp)) {
            return false;
        }
        /* We start with paging off: run the entry at its physical address. */
        if (eh->e_entry >= ph.p_vaddr &&
            eh->e_entry - ph.p_vaddr < ph.p_memsz) {
            boot->entry = eh->e_entry - ph.p_vaddr + ph.p_paddr;
        }
        loaded++;
    }
    if (!loaded) {
        error_setg(errp, "%s: ELF image has no loadable segment", name);
        return false;
    }
    return true;
}

static unsigned mb_build_mmap(uint8_t *p, uint64_t low_size,
                              uint64_t high_size)
{
    const uint64_t ranges[3][2] = {
        { 0, 640 * 1024 },
        { MiB, low_size - MiB },
        { 4 * GiB, high_size },
    };
    unsigned n = 0;

    for (unsigned i = 0; i < 3; i++) {
        if (!ranges[i][1]) {
            continue;
        }
        stl_le(p, MMAP_ENTRY_SIZE - 4);
        stq_le(p + 4, ranges[i][0]);
        stq_le(p + 12, ranges[i][1]);
        stl_le(p + 20, 1);      /* available RAM */
        p += MMAP_ENTRY_SIZE;
        n++;
    }
    return n;
}

static bool mb_build_info(const char *name, const char *cmdline,
                          uint8_t *ram, uint64_t low_size, uint64_t high_size,
                          MultibootBoot *boot, GError **errp)
{
    g_autofree char *cl = cmdline && *cmdline
                          ? g_strdup_printf("%s %s", name, cmdline)
                          : g_strdup(name);
    size_t cl_len = strlen(cl) + 1;
    uint8_t *mbi = ram + MULTIBOOT_INFO_ADDR;
    unsigned nmmap;

    if (cl_len > MULTIBOOT_RESERVED_END - MULTIBOOT_CMDLINE_ADDR) {
        error_setg(errp, "kernel command line too long (%zu bytes, at most "
                   "%d)", cl_len - 1,
                   MULTIBOOT_RESERVED_END - MULTIBOOT_CMDLINE_ADDR - 1);
        return false;
    }
    memset(mbi, 0, MULTIBOOT_RESERVED_END - MULTIBOOT_INFO_ADDR);
    memcpy(ram + MULTIBOOT_CMDLINE_ADDR, cl, cl_len);
    nmmap = mb_build_mmap(ram + MULTIBOOT_MMAP_ADDR, low_size, high_size);

    stl_le(mbi + 0, MBI_MEM | MBI_CMDLINE | MBI_MMAP);
    stl_le(mbi + 4, 640);                           /* mem_lower, KiB */
    stl_le(mbi + 8, (low_size - MiB) / 1024);       /* mem_upper, KiB */
    stl_le(mbi + 16, MULTIBOOT_CMDLINE_ADDR);
    stl_le(mbi + 44, nmmap * MMAP_ENTRY_SIZE);
    stl_le(mbi + 48, MULTIBOOT_MMAP_ADDR);
    boot->mbi_addr = MULTIBOOT_INFO_ADDR;
    return true;
}

bool multiboot_load_image(const char *name, const uint8_t *image, size_t len,
                          const char *cmdline, uint8_t *ram,
                          uint64_t low_size, uint64_t high_size,
                          MultibootBoot *boot, GError **errp)
{
    MbHeader h;
    uint32_t unknown;

    memset(boot, 0, sizeof(*boot));
    if (low_size < 2 * MiB || low_size > 4 * GiB) {
        error_setg(errp, "Multiboot needs 2 MiB to 4 GiB of low RAM, "
                   "not 0x%" PRIx64 " bytes", low_size);
        return false;
    }
    if (!mb_find_header(name, image, len, &h, errp)) {
        return false;
    }
    unknown = h.flags & 0xffff & ~MB_FLAGS_KNOWN_REQ;
    if (unknown) {
        error_setg(errp, "%s: Multiboot header requires unsupported "
                   "features (flags 0x%x)", name, unknown);
        return false;
    }
    if (h.flags & MB_FLAG_ADDRESSES) {
        if (!mb_load_addresses(name, image, len, &h, ram, low_size, boot,
                               errp)) {
            return false;
        }
    } else if (!mb_load_elf(name, image, len, ram, low_size, boot, errp)) {
        return false;
    }
    return mb_build_info(name, cmdline, ram, low_size, high_size, boot, errp);
}

bool multiboot_load_file(const char *filename, const char *cmdline,
                         uint8_t *ram, uint64_t low_size, uint64_t high_size,
                         MultibootBoot *boot, GError **errp)
{
    g_autofree gchar *data = NULL;
    gsize len = 0;
    GError *local_err = NULL;

    if (!g_file_get_contents(filename, &data, &len, &local_err)) {
        error_setg(errp, "cannot read kernel '%s': %s", filename,
                   local_err->message);
        g_error_free(local_err);
        return false;
    }
    return multiboot_load_image(filename, (const uint8_t *)data, len, cmdline,
                                ram, low_size, high_size, boot, errp);
}

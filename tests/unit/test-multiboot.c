/*
 * Multiboot v1 loader on synthetic images, with a heap buffer as RAM.
 */
#include "qemu/osdep.h"
#include "hw/multiboot.h"
#include <elf.h>

#define RAM_SIZE (4 * 1024 * 1024)
#define NAME "guest.bin"

static uint8_t *ram;

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return v;
}

static void fresh_ram(void)
{
    g_free(ram);
    ram = g_malloc(RAM_SIZE);
    memset(ram, 0xaa, RAM_SIZE);
}

/* A multiboot header at buf+off with flags; checksum fixed up. */
static void put_header(uint8_t *p, uint32_t flags)
{
    put32(p, MULTIBOOT_HEADER_MAGIC);
    put32(p + 4, flags);
    put32(p + 8, -(MULTIBOOT_HEADER_MAGIC + flags));
}

/*
 * Flat image: 0x1000 bytes, header at 0x40, loaded at 1 MiB, bss to
 * 0x104000, entry 0x100080.
 */
#define FLAT_LEN 0x1000
static uint8_t *make_flat(uint32_t load_end)
{
    uint8_t *img = g_malloc0(FLAT_LEN);

    for (int i = 0x100; i < FLAT_LEN; i++) {
        img[i] = i * 7;
    }
    put_header(img + 0x40, 0x10003);
    put32(img + 0x40 + 12, 0x100040);   /* header_addr */
    put32(img + 0x40 + 16, 0x100000);   /* load_addr */
    put32(img + 0x40 + 20, load_end);   /* load_end_addr */
    put32(img + 0x40 + 24, 0x104000);   /* bss_end_addr */
    put32(img + 0x40 + 28, 0x100080);   /* entry_addr */
    return img;
}

static void check_mbi(const MultibootBoot *boot, const char *want_cmdline)
{
    const uint8_t *mbi = ram + boot->mbi_addr;
    const uint8_t *mmap;

    g_assert_cmpuint(boot->mbi_addr, ==, MULTIBOOT_INFO_ADDR);
    g_assert_cmphex(get32(mbi) & 0x45, ==, 0x45);       /* bits 0, 2, 6 */
    g_assert_cmpuint(get32(mbi + 4), ==, 640);
    g_assert_cmpuint(get32(mbi + 8), ==, (RAM_SIZE - 0x100000) / 1024);
    g_assert_cmpstr((const char *)ram + get32(mbi + 16), ==, want_cmdline);
    /* Two entries: low 640K and 1M..4M */
    g_assert_cmpuint(get32(mbi + 44), ==, 2 * 24);
    mmap = ram + get32(mbi + 48);
    g_assert_cmpuint(get32(mmap), ==, 20);
    g_assert_cmpuint(get32(mmap + 24 + 4), ==, 0x100000);
    g_assert_cmpuint(get32(mmap + 24 + 12), ==, RAM_SIZE - 0x100000);
    g_assert_cmpuint(get32(mmap + 24 + 20), ==, 1);
}

static void test_flat_ok(void)
{
    g_autofree uint8_t *img = make_flat(0);
    MultibootBoot boot;
    GError *err = NULL;

    fresh_ram();
    g_assert_true(multiboot_load_image(NAME, img, FLAT_LEN, "ncpus=2", ram,
                                       RAM_SIZE, 0, &boot, &err));
    g_assert_no_error(err);
    g_assert_cmphex(boot.entry, ==, 0x100080);
    g_assert_cmpmem(ram + 0x100000, FLAT_LEN, img, FLAT_LEN);
    for (uint32_t a = 0x100000 + FLAT_LEN; a < 0x104000; a++) {
        g_assert_cmpuint(ram[a], ==, 0);                /* bss cleared */
    }
    g_assert_cmpuint(ram[0x104000], ==, 0xaa);          /* nothing beyond */
    check_mbi(&boot, NAME " ncpus=2");
}

static void test_flat_load_end(void)
{
    g_autofree uint8_t *img = make_flat(0x100800);
    MultibootBoot boot;
    GError *err = NULL;

    fresh_ram();
    g_assert_true(multiboot_load_image(NAME, img, FLAT_LEN, NULL, ram,
                                       RAM_SIZE, 0, &boot, &err));
    g_assert_no_error(err);
    g_assert_cmpmem(ram + 0x100000, 0x800, img, 0x800);
    g_assert_cmpuint(ram[0x100800], ==, 0);             /* bss, not file */
    check_mbi(&boot, NAME);
}

/* ELF32 with one PT_LOAD: vaddr 0xc0200000 -> paddr 0x200000. */
static uint8_t *make_elf(size_t *len, int class)
{
    size_t sz = 0x1000;
    uint8_t *img = g_malloc0(sz);
    Elf32_Ehdr *eh = (Elf32_Ehdr *)img;
    Elf32_Phdr *ph = (Elf32_Phdr *)(img + sizeof(*eh));

    memcpy(eh->e_ident, ELFMAG, SELFMAG);
    eh->e_ident[EI_CLASS] = class;
    eh->e_ident[EI_DATA] = ELFDATA2LSB;
    eh->e_ident[EI_VERSION] = EV_CURRENT;
    eh->e_type = ET_EXEC;
    eh->e_machine = EM_386;
    eh->e_version = EV_CURRENT;
    eh->e_entry = 0xc0200010;
    eh->e_phoff = sizeof(*eh);
    eh->e_ehsize = sizeof(*eh);
    eh->e_phentsize = sizeof(*ph);
    eh->e_phnum = 1;
    ph->p_type = PT_LOAD;
    ph->p_offset = 0x100;
    ph->p_vaddr = 0xc0200000;
    ph->p_paddr = 0x200000;
    ph->p_filesz = 0x200;
    ph->p_memsz = 0x3000;
    put_header(img + 0x100, 0x3);
    for (int i = 0x110; i < 0x300; i++) {
        img[i] = i;
    }
    *len = sz;
    return img;
}

static void test_elf_ok(void)
{
    size_t len;
    g_autofree uint8_t *img = make_elf(&len, ELFCLASS32);
    MultibootBoot boot;
    GError *err = NULL;

    fresh_ram();
    g_assert_true(multiboot_load_image(NAME, img, len, "a b", ram, RAM_SIZE,
                                       0, &boot, &err));
    g_assert_no_error(err);
    g_assert_cmphex(boot.entry, ==, 0x200010);
    g_assert_cmpmem(ram + 0x200000, 0x200, img + 0x100, 0x200);
    g_assert_cmpuint(ram[0x200200], ==, 0);
    g_assert_cmpuint(ram[0x202fff], ==, 0);
    g_assert_cmpuint(ram[0x203000], ==, 0xaa);
    check_mbi(&boot, NAME " a b");
}

static void expect_error(const uint8_t *img, size_t len, uint64_t ram_size,
                         const char *needle)
{
    MultibootBoot boot;
    GError *err = NULL;

    fresh_ram();
    g_assert_false(multiboot_load_image(NAME, img, len, NULL, ram, ram_size,
                                        0, &boot, &err));
    g_assert_nonnull(err);
    if (!strstr(err->message, needle) || !strstr(err->message, NAME)) {
        g_error("error '%s' lacks '%s' or the file name", err->message,
                needle);
    }
    g_error_free(err);
}

static void test_bad_checksum(void)
{
    g_autofree uint8_t *img = make_flat(0);

    put32(img + 0x48, get32(img + 0x48) + 1);
    expect_error(img, FLAT_LEN, RAM_SIZE, "checksum");
}

static void test_no_header(void)
{
    g_autofree uint8_t *img = g_malloc0(0x3000);

    /* A valid header past the first 8192 bytes does not count. */
    put_header(img + 0x2000, 0x10003);
    expect_error(img, 0x3000, RAM_SIZE, "no Multiboot header");
}

static void test_elf64(void)
{
    size_t len;
    g_autofree uint8_t *img = make_elf(&len, ELFCLASS64);

    expect_error(img, len, RAM_SIZE, "32-bit");
}

static void test_elf_truncated(void)
{
    size_t len;
    g_autofree uint8_t *img = make_elf(&len, ELFCLASS32);

    /* The segment's file bytes run past the end of the file. */
    expect_error(img, 0x200, RAM_SIZE, "truncated");
}

static void test_flat_truncated(void)
{
    g_autofree uint8_t *img = make_flat(0x101000);

    expect_error(img, FLAT_LEN - 1, RAM_SIZE, "truncated");
    /* Cut inside the header's address fields. */
    expect_error(img, 0x40 + 20, RAM_SIZE, "truncated");
}

static void test_outside_ram(void)
{
    size_t len;
    g_autofree uint8_t *img = make_elf(&len, ELFCLASS32);
    Elf32_Phdr *ph = (Elf32_Phdr *)(img + sizeof(Elf32_Ehdr));

    ph->p_paddr = RAM_SIZE - 0x1000;    /* memsz 0x3000 overflows RAM */
    expect_error(img, len, RAM_SIZE, "outside guest RAM");
    ph->p_paddr = 0xfffff000;           /* 32-bit wrap */
    expect_error(img, len, RAM_SIZE, "outside guest RAM");
}

static void test_overlap_info(void)
{
    size_t len;
    g_autofree uint8_t *img = make_elf(&len, ELFCLASS32);
    Elf32_Phdr *ph = (Elf32_Phdr *)(img + sizeof(Elf32_Ehdr));

    ph->p_paddr = 0x8000;
    expect_error(img, len, RAM_SIZE, "boot information");
}

static void test_flat_bad_addresses(void)
{
    g_autofree uint8_t *img = make_flat(0);

    put32(img + 0x40 + 16, 0x100100);   /* load_addr above header_addr */
    expect_error(img, FLAT_LEN, RAM_SIZE, "header_addr");
}

static void test_unsupported_flags(void)
{
    g_autofree uint8_t *img = make_flat(0);

    put_header(img + 0x40, 0x10003 | 0x8);
    expect_error(img, FLAT_LEN, RAM_SIZE, "unsupported");
}

static void test_missing_file(void)
{
    MultibootBoot boot;
    GError *err = NULL;

    fresh_ram();
    g_assert_false(multiboot_load_file("/nonexistent/kernel.bin", NULL, ram,
                                       RAM_SIZE, 0, &boot, &err));
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message, "/nonexistent/kernel.bin"));
    g_error_free(err);
}

int main(int argc, char **argv)
{
    int ret;

    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/multiboot/flat-ok", test_flat_ok);
    g_test_add_func("/multiboot/flat-load-end", test_flat_load_end);
    g_test_add_func("/multiboot/elf-ok", test_elf_ok);
    g_test_add_func("/multiboot/bad-checksum", test_bad_checksum);
    g_test_add_func("/multiboot/no-header", test_no_header);
    g_test_add_func("/multiboot/elf64", test_elf64);
    g_test_add_func("/multiboot/elf-truncated", test_elf_truncated);
    g_test_add_func("/multiboot/flat-truncated", test_flat_truncated);
    g_test_add_func("/multiboot/outside-ram", test_outside_ram);
    g_test_add_func("/multiboot/overlap-info", test_overlap_info);
    g_test_add_func("/multiboot/flat-bad-addresses", test_flat_bad_addresses);
    g_test_add_func("/multiboot/unsupported-flags", test_unsupported_flags);
    g_test_add_func("/multiboot/missing-file", test_missing_file);
    ret = g_test_run();
    g_free(ram);
    return ret;
}

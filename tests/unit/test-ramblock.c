/*
 * RAMBlock allocation, lookup, discard, and guest-physical mappings.
 */
#include "qemu/osdep.h"
#include "qemu/rcu.h"
#include "qemu/cutils.h"
#include "qemu/bitmap.h"
#include "exec/ramblock.h"
#include "exec/memory.h"
#include "vm-flags.h"
#include <sys/mman.h>
#include <sys/stat.h>

#define MiB (1ULL << 20)

static RAMBlock *alloc_ok(const char *name, uint64_t size,
                          const RAMBackendConfig *cfg)
{
    GError *err = NULL;
    RAMBlock *rb = qemu_ram_alloc(name, size, cfg, &err);

    g_assert_no_error(err);
    g_assert_nonnull(rb);
    g_assert_cmpstr(rb->idstr, ==, name);
    g_assert_cmpuint(rb->used_length, ==, size);
    g_assert_true(rb->flags & RAM_MIGRATABLE);
    /* The memory must be usable at both ends. */
    rb->host[0] = 0x5a;
    rb->host[size - 1] = 0xa5;
    return rb;
}

static RAMBlock *find_by_name(const char *name)
{
    RAMBlock *rb;

    rcu_read_lock();
    rb = qemu_ram_block_by_name(name);
    rcu_read_unlock();
    return rb;
}

static RAMBlock *find_by_host(const void *p, ram_addr_t *off)
{
    RAMBlock *rb;

    rcu_read_lock();
    rb = qemu_ram_block_from_host(p, off);
    rcu_read_unlock();
    return rb;
}

static void check_lookup(RAMBlock *rb)
{
    ram_addr_t off = 1;
    uint8_t *end = rb->host + rb->used_length;
    RAMBlock *other;

    g_assert_true(find_by_name(rb->idstr) == rb);
    g_assert_true(find_by_host(rb->host, &off) == rb);
    g_assert_cmpuint(off, ==, 0);
    g_assert_true(find_by_host(rb->host + 4097, &off) == rb);
    g_assert_cmpuint(off, ==, 4097);
    g_assert_true(find_by_host(end - 1, &off) == rb);
    g_assert_cmpuint(off, ==, rb->used_length - 1);
    /* One past the end belongs to another block or to none. */
    other = find_by_host(end, NULL);
    g_assert_true(other != rb);
    other = find_by_host(rb->host - 1, NULL);
    g_assert_true(other != rb);
}

/* Fill, discard the middle, check the middle reads zero and the rest not. */
static void check_discard(RAMBlock *rb)
{
    GError *err = NULL;
    size_t ps = qemu_ram_pagesize(rb);
    uint64_t size = rb->used_length;

    memset(rb->host, 0x77, size);
    g_assert_true(ram_block_discard_range(rb, ps, 2 * ps, &err));
    g_assert_no_error(err);
    g_assert_true(buffer_is_zero(rb->host + ps, 2 * ps));
    g_assert_cmpint(rb->host[0], ==, 0x77);
    g_assert_cmpint(rb->host[ps - 1], ==, 0x77);
    g_assert_cmpint(rb->host[3 * ps], ==, 0x77);
    g_assert_cmpint(rb->host[size - 1], ==, 0x77);

    /* Misaligned start, misaligned length, beyond the end. */
    g_assert_false(ram_block_discard_range(rb, 1, ps, &err));
    g_assert_nonnull(strstr(err->message, "aligned"));
    g_clear_error(&err);
    g_assert_false(ram_block_discard_range(rb, 0, ps + 1, &err));
    g_clear_error(&err);
    g_assert_false(ram_block_discard_range(rb, size - ps, 2 * ps, &err));
    g_assert_nonnull(strstr(err->message, "outside"));
    g_clear_error(&err);
    g_assert_false(ram_block_discard_range(rb, UINT64_MAX - ps + 1, ps,
                                           &err));
    g_clear_error(&err);
    g_assert_cmpint(rb->host[size - 1], ==, 0x77);
}

/* Guest RAM is advised into transparent huge pages and aligned for them. */
static void check_thp(RAMBlock *rb)
{
    g_assert_cmpuint((uintptr_t)rb->host % (2 * MiB), ==, 0);
    g_assert_true(vm_advised_huge(rb->host));
}

static void test_anon(void)
{
    RAMBackendConfig cfg = { .type = RAM_BACKEND_ANON };
    RAMBlock *rb = alloc_ok("t-anon", 4 * MiB, &cfg);

    g_assert_cmpint(rb->fd, ==, -1);
    g_assert_false(qemu_ram_is_shared(rb));
    g_assert_cmpuint(qemu_ram_pagesize(rb), ==, getpagesize());
    check_thp(rb);
    check_lookup(rb);
    check_discard(rb);
    qemu_ram_free(rb);
    g_assert_null(find_by_name("t-anon"));
}

static void test_anon_shared_prealloc(void)
{
    RAMBackendConfig cfg = {
        .type = RAM_BACKEND_ANON, .share = true, .prealloc = true,
    };
    RAMBlock *rb = alloc_ok("t-anon-shared", 2 * MiB, &cfg);

    g_assert_true(qemu_ram_is_shared(rb));
    g_assert_true(rb->flags & RAM_PREALLOC);
    check_discard(rb);
    qemu_ram_free(rb);
}

static void test_memfd(void)
{
    RAMBackendConfig cfg = { .type = RAM_BACKEND_MEMFD, .share = true };
    RAMBlock *rb = alloc_ok("t-memfd", 4 * MiB, &cfg);
    struct stat st;

    g_assert_cmpint(rb->fd, >=, 0);
    g_assert_true(rb->flags & RAM_MEMFD);
    g_assert_true(qemu_ram_is_shared(rb));
    g_assert_cmpint(fstat(rb->fd, &st), ==, 0);
    g_assert_cmpuint(st.st_size, ==, 4 * MiB);
    check_lookup(rb);
    check_discard(rb);
    qemu_ram_free(rb);
}

static void test_memfd_private(void)
{
    RAMBackendConfig cfg = { .type = RAM_BACKEND_MEMFD, .share = false };
    RAMBlock *rb = alloc_ok("t-memfd-priv", 1 * MiB, &cfg);

    g_assert_false(qemu_ram_is_shared(rb));
    check_discard(rb);
    qemu_ram_free(rb);
}

static void test_file(void)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *dir = g_dir_make_tmp("ferry-ramblock-XXXXXX", &err);
    g_autofree char *path = NULL;
    RAMBackendConfig cfg = { .type = RAM_BACKEND_FILE, .share = true };
    RAMBlock *rb;
    GDir *d;
    struct stat st;

    g_assert_no_error(err);
    /* A directory: an unlinked temporary file, nothing left behind. */
    cfg.mem_path = dir;
    rb = alloc_ok("t-file-dir", 2 * MiB, &cfg);
    g_assert_true(rb->flags & RAM_FILE);
    check_discard(rb);
    d = g_dir_open(dir, 0, NULL);
    g_assert_null(g_dir_read_name(d));
    g_dir_close(d);
    qemu_ram_free(rb);

    /* A file path: created, sized, shared with the mapping. */
    path = g_build_filename(dir, "guest.ram", NULL);
    cfg.mem_path = path;
    rb = alloc_ok("t-file", 2 * MiB, &cfg);
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpuint(st.st_size, ==, 2 * MiB);
    check_discard(rb);
    qemu_ram_free(rb);

    /* Private mapping of the same (now larger than asked) file. */
    cfg.share = false;
    rb = alloc_ok("t-file-priv", 1 * MiB, &cfg);
    check_discard(rb);
    qemu_ram_free(rb);

    /* Existing file shorter than size is refused. */
    g_assert_true(g_file_set_contents(path, "x", 1, NULL));
    g_assert_null(qemu_ram_alloc("t-file-short", 1 * MiB, &cfg, &err));
    g_assert_nonnull(err);
    g_clear_error(&err);

    /* No mem-path, and an unopenable one. */
    cfg.mem_path = NULL;
    g_assert_null(qemu_ram_alloc("t-file-none", 1 * MiB, &cfg, &err));
    g_assert_nonnull(strstr(err->message, "mem-path"));
    g_clear_error(&err);
    cfg.mem_path = "/nonexistent-dir/x/y";
    g_assert_null(qemu_ram_alloc("t-file-bad", 1 * MiB, &cfg, &err));
    g_assert_nonnull(strstr(err->message, "/nonexistent-dir/x/y"));
    g_clear_error(&err);
    g_assert_null(find_by_name("t-file-bad"));

    unlink(path);
    g_assert_cmpint(rmdir(dir), ==, 0);
}

static void test_names_and_sizes(void)
{
    GError *err = NULL;
    RAMBlock *a = alloc_ok("t-dup", 1 * MiB, NULL);
    RAMBlock *b;
    char longname[300];
    uint64_t before = ram_bytes_total();

    g_assert_null(qemu_ram_alloc("t-dup", 1 * MiB, NULL, &err));
    g_assert_nonnull(strstr(err->message, "t-dup"));
    g_clear_error(&err);
    g_assert_null(qemu_ram_alloc("", 1 * MiB, NULL, &err));
    g_clear_error(&err);
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = 0;
    g_assert_null(qemu_ram_alloc(longname, 1 * MiB, NULL, &err));
    g_clear_error(&err);
    g_assert_null(qemu_ram_alloc("t-zero", 0, NULL, &err));
    g_clear_error(&err);

    /* Anonymous sizes round up to whole target pages. */
    b = qemu_ram_alloc("t-odd", 5000, NULL, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(b->used_length, ==, 8192);
    g_assert_cmpuint(ram_bytes_total(), ==, before + 8192);

    /* A memfd whose size is not a page multiple is refused, clearly. */
    {
        RAMBackendConfig cfg = { .type = RAM_BACKEND_MEMFD, .share = true };
        g_assert_null(qemu_ram_alloc("t-memfd-odd", 5000, &cfg, &err));
        g_assert_nonnull(strstr(err->message, "multiple"));
        g_clear_error(&err);
        g_assert_null(find_by_name("t-memfd-odd"));
    }
    qemu_ram_free(b);
    qemu_ram_free(a);
    g_assert_cmpuint(ram_bytes_total(), ==, before - 1 * MiB);
}

static void test_mappings(void)
{
    GError *err = NULL;
    RAMBlock *rb = alloc_ok("t-map", 8 * MiB, NULL);
    const MemoryMapping *maps;
    unsigned long *bmap = bitmap_new(8 * MiB / TARGET_PAGE_SIZE);
    uint64_t dirty = 99;
    size_t n;

    g_assert_true(memory_map_ram(0, rb, 0, 4 * MiB, &err));
    g_assert_true(memory_map_ram(16 * MiB, rb, 4 * MiB, 4 * MiB, &err));
    g_assert_no_error(err);
    maps = memory_mappings(&n);
    g_assert_cmpuint(n, ==, 2);
    g_assert_cmpuint(maps[1].gpa, ==, 16 * MiB);

    g_assert_true(guest_phys_to_host(0, 4 * MiB) == rb->host);
    g_assert_true(guest_phys_to_host(4 * MiB - 1, 1) ==
                  rb->host + 4 * MiB - 1);
    g_assert_null(guest_phys_to_host(4 * MiB - 1, 2));
    g_assert_null(guest_phys_to_host(4 * MiB, 1));
    g_assert_true(guest_phys_to_host(16 * MiB + 8, 8) ==
                  rb->host + 4 * MiB + 8);
    g_assert_null(guest_phys_to_host(UINT64_MAX, 1));

    /* Overlap, misalignment, beyond the block. */
    g_assert_false(memory_map_ram(2 * MiB, rb, 0, 4 * MiB, &err));
    g_assert_nonnull(strstr(err->message, "overlap"));
    g_clear_error(&err);
    g_assert_false(memory_map_ram(64 * MiB + 1, rb, 0, 4096, &err));
    g_clear_error(&err);
    g_assert_false(memory_map_ram(64 * MiB, rb, 0, 4095, &err));
    g_clear_error(&err);
    g_assert_false(memory_map_ram(64 * MiB, rb, 4 * MiB, 8 * MiB, &err));
    g_assert_nonnull(strstr(err->message, "outside"));
    g_clear_error(&err);
    g_assert_false(memory_map_ram(UINT64_MAX & TARGET_PAGE_MASK, rb, 0,
                                  2 * TARGET_PAGE_SIZE, &err));
    g_clear_error(&err);
    maps = memory_mappings(&n);
    g_assert_cmpuint(n, ==, 2);

    /* No accelerator: logging starts, nothing is ever dirty. */
    g_assert_true(memory_global_dirty_log_start(&err));
    g_assert_true(ramblock_sync_dirty_bitmap(rb, bmap, &dirty, &err));
    g_assert_cmpuint(dirty, ==, 0);
    g_assert_true(bitmap_empty(bmap, 8 * MiB / TARGET_PAGE_SIZE));
    memory_global_dirty_log_stop();
    g_free(bmap);
}

int main(int argc, char **argv)
{
    rcu_register_thread();
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/ramblock/anon", test_anon);
    g_test_add_func("/ramblock/anon-shared-prealloc",
                    test_anon_shared_prealloc);
    g_test_add_func("/ramblock/memfd", test_memfd);
    g_test_add_func("/ramblock/memfd-private", test_memfd_private);
    g_test_add_func("/ramblock/file", test_file);
    g_test_add_func("/ramblock/names-sizes", test_names_and_sizes);
    g_test_add_func("/ramblock/mappings", test_mappings);
    return g_test_run();
}

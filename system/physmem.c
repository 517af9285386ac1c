/*
 * RAMBlocks (host memory for guest RAM) and the guest-physical mappings of
 * them, with the accelerator hooks that mirror mappings and track dirtying.
 */
#include "qemu/osdep.h"
#include "qemu/thread.h"
#include "qemu/bitmap.h"
#include "exec/ramblock.h"
#include "exec/memory.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <linux/falloc.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MFD_HUGE_SHIFT
#define MFD_HUGE_SHIFT 26
#endif

RAMList ram_list = {
    .mutex = QEMU_MUTEX_INITIALIZER,
    .blocks = CDS_LIST_HEAD_INIT(ram_list.blocks),
};

const char *ram_backend_type_name(RAMBackendType type)
{
    switch (type) {
    case RAM_BACKEND_MEMFD:
        return "memory-backend-memfd";
    case RAM_BACKEND_FILE:
        return "memory-backend-file";
    default:
        return "memory-backend-ram";
    }
}

/* Host page size and hugetlbfs-ness of an fd's file system. */
static bool fd_page_size(int fd, const char *what, size_t *page_size,
                         bool *hugetlb, GError **errp)
{
    struct statfs fs;

    if (fstatfs(fd, &fs) < 0) {
        error_setg_errno(errp, errno, "cannot statfs %s", what);
        return false;
    }
    *hugetlb = fs.f_type == HUGETLBFS_MAGIC;
    *page_size = *hugetlb ? (size_t)fs.f_bsize : (size_t)getpagesize();
    return true;
}

static int open_memfd(const char *name, const RAMBackendConfig *cfg,
                      GError **errp)
{
    unsigned int flags = MFD_CLOEXEC;
    int fd;

    if (cfg->hugetlb) {
        flags |= MFD_HUGETLB;
        if (cfg->hugetlbsize) {
            if (cfg->hugetlbsize & (cfg->hugetlbsize - 1)) {
                error_setg(errp, "memory-backend-memfd '%s': hugetlbsize "
                           "%" PRIu64 " is not a power of two", name,
                           cfg->hugetlbsize);
                return -1;
            }
            flags |= (unsigned)__builtin_ctzll(cfg->hugetlbsize)
                     << MFD_HUGE_SHIFT;
        }
    }
    fd = memfd_create(name, flags);
    if (fd < 0) {
        error_setg_errno(errp, errno, "memory-backend-memfd '%s': "
                         "memfd_create%s failed", name,
                         cfg->hugetlb ? " with hugetlb" : "");
    }
    return fd;
}

/* Directory: an unlinked file in it; otherwise the file itself. */
static int open_mem_path(const char *name, const char *path, GError **errp)
{
    struct stat st;
    int fd;

    if (!path || !*path) {
        error_setg(errp, "memory-backend-file '%s': mem-path is required",
                   name);
        return -1;
    }
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        fd = open(path, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR)) {
            g_autofree char *tmpl = g_strdup_printf("%s/ferry_%s.XXXXXX",
                                                    path, name);
            fd = g_mkstemp_full(tmpl, O_RDWR | O_CLOEXEC, 0600);
            if (fd >= 0) {
                unlink(tmpl);
            }
        }
    } else {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    }
    if (fd < 0) {
        error_setg_errno(errp, errno, "memory-backend-file '%s': cannot "
                         "open mem-path '%s'", name, path);
    }
    return fd;
}

/* Make the fd at least size bytes long; a shorter non-empty file is refused. */
static bool size_fd(int fd, const char *name, uint64_t size, GError **errp)
{
    struct stat st;

    if (fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "'%s': cannot stat backing file", name);
        return false;
    }
    if ((uint64_t)st.st_size >= size) {
        return true;
    }
    if (st.st_size != 0) {
        error_setg(errp, "'%s': backing file size 0x%" PRIx64 " is smaller "
                   "than the 'size' option 0x%" PRIx64, name,
                   (uint64_t)st.st_size, size);
        return false;
    }
    if (ftruncate(fd, size) < 0) {
        error_setg_errno(errp, errno, "'%s': cannot resize backing file to "
                         "%" PRIu64 " bytes", name, size);
        return false;
    }
    return true;
}

static bool prealloc_range(uint8_t *host, uint64_t size, size_t page_size,
                           const char *name, GError **errp)
{
    uint64_t off;

    if (madvise(host, size, MADV_POPULATE_WRITE) == 0) {
        return true;
    }
    if (errno != EINVAL) {
        /* ENOMEM/EFAULT here mean the memory is not there (e.g. hugepages). */
        error_setg_errno(errp, errno, "'%s': cannot preallocate %" PRIu64
                         " bytes", name, size);
        return false;
    }
    /* Old kernel: write each page; reading first keeps existing data. */
    for (off = 0; off < size; off += page_size) {
        volatile uint8_t *p = host + off;
        *p = *p;
    }
    return true;
}

/*
 * Huge pages (transparent or hugetlbfs) can only back a range aligned to
 * their size: reserve a little more address space than needed, then map
 * over its aligned middle and give the slack back.
 */
static void *ram_mmap_aligned(size_t size, size_t align, int mflags, int fd)
{
    size_t total = size + align;
    uint8_t *resv, *start;

    resv = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS |
                MAP_NORESERVE, -1, 0);
    if (resv == MAP_FAILED) {
        return NULL;
    }
    start = (uint8_t *)QEMU_ALIGN_UP((uintptr_t)resv, align);
    if (mmap(start, size, PROT_READ | PROT_WRITE, mflags | MAP_FIXED, fd, 0)
        == MAP_FAILED) {
        int err = errno;

        munmap(resv, total);
        errno = err;
        return NULL;
    }
    if (start > resv) {
        munmap(resv, start - resv);
    }
    if (resv + total > start + size) {
        munmap(start + size, resv + total - (start + size));
    }
    return start;
}

/*
 * Guest RAM in transparent huge pages: each first touch of guest memory
 * (the loader, the guest, the migration thread reading a page to send)
 * then costs a TLB miss and a fault per 2 MiB instead of per 4 KiB.
 * Advice only: the kernel may refuse it, which costs speed, not
 * correctness. hugetlbfs is huge anyway.
 */
static void ram_block_advise_huge(RAMBlock *rb, bool on)
{
    if (!(rb->flags & RAM_HUGETLB) && rb->host) {
        madvise(rb->host, rb->max_length,
                on ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    }
}

#define PAGEMAP_PRESENT (1ULL << 63)
#define PAGEMAP_SWAPPED (1ULL << 62)
#define PAGEMAP_CHUNK 8192          /* entries per read */

unsigned long *qemu_ram_untouched_map(RAMBlock *rb)
{
    uint64_t npages = rb->used_length >> TARGET_PAGE_BITS;
    g_autofree uint64_t *e = NULL;
    unsigned long *map;
    int fd;

    /* Shared memory may hold pages that are not in our page tables. */
    if (rb->fd >= 0 || (rb->flags & RAM_SHARED) || !rb->host ||
        getpagesize() != TARGET_PAGE_SIZE) {
        return NULL;
    }
    fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return NULL;
    }
    map = bitmap_new(npages);
    e = g_new(uint64_t, PAGEMAP_CHUNK);
    for (uint64_t first = 0; first < npages; first += PAGEMAP_CHUNK) {
        uint64_t n = MIN(PAGEMAP_CHUNK, npages - first);
        off_t at = ((uintptr_t)rb->host / TARGET_PAGE_SIZE + first) * 8;

        if (pread(fd, e, n * 8, at) != (ssize_t)(n * 8)) {
            g_free(map);
            map = NULL;
            break;
        }
        for (uint64_t i = 0; i < n; i++) {
            if (!(e[i] & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED))) {
                set_bit(first + i, map);
            }
        }
    }
    close(fd);
    return map;
}

bool qemu_ram_advise_huge_region(RAMBlock *rb, ram_addr_t offset)
{
    if ((rb->flags & RAM_HUGETLB) || !rb->host ||
        !QEMU_IS_ALIGNED(offset, RAM_THP_SIZE) ||
        offset >= rb->used_length ||
        rb->used_length - offset < RAM_THP_SIZE) {
        return false;
    }
    return madvise(rb->host + offset, RAM_THP_SIZE, MADV_HUGEPAGE) == 0;
}

void qemu_ram_advise_huge(bool on)
{
    RAMBlock *rb;

    rcu_read_lock();
    RAMBLOCK_FOREACH_MIGRATABLE(rb) {
        ram_block_advise_huge(rb, on);
    }
    rcu_read_unlock();
}

static bool ram_block_map(RAMBlock *rb, const RAMBackendConfig *cfg,
                          GError **errp)
{
    const char *name = rb->idstr;
    bool hugetlb = false;
    int mflags;

    if (cfg->type == RAM_BACKEND_MEMFD) {
        rb->fd = open_memfd(name, cfg, errp);
        rb->flags |= RAM_MEMFD;
    } else if (cfg->type == RAM_BACKEND_FILE) {
        rb->fd = open_mem_path(name, cfg->mem_path, errp);
        rb->flags |= RAM_FILE;
    }
    if (cfg->type != RAM_BACKEND_ANON) {
        if (rb->fd < 0 ||
            !fd_page_size(rb->fd, name, &rb->page_size, &hugetlb, errp)) {
            return false;
        }
    } else {
        rb->page_size = getpagesize();
    }
    if (!QEMU_IS_ALIGNED(rb->max_length, rb->page_size)) {
        error_setg(errp, "%s '%s': size %" PRIu64 " is not a multiple of "
                   "the page size %zu", ram_backend_type_name(cfg->type), name,
                   (uint64_t)rb->max_length, rb->page_size);
        return false;
    }
    if (rb->fd >= 0 && !size_fd(rb->fd, name, rb->max_length, errp)) {
        return false;
    }
    if (cfg->share) {
        rb->flags |= RAM_SHARED;
    }
    mflags = cfg->share ? MAP_SHARED : MAP_PRIVATE;
    /*
     * Huge pages are reserved at mmap time so a shortage fails here, not
     * as SIGBUS when the guest first touches a page.
     */
    if (!hugetlb) {
        mflags |= MAP_NORESERVE;
    }
    if (rb->fd < 0) {
        mflags |= MAP_ANONYMOUS;
    }
    rb->host = ram_mmap_aligned(rb->max_length,
                                MAX(rb->page_size, RAM_THP_SIZE), mflags,
                                rb->fd);
    if (!rb->host) {
        error_setg_errno(errp, errno, "%s '%s': cannot map %" PRIu64
                         " bytes", ram_backend_type_name(cfg->type), name,
                         (uint64_t)rb->max_length);
        return false;
    }
    if (hugetlb) {
        rb->flags |= RAM_HUGETLB;
    }
    ram_block_advise_huge(rb, true);
    if (cfg->prealloc) {
        rb->flags |= RAM_PREALLOC;
        return prealloc_range(rb->host, rb->max_length, rb->page_size, name,
                              errp);
    }
    return true;
}

static void ram_block_destroy(RAMBlock *rb)
{
    if (rb->host) {
        munmap(rb->host, rb->max_length);
    }
    if (rb->fd >= 0) {
        close(rb->fd);
    }
    g_free(rb->bmap);
    g_free(rb->unsentmap);
    g_free(rb->receivedmap);
    g_free(rb->zeromap);
    g_free(rb);
}

/* Caller holds ram_list.mutex. */
static RAMBlock *find_block_locked(const char *name)
{
    RAMBlock *rb;

    cds_list_for_each_entry(rb, &ram_list.blocks, next) {
        if (!strcmp(rb->idstr, name)) {
            return rb;
        }
    }
    return NULL;
}

RAMBlock *qemu_ram_alloc(const char *name, uint64_t size,
                         const RAMBackendConfig *cfg, GError **errp)
{
    static const RAMBackendConfig anon = { .type = RAM_BACKEND_ANON };
    RAMBlock *rb;

    cfg = cfg ? cfg : &anon;
    if (!name || !*name || strlen(name) >= sizeof(rb->idstr)) {
        error_setg(errp, "invalid RAMBlock name '%s'", name ? name : "");
        return NULL;
    }
    if (size == 0 || size > (UINT64_MAX >> 1)) {
        error_setg(errp, "%s '%s': invalid size %" PRIu64,
                   ram_backend_type_name(cfg->type), name, size);
        return NULL;
    }
    rb = g_new0(RAMBlock, 1);
    g_strlcpy(rb->idstr, name, sizeof(rb->idstr));
    rb->fd = -1;
    /* Anonymous memory is rounded up to whole target pages, as QEMU does. */
    rb->used_length = rb->max_length = cfg->type == RAM_BACKEND_ANON ?
        QEMU_ALIGN_UP(size, TARGET_PAGE_SIZE) : size;
    rb->flags = RAM_MIGRATABLE;

    qemu_mutex_lock(&ram_list.mutex);
    if (find_block_locked(name)) {
        qemu_mutex_unlock(&ram_list.mutex);
        error_setg(errp, "RAMBlock '%s' already exists", name);
        g_free(rb);
        return NULL;
    }
    if (!ram_block_map(rb, cfg, errp)) {
        qemu_mutex_unlock(&ram_list.mutex);
        ram_block_destroy(rb);
        return NULL;
    }
    cds_list_add_tail_rcu(&rb->next, &ram_list.blocks);
    ram_list.version++;
    qemu_mutex_unlock(&ram_list.mutex);
    return rb;
}

void qemu_ram_free(RAMBlock *block)
{
    if (!block) {
        return;
    }
    qemu_mutex_lock(&ram_list.mutex);
    cds_list_del_rcu(&block->next);
    ram_list.version++;
    qemu_mutex_unlock(&ram_list.mutex);
    /* Blocks are rarely freed: wait here rather than defer to a thread. */
    synchronize_rcu();
    ram_block_destroy(block);
}

RAMBlock *qemu_ram_block_by_name(const char *name)
{
    RAMBlock *rb;

    RAMBLOCK_FOREACH(rb) {
        if (!strcmp(rb->idstr, name)) {
            return rb;
        }
    }
    return NULL;
}

RAMBlock *qemu_ram_block_from_host(const void *ptr, ram_addr_t *offset)
{
    const uint8_t *p = ptr;
    RAMBlock *rb;

    RAMBLOCK_FOREACH(rb) {
        if (rb->host && p >= rb->host && p < rb->host + rb->max_length) {
            if (offset) {
                *offset = p - rb->host;
            }
            return rb;
        }
    }
    return NULL;
}

uint64_t ram_bytes_total(void)
{
    uint64_t total = 0;
    RAMBlock *rb;

    rcu_read_lock();
    RAMBLOCK_FOREACH_MIGRATABLE(rb) {
        total += rb->used_length;
    }
    rcu_read_unlock();
    return total;
}

bool ram_block_discard_range(RAMBlock *rb, uint64_t start, size_t len,
                             GError **errp)
{
    uint8_t *host;

    if (!QEMU_IS_ALIGNED(start, rb->page_size) ||
        !QEMU_IS_ALIGNED(len, rb->page_size)) {
        error_setg(errp, "RAMBlock '%s': discard range 0x%" PRIx64 "+0x%zx "
                   "is not aligned to the page size 0x%zx", rb->idstr, start,
                   len, rb->page_size);
        return false;
    }
    if (start > rb->used_length || len > rb->used_length - start) {
        error_setg(errp, "RAMBlock '%s': discard range 0x%" PRIx64 "+0x%zx "
                   "is outside the block (0x%" PRIx64 " bytes)", rb->idstr,
                   start, len, (uint64_t)rb->used_length);
        return false;
    }
    if (!len) {
        return true;
    }
    host = rb->host + start;
    if (rb->fd >= 0) {
        /* The file offset equals the block offset: blocks map from 0. */
        if (fallocate(rb->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      start, len) < 0) {
            error_setg_errno(errp, errno, "RAMBlock '%s': cannot punch hole "
                             "at 0x%" PRIx64 "+0x%zx", rb->idstr, start, len);
            return false;
        }
        /* Private mappings keep copied pages after the punch: drop them. */
        if (!(rb->flags & RAM_SHARED) && madvise(host, len, MADV_DONTNEED)) {
            error_setg_errno(errp, errno, "RAMBlock '%s': madvise(DONTNEED) "
                             "failed", rb->idstr);
            return false;
        }
        return true;
    }
    /* Shared anonymous memory is shmem: DONTNEED would keep the data. */
    if (madvise(host, len, (rb->flags & RAM_SHARED) ? MADV_REMOVE
                                                    : MADV_DONTNEED) < 0) {
        error_setg_errno(errp, errno, "RAMBlock '%s': cannot discard "
                         "0x%" PRIx64 "+0x%zx", rb->idstr, start, len);
        return false;
    }
    return true;
}

/* --- guest-physical mappings ------------------------------------------ */

static const AccelMemoryOps *accel_ops;
static QemuMutex mappings_lock = QEMU_MUTEX_INITIALIZER;
static MemoryMapping *mappings;
static size_t n_mappings;

/*
 * Mappings made before registration are not replayed here: the accelerator
 * walks memory_mappings() itself, where it can report errors.
 */
void memory_register_accel_ops(const AccelMemoryOps *ops)
{
    qemu_mutex_lock(&mappings_lock);
    accel_ops = ops;
    qemu_mutex_unlock(&mappings_lock);
}

static bool ranges_overlap(hwaddr a, uint64_t alen, hwaddr b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

bool memory_map_ram(hwaddr gpa, RAMBlock *block, ram_addr_t offset,
                    uint64_t size, GError **errp)
{
    MemoryMapping map = {
        .gpa = gpa, .block = block, .offset = offset, .size = size,
    };
    size_t i;

    if (!size || !QEMU_IS_ALIGNED(gpa | offset | size, TARGET_PAGE_SIZE)) {
        error_setg(errp, "cannot map '%s' at 0x%" PRIx64 ": offset 0x%" PRIx64
                   " and size 0x%" PRIx64 " must be non-zero page multiples",
                   block->idstr, gpa, (uint64_t)offset, size);
        return false;
    }
    if (offset > block->used_length || size > block->used_length - offset ||
        gpa + size < gpa) {
        error_setg(errp, "cannot map '%s' at 0x%" PRIx64 ": range 0x%" PRIx64
                   "+0x%" PRIx64 " is outside the block", block->idstr, gpa,
                   (uint64_t)offset, size);
        return false;
    }
    qemu_mutex_lock(&mappings_lock);
    for (i = 0; i < n_mappings; i++) {
        if (ranges_overlap(gpa, size, mappings[i].gpa, mappings[i].size)) {
            qemu_mutex_unlock(&mappings_lock);
            error_setg(errp, "cannot map '%s' at 0x%" PRIx64 ": overlaps "
                       "'%s' at 0x%" PRIx64, block->idstr, gpa,
                       mappings[i].block->idstr, mappings[i].gpa);
            return false;
        }
    }
    if (accel_ops && accel_ops->region_add &&
        !accel_ops->region_add(&map, errp)) {
        qemu_mutex_unlock(&mappings_lock);
        return false;
    }
    mappings = g_renew(MemoryMapping, mappings, n_mappings + 1);
    mappings[n_mappings++] = map;
    qemu_mutex_unlock(&mappings_lock);
    return true;
}

void *guest_phys_to_host(hwaddr gpa, uint64_t len)
{
    size_t i;

    for (i = 0; i < n_mappings; i++) {
        const MemoryMapping *m = &mappings[i];

        if (gpa >= m->gpa && gpa - m->gpa < m->size &&
            len <= m->size - (gpa - m->gpa)) {
            return ramblock_ptr(m->block, m->offset + (gpa - m->gpa));
        }
    }
    return NULL;
}

const MemoryMapping *memory_mappings(size_t *count)
{
    *count = n_mappings;
    return mappings;
}

bool memory_global_dirty_log_start(GError **errp)
{
    if (accel_ops && accel_ops->log_start) {
        return accel_ops->log_start(errp);
    }
    return true;
}

void memory_global_dirty_log_stop(void)
{
    if (accel_ops && accel_ops->log_stop) {
        accel_ops->log_stop();
    }
}

bool ramblock_sync_dirty_bitmap(RAMBlock *rb, unsigned long *bmap,
                                uint64_t *num_dirty, GError **errp)
{
    if (accel_ops && accel_ops->log_sync) {
        return accel_ops->log_sync(rb, bmap, num_dirty, errp);
    }
    *num_dirty = 0;
    return true;
}

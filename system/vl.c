/*
 * The command line, with QEMU's option names and "key=val,..." syntax.
 *
 * Parsing only fills a VMOptions: nothing is created and no global is
 * touched, so the unit test can run it again and again.
 */
#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qemu/uuid.h"
#include "sysemu/sysemu.h"
#include "chardev/char.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <json-glib/json-glib.h>
#include "qemu/json-depth.h"
#include "hw/dirtier.h"

#define DEFAULT_RAM_SIZE (128ULL << 20)
#define MAX_CPUS 255

const char *incoming_uri;
const char *qemu_name;

/* State that lives only while parsing. */
typedef struct ParseCtx {
    GHashTable *machine_kv;     /* all -machine options, merged */
    bool serial_given;
    bool nographic;
    GPtrArray *mon_chardevs;    /* chardev ids of -mon mode=control */
    char *serial_chardev;       /* -device isa-serial,chardev=ID */
} ParseCtx;

typedef bool (*OptHandler)(VMOptions *opts, ParseCtx *ctx, const char *arg,
                           GError **errp);

typedef struct VLOption {
    const char *name;
    bool has_arg;
    OptHandler fn;
} VLOption;

/* --- "key=val,key=val" ------------------------------------------------- */

/*
 * Split str into key/value pairs added to h (later keys win).  ",," is a
 * literal comma; a first element without '=' is the value of implied_key;
 * a later bare "flag" means flag=on, as QemuOpts reads it.
 */
static bool keyval_parse(const char *str, const char *implied_key,
                         GHashTable *h, GError **errp)
{
    const char *p = str;
    bool first = true;

    while (true) {
        g_autoptr(GString) elem = g_string_new(NULL);
        char *eq;

        for (; *p; p++) {
            if (*p == ',') {
                if (p[1] != ',') {
                    break;
                }
                p++;
            }
            g_string_append_c(elem, *p);
        }
        if (!elem->len) {
            error_setg(errp, "empty parameter in '%s'", str);
            return false;
        }
        eq = strchr(elem->str, '=');
        if (!eq && first && implied_key) {
            g_hash_table_insert(h, g_strdup(implied_key),
                                g_strdup(elem->str));
        } else if (!eq) {
            g_hash_table_insert(h, g_strdup(elem->str), g_strdup("on"));
        } else if (eq == elem->str) {
            error_setg(errp, "parameter without a name in '%s'", str);
            return false;
        } else {
            g_hash_table_insert(h, g_strndup(elem->str, eq - elem->str),
                                g_strdup(eq + 1));
        }
        first = false;
        if (!*p) {
            return true;
        }
        p++;
    }
}

static GHashTable *keyval_new(void)
{
    return g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
}

/* Fail on the first key of h not in the NULL-terminated list. */
static bool keyval_check_known(GHashTable *h, const char *const *known,
                               GError **errp)
{
    GHashTableIter it;
    gpointer key;

    g_hash_table_iter_init(&it, h);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        if (!g_strv_contains(known, key)) {
            error_setg(errp, "invalid parameter '%s'", (const char *)key);
            return false;
        }
    }
    return true;
}

static bool keyval_bool(GHashTable *h, const char *key, bool *out,
                        GError **errp)
{
    const char *v = g_hash_table_lookup(h, key);

    if (v && !qemu_parse_bool(v, out, errp)) {
        g_prefix_error(errp, "parameter '%s': ", key);
        return false;
    }
    return true;
}

static bool keyval_size(GHashTable *h, const char *key, char unit,
                        uint64_t *out, GError **errp)
{
    const char *v = g_hash_table_lookup(h, key);

    if (v && !qemu_strtosz(v, unit, out, errp)) {
        g_prefix_error(errp, "parameter '%s': ", key);
        return false;
    }
    return true;
}

static bool keyval_u64(GHashTable *h, const char *key, uint64_t *out,
                       GError **errp)
{
    const char *v = g_hash_table_lookup(h, key);

    if (v && !qemu_strtou64(v, out, errp)) {
        g_prefix_error(errp, "parameter '%s': ", key);
        return false;
    }
    return true;
}

/* --- option handlers ------------------------------------------------------ */

static bool opt_m(VMOptions *opts, ParseCtx *ctx, const char *arg,
                  GError **errp)
{
    static const char *const known[] = { "size", NULL };
    g_autoptr(GHashTable) h = keyval_new();
    uint64_t size = 0;

    const char *val;

    if (!keyval_parse(arg, "size", h, errp) ||
        !keyval_check_known(h, known, errp)) {
        return false;
    }
    val = g_hash_table_lookup(h, "size");
    if (!val) {
        error_setg(errp, "missing 'size' in '%s'", arg);
        return false;
    }
    if (!qemu_strtosz(val, 'M', &size, errp)) {
        return false;
    }
    if (size == 0) {
        error_setg(errp, "invalid RAM size '%s': must not be zero", arg);
        return false;
    }
    if (size > UINT64_MAX - TARGET_PAGE_SIZE) {
        error_setg(errp, "invalid RAM size '%s': too large", arg);
        return false;
    }
    opts->machine.ram_size = QEMU_ALIGN_UP(size, TARGET_PAGE_SIZE);
    opts->ram_size_given = true;
    return true;
}

static bool opt_smp(VMOptions *opts, ParseCtx *ctx, const char *arg,
                    GError **errp)
{
    static const char *const known[] = {
        "cpus", "sockets", "dies", "cores", "threads", "maxcpus", NULL
    };
    static const char *const topo[] = { "sockets", "dies", "cores",
                                        "threads" };
    g_autoptr(GHashTable) h = keyval_new();
    uint64_t cpus = 0, product = 1, maxcpus = 0, v;
    bool has_topo = false;
    size_t i;

    if (!keyval_parse(arg, "cpus", h, errp) ||
        !keyval_check_known(h, known, errp) ||
        !keyval_u64(h, "cpus", &cpus, errp) ||
        !keyval_u64(h, "maxcpus", &maxcpus, errp)) {
        return false;
    }
    for (i = 0; i < ARRAY_SIZE(topo); i++) {
        v = 1;
        if (!keyval_u64(h, topo[i], &v, errp)) {
            return false;
        }
        has_topo |= g_hash_table_contains(h, topo[i]);
        if (v == 0 || v > MAX_CPUS) {
            error_setg(errp, "invalid %s '%" PRIu64 "'", topo[i], v);
            return false;
        }
        product *= v;
    }
    if (!g_hash_table_contains(h, "cpus")) {
        cpus = has_topo ? product : 1;
    }
    if (cpus < 1 || cpus > MAX_CPUS) {
        error_setg(errp, "invalid number of CPUs '%s' (must be 1..%d)", arg,
                   MAX_CPUS);
        return false;
    }
    if (has_topo && product != cpus) {
        error_setg(errp, "invalid CPU topology '%s': product of the "
                   "hierarchy must match cpus", arg);
        return false;
    }
    if (maxcpus && maxcpus != cpus) {
        error_setg(errp, "CPU hotplug is not supported: maxcpus must equal "
                   "cpus in '%s'", arg);
        return false;
    }
    opts->machine.smp_cpus = (int)cpus;
    return true;
}

/*
 * "kvm", "tcg", or a QEMU-style fallback list "kvm:tcg".  ferry has no
 * instruction emulator: "tcg" only stands for "no KVM", which a machine
 * without vCPUs (none, x-ram) can run with; main() refuses it for pc.
 */
static bool select_accel(VMOptions *opts, const char *list, GError **errp)
{
    g_auto(GStrv) names = g_strsplit(list, ":", -1);
    int i;

    for (i = 0; names[i]; i++) {
        if (strcmp(names[i], "kvm") && strcmp(names[i], "tcg")) {
            error_setg(errp, "accelerator '%s' is not supported (use kvm, "
                       "or tcg for a machine without vCPUs)", names[i]);
            return false;
        }
    }
    opts->machine.accel_kvm = g_strv_contains((const char *const *)names,
                                              "kvm");
    opts->machine.accel_tcg = g_strv_contains((const char *const *)names,
                                              "tcg");
    return true;
}

static bool opt_accel(VMOptions *opts, ParseCtx *ctx, const char *arg,
                      GError **errp)
{
    static const char *const known[] = { "accel", NULL };
    g_autoptr(GHashTable) h = keyval_new();

    if (!keyval_parse(arg, "accel", h, errp) ||
        !keyval_check_known(h, known, errp)) {
        return false;
    }
    if (!g_hash_table_contains(h, "accel")) {
        error_setg(errp, "missing accelerator name in '%s'", arg);
        return false;
    }
    return select_accel(opts, g_hash_table_lookup(h, "accel"), errp);
}

static bool opt_enable_kvm(VMOptions *opts, ParseCtx *ctx, const char *arg,
                           GError **errp)
{
    opts->machine.accel_kvm = true;
    return true;
}

static bool opt_machine(VMOptions *opts, ParseCtx *ctx, const char *arg,
                        GError **errp)
{
    /* Merged now, interpreted once all -machine options are in. */
    return keyval_parse(arg, "type", ctx->machine_kv, errp);
}

static bool opt_kernel(VMOptions *opts, ParseCtx *ctx, const char *arg,
                       GError **errp)
{
    g_free(opts->machine.kernel_filename);
    opts->machine.kernel_filename = g_strdup(arg);
    return true;
}

static bool opt_append(VMOptions *opts, ParseCtx *ctx, const char *arg,
                       GError **errp)
{
    g_free(opts->machine.kernel_cmdline);
    opts->machine.kernel_cmdline = g_strdup(arg);
    return true;
}

static void memory_backend_free(gpointer p)
{
    MemoryBackend *be = p;

    g_free(be->id);
    g_free(be->mem_path);
    g_free(be);
}

static bool backend_type_parse(const char *qom_type, RAMBackendType *type)
{
    if (!strcmp(qom_type, "memory-backend-ram")) {
        *type = RAM_BACKEND_ANON;
    } else if (!strcmp(qom_type, "memory-backend-memfd")) {
        *type = RAM_BACKEND_MEMFD;
    } else if (!strcmp(qom_type, "memory-backend-file")) {
        *type = RAM_BACKEND_FILE;
    } else {
        return false;
    }
    return true;
}

static MemoryBackend *find_backend(VMOptions *opts, const char *id)
{
    guint i;

    for (i = 0; i < opts->machine.backends->len; i++) {
        MemoryBackend *be = g_ptr_array_index(opts->machine.backends, i);
        if (!strcmp(be->id, id)) {
            return be;
        }
    }
    return NULL;
}

static bool backend_check_keys(GHashTable *h, RAMBackendType type,
                               GError **errp)
{
    static const char *const ram_keys[] = {
        "qom-type", "id", "size", "share", "prealloc", "merge", "dump",
        "prealloc-threads", NULL
    };
    static const char *const memfd_keys[] = {
        "qom-type", "id", "size", "share", "prealloc", "merge", "dump",
        "prealloc-threads", "hugetlb", "hugetlbsize", "seal", NULL
    };
    static const char *const file_keys[] = {
        "qom-type", "id", "size", "share", "prealloc", "merge", "dump",
        "prealloc-threads", "mem-path", "align", "discard-data", NULL
    };

    return keyval_check_known(h, type == RAM_BACKEND_MEMFD ? memfd_keys :
                              type == RAM_BACKEND_FILE ? file_keys : ram_keys,
                              errp);
}

/* Secrets are small: a device or a huge file is a mistake, not a key. */
#define SECRET_MAX_SIZE (64 * 1024)

static bool secret_file_check(const char *id, const char *file,
                              GError **errp)
{
    struct stat st;
    int fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

    if (fd < 0) {
        error_setg_errno(errp, errno, "secret '%s': cannot open '%s'", id,
                         file);
        return false;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
        st.st_size > SECRET_MAX_SIZE) {
        error_setg(errp, "secret '%s': '%s' is not a regular file of at "
                   "most %d bytes", id, file, SECRET_MAX_SIZE);
        close(fd);
        return false;
    }
    close(fd);
    return true;
}

/* -object secret: checked, as QEMU reads it; ferry has no TLS to use it. */
static bool secret_object(GHashTable *h, GError **errp)
{
    static const char *const known[] = {
        "qom-type", "id", "format", "file", "data", "keyid", "iv", NULL
    };
    const char *id = g_hash_table_lookup(h, "id");
    const char *format = g_hash_table_lookup(h, "format");
    const char *file = g_hash_table_lookup(h, "file");

    if (!keyval_check_known(h, known, errp)) {
        return false;
    }
    if (!id || !*id) {
        error_setg(errp, "parameter 'id' is missing");
        return false;
    }
    if (format && strcmp(format, "raw") && strcmp(format, "base64")) {
        error_setg(errp, "secret '%s': invalid format '%s' (raw or base64)",
                   id, format);
        return false;
    }
    if (!file == !g_hash_table_contains(h, "data")) {
        error_setg(errp, "secret '%s': exactly one of 'file' and 'data' is "
                   "needed", id);
        return false;
    }
    if (file && !secret_file_check(id, file, errp)) {
        return false;
    }
    if (g_hash_table_contains(h, "keyid")) {
        error_setg(errp, "secret '%s': encrypted secrets (keyid) are not "
                   "supported", id);
        return false;
    }
    return true;
}

static bool opt_object(VMOptions *opts, ParseCtx *ctx, const char *arg,
                       GError **errp)
{
    g_autoptr(GHashTable) h = keyval_new();
    MemoryBackend *be;
    const char *qom_type, *id;
    RAMBackendType type;

    if (!keyval_parse(arg, "qom-type", h, errp)) {
        return false;
    }
    qom_type = g_hash_table_lookup(h, "qom-type");
    if (qom_type && !strcmp(qom_type, "secret")) {
        return secret_object(h, errp);
    }
    if (!qom_type || !backend_type_parse(qom_type, &type)) {
        error_setg(errp, "unsupported object type '%s' (use "
                   "memory-backend-ram, memory-backend-memfd, "
                   "memory-backend-file or secret)", qom_type ? qom_type : "");
        return false;
    }
    if (!backend_check_keys(h, type, errp)) {
        return false;
    }
    id = g_hash_table_lookup(h, "id");
    if (!id || !*id) {
        error_setg(errp, "parameter 'id' is missing");
        return false;
    }
    if (find_backend(opts, id)) {
        error_setg(errp, "duplicate object id '%s'", id);
        return false;
    }
    if (!g_hash_table_contains(h, "size")) {
        error_setg(errp, "parameter 'size' is missing");
        return false;
    }
    be = g_new0(MemoryBackend, 1);
    g_ptr_array_add(opts->machine.backends, be);
    be->id = g_strdup(id);
    be->cfg.type = type;
    /* As QEMU: only memfd maps shared unless told otherwise. */
    be->cfg.share = type == RAM_BACKEND_MEMFD;
    if (!keyval_size(h, "size", 'B', &be->size, errp) ||
        !keyval_bool(h, "share", &be->cfg.share, errp) ||
        !keyval_bool(h, "prealloc", &be->cfg.prealloc, errp) ||
        !keyval_bool(h, "hugetlb", &be->cfg.hugetlb, errp) ||
        !keyval_size(h, "hugetlbsize", 'B', &be->cfg.hugetlbsize, errp)) {
        return false;
    }
    if (be->size == 0) {
        error_setg(errp, "property 'size' of %s must not be zero", qom_type);
        return false;
    }
    if (be->cfg.hugetlbsize && !be->cfg.hugetlb) {
        error_setg(errp, "'hugetlbsize' needs 'hugetlb=on'");
        return false;
    }
    if (type == RAM_BACKEND_FILE) {
        be->mem_path = g_strdup(g_hash_table_lookup(h, "mem-path"));
        if (!be->mem_path || !*be->mem_path) {
            error_setg(errp, "parameter 'mem-path' is missing");
            return false;
        }
        be->cfg.mem_path = be->mem_path;
    }
    return true;
}

static void loader_free(gpointer p)
{
    LoaderDevice *ld = p;

    g_free(ld->file);
    g_free(ld);
}

/* The pc machine's one UART, on a -chardev. */
static bool isa_serial_device(VMOptions *opts, ParseCtx *ctx, GHashTable *h,
                              GError **errp)
{
    static const char *const known[] = {
        "driver", "id", "chardev", "index", NULL
    };
    const char *chardev = g_hash_table_lookup(h, "chardev");
    const char *index = g_hash_table_lookup(h, "index");

    if (!keyval_check_known(h, known, errp)) {
        return false;
    }
    if (!chardev || !*chardev) {
        error_setg(errp, "isa-serial: parameter 'chardev' is missing");
        return false;
    }
    if (index && strcmp(index, "0")) {
        error_setg(errp, "isa-serial: only index 0 (COM1) exists");
        return false;
    }
    if (ctx->serial_given) {
        error_setg(errp, "only one serial port is supported");
        return false;
    }
    ctx->serial_given = true;
    ctx->serial_chardev = g_strdup(chardev);
    opts->machine.isa_serial = true;
    return true;
}

/*
 * -device x-dirtier: ferry's RAM-writing workload (hw/dirtier.c).  What
 * can be checked without the machine is checked here; the region against
 * guest RAM and the machine's vCPUs when the device is created.
 */
static bool x_dirtier_device(VMOptions *opts, GHashTable *h, GError **errp)
{
    static const char *const known[] = {
        "driver", "id", "rate", "size", "addr", "pattern", "seed", NULL
    };
    g_autofree DirtierConfig *cfg = g_new0(DirtierConfig, 1);
    const char *pattern = g_hash_table_lookup(h, "pattern");

    if (opts->machine.dirtier) {
        error_setg(errp, "x-dirtier: only one x-dirtier device is supported");
        return false;
    }
    if (!keyval_check_known(h, known, errp)) {
        g_prefix_error(errp, "x-dirtier: ");
        return false;
    }
    if (!g_hash_table_contains(h, "rate") ||
        !g_hash_table_contains(h, "size")) {
        error_setg(errp, "x-dirtier: parameter '%s' is missing",
                   g_hash_table_contains(h, "rate") ? "size" : "rate");
        return false;
    }
    if (!keyval_size(h, "rate", 'B', &cfg->rate, errp) ||
        !keyval_size(h, "size", 'B', &cfg->size, errp) ||
        !keyval_size(h, "addr", 'B', &cfg->addr, errp) ||
        !keyval_u64(h, "seed", &cfg->seed, errp)) {
        g_prefix_error(errp, "x-dirtier: ");
        return false;
    }
    if (cfg->rate == 0) {
        error_setg(errp, "x-dirtier: parameter 'rate' must be more than 0 "
                   "bytes/s");
        return false;
    }
    if (cfg->size < 2 * TARGET_PAGE_SIZE ||
        !QEMU_IS_ALIGNED(cfg->size, TARGET_PAGE_SIZE)) {
        error_setg(errp, "x-dirtier: parameter 'size' must be a multiple of "
                   "%llu bytes and at least 2 pages (a control page and a "
                   "data page), not %" PRIu64, TARGET_PAGE_SIZE, cfg->size);
        return false;
    }
    if (!QEMU_IS_ALIGNED(cfg->addr, TARGET_PAGE_SIZE) ||
        cfg->addr + cfg->size < cfg->addr) {
        error_setg(errp, "x-dirtier: parameter 'addr' must be aligned to "
                   "%llu bytes (and addr+size must not wrap), not 0x%" PRIx64,
                   TARGET_PAGE_SIZE, cfg->addr);
        return false;
    }
    if (!pattern || !strcmp(pattern, "random")) {
        cfg->pattern = DIRTIER_PATTERN_RANDOM;
    } else if (!strcmp(pattern, "sweep")) {
        cfg->pattern = DIRTIER_PATTERN_SWEEP;
    } else {
        error_setg(errp, "x-dirtier: parameter 'pattern' must be random or "
                   "sweep, not '%s'", pattern);
        return false;
    }
    opts->machine.dirtier = g_steal_pointer(&cfg);
    return true;
}

static bool opt_device(VMOptions *opts, ParseCtx *ctx, const char *arg,
                       GError **errp)
{
    static const char *const known[] = {
        "driver", "id", "file", "addr", "force-raw", NULL
    };
    g_autoptr(GHashTable) h = keyval_new();
    const char *driver, *file;
    bool force_raw = false;
    uint64_t addr = 0;
    LoaderDevice *ld;

    if (!keyval_parse(arg, "driver", h, errp)) {
        return false;
    }
    driver = g_hash_table_lookup(h, "driver");
    if (driver && !strcmp(driver, "isa-serial")) {
        return isa_serial_device(opts, ctx, h, errp);
    }
    if (driver && !strcmp(driver, "x-dirtier")) {
        return x_dirtier_device(opts, h, errp);
    }
    if (!driver || strcmp(driver, "loader")) {
        error_setg(errp, "device '%s' is not supported (only 'loader', "
                   "'isa-serial' and 'x-dirtier')", driver ? driver : "");
        return false;
    }
    if (!keyval_check_known(h, known, errp) ||
        !keyval_u64(h, "addr", &addr, errp) ||
        !keyval_bool(h, "force-raw", &force_raw, errp)) {
        return false;
    }
    file = g_hash_table_lookup(h, "file");
    if (!file || !*file) {
        error_setg(errp, "parameter 'file' is missing");
        return false;
    }
    if (!g_hash_table_contains(h, "addr")) {
        error_setg(errp, "parameter 'addr' is missing (images are loaded "
                   "raw at addr)");
        return false;
    }
    ld = g_new0(LoaderDevice, 1);
    ld->file = g_strdup(file);
    ld->addr = addr;
    g_ptr_array_add(opts->machine.loaders, ld);
    return true;
}

static bool serial_spec_valid(const char *spec)
{
    return !strcmp(spec, "stdio") || !strcmp(spec, "null") ||
           !strcmp(spec, "none") ||
           (g_str_has_prefix(spec, "file:") && spec[5]);
}

static bool opt_serial(VMOptions *opts, ParseCtx *ctx, const char *arg,
                       GError **errp)
{
    if (!serial_spec_valid(arg)) {
        error_setg(errp, "unsupported serial backend '%s' (use file:PATH, "
                   "stdio, null or none)", arg);
        return false;
    }
    if (ctx->serial_given) {
        error_setg(errp, "only one serial port is supported");
        return false;
    }
    ctx->serial_given = true;
    opts->machine.serial = g_strdup(arg);
    return true;
}

static bool opt_qmp(VMOptions *opts, ParseCtx *ctx, const char *arg,
                    GError **errp)
{
    /* The monitor parses the rest; catch the obvious mistakes early. */
    if ((!g_str_has_prefix(arg, "unix:") || !arg[5]) &&
        (!g_str_has_prefix(arg, "tcp:") || !arg[4])) {
        error_setg(errp, "unsupported QMP address '%s' (use unix:PATH or "
                   "tcp:HOST:PORT, with server=on,wait=off)", arg);
        return false;
    }
    g_ptr_array_add(opts->qmp_specs, g_strdup(arg));
    return true;
}

static bool opt_S(VMOptions *opts, ParseCtx *ctx, const char *arg,
                  GError **errp)
{
    opts->start_paused = true;
    return true;
}

static bool opt_name(VMOptions *opts, ParseCtx *ctx, const char *arg,
                     GError **errp)
{
    static const char *const known[] = {
        "guest", "process", "debug-threads", NULL
    };
    g_autoptr(GHashTable) h = keyval_new();

    if (!keyval_parse(arg, "guest", h, errp) ||
        !keyval_check_known(h, known, errp)) {
        return false;
    }
    if (g_hash_table_contains(h, "guest")) {
        g_free(opts->machine.name);
        opts->machine.name = g_strdup(g_hash_table_lookup(h, "guest"));
    }
    return true;
}

static bool opt_display(VMOptions *opts, ParseCtx *ctx, const char *arg,
                        GError **errp)
{
    if (strcmp(arg, "none")) {
        error_setg(errp, "display '%s' is not supported (only 'none')", arg);
        return false;
    }
    return true;
}

static bool opt_nographic(VMOptions *opts, ParseCtx *ctx, const char *arg,
                          GError **errp)
{
    ctx->nographic = true;
    return true;
}

static bool opt_nodefaults(VMOptions *opts, ParseCtx *ctx, const char *arg,
                           GError **errp)
{
    opts->nodefaults = true;
    return true;
}

static bool opt_incoming(VMOptions *opts, ParseCtx *ctx, const char *arg,
                         GError **errp)
{
    if (!*arg) {
        error_setg(errp, "empty URI");
        return false;
    }
    g_free(opts->incoming);
    opts->incoming = g_strdup(arg);
    return true;
}

static bool opt_daemonize(VMOptions *opts, ParseCtx *ctx, const char *arg,
                          GError **errp)
{
    opts->daemonize = true;
    return true;
}

static bool opt_pidfile(VMOptions *opts, ParseCtx *ctx, const char *arg,
                        GError **errp)
{
    g_free(opts->pidfile);
    opts->pidfile = g_strdup(arg);
    return true;
}

/* -trace [enable=]PATTERN[,file=PATH]: applied by main() after parsing. */
static bool opt_trace(VMOptions *opts, ParseCtx *ctx, const char *arg,
                      GError **errp)
{
    static const char *const known[] = { "enable", "file", NULL };
    g_autoptr(GHashTable) h = keyval_new();
    const char *enable, *file;

    if (!keyval_parse(arg, "enable", h, errp) ||
        !keyval_check_known(h, known, errp)) {
        return false;
    }
    enable = g_hash_table_lookup(h, "enable");
    file = g_hash_table_lookup(h, "file");
    if ((enable && !*enable) || (file && !*file)) {
        error_setg(errp, "empty %s", enable && !*enable ? "pattern" : "file");
        return false;
    }
    if (enable) {
        g_ptr_array_add(opts->trace_patterns, g_strdup(enable));
    }
    if (file) {
        g_free(opts->trace_file);
        opts->trace_file = g_strdup(file);
    }
    return true;
}

/* --- what libvirt emits ----------------------------------------------- */

static Chardev *find_chardev(VMOptions *opts, const char *id)
{
    for (guint i = 0; i < opts->chardevs->len; i++) {
        Chardev *c = g_ptr_array_index(opts->chardevs, i);

        if (!strcmp(c->id, id)) {
            return c;
        }
    }
    return NULL;
}

/* server=on,wait=off and a path or an inherited listening descriptor. */
static bool chardev_socket(Chardev *c, GHashTable *h, GError **errp)
{
    static const char *const known[] = {
        "backend", "id", "path", "fd", "server", "wait", NULL
    };
    const char *path = g_hash_table_lookup(h, "path");
    const char *fd = g_hash_table_lookup(h, "fd");
    bool server = false, wait = true;
    uint64_t n;

    if (!keyval_check_known(h, known, errp) ||
        !keyval_bool(h, "server", &server, errp) ||
        !keyval_bool(h, "wait", &wait, errp)) {
        return false;
    }
    if (!server || wait) {
        error_setg(errp, "socket chardev '%s' must be a listening server "
                   "that does not wait: add server=on,wait=off", c->id);
        return false;
    }
    if (!path == !fd || (path && !*path)) {
        error_setg(errp, "socket chardev '%s' needs exactly one of 'path' "
                   "and 'fd'", c->id);
        return false;
    }
    if (path) {
        c->path = g_strdup(path);
        return true;
    }
    if (!qemu_strtou64(fd, &n, errp)) {
        g_prefix_error(errp, "socket chardev '%s': parameter 'fd': ", c->id);
        return false;
    }
    if (n > INT_MAX || fcntl((int)n, F_GETFD) < 0) {
        error_setg(errp, "socket chardev '%s': fd %s is not an open "
                   "descriptor", c->id, fd);
        return false;
    }
    c->fd = (int)n;
    return true;
}

static bool chardev_file(Chardev *c, GHashTable *h, GError **errp)
{
    static const char *const known[] = {
        "backend", "id", "path", "append", NULL
    };
    const char *path = g_hash_table_lookup(h, "path");
    bool append = false;

    if (!keyval_check_known(h, known, errp) ||
        !keyval_bool(h, "append", &append, errp)) {
        return false;
    }
    if (!path || !*path) {
        error_setg(errp, "file chardev '%s': parameter 'path' is missing",
                   c->id);
        return false;
    }
    c->append = append;
    c->path = g_strdup(path);
    return true;
}

static bool opt_chardev(VMOptions *opts, ParseCtx *ctx, const char *arg,
                        GError **errp)
{
    static const char *const plain[] = { "backend", "id", NULL };
    g_autoptr(GHashTable) h = keyval_new();
    const char *backend, *id;
    Chardev *c;
    bool ok;

    if (!keyval_parse(arg, "backend", h, errp)) {
        return false;
    }
    backend = g_hash_table_lookup(h, "backend");
    id = g_hash_table_lookup(h, "id");
    if (!backend || !*backend) {
        error_setg(errp, "missing chardev backend in '%s'", arg);
        return false;
    }
    if (!id || !*id) {
        error_setg(errp, "parameter 'id' is missing");
        return false;
    }
    if (find_chardev(opts, id)) {
        error_setg(errp, "duplicate chardev id '%s'", id);
        return false;
    }
    c = g_new0(Chardev, 1);
    c->id = g_strdup(id);
    c->fd = -1;
    if (!strcmp(backend, "socket")) {
        c->kind = CHARDEV_SOCKET;
        ok = chardev_socket(c, h, errp);
    } else if (!strcmp(backend, "file")) {
        c->kind = CHARDEV_FILE;
        ok = chardev_file(c, h, errp);
    } else if (!strcmp(backend, "stdio") || !strcmp(backend, "null")) {
        c->kind = !strcmp(backend, "stdio") ? CHARDEV_STDIO : CHARDEV_NULL;
        ok = keyval_check_known(h, plain, errp);
    } else {
        error_setg(errp, "chardev backend '%s' is not supported (use "
                   "socket, file, stdio or null)", backend);
        ok = false;
    }
    if (!ok) {
        chardev_free(c);
        return false;
    }
    g_ptr_array_add(opts->chardevs, c);
    return true;
}

static bool opt_mon(VMOptions *opts, ParseCtx *ctx, const char *arg,
                    GError **errp)
{
    static const char *const known[] = { "chardev", "id", "mode", "pretty",
                                         NULL };
    g_autoptr(GHashTable) h = keyval_new();
    const char *chardev, *mode;
    bool pretty = false;

    if (!keyval_parse(arg, "chardev", h, errp) ||
        !keyval_check_known(h, known, errp) ||
        !keyval_bool(h, "pretty", &pretty, errp)) {
        return false;
    }
    chardev = g_hash_table_lookup(h, "chardev");
    mode = g_hash_table_lookup(h, "mode");
    if (!chardev || !*chardev) {
        error_setg(errp, "parameter 'chardev' is missing");
        return false;
    }
    if (!mode || strcmp(mode, "control")) {
        error_setg(errp, "monitor mode '%s' is not supported: only "
                   "mode=control (QMP)", mode ? mode : "readline");
        return false;
    }
    g_ptr_array_add(ctx->mon_chardevs, g_strdup(chardev));
    return true;
}

/* Options that describe hardware or files ferry does not have. */
static bool opt_no_effect(VMOptions *opts, ParseCtx *ctx, const char *arg,
                          GError **errp)
{
    return true;
}

static bool opt_overcommit(VMOptions *opts, ParseCtx *ctx, const char *arg,
                           GError **errp)
{
    static const char *const known[] = { "mem-lock", "cpu-pm", NULL };
    g_autoptr(GHashTable) h = keyval_new();
    bool mem_lock = false, cpu_pm = false;

    if (!keyval_parse(arg, NULL, h, errp) ||
        !keyval_check_known(h, known, errp) ||
        !keyval_bool(h, "mem-lock", &mem_lock, errp) ||
        !keyval_bool(h, "cpu-pm", &cpu_pm, errp)) {
        return false;
    }
    if (mem_lock || cpu_pm) {
        error_setg(errp, "%s=on is not supported",
                   mem_lock ? "mem-lock" : "cpu-pm");
        return false;
    }
    return true;
}

static bool opt_uuid(VMOptions *opts, ParseCtx *ctx, const char *arg,
                     GError **errp)
{
    if (!qemu_uuid_parse(arg, opts->uuid_bytes)) {
        error_setg(errp, "invalid UUID '%s'", arg);
        return false;
    }
    g_free(opts->uuid);
    opts->uuid = g_ascii_strdown(arg, -1);
    return true;
}

static bool rtc_base_valid(const char *base)
{
    struct tm tm;
    const char *end;

    if (!strcmp(base, "utc") || !strcmp(base, "localtime")) {
        return true;
    }
    end = strptime(base, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end) {
        end = strptime(base, "%Y-%m-%d", &tm);
    }
    return end && !*end;
}

/* There is no RTC device: checked like QEMU, then without effect. */
static bool opt_rtc(VMOptions *opts, ParseCtx *ctx, const char *arg,
                    GError **errp)
{
    static const char *const known[] = { "base", "clock", "driftfix", NULL };
    static const char *const clocks[] = { "host", "rt", "vm", NULL };
    static const char *const driftfix[] = { "none", "slew", NULL };
    g_autoptr(GHashTable) h = keyval_new();
    const char *v;

    if (!keyval_parse(arg, NULL, h, errp) ||
        !keyval_check_known(h, known, errp)) {
        return false;
    }
    v = g_hash_table_lookup(h, "base");
    if (v && !rtc_base_valid(v)) {
        error_setg(errp, "invalid RTC base '%s'", v);
        return false;
    }
    v = g_hash_table_lookup(h, "clock");
    if (v && !g_strv_contains(clocks, v)) {
        error_setg(errp, "invalid RTC clock '%s'", v);
        return false;
    }
    v = g_hash_table_lookup(h, "driftfix");
    if (v && !g_strv_contains(driftfix, v)) {
        error_setg(errp, "invalid RTC driftfix '%s'", v);
        return false;
    }
    return true;
}

static bool opt_no_shutdown(VMOptions *opts, ParseCtx *ctx, const char *arg,
                            GError **errp)
{
    opts->no_shutdown = true;
    return true;
}

static bool opt_no_reboot(VMOptions *opts, ParseCtx *ctx, const char *arg,
                          GError **errp)
{
    opts->no_reboot = true;
    return true;
}

/* No firmware, so no boot order or menu: checked, then without effect. */
static bool opt_boot(VMOptions *opts, ParseCtx *ctx, const char *arg,
                     GError **errp)
{
    static const char *const known[] = {
        "order", "once", "menu", "splash", "splash-time", "reboot-timeout",
        "strict", NULL
    };
    g_autoptr(GHashTable) h = keyval_new();
    bool b;

    return keyval_parse(arg, "order", h, errp) &&
           keyval_check_known(h, known, errp) &&
           keyval_bool(h, "menu", &b, errp) &&
           keyval_bool(h, "strict", &b, errp);
}

/* No sound device exists, so only the "none" back end means anything. */
static bool audiodev_driver(const char *arg, char **driver, GError **errp)
{
    g_autoptr(JsonParser) parser = NULL;
    g_autoptr(GHashTable) h = NULL;
    JsonObject *o;
    JsonNode *root;

    if (arg[0] != '{') {
        h = keyval_new();
        if (!keyval_parse(arg, "driver", h, errp)) {
            return false;
        }
        *driver = g_strdup(g_hash_table_lookup(h, "driver"));
        return true;
    }
    /* An -audiodev object is flat; anything deep is not one. */
    if (json_too_deep(arg, strlen(arg), 4) >= 0) {
        error_setg(errp, "JSON nested too deeply");
        return false;
    }
    parser = json_parser_new();
    if (!json_parser_load_from_data(parser, arg, -1, errp)) {
        return false;
    }
    root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        error_setg(errp, "expected a JSON object");
        return false;
    }
    o = json_node_get_object(root);
    if (json_object_has_member(o, "driver") &&
        json_node_get_value_type(json_object_get_member(o, "driver")) ==
        G_TYPE_STRING) {
        *driver = g_strdup(json_object_get_string_member(o, "driver"));
    }
    return true;
}

static bool opt_audiodev(VMOptions *opts, ParseCtx *ctx, const char *arg,
                         GError **errp)
{
    g_autofree char *driver = NULL;

    if (!audiodev_driver(arg, &driver, errp)) {
        return false;
    }
    if (!driver || strcmp(driver, "none")) {
        error_setg(errp, "audio driver '%s' is not supported: ferry has no "
                   "sound device (use driver none)", driver ? driver : "");
        return false;
    }
    return true;
}

static bool opt_msg(VMOptions *opts, ParseCtx *ctx, const char *arg,
                    GError **errp)
{
    static const char *const known[] = { "timestamp", "guest-name", NULL };
    g_autoptr(GHashTable) h = keyval_new();
    bool guest_name = false;

    return keyval_parse(arg, NULL, h, errp) &&
           keyval_check_known(h, known, errp) &&
           keyval_bool(h, "timestamp", &opts->msg_timestamp, errp) &&
           keyval_bool(h, "guest-name", &guest_name, errp);
}

/* There is no seccomp filter: on would be a promise not kept. */
static bool opt_sandbox(VMOptions *opts, ParseCtx *ctx, const char *arg,
                        GError **errp)
{
    static const char *const known[] = {
        "enable", "obsolete", "elevateprivileges", "spawn",
        "resourcecontrol", NULL
    };
    g_autoptr(GHashTable) h = keyval_new();
    bool enable = false;

    if (!keyval_parse(arg, "enable", h, errp) ||
        !keyval_check_known(h, known, errp) ||
        !keyval_bool(h, "enable", &enable, errp)) {
        return false;
    }
    if (enable) {
        error_setg(errp, "'on' is not supported: ferry has no seccomp "
                   "filter");
        return false;
    }
    return true;
}

static bool opt_version(VMOptions *opts, ParseCtx *ctx, const char *arg,
                        GError **errp)
{
    opts->show_version = true;
    return true;
}

static bool opt_help(VMOptions *opts, ParseCtx *ctx, const char *arg,
                     GError **errp)
{
    opts->show_help = true;
    return true;
}

static const VLOption vl_options[] = {
    { "m", true, opt_m },
    { "smp", true, opt_smp },
    { "accel", true, opt_accel },
    { "enable-kvm", false, opt_enable_kvm },
    { "M", true, opt_machine },
    { "machine", true, opt_machine },
    { "kernel", true, opt_kernel },
    { "append", true, opt_append },
    { "object", true, opt_object },
    { "device", true, opt_device },
    { "serial", true, opt_serial },
    { "qmp", true, opt_qmp },
    { "S", false, opt_S },
    { "name", true, opt_name },
    { "display", true, opt_display },
    { "nographic", false, opt_nographic },
    { "nodefaults", false, opt_nodefaults },
    { "incoming", true, opt_incoming },
    { "daemonize", false, opt_daemonize },
    { "pidfile", true, opt_pidfile },
    { "trace", true, opt_trace },
    { "version", false, opt_version },
    { "chardev", true, opt_chardev },
    { "mon", true, opt_mon },
    { "no-user-config", false, opt_no_effect },
    { "no-acpi", false, opt_no_effect },
    { "overcommit", true, opt_overcommit },
    { "uuid", true, opt_uuid },
    { "rtc", true, opt_rtc },
    { "no-shutdown", false, opt_no_shutdown },
    { "no-reboot", false, opt_no_reboot },
    { "boot", true, opt_boot },
    { "audiodev", true, opt_audiodev },
    { "msg", true, opt_msg },
    { "sandbox", true, opt_sandbox },
    { "h", false, opt_help },
    { "help", false, opt_help },
};

static const VLOption *find_option(const char *arg)
{
    const char *name = arg + 1;
    size_t i;

    if (*name == '-') {
        name++;
    }
    for (i = 0; i < ARRAY_SIZE(vl_options); i++) {
        if (!strcmp(vl_options[i].name, name)) {
            return &vl_options[i];
        }
    }
    return NULL;
}

/* --- after the last option ------------------------------------------------ */

static bool machine_apply_kv(VMOptions *opts, GHashTable *h, GError **errp)
{
    static const char *const known[] = {
        "type", "memory-backend", "accel",
        /* QEMU pc properties that change nothing here */
        "usb", "dump-guest-core", "mem-merge", "vmport", "smm", "hpet",
        "graphics", "kernel-irqchip", "suppress-vmdesc", "i8042", "sata",
        "pit", "pic", NULL
    };
    const char *type = g_hash_table_lookup(h, "type");
    const char *accel = g_hash_table_lookup(h, "accel");
    const char *backend = g_hash_table_lookup(h, "memory-backend");

    if (!keyval_check_known(h, known, errp)) {
        g_prefix_error(errp, "-machine: ");
        return false;
    }
    if (type && (!strcmp(type, "help") || !strcmp(type, "?"))) {
        opts->machine_help = true;
        return true;
    }
    if (type && !*type) {
        error_setg(errp, "-machine: empty machine type");
        return false;
    }
    opts->machine.type = g_intern_string(type ? type : MACHINE_DEFAULT_TYPE);
    if (accel && !select_accel(opts, accel, errp)) {
        g_prefix_error(errp, "-machine accel=%s: ", accel);
        return false;
    }
    if (backend) {
        g_free(opts->machine.memory_backend);
        opts->machine.memory_backend = g_strdup(backend);
    }
    return true;
}

static bool resolve_memory_backend(VMOptions *opts, GError **errp)
{
    MachineState *ms = &opts->machine;
    MemoryBackend *be;

    if (!ms->memory_backend) {
        if (!opts->ram_size_given) {
            ms->ram_size = DEFAULT_RAM_SIZE;
        }
        return true;
    }
    be = find_backend(opts, ms->memory_backend);
    if (!be) {
        error_setg(errp, "Memory backend '%s' not found", ms->memory_backend);
        return false;
    }
    if (opts->ram_size_given && be->size != ms->ram_size) {
        error_setg(errp, "Size specified by -m option must match size of "
                   "explicitly specified 'memory-backend' property");
        return false;
    }
    ms->ram_size = be->size;
    opts->ram_size_given = true;
    return true;
}

/* A chardev is given to one front end: the QMP server or the UART. */
static Chardev *claim_chardev(VMOptions *opts, const char *id,
                              const char *frontend, GError **errp)
{
    Chardev *c = find_chardev(opts, id);

    if (!c) {
        error_setg(errp, "%s: chardev '%s' not found", frontend, id);
        return NULL;
    }
    if (c->frontend) {
        error_setg(errp, "%s: chardev '%s' is already used by the %s",
                   frontend, id, c->frontend);
        return NULL;
    }
    c->frontend = frontend;
    return c;
}

static bool resolve_chardevs(VMOptions *opts, ParseCtx *ctx, GError **errp)
{
    Chardev *c;

    for (guint i = 0; i < ctx->mon_chardevs->len; i++) {
        c = claim_chardev(opts, g_ptr_array_index(ctx->mon_chardevs, i),
                          "monitor", errp);
        if (!c) {
            return false;
        }
        if (c->kind != CHARDEV_SOCKET) {
            error_setg(errp, "monitor: chardev '%s' is not a socket (QMP "
                       "needs a listening socket)", c->id);
            return false;
        }
        g_ptr_array_add(opts->qmp_specs, chardev_qmp_spec(c));
    }
    if (ctx->serial_chardev) {
        c = claim_chardev(opts, ctx->serial_chardev, "serial", errp);
        if (!c) {
            return false;
        }
        opts->machine.serial = chardev_serial_spec(c, errp);
        return opts->machine.serial != NULL;
    }
    return true;
}

static bool finish_options(VMOptions *opts, ParseCtx *ctx, GError **errp)
{
    MachineState *ms = &opts->machine;

    if (!machine_apply_kv(opts, ctx->machine_kv, errp)) {
        return false;
    }
    if (!resolve_chardevs(opts, ctx, errp)) {
        return false;
    }
    if (!ms->serial) {
        /*
         * QEMU's defaults: no display puts the serial port nowhere,
         * -nographic on stdio; -nodefaults has none, -nographic or not.
         */
        ms->serial = g_strdup(opts->nodefaults ? "none" :
                              ctx->nographic ? "stdio" : "null");
    }
    if (opts->daemonize && !strcmp(ms->serial, "stdio")) {
        error_setg(errp, "-daemonize cannot be used with the serial port "
                   "on stdio (-nographic or -serial stdio)");
        return false;
    }
    return resolve_memory_backend(opts, errp);
}

static void options_init(VMOptions *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->machine.smp_cpus = 1;
    opts->machine.ram_size = DEFAULT_RAM_SIZE;
    opts->machine.type = MACHINE_DEFAULT_TYPE;
    opts->machine.backends = g_ptr_array_new_with_free_func(
        memory_backend_free);
    opts->machine.loaders = g_ptr_array_new_with_free_func(loader_free);
    opts->qmp_specs = g_ptr_array_new_with_free_func(g_free);
    opts->chardevs = g_ptr_array_new_with_free_func(chardev_free);
    opts->trace_patterns = g_ptr_array_new_with_free_func(g_free);
}

bool qemu_parse_options(int argc, char **argv, VMOptions *opts,
                        GError **errp)
{
    ParseCtx ctx = {
        .machine_kv = keyval_new(),
        .mon_chardevs = g_ptr_array_new_with_free_func(g_free),
    };
    bool ok = false;
    int i;

    options_init(opts);
    for (i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const VLOption *o;
        const char *val = NULL;

        if (arg[0] != '-' || !arg[1]) {
            error_setg(errp, "%s: unexpected argument (disk images are not "
                       "supported)", arg);
            goto out;
        }
        o = find_option(arg);
        if (!o) {
            error_setg(errp, "%s: invalid option", arg);
            goto out;
        }
        if (o->has_arg) {
            if (i + 1 >= argc) {
                error_setg(errp, "%s: requires an argument", arg);
                goto out;
            }
            val = argv[++i];
        }
        if (!o->fn(opts, &ctx, val, errp)) {
            g_prefix_error(errp, "%s: ", arg);
            goto out;
        }
    }
    ok = finish_options(opts, &ctx, errp);
out:
    g_hash_table_destroy(ctx.machine_kv);
    g_ptr_array_unref(ctx.mon_chardevs);
    g_free(ctx.serial_chardev);
    return ok;
}

void qemu_free_options(VMOptions *opts)
{
    MachineState *ms = &opts->machine;

    g_free(ms->kernel_filename);
    g_free(ms->kernel_cmdline);
    g_free(ms->memory_backend);
    g_free(ms->name);
    g_free(ms->serial);
    g_clear_pointer(&ms->backends, g_ptr_array_unref);
    g_clear_pointer(&ms->loaders, g_ptr_array_unref);
    g_clear_pointer(&ms->dirtier, g_free);
    g_clear_pointer(&opts->qmp_specs, g_ptr_array_unref);
    if (qemu_chardevs == opts->chardevs) {
        qemu_chardevs = NULL;
    }
    g_clear_pointer(&opts->chardevs, g_ptr_array_unref);
    g_free(opts->uuid);
    g_clear_pointer(&opts->trace_patterns, g_ptr_array_unref);
    g_free(opts->trace_file);
    g_free(opts->incoming);
    g_free(opts->pidfile);
    memset(opts, 0, sizeof(*opts));
}

void qemu_apply_options(VMOptions *opts)
{
    incoming_uri = opts->incoming;
    qemu_name = opts->machine.name;
    qemu_chardevs = opts->chardevs;
    opts->machine.incoming = opts->incoming != NULL;
}

void qemu_print_version(FILE *out)
{
    fprintf(out, "ferry version " FERRY_VERSION "\n"
            "QEMU emulator version " FERRY_QEMU_VERSION " (ferry-"
            FERRY_VERSION ")\n");
}

void qemu_print_help(FILE *out)
{
    qemu_print_version(out);
    fprintf(out,
"usage: ferry [options]\n"
"\n"
"-M|-machine [type=]TYPE[,memory-backend=ID][,accel=kvm]\n"
"                        machine type (pc, none, x-ram; 'help' lists them)\n"
"-m [size=]SIZE          guest RAM (default unit MiB, suffixes K M G T)\n"
"-smp [cpus=]N           number of vCPUs (1..255)\n"
"-accel kvm | -enable-kvm\n"
"                        use KVM (the only accelerator)\n"
"-accel tcg              no KVM: only for machines without vCPUs\n"
"-kernel FILE            Multiboot v1 kernel image\n"
"-append CMDLINE         kernel command line\n"
"-object memory-backend-{ram,memfd,file},id=ID,size=SIZE[,mem-path=PATH]\n"
"        [,share=on|off][,prealloc=on|off][,hugetlb=on|off][,hugetlbsize=SIZE]\n"
"                        guest RAM backend (use with -machine memory-backend=ID)\n"
"-device loader,file=PATH,addr=ADDR[,force-raw=on]\n"
"                        copy a raw file into guest RAM at ADDR\n"
"-device x-dirtier,rate=R,size=S[,addr=A][,pattern=random|sweep][,seed=N]\n"
"                        (ferry-only, machines none/x-ram) write guest RAM\n"
"                        at R bytes/s while the VM runs, for migration tests\n"
"-serial file:PATH|stdio|null|none\n"
"-chardev socket,id=ID,path=PATH|fd=N,server=on,wait=off\n"
"-chardev file,id=ID,path=PATH[,append=on] | stdio,id=ID | null,id=ID\n"
"-mon chardev=ID,mode=control\n"
"                        QMP monitor on a socket chardev\n"
"-device isa-serial,chardev=ID\n"
"                        the UART (pc) on a chardev\n"
"-uuid UUID              the VM's UUID\n"
"-no-shutdown            a guest power-off stops the VM; ferry stays\n"
"-no-reboot              a reset request shuts down instead\n"
"-msg timestamp=on       prefix reports with the UTC time\n"
"-no-user-config, -no-acpi, -rtc ..., -boot ..., -audiodev none,...,\n"
"-object secret,..., -overcommit mem-lock=off, -sandbox off\n"
"                        accepted for libvirt, without effect\n"
"-qmp unix:PATH,server=on,wait=off | tcp:HOST:PORT,server=on,wait=off\n"
"                        QMP monitor (repeatable)\n"
"-S                      do not start the vCPUs (use QMP 'cont')\n"
"-name [guest=]NAME      guest name\n"
"-display none, -nographic, -nodefaults\n"
"-incoming URI|defer     wait for an incoming migration\n"
"-daemonize              run in the background once ready\n"
"-pidfile FILE           write the process id to FILE\n"
"-trace [enable=]PATTERN[,file=PATH]\n"
"                        enable trace events matching PATTERN (repeatable;\n"
"                        '-PATTERN' disables); write them to PATH\n"
"-version, -h|-help\n");
}

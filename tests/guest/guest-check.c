/*
 * guest-check: check a RAM dump (e.g. from QMP pmemsave) of the test guest.
 * Exit status: 0 consistent, 1 bad pages (report printed), 2 usage or I/O.
 */
#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "ramcheck.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

enum { EXIT_GOOD = 0, EXIT_BAD = 1, EXIT_USAGE = 2 };

typedef struct CheckArgs {
    char *dump, *base, *ncpus, *start, *end, *seed, *min_sweeps;
    gboolean json;
} CheckArgs;

static bool parse_u64(const char *name, const char *str, uint64_t def,
                      uint64_t max, uint64_t *out, GError **errp)
{
    if (!str) {
        *out = def;
        return true;
    }
    if (!qemu_strtou64(str, out, errp)) {
        error_prepend(errp, "--%s: ", name);
        return false;
    }
    if (*out > max) {
        error_setg(errp, "--%s: %s is too large", name, str);
        return false;
    }
    return true;
}

static bool parse_args(int argc, char **argv, CheckArgs *a, GuestParams *p,
                       uint64_t *base, GError **errp)
{
    GOptionEntry entries[] = {
        { "dump", 0, 0, G_OPTION_ARG_FILENAME, &a->dump,
          "RAM dump (raw guest-physical bytes)", "FILE" },
        { "base", 0, 0, G_OPTION_ARG_STRING, &a->base,
          "guest-physical address of the dump's first byte (0)", "ADDR" },
        { "ncpus", 0, 0, G_OPTION_ARG_STRING, &a->ncpus,
          "ncpus the guest printed", "N" },
        { "start", 0, 0, G_OPTION_ARG_STRING, &a->start,
          "start the guest printed", "ADDR" },
        { "end", 0, 0, G_OPTION_ARG_STRING, &a->end,
          "end the guest printed", "ADDR" },
        { "seed", 0, 0, G_OPTION_ARG_STRING, &a->seed,
          "seed the guest printed (0)", "S" },
        { "min-sweeps", 0, 0, G_OPTION_ARG_STRING, &a->min_sweeps,
          "require every slice to have completed N sweeps (0)", "N" },
        { "json", 0, 0, G_OPTION_ARG_NONE, &a->json,
          "print the report as JSON", NULL },
        { NULL }
    };
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("- check the test guest's RAM in a dump");
    uint64_t v;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, errp)) {
        return false;
    }
    if (argc > 1) {
        error_setg(errp, "unexpected argument '%s'", argv[1]);
        return false;
    }
    if (!a->dump || !a->ncpus || !a->start || !a->end) {
        error_setg(errp, "--dump, --ncpus, --start and --end are required");
        return false;
    }
    if (!parse_u64("base", a->base, 0, UINT64_MAX, base, errp) ||
        !parse_u64("ncpus", a->ncpus, 0, GUEST_MAX_CPUS, &v, errp)) {
        return false;
    }
    p->ncpus = v;
    if (!parse_u64("start", a->start, 0, UINT64_MAX, &p->start, errp) ||
        !parse_u64("end", a->end, 0, UINT64_MAX, &p->end, errp) ||
        !parse_u64("seed", a->seed, 0, UINT32_MAX, &v, errp) ||
        !parse_u64("min-sweeps", a->min_sweeps, 0, UINT64_MAX,
                   &p->min_sweeps, errp)) {
        return false;
    }
    p->seed = v;
    return guest_params_validate(p, errp);
}

/* Map the dump read-only; returns NULL (and errp) on failure. */
static const uint8_t *map_dump(const char *path, uint64_t *len, GError **errp)
{
    struct stat st;
    void *ram;
    int fd = open(path, O_RDONLY);

    if (fd < 0) {
        error_setg_errno(errp, errno, "cannot open %s", path);
        return NULL;
    }
    if (fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "cannot stat %s", path);
        close(fd);
        return NULL;
    }
    if (st.st_size <= 0) {
        error_setg(errp, "%s is empty", path);
        close(fd);
        return NULL;
    }
    ram = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (ram == MAP_FAILED) {
        error_setg_errno(errp, errno, "cannot map %s", path);
        return NULL;
    }
    *len = st.st_size;
    return ram;
}

int main(int argc, char **argv)
{
    CheckArgs a = { 0 };
    GuestParams p = { 0 };
    GuestCheckReport *rep = g_new0(GuestCheckReport, 1);
    GError *err = NULL;
    const uint8_t *ram = NULL;
    uint64_t base = 0, len = 0;
    int ret = EXIT_USAGE;

    if (!parse_args(argc, argv, &a, &p, &base, &err) ||
        !(ram = map_dump(a.dump, &len, &err))) {
        fprintf(stderr, "guest-check: %s\n", err->message);
        g_error_free(err);
        goto out;
    }
    if (guest_ram_check(ram, base, len, &p, rep, &err)) {
        ret = EXIT_GOOD;
    } else if (rep->nslices) {
        ret = EXIT_BAD;
    } else {
        fprintf(stderr, "guest-check: %s\n", err->message);
    }
    if (ret != EXIT_USAGE) {
        if (a.json) {
            g_autofree char *js = guest_check_report_json(rep);

            printf("%s\n", js);
        } else {
            guest_check_report_print(rep, stdout);
            if (err) {
                printf("guest-check: %s\n", err->message);
            }
        }
    }
    g_clear_error(&err);
    munmap((void *)ram, len);

out:
    g_free(rep);
    g_free(a.dump);
    g_free(a.base);
    g_free(a.ncpus);
    g_free(a.start);
    g_free(a.end);
    g_free(a.seed);
    g_free(a.min_sweeps);
    return ret;
}

/*
 * Test helper: the VmFlags of the mapping holding an address, from
 * /proc/self/smaps ("hg" is MADV_HUGEPAGE, "nh" MADV_NOHUGEPAGE).
 */
#ifndef TESTS_VM_FLAGS_H
#define TESTS_VM_FLAGS_H

#include "qemu/osdep.h"

static inline char *vm_flags_of(const void *p)
{
    g_autofree char *smaps = NULL;
    g_auto(GStrv) lines = NULL;
    bool inside = false;

    g_assert_true(g_file_get_contents("/proc/self/smaps", &smaps, NULL, NULL));
    lines = g_strsplit(smaps, "\n", -1);
    for (guint i = 0; lines[i]; i++) {
        unsigned long lo, hi;

        if (sscanf(lines[i], "%lx-%lx ", &lo, &hi) == 2) {
            inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
        } else if (inside && g_str_has_prefix(lines[i], "VmFlags:")) {
            return g_strdup(lines[i] + strlen("VmFlags:"));
        }
    }
    g_assert_not_reached();
}

/* Whether the mapping holding p is advised into huge pages. */
static inline bool vm_advised_huge(const void *p)
{
    g_autofree char *flags = vm_flags_of(p);

    return strstr(flags, " hg") != NULL;
}

#endif

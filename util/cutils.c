/*
 * Parsers for untrusted text: sizes, integers, booleans.
 *
 * Everything here is strict: the whole string must be consumed, and no
 * sign, leading blank or overflow is let through silently.
 */
#include "qemu/osdep.h"
#include "qemu/cutils.h"

/* Power-of-1024 shift for a unit letter, or -1 if it is not one. */
static int size_suffix_shift(char c)
{
    switch (g_ascii_toupper(c)) {
    case 'B':
        return 0;
    case 'K':
        return 10;
    case 'M':
        return 20;
    case 'G':
        return 30;
    case 'T':
        return 40;
    case 'P':
        return 50;
    case 'E':
        return 60;
    default:
        return -1;
    }
}

static bool is_hex_prefix(const char *s)
{
    return s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
}

/*
 * Accumulate digits of the given base into *val; returns the number of
 * digits consumed, or -1 on overflow.
 */
static int parse_digits(const char **pp, unsigned base, uint64_t *val)
{
    const char *p = *pp;
    int n = 0;

    for (;; p++, n++) {
        int d = base == 16 ? g_ascii_xdigit_value(*p)
                           : g_ascii_digit_value(*p);
        if (d < 0) {
            break;
        }
        if (*val > (UINT64_MAX - d) / base) {
            return -1;
        }
        *val = *val * base + d;
    }
    *pp = p;
    return n;
}

bool qemu_strtosz(const char *str, char default_suffix, uint64_t *result,
                  GError **errp)
{
    const char *p = str;
    uint64_t whole = 0, frac = 0, frac_div = 1;
    unsigned __int128 total;
    bool hex;
    int shift, n;

    if (!str || !*str) {
        error_setg(errp, "invalid size '': empty string");
        return false;
    }
    if (*str == '-') {
        error_setg(errp, "invalid size '%s': negative value", str);
        return false;
    }
    hex = is_hex_prefix(p);
    if (hex) {
        p += 2;
    }
    n = parse_digits(&p, hex ? 16 : 10, &whole);
    if (n < 0) {
        goto overflow;
    }
    if (n == 0 && !(*p == '.' && !hex)) {
        error_setg(errp, "invalid size '%s': not a number", str);
        return false;
    }
    if (*p == '.' && !hex) {
        p++;
        /* Keep up to 18 fraction digits exactly; ignore finer ones. */
        for (; g_ascii_isdigit(*p); p++) {
            if (frac_div < 1000000000000000000ULL) {
                frac = frac * 10 + g_ascii_digit_value(*p);
                frac_div *= 10;
            }
        }
        if (n == 0 && frac_div == 1) {
            error_setg(errp, "invalid size '%s': not a number", str);
            return false;
        }
    }
    if (*p) {
        shift = size_suffix_shift(*p);
        if (shift < 0 || p[1]) {
            error_setg(errp, "invalid size '%s': unknown suffix '%s' "
                       "(use B, K, M, G, T, P or E)", str, p);
            return false;
        }
    } else {
        shift = size_suffix_shift(default_suffix);
        if (shift < 0) {
            shift = 0;
        }
    }
    if (frac && shift == 0) {
        error_setg(errp, "invalid size '%s': fractional number of bytes",
                   str);
        return false;
    }
    total = ((unsigned __int128)whole << shift) +
            (((unsigned __int128)frac << shift) / frac_div);
    if (total > UINT64_MAX) {
        goto overflow;
    }
    *result = (uint64_t)total;
    return true;

overflow:
    error_setg(errp, "invalid size '%s': value too large (must be below 2^64)",
               str);
    return false;
}

bool qemu_strtou64(const char *str, uint64_t *result, GError **errp)
{
    const char *p = str;
    uint64_t val = 0;
    bool hex;
    int n;

    if (!str || !*str) {
        error_setg(errp, "invalid number '': empty string");
        return false;
    }
    hex = is_hex_prefix(p);
    if (hex) {
        p += 2;
    }
    n = parse_digits(&p, hex ? 16 : 10, &val);
    if (n < 0) {
        error_setg(errp, "invalid number '%s': value too large", str);
        return false;
    }
    if (n == 0 || *p) {
        error_setg(errp, "invalid number '%s'", str);
        return false;
    }
    *result = val;
    return true;
}

bool qemu_parse_bool(const char *str, bool *result, GError **errp)
{
    static const char *const yes[] = { "on", "yes", "true" };
    static const char *const no[] = { "off", "no", "false" };
    size_t i;

    for (i = 0; str && i < ARRAY_SIZE(yes); i++) {
        if (!strcmp(str, yes[i])) {
            *result = true;
            return true;
        }
        if (!strcmp(str, no[i])) {
            *result = false;
            return true;
        }
    }
    error_setg(errp, "invalid boolean '%s' (expected 'on' or 'off')",
               str ? str : "");
    return false;
}

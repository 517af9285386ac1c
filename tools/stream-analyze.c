/*
 * Migration stream analyzer.
 *
 * The stream is decoded from a memory buffer with a cursor; every read
 * checks the bytes left first, so a truncated or corrupted file ends in an
 * error that names the offset, never in a crash.  Device sections carry no
 * length on the wire: the layouts of "timer" and "globalstate" are known
 * here, anything else is skipped by scanning for its footer.
 */
#include "qemu/osdep.h"
#include "stream-analyze.h"
#include "qemu/json-depth.h"

#define QEVM_MAGIC      0x5145564dU
#define QEVM_VERSION    3

enum {
    REC_EOF = 0x00, REC_START = 0x01, REC_PART = 0x02, REC_END = 0x03,
    REC_FULL = 0x04, REC_SUBSECTION = 0x05, REC_VMDESC = 0x06,
    REC_CONFIG = 0x07, REC_COMMAND = 0x08, REC_FOOTER = 0x7e,
};

enum {
    CMD_OPEN_RP = 1, CMD_PING, CMD_ADVISE, CMD_LISTEN, CMD_RUN,
    CMD_DISCARD, CMD_PACKAGED, CMD_ENABLE_COLO, CMD_RESUME,
    CMD_RECV_BITMAP, CMD_SWITCHOVER_START, CMD_MAX,
};

enum {
    RAM_ZERO = 0x002, RAM_MEM_SIZE = 0x004, RAM_PAGE = 0x008,
    RAM_EOS = 0x010, RAM_CONTINUE = 0x020, RAM_XBZRLE = 0x040,
    RAM_COMPRESS = 0x100, RAM_MULTIFD_FLUSH = 0x200,
};
#define RAM_FLAGS_MASK 0xfffULL

/* Largest zlib output for one page is a little over 4096 bytes. */
#define MAX_COMPRESSED_PAGE 8192

/*
 * PACKAGED blobs are decoded by recursion, three frames a level.  QEMU's
 * destination refuses a package inside a package; the analyzer shows a
 * few levels of such a broken stream and refuses deeper ones, which
 * could only be there to exhaust the stack.
 */
#define MAX_PACKAGED_DEPTH 4

/*
 * json-glib parses by recursion without a depth limit.  QEMU writes
 * VMDESCRIPTIONs nested a dozen levels or so; 128 leaves room for that
 * and keeps json-glib, json_node_copy() and the generator printing the
 * result well within any stack.
 */
#define MAX_VMDESC_DEPTH 128

typedef struct RamBlockStat {
    char *id;
    uint64_t length;
    uint64_t zero, zero_bytes, page, page_bytes;
    uint64_t xbzrle, xbzrle_bytes, compress, compress_bytes;
} RamBlockStat;

typedef struct SectionInfo {
    char *idstr;
    uint32_t instance, version;
} SectionInfo;

/* State shared by the top-level parse and nested PACKAGED parses. */
typedef struct StreamState {
    GHashTable *sections;       /* section id -> SectionInfo */
    GPtrArray *blocks;          /* RamBlockStat */
    RamBlockStat *last_block;
    bool ignore_shared;
    uint64_t advise_summary;    /* 0 until a 16-byte ADVISE */
    uint64_t eos, multifd_flush;
    unsigned packaged_depth;    /* PACKAGED blobs being decoded */
} StreamState;

typedef struct Cursor {
    const uint8_t *buf;
    size_t len, pos;
    size_t base;                /* stream offset of buf[0] */
    StreamState *st;
} Cursor;

static size_t cur_off(Cursor *c)
{
    return c->base + c->pos;
}

static void fail_at(GError **errp, size_t off, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);
static void fail_at(GError **errp, size_t off, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_setg(errp, "offset 0x%zx: %s", off, msg);
}

static bool need(Cursor *c, size_t n, const char *what, GError **errp)
{
    if (c->len - c->pos < n) {
        fail_at(errp, cur_off(c), "truncated: %s needs %zu bytes, %zu left",
                what, n, c->len - c->pos);
        return false;
    }
    return true;
}

static bool get_u8(Cursor *c, const char *what, uint8_t *v, GError **errp)
{
    if (!need(c, 1, what, errp)) {
        return false;
    }
    *v = c->buf[c->pos++];
    return true;
}

static uint64_t load_be(const uint8_t *p, int n)
{
    uint64_t v = 0;

    for (int i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

static bool get_be(Cursor *c, int n, const char *what, uint64_t *v,
                   GError **errp)
{
    if (!need(c, n, what, errp)) {
        return false;
    }
    *v = load_be(c->buf + c->pos, n);
    c->pos += n;
    return true;
}

static bool get_be32(Cursor *c, const char *what, uint32_t *v, GError **errp)
{
    uint64_t t;

    if (!get_be(c, 4, what, &t, errp)) {
        return false;
    }
    *v = t;
    return true;
}

static bool skip(Cursor *c, size_t n, const char *what, GError **errp)
{
    if (!need(c, n, what, errp)) {
        return false;
    }
    c->pos += n;
    return true;
}

/* Bytes as a printable string (non-printables become '?'). */
static char *printable(const uint8_t *p, size_t n)
{
    char *s = g_malloc(n + 1);

    for (size_t i = 0; i < n; i++) {
        s[i] = g_ascii_isprint(p[i]) ? p[i] : '?';
    }
    s[n] = 0;
    return s;
}

/* u8 length + bytes; an empty string is refused as QEMU does. */
static char *get_counted(Cursor *c, const char *what, GError **errp)
{
    uint8_t n;
    char *s;

    if (!get_u8(c, what, &n, errp)) {
        return NULL;
    }
    if (n == 0) {
        fail_at(errp, cur_off(c) - 1, "empty %s", what);
        return NULL;
    }
    if (!need(c, n, what, errp)) {
        return NULL;
    }
    s = printable(c->buf + c->pos, n);
    c->pos += n;
    return s;
}

static void stat_free(gpointer p)
{
    RamBlockStat *b = p;

    g_free(b->id);
    g_free(b);
}

static void section_free(gpointer p)
{
    SectionInfo *s = p;

    g_free(s->idstr);
    g_free(s);
}

static RamBlockStat *find_block(StreamState *st, const char *id)
{
    for (guint i = 0; i < st->blocks->len; i++) {
        RamBlockStat *b = g_ptr_array_index(st->blocks, i);
        if (!strcmp(b->id, id)) {
            return b;
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- RAM */

static bool parse_block_list(Cursor *c, uint64_t total, JsonObject *rec,
                             GError **errp)
{
    StreamState *st = c->st;
    JsonArray *arr = json_array_new();

    json_object_set_array_member(rec, "blocks", arr);
    json_object_set_int_member(rec, "ram-total", total);
    while (total > 0) {
        size_t off = cur_off(c);
        g_autofree char *id = get_counted(c, "RAMBlock id", errp);
        JsonObject *jb;
        RamBlockStat *b;
        uint64_t used, v;

        if (!id || !get_be(c, 8, "RAMBlock length", &used, errp)) {
            return false;
        }
        if (used > total) {
            fail_at(errp, off, "RAMBlock '%s' length 0x%" PRIx64 " exceeds "
                    "the 0x%" PRIx64 " bytes left of the MEM_SIZE total",
                    id, used, total);
            return false;
        }
        total -= used;
        jb = json_object_new();
        json_object_set_string_member(jb, "id", id);
        json_object_set_int_member(jb, "length", used);
        /*
         * A page size is only present for postcopy with a block whose pages
         * are not 4 KiB; the ADVISE summary says whether such blocks exist.
         */
        if (st->advise_summary && st->advise_summary != TARGET_PAGE_SIZE &&
            c->len - c->pos >= 8) {
            v = load_be(c->buf + c->pos, 8);
            if (v > TARGET_PAGE_SIZE && !(v & (v - 1)) &&
                (st->advise_summary & v)) {
                c->pos += 8;
                json_object_set_int_member(jb, "page-size", v);
            }
        }
        if (st->ignore_shared) {
            if (!get_be(c, 8, "RAMBlock address", &v, errp)) {
                json_object_unref(jb);
                return false;
            }
            json_object_set_int_member(jb, "addr", v);
        }
        json_array_add_object_element(arr, jb);
        b = find_block(st, id);
        if (!b) {
            b = g_new0(RamBlockStat, 1);
            b->id = g_strdup(id);
            g_ptr_array_add(st->blocks, b);
        }
        b->length = used;
    }
    return true;
}

typedef struct RamCounts {
    uint64_t zero, page, xbzrle, compress, eos, flush, bytes;
} RamCounts;

static bool parse_page_payload(Cursor *c, unsigned kind, GError **errp)
{
    uint8_t u8;
    uint64_t n;

    switch (kind) {
    case RAM_ZERO:
        return get_u8(c, "zero page fill byte", &u8, errp);
    case RAM_PAGE:
        return skip(c, TARGET_PAGE_SIZE, "page data", errp);
    case RAM_XBZRLE:
        if (!get_u8(c, "XBZRLE encoding", &u8, errp)) {
            return false;
        }
        if (u8 != 1) {
            fail_at(errp, cur_off(c) - 1, "XBZRLE encoding flag 0x%x is not "
                    "0x1", u8);
            return false;
        }
        if (!get_be(c, 2, "XBZRLE length", &n, errp)) {
            return false;
        }
        if (n > TARGET_PAGE_SIZE) {
            fail_at(errp, cur_off(c) - 2, "XBZRLE length %" PRIu64
                    " exceeds a page", n);
            return false;
        }
        return skip(c, n, "XBZRLE data", errp);
    default: /* RAM_COMPRESS */
        if (!get_be(c, 4, "compressed length", &n, errp)) {
            return false;
        }
        if (n > MAX_COMPRESSED_PAGE) {
            fail_at(errp, cur_off(c) - 4, "compressed page length %" PRIu64
                    " is implausible", n);
            return false;
        }
        return skip(c, n, "compressed page", errp);
    }
}

static void count_page(RamBlockStat *b, RamCounts *rc, unsigned kind,
                       uint64_t bytes)
{
    switch (kind) {
    case RAM_ZERO:
        b->zero++, b->zero_bytes += bytes, rc->zero++;
        break;
    case RAM_PAGE:
        b->page++, b->page_bytes += bytes, rc->page++;
        break;
    case RAM_XBZRLE:
        b->xbzrle++, b->xbzrle_bytes += bytes, rc->xbzrle++;
        break;
    default:
        b->compress++, b->compress_bytes += bytes, rc->compress++;
        break;
    }
}

/* One RAM record; *eos is set when the section's RAM data ends. */
static bool parse_ram_record(Cursor *c, JsonObject *rec, RamCounts *rc,
                             bool *eos, GError **errp)
{
    StreamState *st = c->st;
    size_t start = c->pos, off = cur_off(c);
    uint64_t word, addr;
    unsigned flags, kind;
    RamBlockStat *b;

    if (!get_be(c, 8, "RAM record header", &word, errp)) {
        return false;
    }
    flags = word & RAM_FLAGS_MASK;
    addr = word & ~RAM_FLAGS_MASK;
    if (flags == RAM_EOS && addr == 0) {
        rc->eos++;
        st->eos++;
        *eos = true;
        return true;
    }
    if (flags == RAM_MEM_SIZE) {
        return parse_block_list(c, addr, rec, errp);
    }
    if (flags == RAM_MULTIFD_FLUSH && addr == 0) {
        rc->flush++;
        st->multifd_flush++;
        return true;
    }
    kind = flags & ~RAM_CONTINUE;
    if (kind != RAM_ZERO && kind != RAM_PAGE && kind != RAM_XBZRLE &&
        kind != RAM_COMPRESS) {
        fail_at(errp, off, "unknown RAM record flags 0x%x (header 0x%016"
                PRIx64 ")", flags, word);
        return false;
    }
    if (flags & RAM_CONTINUE) {
        b = st->last_block;
        if (!b) {
            fail_at(errp, off, "RAM record with CONTINUE but no previous "
                    "block");
            return false;
        }
    } else {
        g_autofree char *id = get_counted(c, "RAMBlock id", errp);
        if (!id) {
            return false;
        }
        b = find_block(st, id);
        if (!b) {
            fail_at(errp, off, "RAM record for unknown RAMBlock '%s'", id);
            return false;
        }
        st->last_block = b;
    }
    if (addr >= b->length) {
        fail_at(errp, off, "page offset 0x%" PRIx64 " is beyond RAMBlock "
                "'%s' (0x%" PRIx64 " bytes)", addr, b->id, b->length);
        return false;
    }
    if (!parse_page_payload(c, kind, errp)) {
        return false;
    }
    count_page(b, rc, kind, c->pos - start);
    return true;
}

static bool parse_ram_section(Cursor *c, JsonObject *rec, GError **errp)
{
    RamCounts rc = { 0 };
    bool eos = false;
    bool ok = true;
    JsonObject *jr = json_object_new();

    while (!eos && (ok = parse_ram_record(c, rec, &rc, &eos, errp))) {
        /* nothing: the records count themselves */
    }
    json_object_set_int_member(jr, "zero", rc.zero);
    json_object_set_int_member(jr, "page", rc.page);
    json_object_set_int_member(jr, "xbzrle", rc.xbzrle);
    if (rc.compress) {
        json_object_set_int_member(jr, "compress", rc.compress);
    }
    if (rc.flush) {
        json_object_set_int_member(jr, "multifd-flush", rc.flush);
    }
    json_object_set_int_member(jr, "eos", rc.eos);
    json_object_set_object_member(rec, "ram", jr);
    return ok;
}

/* ------------------------------------------------------ device sections */

/* Payload bytes of the known "timer" subsections (doc §7.4). */
static const struct { const char *name; size_t size; } timer_subsections[] = {
    { "timer/icount", 16 },
    { "timer/icount/warp_timer", 16 },
    { "timer/icount/timers", 16 },
    { "timer/icount/shift", 10 },
};

/*
 * Subsections of a known device: false with *unknown set when a name is
 * not known (the caller then falls back to scanning).
 */
static bool parse_timer_subsections(Cursor *c, JsonObject *rec,
                                    bool *unknown, GError **errp)
{
    JsonArray *arr = NULL;

    while (c->pos < c->len && c->buf[c->pos] == REC_SUBSECTION) {
        size_t off = cur_off(c);
        g_autofree char *name = NULL;
        uint32_t ver;
        size_t i;
        JsonObject *js;

        c->pos++;
        name = get_counted(c, "subsection name", errp);
        if (!name || !get_be32(c, "subsection version", &ver, errp)) {
            return false;
        }
        for (i = 0; i < ARRAY_SIZE(timer_subsections); i++) {
            if (!strcmp(name, timer_subsections[i].name)) {
                break;
            }
        }
        if (i == ARRAY_SIZE(timer_subsections)) {
            *unknown = true;
            fail_at(errp, off, "unknown subsection '%s'", name);
            return false;
        }
        if (!skip(c, timer_subsections[i].size, name, errp)) {
            return false;
        }
        js = json_object_new();
        json_object_set_string_member(js, "name", name);
        json_object_set_int_member(js, "version", ver);
        if (!arr) {
            arr = json_array_new();
            json_object_set_array_member(rec, "subsections", arr);
        }
        json_array_add_object_element(arr, js);
    }
    return true;
}

static bool parse_timer(Cursor *c, SectionInfo *si, JsonObject *rec,
                        bool *unknown, GError **errp)
{
    uint64_t ticks, clock = 0;

    if (si->version < 1 || si->version > 2) {
        *unknown = true;
        return false;
    }
    if (!get_be(c, 8, "timer cpu_ticks_offset", &ticks, errp) ||
        !skip(c, 8, "timer unused field", errp) ||
        (si->version >= 2 &&
         !get_be(c, 8, "timer cpu_clock_offset", &clock, errp))) {
        return false;
    }
    json_object_set_int_member(rec, "cpu-ticks-offset", (int64_t)ticks);
    if (si->version >= 2) {
        json_object_set_int_member(rec, "cpu-clock-offset", (int64_t)clock);
    }
    return parse_timer_subsections(c, rec, unknown, errp);
}

static bool parse_globalstate(Cursor *c, SectionInfo *si, JsonObject *rec,
                              bool *unknown, GError **errp)
{
    uint32_t size;
    g_autofree char *name = NULL;

    if (si->version != 1) {
        *unknown = true;
        return false;
    }
    if (!get_be32(c, "globalstate size", &size, errp) ||
        !need(c, 100, "globalstate runstate", errp)) {
        return false;
    }
    name = printable(c->buf + c->pos, strnlen((const char *)c->buf + c->pos,
                                              100));
    c->pos += 100;
    json_object_set_string_member(rec, "runstate", name);
    return true;
}

/* Could a record start at p (or is p the end of the stream)? */
static bool plausible_record(Cursor *c, size_t p)
{
    const uint8_t *b = c->buf + p;
    size_t left = c->len - p;

    if (left == 0) {
        return true;
    }
    switch (b[0]) {
    case REC_EOF:
        /* only the end of the stream, or a VMDESCRIPTION that fills it */
        return left == 1 ||
               (left >= 6 && b[1] == REC_VMDESC &&
                load_be(b + 2, 4) == left - 6);
    case REC_START:
    case REC_FULL:
        return left >= 6 && b[5] > 0 && left >= 6 + (size_t)b[5] + 8;
    case REC_PART:
    case REC_END:
        return left >= 5 && g_hash_table_contains(
            c->st->sections, GUINT_TO_POINTER(load_be(b + 1, 4)));
    case REC_COMMAND:
        return left >= 5 && load_be(b + 1, 2) > 0 &&
               load_be(b + 1, 2) < CMD_MAX;
    default:
        return false;
    }
}

/* Skip an unknown device's payload: find "7E <id>" before a record. */
static bool scan_for_footer(Cursor *c, uint32_t sid, JsonObject *rec,
                            GError **errp)
{
    size_t start = c->pos;

    for (size_t p = c->pos; p + 5 <= c->len; p++) {
        if (c->buf[p] == REC_FOOTER && load_be(c->buf + p + 1, 4) == sid &&
            plausible_record(c, p + 5)) {
            c->pos = p;
            json_object_set_boolean_member(rec, "skipped-by-scan", true);
            json_object_set_int_member(rec, "payload-size", p - start);
            return true;
        }
    }
    fail_at(errp, cur_off(c), "cannot find the footer of section %u with "
            "an unknown layout", sid);
    return false;
}

static bool parse_device_section(Cursor *c, uint32_t sid, SectionInfo *si,
                                 JsonObject *rec, GError **errp)
{
    size_t start = c->pos;
    bool unknown = false;
    GError *local = NULL;
    bool ok;

    if (!strcmp(si->idstr, "timer")) {
        ok = parse_timer(c, si, rec, &unknown, &local);
    } else if (!strcmp(si->idstr, "globalstate")) {
        ok = parse_globalstate(c, si, rec, &unknown, &local);
    } else {
        ok = false;
        unknown = true;
    }
    if (ok) {
        return true;
    }
    if (!unknown) {
        g_propagate_error(errp, local);
        return false;
    }
    g_clear_error(&local);
    c->pos = start;
    return scan_for_footer(c, sid, rec, errp);
}

/* -------------------------------------------------------------- sections */

static const char *const rec_names[] = {
    [REC_EOF] = "EOF", [REC_START] = "SECTION_START",
    [REC_PART] = "SECTION_PART", [REC_END] = "SECTION_END",
    [REC_FULL] = "SECTION_FULL", [REC_SUBSECTION] = "SUBSECTION",
    [REC_VMDESC] = "VMDESCRIPTION", [REC_CONFIG] = "CONFIGURATION",
    [REC_COMMAND] = "COMMAND",
};

static bool parse_section(Cursor *c, uint8_t type, JsonObject *rec,
                          GError **errp)
{
    StreamState *st = c->st;
    size_t hdr = cur_off(c) - 1;
    uint32_t sid, footer_id;
    uint8_t mark;
    SectionInfo *si;

    if (!get_be32(c, "section id", &sid, errp)) {
        return false;
    }
    json_object_set_int_member(rec, "section-id", sid);
    if (type == REC_START || type == REC_FULL) {
        g_autofree char *idstr = get_counted(c, "section idstr", errp);
        uint32_t inst, ver;

        if (!idstr || !get_be32(c, "instance id", &inst, errp) ||
            !get_be32(c, "version id", &ver, errp)) {
            return false;
        }
        si = g_new0(SectionInfo, 1);
        si->idstr = g_steal_pointer(&idstr);
        si->instance = inst;
        si->version = ver;
        g_hash_table_replace(st->sections, GUINT_TO_POINTER(sid), si);
    } else {
        si = g_hash_table_lookup(st->sections, GUINT_TO_POINTER(sid));
        if (!si) {
            fail_at(errp, hdr, "%s for section id %u that never started",
                    rec_names[type], sid);
            return false;
        }
    }
    json_object_set_string_member(rec, "idstr", si->idstr);
    json_object_set_int_member(rec, "instance", si->instance);
    json_object_set_int_member(rec, "version", si->version);

    if (!strcmp(si->idstr, "ram") && type != REC_FULL) {
        if (!parse_ram_section(c, rec, errp)) {
            return false;
        }
    } else if (type == REC_FULL) {
        if (!parse_device_section(c, sid, si, rec, errp)) {
            return false;
        }
    } else {
        /* A live section other than RAM: its payload is not decodable. */
        if (!scan_for_footer(c, sid, rec, errp)) {
            return false;
        }
    }

    if (!get_u8(c, "section footer", &mark, errp)) {
        return false;
    }
    if (mark != REC_FOOTER) {
        fail_at(errp, cur_off(c) - 1, "expected section footer 0x7e for "
                "section %u '%s', found 0x%02x", sid, si->idstr, mark);
        return false;
    }
    if (!get_be32(c, "footer section id", &footer_id, errp)) {
        return false;
    }
    if (footer_id != sid) {
        fail_at(errp, cur_off(c) - 4, "footer names section %u, expected %u",
                footer_id, sid);
        return false;
    }
    return true;
}

/* -------------------------------------------------------------- commands */

static const char *const cmd_names[CMD_MAX] = {
    [CMD_OPEN_RP] = "OPEN_RETURN_PATH", [CMD_PING] = "PING",
    [CMD_ADVISE] = "POSTCOPY_ADVISE", [CMD_LISTEN] = "POSTCOPY_LISTEN",
    [CMD_RUN] = "POSTCOPY_RUN", [CMD_DISCARD] = "POSTCOPY_RAM_DISCARD",
    [CMD_PACKAGED] = "PACKAGED", [CMD_ENABLE_COLO] = "ENABLE_COLO",
    [CMD_RESUME] = "POSTCOPY_RESUME", [CMD_RECV_BITMAP] = "RECV_BITMAP",
    [CMD_SWITCHOVER_START] = "SWITCHOVER_START",
};

/* Fixed payload length, or -1 when it varies. */
static int cmd_fixed_len(unsigned cmd)
{
    switch (cmd) {
    case CMD_PING:
    case CMD_PACKAGED:
        return 4;
    case CMD_ADVISE:
    case CMD_DISCARD:
    case CMD_RECV_BITMAP:
        return -1;
    default:
        return 0;
    }
}

static bool parse_records(Cursor *c, JsonArray *records, bool nested,
                          bool *saw_eof, GError **errp);

static bool decode_discard(Cursor *c, size_t plen, JsonObject *rec,
                           GError **errp)
{
    Cursor p = { c->buf + c->pos, plen, 0, cur_off(c), c->st };
    uint8_t ver, term;
    g_autofree char *id = NULL;
    JsonArray *ranges;

    if (!get_u8(&p, "discard version", &ver, errp)) {
        return false;
    }
    if (ver != 0) {
        fail_at(errp, p.base, "discard version %u is not 0", ver);
        return false;
    }
    id = get_counted(&p, "discard RAMBlock id", errp);
    if (!id || !get_u8(&p, "discard terminator", &term, errp)) {
        return false;
    }
    if (term != 0) {
        fail_at(errp, cur_off(&p) - 1, "discard terminator is 0x%x, not 0",
                term);
        return false;
    }
    if ((plen - p.pos) % 16 || plen == p.pos) {
        fail_at(errp, cur_off(&p), "discard ranges take %zu bytes, not a "
                "positive multiple of 16", plen - p.pos);
        return false;
    }
    json_object_set_string_member(rec, "block", id);
    ranges = json_array_new();
    json_object_set_array_member(rec, "ranges", ranges);
    while (p.pos < plen) {
        JsonArray *r = json_array_new();
        json_array_add_int_element(r, load_be(p.buf + p.pos, 8));
        json_array_add_int_element(r, load_be(p.buf + p.pos + 8, 8));
        json_array_add_array_element(ranges, r);
        p.pos += 16;
    }
    return true;
}

static bool decode_packaged(Cursor *c, size_t hdr, JsonObject *rec,
                            GError **errp)
{
    uint32_t blob;
    Cursor sub;
    JsonArray *inner = json_array_new();
    bool saw_eof = false;
    bool ok;

    json_object_set_array_member(rec, "records", inner);
    if (!get_be32(c, "PACKAGED length", &blob, errp)) {
        return false;
    }
    json_object_set_int_member(rec, "blob-length", blob);
    if (!need(c, blob, "PACKAGED blob", errp)) {
        return false;
    }
    if (c->st->packaged_depth >= MAX_PACKAGED_DEPTH) {
        fail_at(errp, hdr, "PACKAGED nested more than %d deep (QEMU "
                "refuses any PACKAGED inside PACKAGED)", MAX_PACKAGED_DEPTH);
        return false;
    }
    sub = (Cursor){ c->buf + c->pos, blob, 0, cur_off(c), c->st };
    c->st->packaged_depth++;
    ok = parse_records(&sub, inner, true, &saw_eof, errp);
    c->st->packaged_depth--;
    if (ok && sub.pos < sub.len) {
        json_object_set_int_member(rec, "unparsed-after-run",
                                   sub.len - sub.pos);
    }
    c->pos += blob;
    return ok;
}

static bool parse_command(Cursor *c, JsonObject *rec, bool *run,
                          GError **errp)
{
    size_t hdr = cur_off(c) - 1;
    uint64_t cmd, plen, v = 0;
    int fixed;

    if (!get_be(c, 2, "command number", &cmd, errp) ||
        !get_be(c, 2, "command length", &plen, errp)) {
        return false;
    }
    if (cmd == 0 || cmd >= CMD_MAX) {
        fail_at(errp, hdr, "unknown command %" PRIu64, cmd);
        return false;
    }
    json_object_set_string_member(rec, "command", cmd_names[cmd]);
    json_object_set_int_member(rec, "length", plen);
    fixed = cmd_fixed_len(cmd);
    if ((fixed >= 0 && plen != (uint64_t)fixed) ||
        (cmd == CMD_ADVISE && plen != 0 && plen != 16)) {
        fail_at(errp, hdr, "command %s has length %" PRIu64 ", expected %d",
                cmd_names[cmd], plen, cmd == CMD_ADVISE ? 16 : fixed);
        return false;
    }
    if (!need(c, plen, "command payload", errp)) {
        return false;
    }
    switch (cmd) {
    case CMD_PING:
        get_be(c, 4, "PING value", &v, errp);
        json_object_set_int_member(rec, "value", v);
        return true;
    case CMD_ADVISE:
        if (plen == 16) {
            get_be(c, 8, "page size summary", &v, errp);
            json_object_set_int_member(rec, "page-size-summary", v);
            c->st->advise_summary = v;
            get_be(c, 8, "target page size", &v, errp);
            json_object_set_int_member(rec, "target-page-size", v);
        }
        return true;
    case CMD_DISCARD:
        if (!decode_discard(c, plen, rec, errp)) {
            return false;
        }
        c->pos += plen;
        return true;
    case CMD_RECV_BITMAP: {
        Cursor p = { c->buf + c->pos, plen, 0, cur_off(c), c->st };
        g_autofree char *id = get_counted(&p, "RECV_BITMAP RAMBlock id", errp);
        if (!id) {
            return false;
        }
        if (p.pos != plen) {
            fail_at(errp, hdr, "RECV_BITMAP length %" PRIu64 " does not "
                    "match its id", plen);
            return false;
        }
        json_object_set_string_member(rec, "block", id);
        c->pos += plen;
        return true;
    }
    case CMD_PACKAGED:
        return decode_packaged(c, hdr, rec, errp);
    case CMD_RUN:
        *run = true;
        return true;
    default:
        return true;
    }
}

/* ------------------------------------------------------------ top level */

static bool parse_vmdesc(Cursor *c, JsonObject *rec, GError **errp)
{
    uint32_t len;
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autofree char *msg = NULL;
    GError *local = NULL;
    ssize_t deep;

    if (!get_be32(c, "VMDESCRIPTION length", &len, errp) ||
        !need(c, len, "VMDESCRIPTION JSON", errp)) {
        return false;
    }
    json_object_set_int_member(rec, "length", len);
    deep = json_too_deep((const char *)c->buf + c->pos, len,
                         MAX_VMDESC_DEPTH);
    if (deep >= 0) {
        /* Not fatal, like any other JSON error here: the stream is read. */
        msg = g_strdup_printf("offset 0x%zx: JSON nested more than %d "
                              "deep", cur_off(c) + deep, MAX_VMDESC_DEPTH);
        json_object_set_string_member(rec, "json-error", msg);
    } else if (json_parser_load_from_data(parser, (const char *)c->buf + c->pos,
                                   len, &local) &&
        json_parser_get_root(parser)) {
        json_object_set_member(rec, "json",
                               json_node_copy(json_parser_get_root(parser)));
    } else {
        json_object_set_string_member(rec, "json-error",
                                      local ? local->message : "empty");
        g_clear_error(&local);
    }
    c->pos += len;
    return true;
}

/*
 * Records until EOF (or, nested in a PACKAGED blob, until RUN or the end
 * of the blob).  Each record is appended to records before it is decoded,
 * so a failure still shows what was read of it.
 */
static bool parse_records(Cursor *c, JsonArray *records, bool nested,
                          bool *saw_eof, GError **errp)
{
    while (c->pos < c->len) {
        size_t off = cur_off(c);
        size_t start = c->pos;
        uint8_t type = c->buf[c->pos++];
        JsonObject *rec = json_object_new();
        bool run = false;
        bool ok;

        json_object_set_int_member(rec, "offset", off);
        json_array_add_object_element(records, rec);
        if (type < ARRAY_SIZE(rec_names) && rec_names[type]) {
            json_object_set_string_member(rec, "type", rec_names[type]);
        }
        switch (type) {
        case REC_EOF:
            *saw_eof = true;
            return true;
        case REC_START:
        case REC_PART:
        case REC_END:
        case REC_FULL:
            ok = parse_section(c, type, rec, errp);
            break;
        case REC_COMMAND:
            ok = parse_command(c, rec, &run, errp);
            break;
        default:
            fail_at(errp, off, "unexpected record type 0x%02x%s", type,
                    type == REC_VMDESC ? " (VMDESCRIPTION before EOF)" :
                    type == REC_CONFIG ? " (CONFIGURATION not at the start)" :
                    "");
            json_object_set_string_member(rec, "type", "INVALID");
            return false;
        }
        json_object_set_int_member(rec, "size", c->pos - start);
        if (!ok) {
            return false;
        }
        if (nested && run) {
            return true;
        }
    }
    if (!nested) {
        fail_at(errp, cur_off(c), "stream ends without an EOF record");
        return false;
    }
    return true;
}

static bool parse_configuration(Cursor *c, JsonObject *out, GError **errp)
{
    JsonObject *cfg = json_object_new();
    JsonArray *subs = json_array_new();
    uint32_t len;

    json_object_set_object_member(out, "configuration", cfg);
    json_object_set_array_member(cfg, "subsections", subs);
    if (!get_be32(c, "machine name length", &len, errp)) {
        return false;
    }
    if (len > 256) {
        fail_at(errp, cur_off(c) - 4, "machine name length %u is "
                "implausible", len);
        return false;
    }
    if (!need(c, len, "machine name", errp)) {
        return false;
    }
    g_autofree char *name = printable(c->buf + c->pos, len);
    c->pos += len;
    json_object_set_string_member(cfg, "machine", name);

    while (c->pos < c->len && c->buf[c->pos] == REC_SUBSECTION) {
        size_t off = cur_off(c);
        g_autofree char *sname = NULL;
        uint32_t ver, v;
        JsonObject *js = json_object_new();

        json_array_add_object_element(subs, js);
        c->pos++;
        sname = get_counted(c, "subsection name", errp);
        if (!sname || !get_be32(c, "subsection version", &ver, errp)) {
            return false;
        }
        json_object_set_string_member(js, "name", sname);
        json_object_set_int_member(js, "version", ver);
        if (!strcmp(sname, "configuration/target-page-bits")) {
            if (!get_be32(c, "target page bits", &v, errp)) {
                return false;
            }
            json_object_set_int_member(js, "target-page-bits", v);
        } else if (!strcmp(sname, "configuration/capabilities")) {
            JsonArray *caps = json_array_new();
            json_object_set_array_member(js, "capabilities", caps);
            if (!get_be32(c, "capability count", &v, errp)) {
                return false;
            }
            for (uint32_t i = 0; i < v; i++) {
                g_autofree char *cap = get_counted(c, "capability", errp);
                if (!cap) {
                    return false;
                }
                if (!strcmp(cap, "x-ignore-shared")) {
                    c->st->ignore_shared = true;
                }
                json_array_add_string_element(caps, cap);
            }
        } else if (!strcmp(sname, "configuration/uuid")) {
            if (!need(c, 16, "uuid", errp)) {
                return false;
            }
            g_autofree char *hex = g_malloc(33);
            for (int i = 0; i < 16; i++) {
                snprintf(hex + 2 * i, 3, "%02x", c->buf[c->pos + i]);
            }
            c->pos += 16;
            json_object_set_string_member(js, "uuid", hex);
        } else {
            fail_at(errp, off, "unknown configuration subsection '%s'",
                    sname);
            return false;
        }
    }
    return true;
}

static void add_ram_summary(StreamState *st, JsonObject *out)
{
    JsonObject *ram = json_object_new();
    JsonArray *arr = json_array_new();
    uint64_t t[8] = { 0 };

    for (guint i = 0; i < st->blocks->len; i++) {
        RamBlockStat *b = g_ptr_array_index(st->blocks, i);
        JsonObject *jb = json_object_new();
        uint64_t v[8] = { b->zero, b->zero_bytes, b->page, b->page_bytes,
                          b->xbzrle, b->xbzrle_bytes, b->compress,
                          b->compress_bytes };
        static const char *const names[8] = {
            "zero", "zero-bytes", "page", "page-bytes", "xbzrle",
            "xbzrle-bytes", "compress", "compress-bytes",
        };

        json_object_set_string_member(jb, "id", b->id);
        json_object_set_int_member(jb, "length", b->length);
        json_object_set_int_member(jb, "target-pages",
                                   b->length / TARGET_PAGE_SIZE);
        for (int k = 0; k < 8; k++) {
            json_object_set_int_member(jb, names[k], v[k]);
            t[k] += v[k];
        }
        json_array_add_object_element(arr, jb);
    }
    json_object_set_array_member(ram, "blocks", arr);
    json_object_set_int_member(ram, "zero", t[0]);
    json_object_set_int_member(ram, "page", t[2]);
    json_object_set_int_member(ram, "xbzrle", t[4]);
    json_object_set_int_member(ram, "compress", t[6]);
    json_object_set_int_member(ram, "eos", st->eos);
    json_object_set_int_member(ram, "multifd-flush", st->multifd_flush);
    json_object_set_object_member(out, "ram", ram);
}

static bool analyze_body(Cursor *c, JsonObject *out, GError **errp)
{
    uint64_t magic, version;
    JsonArray *records = json_array_new();
    bool saw_eof = false;

    json_object_set_array_member(out, "records", records);
    if (!get_be(c, 4, "magic", &magic, errp)) {
        return false;
    }
    if (magic != QEVM_MAGIC) {
        fail_at(errp, 0, "not a migration stream (magic 0x%08" PRIx64
                ", expected 0x%08x \"QEVM\")", magic, QEVM_MAGIC);
        return false;
    }
    json_object_set_string_member(out, "magic", "QEVM");
    if (!get_be(c, 4, "version", &version, errp)) {
        return false;
    }
    json_object_set_int_member(out, "version", version);
    if (version != QEVM_VERSION) {
        fail_at(errp, 4, "unsupported stream version %" PRIu64, version);
        return false;
    }
    if (c->pos < c->len && c->buf[c->pos] == REC_CONFIG) {
        c->pos++;
        if (!parse_configuration(c, out, errp)) {
            return false;
        }
    }
    if (!parse_records(c, records, false, &saw_eof, errp)) {
        return false;
    }
    if (c->pos < c->len && c->buf[c->pos] == REC_VMDESC) {
        JsonObject *rec = json_object_new();
        json_object_set_int_member(rec, "offset", cur_off(c));
        json_object_set_string_member(rec, "type", "VMDESCRIPTION");
        json_array_add_object_element(records, rec);
        c->pos++;
        if (!parse_vmdesc(c, rec, errp)) {
            return false;
        }
    }
    if (c->pos < c->len) {
        fail_at(errp, cur_off(c), "%zu unexpected bytes after the end of "
                "the stream", c->len - c->pos);
        return false;
    }
    return true;
}

bool stream_analyze(const uint8_t *buf, size_t len, JsonObject **result,
                    GError **errp)
{
    StreamState st = {
        .sections = g_hash_table_new_full(NULL, NULL, NULL, section_free),
        .blocks = g_ptr_array_new_with_free_func(stat_free),
    };
    Cursor c = { buf, len, 0, 0, &st };
    JsonObject *out = json_object_new();
    GError *local = NULL;
    bool ok;

    json_object_set_int_member(out, "size", len);
    ok = analyze_body(&c, out, &local);
    add_ram_summary(&st, out);
    json_object_set_int_member(out, "parsed-bytes", c.pos);
    if (!ok) {
        json_object_set_string_member(out, "error", local->message);
        g_propagate_error(errp, local);
    }
    g_hash_table_destroy(st.sections);
    g_ptr_array_free(st.blocks, TRUE);
    *result = out;
    return ok;
}

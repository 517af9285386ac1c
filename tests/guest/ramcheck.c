/*
 * Checker for RAM written by the test guest: see ramcheck.h for the
 * pattern and what a consistent snapshot looks like.
 *
 * Each slice is checked in two steps.  First every page is classified on
 * its own: a whole sweep s (s = 0: all zero), a torn page (a prefix of
 * sweep s, the rest sweep s - 1), or bad (wrong index, mixed words...).
 * Then the slice is fitted to the only legal shape, "hi" pages up to a
 * boundary B, an optional torn page at B, "lo" = hi - 1 pages after it;
 * the fit with the fewest mismatches is kept so that one stale or
 * misplaced page is reported as that one page, not as half the slice.
 */
#include "qemu/osdep.h"
#include "ramcheck.h"

#include <json-glib/json-glib.h>

#define WORDS_PER_PAGE (GUEST_PAGE_SIZE / 8)

typedef enum PageKind {
    PAGE_SWEEP,         /* uniform page of sweep s (0 = never written) */
    PAGE_TORN,          /* words [0, split) sweep s, the rest s - 1 */
    PAGE_BAD,
} PageKind;

typedef struct PageClass {
    uint8_t kind;
    uint16_t word;      /* torn: split; bad: where the shape breaks */
    uint64_t sweep;     /* sweep, or torn: the newer sweep */
    const char *why;    /* bad: reason */
} PageClass;

void guest_slice_bounds(const GuestParams *p, unsigned i,
                        uint64_t *start, uint64_t *end)
{
    uint64_t per = (p->end - p->start) / GUEST_PAGE_SIZE / p->ncpus;

    *start = p->start + i * per * GUEST_PAGE_SIZE;
    *end = i + 1 == p->ncpus ? p->end : *start + per * GUEST_PAGE_SIZE;
}

bool guest_params_validate(const GuestParams *p, GError **errp)
{
    if (p->ncpus < 1 || p->ncpus > GUEST_MAX_CPUS) {
        error_setg(errp, "ncpus must be 1..%d, not %u", GUEST_MAX_CPUS,
                   p->ncpus);
        return false;
    }
    if (!QEMU_IS_ALIGNED(p->start, GUEST_PAGE_SIZE) ||
        !QEMU_IS_ALIGNED(p->end, GUEST_PAGE_SIZE)) {
        error_setg(errp, "start 0x%" PRIx64 " and end 0x%" PRIx64
                   " must be page aligned", p->start, p->end);
        return false;
    }
    if (p->start >= p->end) {
        error_setg(errp, "empty region [0x%" PRIx64 ", 0x%" PRIx64 ")",
                   p->start, p->end);
        return false;
    }
    /* The page index is 32 bits in the pattern. */
    if (p->end > (1ULL << 44)) {
        error_setg(errp, "end 0x%" PRIx64 " beyond 16 TiB", p->end);
        return false;
    }
    return true;
}

/* Decode one word of the page at addr: true and *sweep if it is either a
 * pattern word carrying this page's index or a zero (never written) word. */
static bool decode_word(uint64_t w, uint64_t addr, uint64_t mix,
                        uint64_t *sweep)
{
    uint64_t x = w ^ mix;

    if ((x & 0xffffffffULL) == ((addr >> 12) & 0xffffffffULL) &&
        (x >> 32) != 0) {
        *sweep = x >> 32;
        return true;
    }
    if (w == 0) {
        *sweep = 0;
        return true;
    }
    return false;
}

static inline uint64_t page_word(const uint8_t *page, unsigned i)
{
    uint64_t w;

    memcpy(&w, page + i * 8, 8);
    return GUINT64_FROM_LE(w);
}

/* First word index >= from that differs from w, or WORDS_PER_PAGE. */
static unsigned first_other(const uint8_t *page, unsigned from, uint64_t w)
{
    for (unsigned i = from; i < WORDS_PER_PAGE; i++) {
        if (page_word(page, i) != w) {
            return i;
        }
    }
    return WORDS_PER_PAGE;
}

static void classify_page(const uint8_t *page, uint64_t addr, uint64_t mix,
                          PageClass *pc)
{
    uint64_t w0 = page_word(page, 0), w1, s0, s1;
    unsigned split = first_other(page, 1, w0), k;

    memset(pc, 0, sizeof(*pc));
    if (!decode_word(w0, addr, mix, &s0)) {
        pc->kind = PAGE_BAD;
        /* A small sweep number with the wrong index: a misplaced page. */
        pc->why = ((w0 ^ mix) >> 32) - 1 < (1u << 24)
                  ? "page carries another page's index"
                  : "unrecognised contents";
        return;
    }
    if (split == WORDS_PER_PAGE) {
        pc->kind = PAGE_SWEEP;
        pc->sweep = s0;
        return;
    }
    w1 = page_word(page, split);
    k = first_other(page, split + 1, w1);
    pc->kind = PAGE_BAD;
    if (k != WORDS_PER_PAGE) {
        pc->word = k;
        pc->why = "more than two runs of words";
    } else if (!decode_word(w1, addr, mix, &s1)) {
        pc->word = split;
        pc->why = "torn page with foreign words";
    } else if (s0 == 0 || s1 != s0 - 1) {
        pc->word = split;
        pc->why = "torn page whose sweeps do not follow";
    } else {
        pc->kind = PAGE_TORN;
        pc->word = split;
        pc->sweep = s0;
    }
}

/* The most frequent sweep among the first few distinct values seen. */
static uint64_t common_sweep(const PageClass *pc, uint64_t n)
{
    uint64_t val[8], cnt[8] = { 0 }, best = 0;
    unsigned nval = 0, j;

    for (uint64_t i = 0; i < n; i++) {
        if (pc[i].kind == PAGE_BAD) {
            continue;
        }
        for (j = 0; j < nval && val[j] != pc[i].sweep; j++) {
            ;
        }
        if (j == nval) {
            if (nval == ARRAY_SIZE(val)) {
                continue;
            }
            val[nval++] = pc[i].sweep;
        }
        cnt[j]++;
    }
    for (j = 0; j < nval; j++) {
        if (cnt[j] > cnt[best]) {
            best = j;
        }
    }
    return nval ? val[best] : 0;
}

static bool page_is(const PageClass *pc, uint64_t sweep)
{
    return pc->kind == PAGE_SWEEP && pc->sweep == sweep;
}

/*
 * Best boundary for a given hi: pages [0, B) should be hi, page B may be
 * torn (hi over hi - 1), pages after it hi - 1.  Returns the mismatches.
 */
static uint64_t fit_boundary(const PageClass *pc, uint64_t n, uint64_t hi,
                             uint64_t *best_b)
{
    uint64_t not_lo = 0, not_hi = 0, best;

    for (uint64_t i = 0; i < n; i++) {
        not_lo += !page_is(&pc[i], hi - 1);
    }
    /* B = 0 */
    best = not_lo - (n && pc[0].kind == PAGE_TORN && pc[0].sweep == hi);
    *best_b = 0;
    for (uint64_t b = 1; b <= n; b++) {
        uint64_t cost;

        not_hi += !page_is(&pc[b - 1], hi);
        not_lo -= !page_is(&pc[b - 1], hi - 1);
        cost = not_hi + not_lo;
        if (b < n && pc[b].kind == PAGE_TORN && pc[b].sweep == hi) {
            cost--;
        }
        if (cost < best) {
            best = cost;
            *best_b = b;
        }
    }
    return best;
}

static void note_bad(GuestCheckReport *rep, unsigned slice, uint64_t addr,
                     const uint8_t *page, uint64_t expected, unsigned word,
                     const char *why)
{
    GuestBadPage *b;

    rep->pages_bad++;
    rep->slice[slice].pages_bad++;
    if (rep->nbad == GUEST_CHECK_MAX_BAD) {
        return;
    }
    b = &rep->bad[rep->nbad++];
    b->addr = addr;
    b->slice = slice;
    b->expected = expected;
    b->word_index = word;
    b->found = page_word(page, word);
    b->why = why;
}

static const char *mismatch_reason(const PageClass *pc, uint64_t want)
{
    if (pc->kind == PAGE_TORN) {
        return "torn page away from the sweep boundary";
    }
    if (pc->sweep == 0) {
        return "zero page inside a written part of the slice";
    }
    return pc->sweep < want ? "stale page (older sweep)"
                            : "page from a newer sweep than its neighbours";
}

static void check_slice(const uint8_t *ram, uint64_t ram_base,
                        const GuestParams *p, unsigned idx,
                        GuestCheckReport *rep)
{
    GuestSliceReport *sr = &rep->slice[idx];
    uint64_t mix = (uint64_t)p->seed * GUEST_SEED_MULT;
    uint64_t n, hi, b, cost, b2, cost2;
    PageClass *pc;

    guest_slice_bounds(p, idx, &sr->start, &sr->end);
    sr->torn_addr = UINT64_MAX;
    sr->boundary = sr->end;
    n = (sr->end - sr->start) / GUEST_PAGE_SIZE;
    if (n == 0) {
        return;
    }
    pc = g_new(PageClass, n);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t addr = sr->start + i * GUEST_PAGE_SIZE;

        classify_page(ram + (addr - ram_base), addr, mix, &pc[i]);
    }

    /* A legal slice holds only hi and hi - 1, so the commonest sweep is
     * one of the two: try both readings and keep the better fit. */
    hi = common_sweep(pc, n);
    if (hi == 0) {
        hi = 1;
    }
    cost = fit_boundary(pc, n, hi, &b);
    cost2 = fit_boundary(pc, n, hi + 1, &b2);
    if (cost2 < cost) {
        hi++;
        cost = cost2;
        b = b2;
    }

    sr->boundary = sr->start + b * GUEST_PAGE_SIZE;
    sr->sweeps_done = b == n ? hi : hi - 1;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t addr = sr->start + i * GUEST_PAGE_SIZE;
        const uint8_t *page = ram + (addr - ram_base);
        uint64_t want = i < b ? hi : hi - 1;
        uint64_t expected = want ? guest_pattern(want, addr, p->seed) : 0;

        if (i == b && pc[i].kind == PAGE_TORN && pc[i].sweep == hi) {
            sr->torn_addr = addr;
            sr->pages_torn++;
        } else if (page_is(&pc[i], want)) {
            if (want) {
                sr->pages_ok++;
            } else {
                sr->pages_zero++;
            }
        } else {
            /* Show the first word that differs from what belongs here. */
            unsigned word = first_other(page, 0, expected);

            note_bad(rep, idx, addr, page, expected,
                     word < WORDS_PER_PAGE ? word : pc[i].word,
                     pc[i].kind == PAGE_BAD ? pc[i].why
                                            : mismatch_reason(&pc[i], want));
        }
    }
    g_free(pc);
}

bool guest_ram_check(const uint8_t *ram, uint64_t ram_base, uint64_t len,
                     const GuestParams *p, GuestCheckReport *rep,
                     GError **errp)
{
    memset(rep, 0, sizeof(*rep));
    if (!guest_params_validate(p, errp)) {
        return false;
    }
    if (p->start < ram_base || p->end - ram_base > len) {
        error_setg(errp, "region [0x%" PRIx64 ", 0x%" PRIx64 ") is not "
                   "inside the dump [0x%" PRIx64 ", 0x%" PRIx64 ")",
                   p->start, p->end, ram_base, ram_base + len);
        return false;
    }

    rep->nslices = p->ncpus;
    for (unsigned i = 0; i < p->ncpus; i++) {
        GuestSliceReport *sr = &rep->slice[i];

        check_slice(ram, ram_base, p, i, rep);
        rep->pages_ok += sr->pages_ok;
        rep->pages_torn += sr->pages_torn;
        rep->pages_zero += sr->pages_zero;
    }

    if (rep->pages_bad) {
        error_setg(errp, "%" PRIu64 " bad page(s), first at 0x%" PRIx64
                   ": %s", rep->pages_bad, rep->bad[0].addr, rep->bad[0].why);
        return false;
    }
    for (unsigned i = 0; i < rep->nslices; i++) {
        const GuestSliceReport *sr = &rep->slice[i];

        if (sr->end > sr->start && sr->sweeps_done < p->min_sweeps) {
            error_setg(errp, "slice %u completed %" PRIu64 " sweep(s), "
                       "fewer than %" PRIu64, i, sr->sweeps_done,
                       p->min_sweeps);
            return false;
        }
    }
    rep->good = true;
    return true;
}

void guest_check_report_print(const GuestCheckReport *rep, FILE *out)
{
    fprintf(out, "%s: %" PRIu64 " ok, %" PRIu64 " torn, %" PRIu64
            " zero, %" PRIu64 " bad pages\n", rep->good ? "GOOD" : "BAD",
            rep->pages_ok, rep->pages_torn, rep->pages_zero, rep->pages_bad);
    for (unsigned i = 0; i < rep->nslices; i++) {
        const GuestSliceReport *sr = &rep->slice[i];

        fprintf(out, "  slice %u [0x%" PRIx64 ", 0x%" PRIx64 "): v=%" PRIu64
                " boundary=0x%" PRIx64, i, sr->start, sr->end,
                sr->sweeps_done, sr->boundary);
        if (sr->torn_addr != UINT64_MAX) {
            fprintf(out, " torn=0x%" PRIx64, sr->torn_addr);
        }
        fprintf(out, " ok=%" PRIu64 " zero=%" PRIu64 " bad=%" PRIu64 "\n",
                sr->pages_ok, sr->pages_zero, sr->pages_bad);
    }
    for (unsigned i = 0; i < rep->nbad; i++) {
        const GuestBadPage *b = &rep->bad[i];

        fprintf(out, "  bad page 0x%" PRIx64 " (slice %u) word %u: expected "
                "0x%016" PRIx64 " found 0x%016" PRIx64 ": %s\n", b->addr,
                b->slice, b->word_index, b->expected, b->found, b->why);
    }
}

static void json_add_u64(JsonBuilder *jb, const char *name, uint64_t v)
{
    json_builder_set_member_name(jb, name);
    json_builder_add_int_value(jb, (gint64)v);
}

/* Words are full 64-bit values: hex strings, not JSON numbers. */
static void json_add_hex(JsonBuilder *jb, const char *name, uint64_t v)
{
    char buf[24];

    snprintf(buf, sizeof(buf), "0x%016" PRIx64, v);
    json_builder_set_member_name(jb, name);
    json_builder_add_string_value(jb, buf);
}

char *guest_check_report_json(const GuestCheckReport *rep)
{
    g_autoptr(JsonBuilder) jb = json_builder_new();
    g_autoptr(JsonGenerator) gen = json_generator_new();
    g_autoptr(JsonNode) root = NULL;

    json_builder_begin_object(jb);
    json_builder_set_member_name(jb, "good");
    json_builder_add_boolean_value(jb, rep->good);
    json_add_u64(jb, "pages_ok", rep->pages_ok);
    json_add_u64(jb, "pages_torn", rep->pages_torn);
    json_add_u64(jb, "pages_zero", rep->pages_zero);
    json_add_u64(jb, "pages_bad", rep->pages_bad);

    json_builder_set_member_name(jb, "slices");
    json_builder_begin_array(jb);
    for (unsigned i = 0; i < rep->nslices; i++) {
        const GuestSliceReport *sr = &rep->slice[i];

        json_builder_begin_object(jb);
        json_add_u64(jb, "start", sr->start);
        json_add_u64(jb, "end", sr->end);
        json_add_u64(jb, "sweeps_done", sr->sweeps_done);
        json_add_u64(jb, "boundary", sr->boundary);
        json_builder_set_member_name(jb, "torn");
        if (sr->torn_addr == UINT64_MAX) {
            json_builder_add_null_value(jb);
        } else {
            json_builder_add_int_value(jb, (gint64)sr->torn_addr);
        }
        json_add_u64(jb, "pages_ok", sr->pages_ok);
        json_add_u64(jb, "pages_zero", sr->pages_zero);
        json_add_u64(jb, "pages_bad", sr->pages_bad);
        json_builder_end_object(jb);
    }
    json_builder_end_array(jb);

    json_builder_set_member_name(jb, "bad");
    json_builder_begin_array(jb);
    for (unsigned i = 0; i < rep->nbad; i++) {
        const GuestBadPage *b = &rep->bad[i];

        json_builder_begin_object(jb);
        json_add_u64(jb, "addr", b->addr);
        json_add_u64(jb, "slice", b->slice);
        json_add_u64(jb, "word", b->word_index);
        json_add_hex(jb, "expected", b->expected);
        json_add_hex(jb, "found", b->found);
        json_builder_set_member_name(jb, "why");
        json_builder_add_string_value(jb, b->why);
        json_builder_end_object(jb);
    }
    json_builder_end_array(jb);
    json_builder_end_object(jb);

    root = json_builder_get_root(jb);
    json_generator_set_root(gen, root);
    return json_generator_to_data(gen, NULL);
}

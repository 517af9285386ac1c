/*
 * ferry-migrate --report: collect the migration's figures over time and
 * render them as one self-contained HTML page (inline SVG, no script).
 * See migrate-report.h and docs/tools.md.
 */
#include "migrate-report.h"
#include <math.h>

typedef struct Sample {
    double t;                   /* s since the migrate command */
    int64_t transferred;        /* ram.transferred, bytes */
    int64_t remaining;          /* ram.remaining, bytes */
    int64_t dirty_rate;         /* dirty-pages-rate * page-size, bytes/s */
    int64_t pass;               /* ram.dirty-sync-count */
} Sample;

typedef struct Phase {
    double t;
    char *status;
} Phase;

typedef struct Pause {
    double t, duration;
    char *noticed_by;
    bool recovered;
} Pause;

/*
 * Faults binned as they arrive: a large guest faults millions of times,
 * too many to keep one by one.  Both axes start fine and double their bin
 * width (merging neighbours) when a fault falls beyond the last bin.
 */
typedef struct HeatMap {
    uint64_t counts[MREPORT_HEAT_TIME_BINS][MREPORT_HEAT_ADDR_BINS];
    double bin_s;
    uint64_t bin_bytes;
    int time_used;              /* time bins up to the last fault */
    uint64_t next;              /* ring number of the first fault unseen */
    uint64_t seen, missed;      /* missed: overwritten between two polls */
    bool available;
} HeatMap;

struct MigrateReport {
    GArray *samples;            /* Sample */
    GArray *phases;             /* Phase: one per status change */
    GArray *pauses;             /* Pause */
    double postcopy_at;         /* < 0: never asked for */
    int64_t ram_total;          /* from the source: sizes the address axis */
    HeatMap heat;
};

/* ---- JSON helpers: numbers may arrive as int or double ---- */

static double jnum(JsonObject *o, const char *m, double def)
{
    JsonNode *n = o ? json_object_get_member(o, m) : NULL;

    if (!n || !JSON_NODE_HOLDS_VALUE(n)) {
        return def;
    }
    switch (json_node_get_value_type(n)) {
    case G_TYPE_INT64:
        return json_node_get_int(n);
    case G_TYPE_DOUBLE:
        return json_node_get_double(n);
    default:
        return def;
    }
}

static JsonObject *jobj(JsonObject *o, const char *m)
{
    JsonNode *n = o ? json_object_get_member(o, m) : NULL;

    return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

static JsonArray *jarr(JsonObject *o, const char *m)
{
    JsonNode *n = o ? json_object_get_member(o, m) : NULL;

    return n && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
}

static const char *jstr(JsonObject *o, const char *m)
{
    JsonNode *n = o ? json_object_get_member(o, m) : NULL;

    return n && JSON_NODE_HOLDS_VALUE(n) &&
           json_node_get_value_type(n) == G_TYPE_STRING ?
           json_node_get_string(n) : NULL;
}

static double jelem(JsonArray *a, guint i)
{
    JsonNode *n = json_array_get_element(a, i);

    if (!JSON_NODE_HOLDS_VALUE(n)) {
        return 0;
    }
    return json_node_get_value_type(n) == G_TYPE_INT64 ?
           json_node_get_int(n) : json_node_get_double(n);
}

static guint jlen(JsonArray *a)
{
    return a ? json_array_get_length(a) : 0;
}

/* ---- collecting ---- */

MigrateReport *mreport_new(void)
{
    MigrateReport *r = g_new0(MigrateReport, 1);

    r->samples = g_array_new(FALSE, TRUE, sizeof(Sample));
    r->phases = g_array_new(FALSE, TRUE, sizeof(Phase));
    r->pauses = g_array_new(FALSE, TRUE, sizeof(Pause));
    r->postcopy_at = -1;
    r->heat.bin_s = 0.1;
    return r;
}

void mreport_free(MigrateReport *r)
{
    if (!r) {
        return;
    }
    for (guint i = 0; i < r->phases->len; i++) {
        g_free(g_array_index(r->phases, Phase, i).status);
    }
    for (guint i = 0; i < r->pauses->len; i++) {
        g_free(g_array_index(r->pauses, Pause, i).noticed_by);
    }
    g_array_free(r->samples, TRUE);
    g_array_free(r->phases, TRUE);
    g_array_free(r->pauses, TRUE);
    g_free(r);
}

static void note_phase(MigrateReport *r, double t, const char *status)
{
    Phase p;

    if (r->phases->len &&
        !strcmp(g_array_index(r->phases, Phase, r->phases->len - 1).status,
                status)) {
        return;
    }
    p.t = t;
    p.status = g_strdup(status);
    g_array_append_val(r->phases, p);
}

void mreport_add_sample(MigrateReport *r, double t, JsonObject *src_info)
{
    JsonObject *ram = jobj(src_info, "ram");
    const char *st = jstr(src_info, "status");
    Sample s = {
        .t = t,
        .transferred = jnum(ram, "transferred", 0),
        .remaining = jnum(ram, "remaining", 0),
        .dirty_rate = jnum(ram, "dirty-pages-rate", 0) *
                      jnum(ram, "page-size", 4096),
        .pass = jnum(ram, "dirty-sync-count", 0),
    };

    g_array_append_val(r->samples, s);
    note_phase(r, t, st ? st : "none");
    if (jnum(ram, "total", 0) > 0) {
        r->ram_total = jnum(ram, "total", 0);
    }
}

void mreport_set_postcopy(MigrateReport *r, double t)
{
    r->postcopy_at = t;
}

void mreport_add_pause(MigrateReport *r, double t, double duration,
                       const char *noticed_by, bool recovered)
{
    Pause p = { .t = t, .duration = duration,
                .noticed_by = g_strdup(noticed_by), .recovered = recovered };

    g_array_append_val(r->pauses, p);
}

/* The first fault fixes the address bins: the RAM size in 64 parts. */
static void heat_init_addr(MigrateReport *r)
{
    uint64_t want = MAX(r->ram_total, 1 << 20) / MREPORT_HEAT_ADDR_BINS;

    r->heat.bin_bytes = 4096;
    while (r->heat.bin_bytes < want) {
        r->heat.bin_bytes <<= 1;
    }
}

static void heat_widen_time(HeatMap *h)
{
    for (int i = 0; i < MREPORT_HEAT_TIME_BINS / 2; i++) {
        for (int a = 0; a < MREPORT_HEAT_ADDR_BINS; a++) {
            h->counts[i][a] = h->counts[2 * i][a] + h->counts[2 * i + 1][a];
        }
    }
    memset(h->counts[MREPORT_HEAT_TIME_BINS / 2], 0,
           sizeof(h->counts) / 2);
    h->bin_s *= 2;
    h->time_used = (h->time_used + 1) / 2;
}

static void heat_widen_addr(HeatMap *h)
{
    for (int i = 0; i < MREPORT_HEAT_TIME_BINS; i++) {
        uint64_t *row = h->counts[i];

        for (int a = 0; a < MREPORT_HEAT_ADDR_BINS / 2; a++) {
            row[a] = row[2 * a] + row[2 * a + 1];
        }
        memset(row + MREPORT_HEAT_ADDR_BINS / 2, 0,
               sizeof(h->counts[0]) / 2);
    }
    h->bin_bytes *= 2;
}

static void heat_add(HeatMap *h, double t, uint64_t offset)
{
    uint64_t ti;

    t = MAX(t, 0);
    while ((ti = (uint64_t)(t / h->bin_s)) >= MREPORT_HEAT_TIME_BINS) {
        heat_widen_time(h);
    }
    while (offset / h->bin_bytes >= MREPORT_HEAT_ADDR_BINS) {
        heat_widen_addr(h);
    }
    h->counts[ti][offset / h->bin_bytes]++;
    h->time_used = MAX(h->time_used, (int)ti + 1);
    h->seen++;
}

bool mreport_add_faults(MigrateReport *r, double t, JsonObject *dst_info)
{
    JsonObject *ring = jobj(dst_info, "x-postcopy-recent-faults");
    JsonArray *offs = jarr(ring, "offsets"), *ages = jarr(ring, "ages-us");
    HeatMap *h = &r->heat;
    uint64_t total, first;
    guint n;

    if (!ring || !offs || !ages || jlen(offs) != jlen(ages)) {
        return false;
    }
    if (!h->available) {
        heat_init_addr(r);
        h->available = true;
    }
    n = jlen(offs);
    total = jnum(ring, "total", 0);
    if (total < h->next || n > total) {
        /* The destination started over (a new incoming migration). */
        h->next = 0;
    }
    first = total - n;          /* ring number of offsets[0] */
    if (first > h->next) {
        h->missed += first - h->next;
        h->next = first;
    }
    for (guint i = h->next - first; i < n; i++) {
        heat_add(h, t - jelem(ages, i) / 1e6, jelem(offs, i));
    }
    h->next = total;
    return true;
}

/* ---- the "report" object ---- */

static JsonArray *darr(const GArray *samples, size_t field_off, double scale)
{
    JsonArray *a = json_array_new();

    for (guint i = 0; i < samples->len; i++) {
        const char *s = (const char *)&g_array_index(samples, Sample, i);
        int64_t v;

        memcpy(&v, s + field_off, sizeof(v));
        if (scale == 1) {
            json_array_add_int_element(a, v);
        } else {
            json_array_add_double_element(a, v * scale);
        }
    }
    return a;
}

/* MB/s between a sample and the one before (the first: since t = 0). */
static JsonArray *throughput_series(const GArray *samples)
{
    JsonArray *a = json_array_new();
    double t0 = 0, x0 = 0;

    for (guint i = 0; i < samples->len; i++) {
        const Sample *s = &g_array_index(samples, Sample, i);
        double dt = s->t - t0;

        /* a new resume restarts "transferred": no negative rate */
        json_array_add_double_element(a, dt > 0 && s->transferred >= x0 ?
                                      (s->transferred - x0) / dt / 1e6 : 0);
        t0 = s->t;
        x0 = s->transferred;
    }
    return a;
}

static JsonObject *series_json(MigrateReport *r)
{
    JsonObject *o = json_object_new();
    JsonArray *t = json_array_new();

    for (guint i = 0; i < r->samples->len; i++) {
        json_array_add_double_element(t,
            g_array_index(r->samples, Sample, i).t);
    }
    json_object_set_array_member(o, "t-s", t);
    json_object_set_array_member(o, "transferred-bytes",
        darr(r->samples, offsetof(Sample, transferred), 1));
    json_object_set_array_member(o, "remaining-bytes",
        darr(r->samples, offsetof(Sample, remaining), 1));
    json_object_set_array_member(o, "throughput-MBps",
                                 throughput_series(r->samples));
    json_object_set_array_member(o, "dirty-rate-MBps",
        darr(r->samples, offsetof(Sample, dirty_rate), 1e-6));
    json_object_set_array_member(o, "pass",
        darr(r->samples, offsetof(Sample, pass), 1));
    return o;
}

/* A pass starts where dirty-sync-count moves. */
static JsonArray *passes_json(MigrateReport *r)
{
    JsonArray *a = json_array_new();
    int64_t last = 0;

    for (guint i = 0; i < r->samples->len; i++) {
        const Sample *s = &g_array_index(r->samples, Sample, i);

        if (s->pass > last) {
            JsonObject *p = json_object_new();

            json_object_set_int_member(p, "pass", s->pass);
            json_object_set_double_member(p, "t-s", s->t);
            json_array_add_object_element(a, p);
            last = s->pass;
        }
    }
    return a;
}

static JsonArray *phases_json(MigrateReport *r)
{
    JsonArray *a = json_array_new();

    for (guint i = 0; i < r->phases->len; i++) {
        const Phase *p = &g_array_index(r->phases, Phase, i);
        JsonObject *o = json_object_new();

        json_object_set_string_member(o, "status", p->status);
        json_object_set_double_member(o, "t-s", p->t);
        json_array_add_object_element(a, o);
    }
    return a;
}

static JsonArray *pauses_json(MigrateReport *r)
{
    JsonArray *a = json_array_new();

    for (guint i = 0; i < r->pauses->len; i++) {
        const Pause *p = &g_array_index(r->pauses, Pause, i);
        JsonObject *o = json_object_new();

        json_object_set_double_member(o, "t-s", p->t);
        json_object_set_double_member(o, "duration-s", p->duration);
        json_object_set_string_member(o, "noticed-by", p->noticed_by);
        json_object_set_boolean_member(o, "recovered", p->recovered);
        json_array_add_object_element(a, o);
    }
    return a;
}

static JsonObject *summary_json(JsonObject *src, double wall_s)
{
    JsonObject *o = json_object_new();
    JsonObject *ram = jobj(src, "ram");
    const char *st = jstr(src, "status");
    double total_ms = jnum(src, "total-time", wall_s * 1000);
    double downtime = jnum(src, "downtime", -1);

    json_object_set_string_member(o, "status", st ? st : "none");
    json_object_set_int_member(o, "total-time-ms", total_ms);
    /* QEMU 7.2 may report its clock's whole reading after a recovery */
    if (downtime >= 0 && downtime <= total_ms) {
        json_object_set_int_member(o, "downtime-ms", downtime);
    }
    json_object_set_int_member(o, "setup-time-ms", jnum(src, "setup-time", 0));
    json_object_set_int_member(o, "transferred-bytes",
                               jnum(ram, "transferred", 0));
    json_object_set_int_member(o, "ram-total-bytes", jnum(ram, "total", 0));
    json_object_set_int_member(o, "passes", jnum(ram, "dirty-sync-count", 0));
    return o;
}

static JsonObject *faults_json(JsonObject *dst)
{
    JsonObject *o = json_object_new();
    JsonArray *hist = jarr(dst, "postcopy-latency-histogram");
    JsonArray *h = json_array_new(), *cdf = json_array_new();
    double sum = 0, run = 0;

    if (!hist || jlen(hist) != MREPORT_LATENCY_BUCKETS) {
        json_array_unref(h);
        json_array_unref(cdf);
        json_object_set_boolean_member(o, "available", false);
        json_object_set_string_member(o, "why", MREPORT_NO_FAULT_DATA);
        return o;
    }
    for (guint i = 0; i < jlen(hist); i++) {
        sum += jelem(hist, i);
    }
    for (guint i = 0; i < jlen(hist); i++) {
        run += jelem(hist, i);
        json_array_add_int_element(h, jelem(hist, i));
        json_array_add_double_element(cdf, sum > 0 ? run / sum : 0);
    }
    json_object_set_boolean_member(o, "available", true);
    json_object_set_int_member(o, "count", jnum(dst, "postcopy-faults", 0));
    json_object_set_int_member(o, "p50-us",
                               jnum(dst, "postcopy-latency-p50-us", 0));
    json_object_set_int_member(o, "p99-us",
                               jnum(dst, "postcopy-latency-p99-us", 0));
    json_object_set_int_member(o, "max-us",
                               jnum(dst, "postcopy-latency-max-us", 0));
    json_object_set_array_member(o, "histogram", h);
    json_object_set_array_member(o, "cdf", cdf);
    return o;
}

/* counts[time bin][address bin], only the time bins up to the last fault */
static JsonObject *heatmap_json(const HeatMap *h)
{
    JsonObject *o = json_object_new();
    JsonArray *rows = json_array_new();

    json_object_set_boolean_member(o, "available", h->available);
    if (!h->available) {
        json_array_unref(rows);
        json_object_set_string_member(o, "why", MREPORT_NO_FAULT_DATA);
        return o;
    }
    for (int i = 0; i < h->time_used; i++) {
        JsonArray *row = json_array_new();

        for (int a = 0; a < MREPORT_HEAT_ADDR_BINS; a++) {
            json_array_add_int_element(row, h->counts[i][a]);
        }
        json_array_add_array_element(rows, row);
    }
    json_object_set_double_member(o, "time-bin-s", h->bin_s);
    json_object_set_int_member(o, "addr-bin-bytes", h->bin_bytes);
    json_object_set_int_member(o, "time-bins", h->time_used);
    json_object_set_int_member(o, "addr-bins", MREPORT_HEAT_ADDR_BINS);
    json_object_set_int_member(o, "faults-seen", h->seen);
    json_object_set_int_member(o, "faults-missed", h->missed);
    json_object_set_array_member(o, "counts", rows);
    return o;
}

JsonObject *mreport_to_json(MigrateReport *r, JsonObject *src_info,
                            JsonObject *dst_info, double wall_s)
{
    JsonObject *o = json_object_new();

    json_object_set_int_member(o, "version", 1);
    json_object_set_object_member(o, "summary", summary_json(src_info, wall_s));
    json_object_set_double_member(o, "wall-time-s", wall_s);
    json_object_set_object_member(o, "series", series_json(r));
    json_object_set_array_member(o, "passes", passes_json(r));
    json_object_set_array_member(o, "phases", phases_json(r));
    if (r->postcopy_at >= 0) {
        json_object_set_double_member(o, "postcopy-switch-s", r->postcopy_at);
    }
    json_object_set_array_member(o, "pauses", pauses_json(r));
    json_object_set_object_member(o, "faults", faults_json(dst_info));
    json_object_set_object_member(o, "heatmap", heatmap_json(&r->heat));
    return o;
}

/* ---- HTML and SVG ---- */

#define SVG_W 900
#define SVG_H 270

/* A plot area in SVG pixels and the data values at its right/top edges. */
typedef struct Plot {
    double x0, y0, w, h;
    double xmax, ymax;
    int yticks;                 /* intervals on the y axis */
} Plot;

static const Plot plot_area = { .x0 = 70, .y0 = 24, .w = 790, .h = 200,
                                .yticks = 5 };

static double px(const Plot *p, double x)
{
    return p->x0 + x / p->xmax * p->w;
}

static double py(const Plot *p, double y)
{
    return p->y0 + p->h - y / p->ymax * p->h;
}

/* Numbers in SVG are C-locale whatever the user's locale. */
static void num(GString *s, const char *fmt, double v)
{
    char buf[G_ASCII_DTOSTR_BUF_SIZE];

    g_string_append(s, g_ascii_formatd(buf, sizeof(buf), fmt, v));
}

static void num2(GString *s, double v)
{
    num(s, "%.2f", v);
}

/*
 * The smallest round number >= v: a few steps per power of ten, all of
 * them giving round ticks at fifths, and an axis at most 1.25 v high.
 */
static double nice_max(double v)
{
    static const double m[] = { 1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8 };
    double e;

    if (!(v > 0)) {
        return 1;
    }
    e = pow(10, floor(log10(v)));
    for (size_t i = 0; i < G_N_ELEMENTS(m); i++) {
        if (m[i] * e >= v * (1 - 1e-9)) {
            return m[i] * e;
        }
    }
    return 10 * e;
}

static double arr_max(JsonArray *a)
{
    double m = 0;

    for (guint i = 0; i < jlen(a); i++) {
        m = MAX(m, jelem(a, i));
    }
    return m;
}

static void svg_text(GString *s, double x, double y, const char *anchor,
                     const char *cls, const char *text)
{
    g_autofree char *esc = g_markup_escape_text(text, -1);

    g_string_append(s, "<text x=\"");
    num2(s, x);
    g_string_append(s, "\" y=\"");
    num2(s, y);
    g_string_append_printf(s, "\" text-anchor=\"%s\" class=\"%s\">%s</text>\n",
                           anchor, cls, esc);
}

static void svg_line(GString *s, double x1, double y1, double x2, double y2,
                     const char *cls)
{
    g_string_append(s, "<line x1=\"");
    num2(s, x1);
    g_string_append(s, "\" y1=\"");
    num2(s, y1);
    g_string_append(s, "\" x2=\"");
    num2(s, x2);
    g_string_append(s, "\" y2=\"");
    num2(s, y2);
    g_string_append_printf(s, "\" class=\"%s\"/>\n", cls);
}

static void svg_rect(GString *s, double x, double y, double w, double h,
                     const char *attrs)
{
    g_string_append(s, "<rect x=\"");
    num2(s, x);
    g_string_append(s, "\" y=\"");
    num2(s, y);
    g_string_append(s, "\" width=\"");
    num2(s, MAX(w, 0));
    g_string_append(s, "\" height=\"");
    num2(s, MAX(h, 0));
    g_string_append_printf(s, "\" %s/>\n", attrs);
}

static char *tick_label(double v)
{
    char buf[G_ASCII_DTOSTR_BUF_SIZE];

    return g_strdup(g_ascii_formatd(buf, sizeof(buf), "%.4g", v));
}

/* Frame, grid and 5 labelled ticks on each axis (the x ones optional). */
static void svg_axes(GString *s, const Plot *p, const char *xlabel,
                     const char *ylabel, bool xticks)
{
    for (int i = 0; i <= p->yticks; i++) {
        g_autofree char *yl = tick_label(p->ymax * i / p->yticks);
        double y = p->y0 + p->h - p->h * i / p->yticks;

        svg_line(s, p->x0, y, p->x0 + p->w, y, "grid");
        svg_text(s, p->x0 - 6, y + 4, "end", "tick", yl);
    }
    for (int i = 0; xticks && i <= 5; i++) {
        g_autofree char *xl = tick_label(p->xmax * i / 5);

        svg_text(s, p->x0 + p->w * i / 5, p->y0 + p->h + 16, "middle",
                 "tick", xl);
    }
    svg_line(s, p->x0, p->y0 + p->h, p->x0 + p->w, p->y0 + p->h, "axis");
    svg_line(s, p->x0, p->y0, p->x0, p->y0 + p->h, "axis");
    svg_text(s, p->x0 + p->w / 2, p->y0 + p->h + 36, "middle", "label",
             xlabel);
    svg_text(s, p->x0, p->y0 - 8, "start", "label", ylabel);
}

/* <figure> and <svg>; the plot's geometry rides along for the tests. */
static void svg_open(GString *s, const char *id, const char *title,
                     const Plot *p)
{
    g_string_append_printf(s, "<figure><figcaption>%s</figcaption>\n"
                           "<svg id=\"%s\" xmlns=\"http://www.w3.org/2000/svg\""
                           " width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\""
                           " role=\"img\">\n<g class=\"plot\" data-x0=\"",
                           title, id, SVG_W, SVG_H, SVG_W, SVG_H);
    num2(s, p->x0);
    g_string_append(s, "\" data-y0=\"");
    num2(s, p->y0);
    g_string_append(s, "\" data-w=\"");
    num2(s, p->w);
    g_string_append(s, "\" data-h=\"");
    num2(s, p->h);
    g_string_append(s, "\" data-xmax=\"");
    num(s, "%.6g", p->xmax);
    g_string_append(s, "\" data-ymax=\"");
    num(s, "%.6g", p->ymax);
    g_string_append(s, "\">\n");
}

static void svg_close(GString *s)
{
    g_string_append(s, "</g></svg></figure>\n");
}

static void svg_polyline(GString *s, const Plot *p, JsonArray *xs,
                         JsonArray *ys, const char *series, double yscale)
{
    guint n = MIN(jlen(xs), jlen(ys));

    g_string_append_printf(s, "<polyline class=\"series %s\" data-series="
                           "\"%s\" data-n=\"%u\" points=\"", series, series, n);
    for (guint i = 0; i < n; i++) {
        num2(s, px(p, jelem(xs, i)));
        g_string_append_c(s, ',');
        num2(s, py(p, jelem(ys, i) * yscale));
        g_string_append_c(s, i + 1 < n ? ' ' : '"');
    }
    if (!n) {
        g_string_append_c(s, '"');
    }
    g_string_append(s, "/>\n");
}

static void svg_legend(GString *s, const Plot *p, int slot, const char *cls,
                       const char *text)
{
    double x = p->x0 + p->w - 180, y = p->y0 + 14 + 16 * slot;

    svg_line(s, x, y - 4, x + 20, y - 4, cls);
    svg_text(s, x + 26, y, "start", "legend", text);
}

/* Passes, the postcopy switch and pauses on a time axis. */
static void svg_time_markers(GString *s, const Plot *p, JsonObject *rep)
{
    JsonArray *passes = jarr(rep, "passes"), *pauses = jarr(rep, "pauses");
    double bottom = p->y0 + p->h;

    for (guint i = 0; i < jlen(pauses); i++) {
        JsonObject *o = json_array_get_object_element(pauses, i);
        double x = px(p, jnum(o, "t-s", 0));

        svg_rect(s, x, p->y0, px(p, jnum(o, "t-s", 0) +
                                 jnum(o, "duration-s", 0)) - x, p->h,
                 "class=\"marker pause\"");
        svg_text(s, x + 2, p->y0 + 12, "start", "mlabel", "paused");
    }
    for (guint i = 0; i < jlen(passes); i++) {
        JsonObject *o = json_array_get_object_element(passes, i);
        double x = px(p, jnum(o, "t-s", 0));
        g_autofree char *l = g_strdup_printf("%" PRId64,
                                             (int64_t)jnum(o, "pass", 0));

        svg_line(s, x, p->y0, x, bottom, "marker pass");
        svg_text(s, x + 2, bottom - 4, "start", "mlabel", l);
    }
    if (json_object_has_member(rep, "postcopy-switch-s")) {
        double x = px(p, jnum(rep, "postcopy-switch-s", 0));

        svg_line(s, x, p->y0, x, bottom, "marker postcopy");
        svg_text(s, x + 2, p->y0 + 26, "start", "mlabel pc",
                 "postcopy switch");
    }
}

static double time_axis_max(JsonObject *rep)
{
    JsonArray *t = jarr(jobj(rep, "series"), "t-s");
    double m = MAX(jnum(rep, "wall-time-s", 0),
                   jnum(jobj(rep, "summary"), "total-time-ms", 0) / 1000);

    return nice_max(MAX(m, arr_max(t)));
}

static void chart_rates(GString *s, JsonObject *rep)
{
    JsonObject *ser = jobj(rep, "series");
    JsonArray *t = jarr(ser, "t-s");
    JsonArray *tp = jarr(ser, "throughput-MBps");
    JsonArray *dr = jarr(ser, "dirty-rate-MBps");
    Plot p = plot_area;

    p.xmax = time_axis_max(rep);
    p.ymax = nice_max(MAX(arr_max(tp), arr_max(dr)));
    svg_open(s, "chart-rates", "Throughput and dirty rate (MB/s); "
             "numbered lines: passes", &p);
    svg_axes(s, &p, "time (s)", "MB/s", true);
    svg_time_markers(s, &p, rep);
    svg_polyline(s, &p, t, tp, "throughput-MBps", 1);
    svg_polyline(s, &p, t, dr, "dirty-rate-MBps", 1);
    svg_legend(s, &p, 0, "series throughput-MBps", "throughput");
    svg_legend(s, &p, 1, "series dirty-rate-MBps", "dirty rate");
    svg_close(s);
}

static void chart_remaining(GString *s, JsonObject *rep)
{
    JsonObject *ser = jobj(rep, "series");
    JsonArray *rem = jarr(ser, "remaining-bytes");
    Plot p = plot_area;

    p.xmax = time_axis_max(rep);
    p.ymax = nice_max(arr_max(rem) / (1 << 20));
    svg_open(s, "chart-remaining", "Remaining RAM (MiB)", &p);
    svg_axes(s, &p, "time (s)", "MiB", true);
    svg_time_markers(s, &p, rep);
    svg_polyline(s, &p, jarr(ser, "t-s"), rem, "remaining-bytes",
                 1.0 / (1 << 20));
    svg_close(s);
}

/* Bucket i starts at 2^i us. */
static char *bucket_label(int i)
{
    uint64_t us = (uint64_t)1 << i;

    return us >= 1000000 ? g_strdup_printf("%.2gs", us / 1e6) :
           us >= 1000 ? g_strdup_printf("%.3gms", us / 1e3) :
           g_strdup_printf("%" PRIu64 "us", us);
}

static void bucket_axis(GString *s, const Plot *p, const char *ylabel)
{
    svg_axes(s, p, "", ylabel, false);
    for (int i = 0; i < MREPORT_LATENCY_BUCKETS; i += 3) {
        g_autofree char *l = bucket_label(i);

        svg_text(s, px(p, i), p->y0 + p->h + 16, "middle", "tick", l);
    }
    svg_text(s, p->x0 + p->w / 2, p->y0 + p->h + 36, "middle", "label",
             "fault latency (log scale: bucket N holds [2^N, 2^(N+1)) us)");
}

/* p50/p99 on the log2 axis: bucket index plus the fraction within it. */
static void latency_marker(GString *s, const Plot *p, JsonObject *f,
                           const char *m, const char *label)
{
    double us = jnum(f, m, 0);
    double x = us >= 1 ? log2(us) : 0;
    g_autofree char *l = g_strdup_printf("%s %.0f us", label, us);

    x = px(p, MIN(x, MREPORT_LATENCY_BUCKETS));
    svg_line(s, x, p->y0, x, p->y0 + p->h, "marker pct");
    svg_text(s, x + 2, p->y0 + 12, "start", "mlabel", l);
}

static void chart_histogram(GString *s, JsonObject *f)
{
    JsonArray *h = jarr(f, "histogram");
    Plot p = plot_area;

    p.xmax = MREPORT_LATENCY_BUCKETS;
    p.ymax = nice_max(arr_max(h));
    svg_open(s, "chart-histogram", "Postcopy fault latency: histogram "
             "(faults per bucket)", &p);
    bucket_axis(s, &p, "faults");
    for (guint i = 0; i < jlen(h); i++) {
        g_autofree char *attrs = g_strdup_printf(
            "class=\"bar\" data-bucket=\"%u\" data-count=\"%" PRId64 "\"", i,
            (int64_t)jelem(h, i));
        double top = py(&p, jelem(h, i));

        svg_rect(s, px(&p, i) + 2, top, p.w / p.xmax - 4,
                 p.y0 + p.h - top, attrs);
    }
    latency_marker(s, &p, f, "p50-us", "p50");
    latency_marker(s, &p, f, "p99-us", "p99");
    svg_close(s);
}

/* The CDF at each bucket's upper edge. */
static void chart_cdf(GString *s, JsonObject *f)
{
    JsonArray *cdf = jarr(f, "cdf");
    g_autoptr(JsonArray) edges = json_array_new();
    Plot p = plot_area;

    for (guint i = 0; i < jlen(cdf); i++) {
        json_array_add_int_element(edges, i + 1);
    }
    p.xmax = MREPORT_LATENCY_BUCKETS;
    p.ymax = 1;
    svg_open(s, "chart-cdf", "Postcopy fault latency: cumulative fraction "
             "of faults", &p);
    bucket_axis(s, &p, "fraction");
    svg_polyline(s, &p, edges, cdf, "cdf", 1);
    latency_marker(s, &p, f, "p50-us", "p50");
    latency_marker(s, &p, f, "p99-us", "p99");
    svg_close(s);
}

/* Darker for more faults, on a log scale so that one hot bin leaves the
 * rest visible. */
static void heat_cell(GString *s, const Plot *p, JsonObject *hm, int ti,
                      int ai, int64_t count, double maxc)
{
    double bs = jnum(hm, "time-bin-s", 1);
    double bm = jnum(hm, "addr-bin-bytes", 1) / (1 << 20);
    double op = 0.15 + 0.85 * log1p(count) / log1p(maxc);
    g_autofree char *attrs = NULL;
    char buf[G_ASCII_DTOSTR_BUF_SIZE];

    attrs = g_strdup_printf("class=\"cell\" data-t=\"%d\" data-a=\"%d\" "
                            "data-count=\"%" PRId64 "\" fill-opacity=\"%s\"",
                            ti, ai, count,
                            g_ascii_formatd(buf, sizeof(buf), "%.3f", op));
    svg_rect(s, px(p, ti * bs), py(p, (ai + 1) * bm), px(p, bs) - p->x0,
             py(p, 0) - py(p, bm), attrs);
}

static void chart_heatmap(GString *s, JsonObject *rep, JsonObject *hm)
{
    JsonArray *rows = jarr(hm, "counts");
    double maxc = 0;
    Plot p = plot_area;

    for (guint i = 0; i < jlen(rows); i++) {
        maxc = MAX(maxc, arr_max(json_array_get_array_element(rows, i)));
    }
    /* the time axis of the charts above, unless the bins reach further */
    p.xmax = MAX(time_axis_max(rep),
                 MAX(jlen(rows), 1) * jnum(hm, "time-bin-s", 1));
    p.ymax = jnum(hm, "addr-bins", 1) * jnum(hm, "addr-bin-bytes", 1) /
             (1 << 20);
    p.yticks = 4;               /* a power of two: round quarters */
    svg_open(s, "chart-heatmap", "Postcopy faults over RAM offset and time "
             "(darker: more faults)", &p);
    svg_axes(s, &p, "time since the migrate command (s)",
             "RAM offset (MiB)", true);
    for (guint i = 0; i < jlen(rows); i++) {
        JsonArray *row = json_array_get_array_element(rows, i);

        for (guint a = 0; a < jlen(row); a++) {
            if (jelem(row, a) > 0) {
                heat_cell(s, &p, hm, i, a, jelem(row, a), maxc);
            }
        }
    }
    svg_close(s);
}

static void row(GString *s, const char *name, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);
static void row(GString *s, const char *name, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *v = NULL, *esc = NULL;

    va_start(ap, fmt);
    v = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    esc = g_markup_escape_text(v, -1);
    g_string_append_printf(s, "<tr><th>%s</th><td>%s</td></tr>\n", name, esc);
}

static void html_pauses(GString *s, JsonArray *pauses)
{
    for (guint i = 0; i < jlen(pauses); i++) {
        JsonObject *o = json_array_get_object_element(pauses, i);
        g_autofree char *name = g_strdup_printf("postcopy pause %u", i + 1);

        row(s, name, "at %.3f s, noticed by the %s, %s after %.3f s",
            jnum(o, "t-s", 0), jstr(o, "noticed-by") ?: "?",
            json_object_get_boolean_member_with_default(o, "recovered",
                                                        false) ?
            "recovered" : "not recovered", jnum(o, "duration-s", 0));
    }
}

static void html_summary(GString *s, JsonObject *rep)
{
    JsonObject *sum = jobj(rep, "summary");
    JsonArray *phases = jarr(rep, "phases");
    g_autoptr(GString) ph = g_string_new(NULL);
    double total = jnum(sum, "total-time-ms", 0);
    double xfer = jnum(sum, "transferred-bytes", 0);

    g_string_append(s, "<table class=\"summary\">\n");
    row(s, "status", "%s", jstr(sum, "status") ?: "none");
    row(s, "total time", "%.3f s", total / 1000);
    if (json_object_has_member(sum, "downtime-ms")) {
        row(s, "downtime", "%.0f ms", jnum(sum, "downtime-ms", 0));
    } else {
        row(s, "downtime", "unknown");
    }
    row(s, "setup time", "%.0f ms", jnum(sum, "setup-time-ms", 0));
    row(s, "transferred", "%.1f MiB at %.1f MB/s on average",
        xfer / (1 << 20), total > 0 ? xfer / total / 1000 : 0);
    row(s, "passes", "%.0f", jnum(sum, "passes", 0));
    if (json_object_has_member(rep, "postcopy-switch-s")) {
        row(s, "postcopy switch", "asked for at %.3f s",
            jnum(rep, "postcopy-switch-s", 0));
    }
    html_pauses(s, jarr(rep, "pauses"));
    for (guint i = 0; i < jlen(phases); i++) {
        JsonObject *o = json_array_get_object_element(phases, i);

        g_string_append_printf(ph, "%s%s from %.2f s", i ? ", " : "",
                               jstr(o, "status") ?: "?", jnum(o, "t-s", 0));
    }
    row(s, "phases (source)", "%s", ph->str);
    g_string_append(s, "</table>\n");
}

static void html_faults(GString *s, JsonObject *rep)
{
    JsonObject *f = jobj(rep, "faults"), *hm = jobj(rep, "heatmap");
    bool have = json_object_get_boolean_member_with_default(f, "available",
                                                            false);

    g_string_append(s, "<h2>Postcopy faults (destination)</h2>\n");
    if (!have) {
        g_string_append(s, "<p class=\"none\" id=\"no-fault-data\">"
                        MREPORT_NO_FAULT_DATA "</p>\n");
    } else {
        g_string_append_printf(s, "<p>%.0f faults; latency p50 %.0f us, "
                               "p99 %.0f us, max %.0f us</p>\n",
                               jnum(f, "count", 0), jnum(f, "p50-us", 0),
                               jnum(f, "p99-us", 0), jnum(f, "max-us", 0));
        chart_histogram(s, f);
        chart_cdf(s, f);
    }
    if (json_object_get_boolean_member_with_default(hm, "available", false)) {
        g_string_append_printf(s, "<p>Heat map from the destination's "
                               "x-postcopy-recent-faults ring: %.0f faults "
                               "placed, %.0f overwritten between two polls"
                               "</p>\n", jnum(hm, "faults-seen", 0),
                               jnum(hm, "faults-missed", 0));
        chart_heatmap(s, rep, hm);
    } else if (have) {
        g_string_append(s, "<p class=\"none\">no heat map: the destination "
                        "reports no recent faults</p>\n");
    }
}

static const char html_style[] =
    "body{font-family:sans-serif;margin:1.5em;color:#222}"
    "table.summary{border-collapse:collapse}"
    "table.summary th{text-align:left;padding:2px 12px 2px 0;color:#555}"
    "figure{margin:1em 0}figcaption{font-weight:bold;margin-bottom:4px}"
    "svg{background:#fff;border:1px solid #ddd}"
    ".grid{stroke:#eee}.axis{stroke:#444}"
    ".tick{font-size:11px;fill:#444}.label{font-size:12px;fill:#222}"
    ".legend{font-size:12px}.mlabel{font-size:10px;fill:#666}"
    ".mlabel.pc{fill:#c00}"
    "polyline.series{fill:none;stroke-width:1.8}"
    ".throughput-MBps{stroke:#1f6fb4}.dirty-rate-MBps{stroke:#e07b00}"
    ".remaining-bytes{stroke:#2b8a3e}.cdf{stroke:#6a3d9a}"
    "line.series{stroke-width:3}"
    ".marker.pass{stroke:#999;stroke-dasharray:2 3}"
    ".marker.postcopy{stroke:#c00;stroke-width:2;stroke-dasharray:6 3}"
    ".marker.pause{fill:#f5c518;fill-opacity:0.3}"
    ".marker.pct{stroke:#c00;stroke-dasharray:4 2}"
    ".bar{fill:#1f6fb4}.cell{fill:#b3001b}.none{color:#a00}";

char *mreport_html(JsonObject *rep)
{
    GString *s = g_string_new(NULL);

    g_string_append_printf(s, "<!DOCTYPE html>\n<html lang=\"en\"><head>"
                           "<meta charset=\"utf-8\">\n<title>ferry-migrate "
                           "report</title>\n<style>%s</style></head>\n<body>"
                           "\n<h1>Migration report</h1>\n", html_style);
    html_summary(s, rep);
    g_string_append(s, "<h2>Over time (source)</h2>\n");
    chart_rates(s, rep);
    chart_remaining(s, rep);
    html_faults(s, rep);
    g_string_append(s, "</body></html>\n");
    return g_string_free(s, FALSE);
}

bool mreport_write_html(JsonObject *rep, const char *path, GError **errp)
{
    g_autofree char *html = mreport_html(rep);

    if (!g_file_set_contents(path, html, -1, errp)) {
        g_prefix_error(errp, "--report: ");
        return false;
    }
    return true;
}

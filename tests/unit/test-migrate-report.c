/*
 * ferry-migrate --report (tools/migrate-report.c): the HTML's numbers
 * against the JSON "report" object it is rendered from: point counts and
 * positions of the time series, histogram bar heights, the CDF, heat map
 * bins, axis maxima; the fault ring's de-duplication; a destination
 * without per-fault data.
 */
#include "qemu/osdep.h"
#include "migrate-report.h"
#include <math.h>

typedef struct Fixture {
    MigrateReport *r;
    JsonObject *rep;            /* mreport_to_json() */
    char *html;
} Fixture;

static JsonObject *parse(const char *text)
{
    g_autoptr(JsonParser) p = json_parser_new();

    g_assert_true(json_parser_load_from_data(p, text, -1, NULL));
    return json_object_ref(json_node_get_object(json_parser_get_root(p)));
}

static JsonObject *parse_printf(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static JsonObject *parse_printf(const char *fmt, ...)
{
    va_list ap;
    g_autofree char *text = NULL;

    va_start(ap, fmt);
    text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return parse(text);
}

/* A source sample: 64 MiB of RAM sent at 10 MB/s, a pass every second. */
static void add_sample(MigrateReport *r, int i)
{
    g_autoptr(JsonObject) o = parse_printf(
        "{\"status\": \"%s\", \"ram\": {\"transferred\": %d, "
        "\"remaining\": %d, \"total\": %d, \"dirty-pages-rate\": %d, "
        "\"page-size\": 4096, \"dirty-sync-count\": %d}}",
        i < 20 ? "active" : "postcopy-active", i * 1000000,
        (64 << 20) - i * 500000, 64 << 20, 100 * (i % 7), 1 + i / 10);

    mreport_add_sample(r, i * 0.1, o);
}

/* A ring reply: faults first..total-1, page i at offset i * 64 KiB. */
static JsonObject *ring(uint64_t first, uint64_t total, double age_step_us)
{
    g_autoptr(GString) offs = g_string_new(NULL);
    g_autoptr(GString) ages = g_string_new(NULL);

    for (uint64_t i = first; i < total; i++) {
        g_string_append_printf(offs, "%s%" PRIu64, i > first ? "," : "",
                               (i % 512) << 16);
        g_string_append_printf(ages, "%s%.0f", i > first ? "," : "",
                               (total - 1 - i) * age_step_us);
    }
    return parse_printf("{\"status\": \"postcopy-active\", "
                        "\"x-postcopy-recent-faults\": {\"total\": %" PRIu64
                        ", \"offsets\": [%s], \"ages-us\": [%s]}}", total,
                        offs->str, ages->str);
}

static const char final_dst[] =
    "{\"status\": \"completed\", \"postcopy-faults\": 300, "
    "\"postcopy-latency-p50-us\": 180, \"postcopy-latency-p99-us\": 3000, "
    "\"postcopy-latency-max-us\": 6000, \"postcopy-latency-histogram\": "
    "[0,0,0,0,0,3,40,90,120,30,10,5,2,0,0,0,0,0,0,0,0,0,0,0]}";

static void fixture_build(Fixture *f, const char *dst_text)
{
    g_autoptr(JsonObject) src = parse(
        "{\"status\": \"completed\", \"total-time\": 4100, \"downtime\": 3, "
        "\"setup-time\": 2, \"ram\": {\"transferred\": 40000000, "
        "\"total\": 67108864, \"dirty-sync-count\": 5}}");
    g_autoptr(JsonObject) dst = parse(dst_text);
    g_autoptr(JsonObject) r1 = ring(0, 100, 1000);
    g_autoptr(JsonObject) r2 = ring(50, 300, 1000);  /* overlaps r1 */

    f->r = mreport_new();
    for (int i = 0; i < 40; i++) {
        add_sample(f->r, i);
    }
    mreport_set_postcopy(f->r, 1.95);
    mreport_add_pause(f->r, 2.5, 0.4, "source", true);
    if (json_object_has_member(dst, "postcopy-latency-histogram")) {
        g_assert_true(mreport_add_faults(f->r, 2.2, r1));
        g_assert_true(mreport_add_faults(f->r, 3.9, r2));
    } else {
        g_assert_false(mreport_add_faults(f->r, 3.9, dst));
    }
    f->rep = mreport_to_json(f->r, src, dst, 4.2);
    f->html = mreport_html(f->rep);
}

static void fixture_setup(Fixture *f, gconstpointer data)
{
    fixture_build(f, data ? data : final_dst);
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    g_free(f->html);
    json_object_unref(f->rep);
    mreport_free(f->r);
}

/* ---- reading the HTML back ---- */

/* The text of one <svg id=ID> element. */
static char *svg_of(const char *html, const char *id)
{
    g_autofree char *needle = g_strdup_printf("<svg id=\"%s\"", id);
    const char *a = strstr(html, needle), *b;

    g_assert_nonnull(a);
    b = strstr(a, "</svg>");
    g_assert_nonnull(b);
    return g_strndup(a, b - a);
}

static double attr(const char *text, const char *name)
{
    g_autofree char *pat = g_strdup_printf("%s=\"([-0-9.e+]+)\"", name);
    g_autoptr(GRegex) re = g_regex_new(pat, 0, 0, NULL);
    g_autoptr(GMatchInfo) m = NULL;
    g_autofree char *v = NULL;

    g_assert_true(g_regex_match(re, text, 0, &m));
    v = g_match_info_fetch(m, 1);
    return g_ascii_strtod(v, NULL);
}

typedef struct PlotGeom {
    double x0, y0, w, h, xmax, ymax;
} PlotGeom;

static PlotGeom geom(const char *svg)
{
    return (PlotGeom) {
        attr(svg, "data-x0"), attr(svg, "data-y0"), attr(svg, "data-w"),
        attr(svg, "data-h"), attr(svg, "data-xmax"), attr(svg, "data-ymax"),
    };
}

/* The points="..." of the polyline of one series, as x,y pairs. */
static GArray *points(const char *svg, const char *series, guint *data_n)
{
    g_autofree char *pat = g_strdup_printf(
        "data-series=\"%s\" data-n=\"([0-9]+)\" points=\"([^\"]*)\"", series);
    g_autoptr(GRegex) re = g_regex_new(pat, 0, 0, NULL);
    g_autoptr(GMatchInfo) m = NULL;
    g_autofree char *n = NULL, *pts = NULL;
    g_auto(GStrv) pairs = NULL;
    GArray *a = g_array_new(FALSE, FALSE, sizeof(double));

    g_assert_true(g_regex_match(re, svg, 0, &m));
    n = g_match_info_fetch(m, 1);
    pts = g_match_info_fetch(m, 2);
    *data_n = atoi(n);
    pairs = g_strsplit(pts, " ", -1);
    for (char **p = pairs; *p && **p; p++) {
        char *end;
        double x = g_ascii_strtod(*p, &end), y;

        g_assert_cmpint(*end, ==, ',');
        y = g_ascii_strtod(end + 1, NULL);
        g_array_append_val(a, x);
        g_array_append_val(a, y);
    }
    return a;
}

static JsonArray *series(Fixture *f, const char *name)
{
    JsonObject *s = json_object_get_object_member(f->rep, "series");

    return json_object_get_array_member(s, name);
}

static double el(JsonArray *a, guint i)
{
    JsonNode *n = json_array_get_element(a, i);

    return json_node_get_value_type(n) == G_TYPE_INT64 ?
           json_node_get_int(n) : json_node_get_double(n);
}

static double arr_max(JsonArray *a)
{
    double m = 0;

    for (guint i = 0; i < json_array_get_length(a); i++) {
        m = MAX(m, el(a, i));
    }
    return m;
}

/*
 * Every point where the JSON value puts it on the plot.  axis_max: the
 * largest value on the chart (another series may share the axis).
 */
static void check_series(Fixture *f, const char *chart, const char *name,
                         double scale, double axis_max)
{
    g_autofree char *svg = svg_of(f->html, chart);
    PlotGeom g = geom(svg);
    JsonArray *t = series(f, "t-s"), *v = series(f, name);
    guint n;
    g_autoptr(GArray) pts = points(svg, name, &n);

    g_assert_cmpuint(n, ==, json_array_get_length(t));
    g_assert_cmpuint(pts->len / 2, ==, n);
    g_assert_cmpuint(json_array_get_length(v), ==, n);
    /* axis maxima: above the data, but not by much */
    g_assert_cmpfloat(g.ymax, >=, arr_max(v) * scale * (1 - 1e-6));
    g_assert_cmpfloat(g.ymax, <=, MAX(axis_max * 1.25, 1));
    g_assert_cmpfloat(g.xmax, >=, el(t, n - 1));
    for (guint i = 0; i < n; i++) {
        double x = g_array_index(pts, double, 2 * i);
        double y = g_array_index(pts, double, 2 * i + 1);

        g_assert_cmpfloat_with_epsilon(x, g.x0 + el(t, i) / g.xmax * g.w,
                                       0.01);
        g_assert_cmpfloat_with_epsilon(
            y, g.y0 + g.h - el(v, i) * scale / g.ymax * g.h, 0.01);
    }
}

static void test_series(Fixture *f, gconstpointer data)
{
    JsonArray *tp = series(f, "throughput-MBps");
    double rates = MAX(arr_max(tp), arr_max(series(f, "dirty-rate-MBps")));

    g_assert_cmpuint(json_array_get_length(series(f, "t-s")), ==, 40);
    /* 1 MB per 0.1 s */
    g_assert_cmpfloat_with_epsilon(el(tp, 5), 10.0, 1e-9);
    g_assert_cmpfloat_with_epsilon(el(series(f, "dirty-rate-MBps"), 3),
                                   300 * 4096 / 1e6, 1e-9);
    check_series(f, "chart-rates", "throughput-MBps", 1, rates);
    check_series(f, "chart-rates", "dirty-rate-MBps", 1, rates);
    check_series(f, "chart-remaining", "remaining-bytes", 1.0 / (1 << 20),
                 arr_max(series(f, "remaining-bytes")) / (1 << 20));
}

static void test_markers(Fixture *f, gconstpointer data)
{
    g_autofree char *svg = svg_of(f->html, "chart-rates");
    JsonArray *passes = json_object_get_array_member(f->rep, "passes");

    /* dirty-sync-count 1..4 over the 40 samples */
    g_assert_cmpuint(json_array_get_length(passes), ==, 4);
    g_assert_cmpfloat(json_object_get_double_member(f->rep,
                                                    "postcopy-switch-s"),
                      ==, 1.95);
    g_assert_nonnull(strstr(svg, "marker postcopy"));
    g_assert_nonnull(strstr(svg, "marker pause"));
    {
        g_auto(GStrv) parts = g_strsplit(svg, "class=\"marker pass\"", -1);
        g_assert_cmpuint(g_strv_length(parts) - 1, ==, 4);
    }
    g_assert_nonnull(strstr(f->html, "postcopy-active from 2.00 s"));
    g_assert_nonnull(strstr(f->html, "3 ms"));   /* downtime */
}

static void test_histogram(Fixture *f, gconstpointer data)
{
    JsonObject *fo = json_object_get_object_member(f->rep, "faults");
    JsonArray *h = json_object_get_array_member(fo, "histogram");
    g_autofree char *svg = svg_of(f->html, "chart-histogram");
    g_autoptr(GRegex) re = g_regex_new(
        "<rect x=\"[-0-9.]+\" y=\"([-0-9.]+)\" width=\"[-0-9.]+\" "
        "height=\"([-0-9.]+)\" class=\"bar\" data-bucket=\"([0-9]+)\" "
        "data-count=\"([0-9]+)\"", 0, 0, NULL);
    g_autoptr(GMatchInfo) m = NULL;
    PlotGeom g = geom(svg);
    guint bars = 0;

    g_assert_true(json_object_get_boolean_member(fo, "available"));
    g_assert_cmpuint(json_array_get_length(h), ==, MREPORT_LATENCY_BUCKETS);
    g_assert_cmpfloat(g.ymax, >=, arr_max(h));
    g_assert_cmpfloat(g.ymax, <=, arr_max(h) * 1.25);
    g_regex_match(re, svg, 0, &m);
    while (g_match_info_matches(m)) {
        g_autofree char *hs = g_match_info_fetch(m, 2);
        g_autofree char *bs = g_match_info_fetch(m, 3);
        g_autofree char *cs = g_match_info_fetch(m, 4);
        int bucket = atoi(bs);

        g_assert_cmpint(bucket, ==, bars);
        g_assert_cmpfloat(atof(cs), ==, el(h, bucket));
        /* heights proportional to the counts */
        g_assert_cmpfloat_with_epsilon(g_ascii_strtod(hs, NULL),
                                       el(h, bucket) / g.ymax * g.h, 0.01);
        bars++;
        g_match_info_next(m, NULL);
    }
    g_assert_cmpuint(bars, ==, MREPORT_LATENCY_BUCKETS);
    g_assert_nonnull(strstr(f->html, "p50 180 us"));
}

static void test_cdf(Fixture *f, gconstpointer data)
{
    JsonObject *fo = json_object_get_object_member(f->rep, "faults");
    JsonArray *h = json_object_get_array_member(fo, "histogram");
    JsonArray *cdf = json_object_get_array_member(fo, "cdf");
    g_autofree char *svg = svg_of(f->html, "chart-cdf");
    PlotGeom g = geom(svg);
    guint n;
    g_autoptr(GArray) pts = points(svg, "cdf", &n);
    double run = 0;

    g_assert_cmpuint(n, ==, MREPORT_LATENCY_BUCKETS);
    g_assert_cmpfloat(g.ymax, ==, 1);
    for (guint i = 0; i < n; i++) {
        run += el(h, i);
        g_assert_cmpfloat_with_epsilon(el(cdf, i), run / 300, 1e-9);
        /* at the bucket's upper edge */
        g_assert_cmpfloat_with_epsilon(g_array_index(pts, double, 2 * i),
                                       g.x0 + (i + 1) / g.xmax * g.w, 0.01);
        g_assert_cmpfloat_with_epsilon(g_array_index(pts, double, 2 * i + 1),
                                       g.y0 + g.h - el(cdf, i) * g.h, 0.01);
    }
    g_assert_cmpfloat_with_epsilon(g_array_index(pts, double, 2 * n - 1),
                                   g.y0, 0.01);
}

static int64_t cells_sum(const char *svg)
{
    g_autoptr(GRegex) re = g_regex_new("class=\"cell\" data-t=\"[0-9]+\" "
                                       "data-a=\"[0-9]+\" data-count=\"([0-9]+)\"",
                                       0, 0, NULL);
    g_autoptr(GMatchInfo) m = NULL;
    int64_t sum = 0;

    g_regex_match(re, svg, 0, &m);
    while (g_match_info_matches(m)) {
        g_autofree char *c = g_match_info_fetch(m, 1);

        sum += atoi(c);
        g_match_info_next(m, NULL);
    }
    return sum;
}

static void test_heatmap(Fixture *f, gconstpointer data)
{
    JsonObject *hm = json_object_get_object_member(f->rep, "heatmap");
    JsonArray *rows = json_object_get_array_member(hm, "counts");
    g_autofree char *svg = svg_of(f->html, "chart-heatmap");
    int64_t sum = 0;

    /* two polls overlapping by 50 faults: every fault once */
    g_assert_cmpint(json_object_get_int_member(hm, "faults-seen"), ==, 300);
    g_assert_cmpint(json_object_get_int_member(hm, "faults-missed"), ==, 0);
    g_assert_cmpint(json_object_get_int_member(hm, "addr-bins"), ==,
                    MREPORT_HEAT_ADDR_BINS);
    /* 64 MiB of RAM in 64 bins */
    g_assert_cmpint(json_object_get_int_member(hm, "addr-bin-bytes"), ==,
                    1 << 20);
    g_assert_cmpuint(json_array_get_length(rows), ==,
                     json_object_get_int_member(hm, "time-bins"));
    for (guint i = 0; i < json_array_get_length(rows); i++) {
        JsonArray *row = json_array_get_array_element(rows, i);

        for (guint a = 0; a < json_array_get_length(row); a++) {
            sum += el(row, a);
        }
    }
    g_assert_cmpint(sum, ==, 300);
    g_assert_cmpint(cells_sum(svg), ==, 300);
    /* the last fault (age 0 at t 3.9) sits in the last time bin */
    g_assert_cmpfloat(json_array_get_length(rows) *
                      json_object_get_double_member(hm, "time-bin-s"), >=,
                      3.9);
}

/* A gap wider than the ring counts as missed; late faults widen bins. */
static void test_heatmap_gap_widen(void)
{
    g_autoptr(MigrateReport) r = mreport_new();
    g_autoptr(JsonObject) r1 = ring(0, 10, 1000);
    g_autoptr(JsonObject) r2 = ring(5000, 5100, 1000);
    g_autoptr(JsonObject) late = ring(5100, 5101, 0);
    g_autoptr(JsonObject) rep = NULL;
    JsonObject *hm;
    int64_t sum = 0;

    add_sample(r, 0);
    g_assert_true(mreport_add_faults(r, 1.0, r1));
    g_assert_true(mreport_add_faults(r, 2.0, r2));
    /* 30 s: beyond 120 bins of 0.1 s, so twice 2x wider: 0.4 s */
    g_assert_true(mreport_add_faults(r, 30.0, late));
    rep = mreport_to_json(r, NULL, NULL, 30);
    hm = json_object_get_object_member(rep, "heatmap");
    g_assert_cmpint(json_object_get_int_member(hm, "faults-seen"), ==, 111);
    g_assert_cmpint(json_object_get_int_member(hm, "faults-missed"), ==,
                    4990);
    g_assert_cmpfloat_with_epsilon(json_object_get_double_member(
                                       hm, "time-bin-s"), 0.4, 1e-9);
    for (guint i = 0; i < json_array_get_length(json_object_get_array_member(
                              hm, "counts")); i++) {
        JsonArray *row = json_array_get_array_element(
            json_object_get_array_member(hm, "counts"), i);

        for (guint a = 0; a < json_array_get_length(row); a++) {
            sum += el(row, a);
        }
    }
    g_assert_cmpint(sum, ==, 111);
}

/* QEMU: no histogram, no ring. */
static void test_no_fault_data(Fixture *f, gconstpointer data)
{
    JsonObject *fo = json_object_get_object_member(f->rep, "faults");

    g_assert_false(json_object_get_boolean_member(fo, "available"));
    g_assert_nonnull(strstr(f->html, MREPORT_NO_FAULT_DATA));
    g_assert_null(strstr(f->html, "chart-histogram"));
    g_assert_null(strstr(f->html, "chart-heatmap"));
    g_assert_nonnull(strstr(f->html, "chart-rates"));
}

/* Nothing from the page's text can break out of its element. */
static void test_escaping(void)
{
    g_autoptr(MigrateReport) r = mreport_new();
    g_autoptr(JsonObject) src = parse("{\"status\": \"<b>&\"}");
    g_autoptr(JsonObject) rep = NULL;
    g_autofree char *html = NULL;

    mreport_add_sample(r, 0.5, src);
    rep = mreport_to_json(r, src, NULL, 1);
    html = mreport_html(rep);
    g_assert_null(strstr(html, "<b>&"));
    g_assert_nonnull(strstr(html, "&lt;b&gt;&amp;"));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define ADD(name, fn, data) \
    g_test_add(name, Fixture, data, fixture_setup, fn, fixture_teardown)
    ADD("/migrate-report/series", test_series, NULL);
    ADD("/migrate-report/markers", test_markers, NULL);
    ADD("/migrate-report/histogram", test_histogram, NULL);
    ADD("/migrate-report/cdf", test_cdf, NULL);
    ADD("/migrate-report/heatmap", test_heatmap, NULL);
    ADD("/migrate-report/no-fault-data", test_no_fault_data,
        "{\"status\": \"completed\", \"postcopy-blocktime\": 5}");
#undef ADD
    g_test_add_func("/migrate-report/heatmap-gap-widen",
                    test_heatmap_gap_widen);
    g_test_add_func("/migrate-report/escaping", test_escaping);
    return g_test_run();
}

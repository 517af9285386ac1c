/*
 * ferry-analyze: describe a migration stream saved with
 * migrate "exec:cat > FILE".  Prints the header, configuration, each
 * record (sections, commands, PACKAGED contents), per-RAMBlock page counts
 * and the VMDESCRIPTION; --json prints the same as one JSON object.
 *
 * Exit status: 0 parsed to the end, 1 parse error (the message names the
 * offset), 2 usage or I/O error.
 */
#include "qemu/osdep.h"
#include "stream-analyze.h"

static gboolean opt_json, opt_vmdesc;

static int64_t num(JsonObject *o, const char *m)
{
    return o && json_object_has_member(o, m) ?
           json_object_get_int_member(o, m) : 0;
}

static const char *str(JsonObject *o, const char *m)
{
    return o && json_object_has_member(o, m) ?
           json_object_get_string_member(o, m) : "?";
}

static void print_section(JsonObject *r)
{
    const char *type = str(r, "type");
    JsonObject *ram = json_object_has_member(r, "ram") ?
                      json_object_get_object_member(r, "ram") : NULL;

    printf(" id %" PRId64 " \"%s\"", num(r, "section-id"), str(r, "idstr"));
    if (!strcmp(type, "SECTION_START") || !strcmp(type, "SECTION_FULL")) {
        printf(" instance %" PRId64 " version %" PRId64, num(r, "instance"),
               num(r, "version"));
    }
    if (json_object_has_member(r, "blocks")) {
        JsonArray *b = json_object_get_array_member(r, "blocks");
        printf(" blocks:");
        for (guint i = 0; i < json_array_get_length(b); i++) {
            JsonObject *jb = json_array_get_object_element(b, i);
            printf(" %s=0x%" PRIx64, str(jb, "id"), num(jb, "length"));
        }
    }
    if (ram) {
        printf(" zero %" PRId64 " page %" PRId64, num(ram, "zero"),
               num(ram, "page"));
        if (num(ram, "xbzrle")) {
            printf(" xbzrle %" PRId64, num(ram, "xbzrle"));
        }
        if (num(ram, "compress")) {
            printf(" compress %" PRId64, num(ram, "compress"));
        }
        if (num(ram, "multifd-flush")) {
            printf(" multifd-flush %" PRId64, num(ram, "multifd-flush"));
        }
        printf(" eos %" PRId64, num(ram, "eos"));
    }
    if (json_object_has_member(r, "runstate")) {
        printf(" runstate \"%s\"", str(r, "runstate"));
    }
    if (json_object_has_member(r, "cpu-ticks-offset")) {
        printf(" cpu_ticks_offset %" PRId64, num(r, "cpu-ticks-offset"));
    }
    if (json_object_has_member(r, "cpu-clock-offset")) {
        printf(" cpu_clock_offset %" PRId64, num(r, "cpu-clock-offset"));
    }
    if (json_object_has_member(r, "subsections")) {
        JsonArray *s = json_object_get_array_member(r, "subsections");
        for (guint i = 0; i < json_array_get_length(s); i++) {
            printf(" +%s", str(json_array_get_object_element(s, i), "name"));
        }
    }
    if (json_object_has_member(r, "skipped-by-scan")) {
        printf(" (layout unknown: skipped %" PRId64 " bytes by scanning for "
               "the footer)", num(r, "payload-size"));
    }
}

static void print_records(JsonArray *recs, int indent);

static void print_command(JsonObject *r, int indent)
{
    const char *name = str(r, "command");

    printf(" %s len %" PRId64, name, num(r, "length"));
    if (json_object_has_member(r, "value")) {
        printf(" value %" PRId64, num(r, "value"));
    }
    if (json_object_has_member(r, "page-size-summary")) {
        printf(" page-size-summary 0x%" PRIx64 " target-page-size %" PRId64,
               num(r, "page-size-summary"), num(r, "target-page-size"));
    }
    if (json_object_has_member(r, "block")) {
        printf(" block \"%s\"", str(r, "block"));
    }
    if (json_object_has_member(r, "ranges")) {
        JsonArray *a = json_object_get_array_member(r, "ranges");
        for (guint i = 0; i < json_array_get_length(a); i++) {
            JsonArray *p = json_array_get_array_element(a, i);
            printf(" [0x%" PRIx64 " +0x%" PRIx64 "]",
                   json_array_get_int_element(p, 0),
                   json_array_get_int_element(p, 1));
        }
    }
    if (json_object_has_member(r, "blob-length")) {
        printf(" blob %" PRId64 " bytes:\n", num(r, "blob-length"));
        if (json_object_has_member(r, "records")) {
            print_records(json_object_get_array_member(r, "records"),
                          indent + 4);
        }
        if (json_object_has_member(r, "unparsed-after-run")) {
            printf("%*s(%" PRId64 " bytes after RUN not parsed)\n",
                   indent + 4, "", num(r, "unparsed-after-run"));
        }
        return;
    }
    printf("\n");
}

static void print_vmdesc(JsonObject *r)
{
    JsonNode *j = json_object_get_member(r, "json");

    printf(" %" PRId64 " bytes", num(r, "length"));
    if (!j) {
        printf(" (not valid JSON: %s)\n", str(r, "json-error"));
        return;
    }
    if (opt_vmdesc) {
        g_autofree char *t = json_to_string(j, TRUE);
        printf(":\n%s\n", t);
        return;
    }
    if (JSON_NODE_HOLDS_OBJECT(j)) {
        JsonObject *o = json_node_get_object(j);
        JsonNode *d = json_object_get_member(o, "devices");
        if (d && JSON_NODE_HOLDS_ARRAY(d)) {
            JsonArray *a = json_node_get_array(d);
            printf(", devices:");
            for (guint i = 0; i < json_array_get_length(a); i++) {
                JsonNode *e = json_array_get_element(a, i);
                if (JSON_NODE_HOLDS_OBJECT(e)) {
                    printf(" %s", str(json_node_get_object(e), "name"));
                }
            }
        }
    }
    printf(" (--vmdesc prints it)\n");
}

static void print_records(JsonArray *recs, int indent)
{
    for (guint i = 0; i < json_array_get_length(recs); i++) {
        JsonObject *r = json_array_get_object_element(recs, i);
        const char *type = str(r, "type");

        printf("%*s0x%08" PRIx64 " %-13s", indent, "", num(r, "offset"),
               type);
        if (g_str_has_prefix(type, "SECTION_")) {
            print_section(r);
            printf(" (%" PRId64 " bytes)\n", num(r, "size"));
        } else if (!strcmp(type, "COMMAND")) {
            print_command(r, indent);
        } else if (!strcmp(type, "VMDESCRIPTION")) {
            print_vmdesc(r);
        } else {
            printf("\n");
        }
    }
}

static void print_text(const char *file, JsonObject *o)
{
    JsonObject *ram = json_object_get_object_member(o, "ram");
    JsonArray *blocks = json_object_get_array_member(ram, "blocks");

    printf("stream %s: %" PRId64 " bytes", file, num(o, "size"));
    if (json_object_has_member(o, "version")) {
        printf(", magic %s, version %" PRId64, str(o, "magic"),
               num(o, "version"));
    }
    printf("\n");
    if (json_object_has_member(o, "configuration")) {
        JsonObject *cfg = json_object_get_object_member(o, "configuration");
        JsonArray *subs = json_object_get_array_member(cfg, "subsections");
        printf("configuration: machine \"%s\"", str(cfg, "machine"));
        for (guint i = 0; i < json_array_get_length(subs); i++) {
            JsonObject *s = json_array_get_object_element(subs, i);
            printf(", subsection %s v%" PRId64, str(s, "name"),
                   num(s, "version"));
            if (json_object_has_member(s, "capabilities")) {
                JsonArray *c = json_object_get_array_member(s, "capabilities");
                for (guint k = 0; k < json_array_get_length(c); k++) {
                    printf(" %s", json_array_get_string_element(c, k));
                }
            }
            if (json_object_has_member(s, "uuid")) {
                printf(" %s", str(s, "uuid"));
            }
        }
        printf("\n");
    }
    if (json_object_has_member(o, "records")) {
        print_records(json_object_get_array_member(o, "records"), 0);
    }
    printf("RAM:\n");
    for (guint i = 0; i < json_array_get_length(blocks); i++) {
        JsonObject *b = json_array_get_object_element(blocks, i);
        printf("  block \"%s\": 0x%" PRIx64 " bytes (%" PRId64 " pages): "
               "ZERO %" PRId64 " (%" PRId64 " B), PAGE %" PRId64 " (%" PRId64
               " B), XBZRLE %" PRId64 " (%" PRId64 " B)", str(b, "id"),
               num(b, "length"), num(b, "target-pages"), num(b, "zero"),
               num(b, "zero-bytes"), num(b, "page"), num(b, "page-bytes"),
               num(b, "xbzrle"), num(b, "xbzrle-bytes"));
        if (num(b, "compress")) {
            printf(", COMPRESS %" PRId64 " (%" PRId64 " B)",
                   num(b, "compress"), num(b, "compress-bytes"));
        }
        printf("\n");
    }
    printf("  total: ZERO %" PRId64 ", PAGE %" PRId64 ", XBZRLE %" PRId64
           ", EOS markers %" PRId64 "\n", num(ram, "zero"), num(ram, "page"),
           num(ram, "xbzrle"), num(ram, "eos"));
}

int main(int argc, char **argv)
{
    GOptionEntry entries[] = {
        { "json", 0, 0, G_OPTION_ARG_NONE, &opt_json,
          "Print one JSON object", NULL },
        { "vmdesc", 0, 0, G_OPTION_ARG_NONE, &opt_vmdesc,
          "Print the VMDESCRIPTION JSON in full", NULL },
        { NULL }
    };
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("FILE - describe a saved migration stream");
    g_autoptr(GError) err = NULL;
    g_autoptr(GMappedFile) map = NULL;
    g_autoptr(JsonObject) result = NULL;
    bool ok;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
        fprintf(stderr, "ferry-analyze: %s\n", err->message);
        return 2;
    }
    if (argc != 2) {
        fprintf(stderr, "ferry-analyze: expected one FILE (see --help)\n");
        return 2;
    }
    map = g_mapped_file_new(argv[1], FALSE, &err);
    if (!map) {
        fprintf(stderr, "ferry-analyze: %s\n", err->message);
        return 2;
    }
    ok = stream_analyze((const uint8_t *)g_mapped_file_get_contents(map),
                        g_mapped_file_get_length(map), &result, &err);
    if (opt_json) {
        g_autoptr(JsonNode) root = json_node_new(JSON_NODE_OBJECT);
        g_autofree char *text = NULL;
        json_node_set_object(root, result);
        text = json_to_string(root, TRUE);
        printf("%s\n", text);
    } else {
        print_text(argv[1], result);
    }
    fflush(stdout);
    if (!ok) {
        fprintf(stderr, "ferry-analyze: %s: %s\n", argv[1], err->message);
        return 1;
    }
    return 0;
}

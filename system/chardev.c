/*
 * Character devices: descriptions for query-chardev and the specs the
 * QMP server and the UART are opened from.  The command line parses them
 * (system/vl.c); nothing here opens anything.
 */
#include "qemu/osdep.h"
#include "chardev/char.h"
#include "monitor/qmp.h"

GPtrArray *qemu_chardevs;

void chardev_free(gpointer p)
{
    Chardev *c = p;

    g_free(c->id);
    g_free(c->path);
    g_free(c);
}

char *chardev_filename(const Chardev *c)
{
    switch (c->kind) {
    case CHARDEV_SOCKET:
        return c->path ? g_strdup_printf("unix:%s,server=on", c->path)
                       : g_strdup_printf("fd:%d,server=on", c->fd);
    case CHARDEV_FILE:
        return g_strdup_printf("file:%s", c->path);
    case CHARDEV_STDIO:
        return g_strdup("stdio");
    case CHARDEV_NULL:
        return g_strdup("null");
    }
    return g_strdup("unknown");
}

char *chardev_qmp_spec(const Chardev *c)
{
    return c->path ? g_strdup_printf("unix:%s,server=on,wait=off", c->path)
                   : g_strdup_printf("fd:%d", c->fd);
}

char *chardev_serial_spec(const Chardev *c, GError **errp)
{
    switch (c->kind) {
    case CHARDEV_FILE:
        return g_strdup_printf("%s:%s", c->append ? "file-append" : "file",
                               c->path);
    case CHARDEV_STDIO:
        return g_strdup("stdio");
    case CHARDEV_NULL:
        return g_strdup("null");
    case CHARDEV_SOCKET:
        break;
    }
    error_setg(errp, "chardev '%s': a socket cannot back the serial port "
               "(use file, stdio or null)", c->id);
    return NULL;
}

static bool qmp_query_chardev(JsonObject *args, JsonNode **ret,
                              GError **errp)
{
    static const char *const no_args[] = { NULL };
    JsonArray *list;

    if (!qmp_args_check_known(args, no_args, errp)) {
        return false;
    }
    list = json_array_new();
    for (guint i = 0; qemu_chardevs && i < qemu_chardevs->len; i++) {
        const Chardev *c = g_ptr_array_index(qemu_chardevs, i);
        g_autofree char *filename = chardev_filename(c);
        JsonObject *o = json_object_new();

        json_object_set_string_member(o, "label", c->id);
        json_object_set_string_member(o, "filename", filename);
        json_object_set_boolean_member(o, "frontend-open",
                                       c->frontend != NULL);
        json_array_add_object_element(list, o);
    }
    *ret = json_node_init_array(json_node_alloc(), list);
    json_array_unref(list);
    return true;
}

void chardev_register_qmp(void)
{
    qmp_register_command("query-chardev", qmp_query_chardev);
}

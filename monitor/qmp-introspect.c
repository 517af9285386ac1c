/*
 * QMP introspection: the queries management software (libvirt) sends to
 * learn what the emulator is and to find its objects.  Every answer
 * describes ferry: its machines, the -device and -object types it accepts,
 * its accelerators, its QOM-like tree.  None of it is QEMU's catalogue;
 * a type, property or path that ferry does not have is not listed.
 *
 * query-qmp-schema answers an empty list on purpose: libvirt then stays on
 * the classic command-line forms (no JSON -object/-device), which are the
 * ones ferry parses.
 */
#include "qemu/osdep.h"
#include "monitor/qmp.h"
#include "sysemu/cpus.h"
#include "sysemu/kvm.h"
#include "hw/machine.h"

static const char *const no_args[] = { NULL };

static JsonNode *node_take_array(JsonArray *list)
{
    JsonNode *node = json_node_new(JSON_NODE_ARRAY);

    json_node_take_array(node, list);
    return node;
}

static JsonNode *node_take_object(JsonObject *obj)
{
    JsonNode *node = json_node_new(JSON_NODE_OBJECT);

    json_node_take_object(node, obj);
    return node;
}

/* {"name": name, "type": type}: a qom-list or *-list-properties entry. */
static void add_prop(JsonArray *list, const char *name, const char *type)
{
    JsonObject *o = json_object_new();

    json_object_set_string_member(o, "name", name);
    json_object_set_string_member(o, "type", type);
    json_array_add_object_element(list, o);
}

/* ---- the type catalogue ------------------------------------------------ */

typedef struct TypeProp {
    const char *name;
    const char *type;           /* QOM's spelling: "str", "bool", "int" */
} TypeProp;

typedef struct QomType {
    const char *name;
    const char *parent;         /* NULL for the root */
    bool abstract;
    /*
     * What qom-list-properties (objects) or device-list-properties
     * (devices) answers: the keys ferry's command line takes for it.
     */
    const TypeProp *props;
} QomType;

/* -device loader (system/vl.c opt_device). */
static const TypeProp loader_props[] = {
    { "file", "str" },
    { "addr", "uint64" },
    { "force-raw", "bool" },
    { NULL }
};

/* The pc machine's 16550 UART; its backend is a character device. */
static const TypeProp isa_serial_props[] = {
    { "chardev", "str" },
    { NULL }
};

/*
 * -object memory-backend-* (system/vl.c backend_check_keys): every key
 * -object accepts.  merge, dump, prealloc-threads, align, discard-data and
 * seal are accepted for QEMU compatibility and change nothing.
 */
#define BACKEND_COMMON_PROPS \
    { "size", "int" }, \
    { "share", "bool" }, \
    { "prealloc", "bool" }, \
    { "merge", "bool" }, \
    { "dump", "bool" }, \
    { "prealloc-threads", "uint32" }

static const TypeProp backend_ram_props[] = {
    BACKEND_COMMON_PROPS,
    { NULL }
};

static const TypeProp backend_memfd_props[] = {
    BACKEND_COMMON_PROPS,
    { "hugetlb", "bool" },
    { "hugetlbsize", "int" },
    { "seal", "bool" },
    { NULL }
};

static const TypeProp backend_file_props[] = {
    BACKEND_COMMON_PROPS,
    { "mem-path", "string" },
    { "align", "int" },
    { "discard-data", "bool" },
    { NULL }
};

/* -machine memory-backend=ID, for every machine type. */
static const TypeProp machine_props[] = {
    { "memory-backend", "string" },
    { NULL }
};

#define VCPU_TYPE "host-x86_64-cpu"

/* Machine types come from hw/machine.c, see machine_type_nth(). */
static const QomType static_types[] = {
    { "object", NULL, true, NULL },
    { "machine", "object", true, NULL },
    { "device", "object", true, NULL },
    /* The pc machine's vCPUs: the host's CPUID as KVM reports it. */
    { "cpu", "device", true, NULL },
    { "x86_64-cpu", "cpu", true, NULL },
    { VCPU_TYPE, "x86_64-cpu", false, NULL },
    { "isa-device", "device", true, NULL },
    { "isa-serial", "isa-device", false, isa_serial_props },
    { "loader", "device", false, loader_props },
    { "memory-backend", "object", true, NULL },
    { "memory-backend-ram", "memory-backend", false, backend_ram_props },
    { "memory-backend-memfd", "memory-backend", false, backend_memfd_props },
    { "memory-backend-file", "memory-backend", false, backend_file_props },
    { "accel", "object", true, NULL },
    { "kvm-accel", "accel", false, NULL },
    /* RAM-only machines (no vCPUs) run without KVM under -accel tcg. */
    { "tcg-accel", "accel", false, NULL },
};

/*
 * The i-th type of the catalogue, NULL past the end.  Machine type names
 * ("<machine>-machine", as in QEMU) are built into *buf, which the caller
 * frees.
 */
static bool qom_type_nth(size_t i, QomType *t, char **buf)
{
    const MachineClass *mc;

    if (i < G_N_ELEMENTS(static_types)) {
        *t = static_types[i];
        return true;
    }
    mc = machine_class_nth(i - G_N_ELEMENTS(static_types));
    if (!mc) {
        return false;
    }
    g_free(*buf);
    *buf = g_strdup_printf("%s-machine", mc->name);
    *t = (QomType){ *buf, "machine", false, machine_props };
    return true;
}

static bool qom_type_find(const char *name, QomType *t, char **buf)
{
    for (size_t i = 0; qom_type_nth(i, t, buf); i++) {
        if (!strcmp(t->name, name)) {
            return true;
        }
    }
    return false;
}

/* Whether t is the type named ancestor or derives from it. */
static bool qom_type_is_a(const QomType *t, const char *ancestor)
{
    g_autofree char *buf = NULL;
    QomType cur = *t;

    /* The catalogue is a tree of a few levels: this ends. */
    for (;;) {
        if (!strcmp(cur.name, ancestor)) {
            return true;
        }
        if (!cur.parent || !qom_type_find(cur.parent, &cur, &buf)) {
            return false;
        }
    }
}

static JsonArray *props_list(const TypeProp *props)
{
    JsonArray *list = json_array_new();

    for (; props && props->name; props++) {
        add_prop(list, props->name, props->type);
    }
    return list;
}

/* ---- commands ---------------------------------------------------------- */

static bool qmp_query_target(JsonObject *args, JsonNode **ret, GError **errp)
{
    JsonObject *res;

    if (!qmp_args_check_known(args, no_args, errp)) {
        return false;
    }
    res = json_object_new();
    json_object_set_string_member(res, "arch", "x86_64");
    *ret = node_take_object(res);
    return true;
}

static bool qmp_query_kvm(JsonObject *args, JsonNode **ret, GError **errp)
{
    JsonObject *res;
    bool enabled;

    if (!qmp_args_check_known(args, no_args, errp)) {
        return false;
    }
    /* kvm_init() ran and the VM exists: the machine runs under KVM. */
    enabled = kvm_enabled();
    res = json_object_new();
    json_object_set_boolean_member(res, "enabled", enabled);
    json_object_set_boolean_member(res, "present",
                                   enabled || kvm_available(NULL));
    *ret = node_take_object(res);
    return true;
}

static bool qmp_query_qmp_schema(JsonObject *args, JsonNode **ret,
                                 GError **errp)
{
    if (!qmp_args_check_known(args, no_args, errp)) {
        return false;
    }
    *ret = node_take_array(json_array_new());
    return true;
}

static bool qmp_qom_list_types(JsonObject *args, JsonNode **ret,
                               GError **errp)
{
    static const char *const known[] = { "implements", "abstract", NULL };
    g_autofree char *buf = NULL;
    const char *implements = NULL;
    bool abstract = false;
    JsonArray *list;
    QomType t;

    if (!qmp_args_check_known(args, known, errp) ||
        !qmp_arg_str(args, "implements", false, &implements, errp) ||
        !qmp_arg_bool(args, "abstract", false, &abstract, errp)) {
        return false;
    }
    list = json_array_new();
    for (size_t i = 0; qom_type_nth(i, &t, &buf); i++) {
        JsonObject *o;

        if ((t.abstract && !abstract) ||
            (implements && !qom_type_is_a(&t, implements))) {
            continue;
        }
        o = json_object_new();
        json_object_set_string_member(o, "name", t.name);
        if (t.abstract) {
            json_object_set_boolean_member(o, "abstract", true);
        }
        if (t.parent) {
            json_object_set_string_member(o, "parent", t.parent);
        }
        json_array_add_object_element(list, o);
    }
    *ret = node_take_array(list);
    return true;
}

static bool qmp_query_machines(JsonObject *args, JsonNode **ret,
                               GError **errp)
{
    const MachineClass *mc;
    JsonArray *list;

    if (!qmp_args_check_known(args, no_args, errp)) {
        return false;
    }
    list = json_array_new();
    for (size_t i = 0; (mc = machine_class_nth(i)); i++) {
        JsonObject *o = json_object_new();

        json_object_set_string_member(o, "name", mc->name);
        if (!strcmp(mc->name, MACHINE_DEFAULT_TYPE)) {
            json_object_set_boolean_member(o, "is-default", true);
        }
        /* -smp allows 1..255; a machine without vCPUs counts as 1. */
        json_object_set_int_member(o, "cpu-max", mc->needs_vcpus ? 255 : 1);
        json_object_set_boolean_member(o, "hotpluggable-cpus", false);
        json_object_set_boolean_member(o, "numa-mem-supported", false);
        json_object_set_boolean_member(o, "deprecated", false);
        if (mc->default_ram_id) {
            json_object_set_string_member(o, "default-ram-id",
                                          mc->default_ram_id);
        }
        json_object_set_boolean_member(o, "acpi", false);
        json_array_add_object_element(list, o);
    }
    *ret = node_take_array(list);
    return true;
}

/*
 * libvirt accepts an empty answer and then assumes the options of the
 * QEMU version it sees; ferry's own options are in docs/usage.md.
 */
static bool qmp_query_command_line_options(JsonObject *args, JsonNode **ret,
                                           GError **errp)
{
    static const char *const known[] = { "option", NULL };
    const char *option = NULL;

    if (!qmp_args_check_known(args, known, errp) ||
        !qmp_arg_str(args, "option", false, &option, errp)) {
        return false;
    }
    *ret = node_take_array(json_array_new());
    return true;
}

/* The one argument, {"typename": NAME}, and the type it names if any. */
static bool qom_typename_arg(JsonObject *args, const char **name, QomType *t,
                             char **buf, bool *found, GError **errp)
{
    static const char *const known[] = { "typename", NULL };

    if (!qmp_args_check_known(args, known, errp) ||
        !qmp_arg_str(args, "typename", true, name, errp)) {
        return false;
    }
    *found = qom_type_find(*name, t, buf);
    return true;
}

static bool qmp_device_list_properties(JsonObject *args, JsonNode **ret,
                                       GError **errp)
{
    g_autofree char *buf = NULL;
    const char *name;
    QomType t;
    bool found;

    if (!qom_typename_arg(args, &name, &t, &buf, &found, errp)) {
        return false;
    }
    if (!found) {
        g_set_error(errp, FERRY_ERROR, ERROR_CLASS_DEVICE_NOT_FOUND,
                    "Device '%s' not found", name);
        return false;
    }
    if (!qom_type_is_a(&t, "device")) {
        error_setg(errp, "Parameter 'typename' expects a device type, "
                   "'%s' is not one", name);
        return false;
    }
    if (t.abstract) {
        error_setg(errp, "Parameter 'typename' expects a non-abstract "
                   "device type, '%s' is abstract", name);
        return false;
    }
    *ret = node_take_array(props_list(t.props));
    return true;
}

/* Always a list: libvirt 9.0 crashes on an error reply to this one. */
static bool qmp_qom_list_properties(JsonObject *args, JsonNode **ret,
                                    GError **errp)
{
    g_autofree char *buf = NULL;
    const char *name;
    QomType t;
    bool found;

    if (!qom_typename_arg(args, &name, &t, &buf, &found, errp)) {
        return false;
    }
    if (found) {
        *ret = node_take_array(props_list(t.props));
    } else {
        *ret = node_take_array(json_array_new());
    }
    return true;
}

/* ---- qom-list: the object tree ----------------------------------------- */

static void add_child(JsonArray *list, const char *name, const char *type)
{
    g_autofree char *t = g_strdup_printf("child<%s>", type);

    add_prop(list, name, t);
}

/* /machine/peripheral: devices given an id with -device. */
static void list_peripherals(JsonArray *list)
{
    /* ferry keeps no -device with an id yet: loaders are anonymous. */
}

/* /machine/peripheral-anon: -device without id, numbered as given. */
static void list_peripherals_anon(JsonArray *list)
{
    MachineState *ms = current_machine;

    for (guint i = 0; ms && ms->loaders && i < ms->loaders->len; i++) {
        g_autofree char *name = g_strdup_printf("device[%u]", i);

        add_child(list, name, "loader");
    }
}

/* The vCPU whose QOM path (as query-cpus-fast gives it) is path. */
static bool vcpu_path(const char *path)
{
    const char *prefix = "/machine/unattached/device[";
    const char *p = path + strlen(prefix);
    char *end;
    long idx;

    if (strncmp(path, prefix, strlen(prefix)) || !g_ascii_isdigit(*p)) {
        return false;
    }
    errno = 0;
    idx = strtol(p, &end, 10);
    if (errno || strcmp(end, "]") || idx > INT_MAX ||
        (p[0] == '0' && end - p > 1)) {
        return false;
    }
    for (int i = 0; i < cpu_count(); i++) {
        CPUState *cpu = qemu_get_cpu(i);

        if (cpu && cpu_index(cpu) == idx) {
            return true;
        }
    }
    return false;
}

static const MemoryBackend *backend_path(const char *path)
{
    MachineState *ms = current_machine;

    if (!g_str_has_prefix(path, "/objects/") || !ms || !ms->backends) {
        return NULL;
    }
    for (guint i = 0; i < ms->backends->len; i++) {
        const MemoryBackend *be = g_ptr_array_index(ms->backends, i);

        if (!strcmp(be->id, path + strlen("/objects/"))) {
            return be;
        }
    }
    return NULL;
}

/*
 * Fill list with what path holds: its "type" property, as every QOM
 * object has, then its children.  False if there is no such path.
 */
static bool qom_list_path(const char *path, JsonArray *list)
{
    MachineState *ms = current_machine;

    add_prop(list, "type", "string");
    if (!strcmp(path, "/")) {
        if (current_machine_class) {
            g_autofree char *t =
                g_strdup_printf("%s-machine", current_machine_class->name);

            add_child(list, "machine", t);
        }
        add_child(list, "objects", "container");
    } else if (!strcmp(path, "/machine")) {
        add_child(list, "peripheral", "container");
        add_child(list, "peripheral-anon", "container");
        add_child(list, "unattached", "container");
    } else if (!strcmp(path, "/machine/peripheral")) {
        list_peripherals(list);
    } else if (!strcmp(path, "/machine/peripheral-anon")) {
        list_peripherals_anon(list);
    } else if (!strcmp(path, "/machine/unattached")) {
        for (int i = 0; i < cpu_count(); i++) {
            CPUState *cpu = qemu_get_cpu(i);
            g_autofree char *name = NULL;

            if (cpu) {
                name = g_strdup_printf("device[%d]", cpu_index(cpu));
                add_child(list, name, VCPU_TYPE);
            }
        }
    } else if (!strcmp(path, "/objects")) {
        for (guint i = 0; ms && ms->backends && i < ms->backends->len; i++) {
            const MemoryBackend *be = g_ptr_array_index(ms->backends, i);

            add_child(list, be->id, ram_backend_type_name(be->cfg.type));
        }
    } else if (!vcpu_path(path) && !backend_path(path)) {
        return false;
    }
    return true;
}

static bool qmp_qom_list(JsonObject *args, JsonNode **ret, GError **errp)
{
    static const char *const known[] = { "path", NULL };
    g_autoptr(JsonArray) list = NULL;
    const char *path;

    if (!qmp_args_check_known(args, known, errp) ||
        !qmp_arg_str(args, "path", true, &path, errp)) {
        return false;
    }
    list = json_array_new();
    if (!qom_list_path(path, list)) {
        /* QEMU's words, and its class, for a path that resolves to nothing. */
        /* The class matters: libvirt skips a vCPU path that is missing. */
        g_set_error(errp, FERRY_ERROR, ERROR_CLASS_DEVICE_NOT_FOUND,
                    "Device '%s' not found", path);
        json_array_unref(list);
        return false;
    }
    *ret = node_take_array(g_steal_pointer(&list));
    return true;
}

/* ferry has no block devices. */
static bool qmp_query_block(JsonObject *args, JsonNode **ret, GError **errp)
{
    if (!qmp_args_check_known(args, no_args, errp)) {
        return false;
    }
    *ret = node_take_array(json_array_new());
    return true;
}

static bool qmp_query_named_block_nodes(JsonObject *args, JsonNode **ret,
                                        GError **errp)
{
    static const char *const known[] = { "flat", NULL };
    bool flat = false;

    if (!qmp_args_check_known(args, known, errp) ||
        !qmp_arg_bool(args, "flat", false, &flat, errp)) {
        return false;
    }
    *ret = node_take_array(json_array_new());
    return true;
}

void qmp_register_introspect_commands(void)
{
    qmp_register_command("query-target", qmp_query_target);
    qmp_register_command("query-kvm", qmp_query_kvm);
    qmp_register_command("query-qmp-schema", qmp_query_qmp_schema);
    qmp_register_command("qom-list-types", qmp_qom_list_types);
    qmp_register_command("query-machines", qmp_query_machines);
    qmp_register_command("query-command-line-options",
                         qmp_query_command_line_options);
    qmp_register_command("device-list-properties",
                         qmp_device_list_properties);
    qmp_register_command("qom-list-properties", qmp_qom_list_properties);
    qmp_register_command("qom-list", qmp_qom_list);
    qmp_register_command("query-block", qmp_query_block);
    qmp_register_command("query-named-block-nodes",
                         qmp_query_named_block_nodes);
}

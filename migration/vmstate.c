/*
 * VMState encoding: fields in declaration order, big-endian, no tags;
 * subsections after the parent's fields as 0x05 + name + be32 version.
 */
#include "qemu/osdep.h"
#include "migration/vmstate.h"
#include "trace/trace-migration.h"

#define VMS_SUBSECTION_MARK 0x05

static const char *const type_names[VMS__MAX] = {
    [VMS_BOOL] = "bool",
    [VMS_INT8] = "int8",
    [VMS_UINT8] = "uint8",
    [VMS_INT16] = "int16",
    [VMS_UINT16] = "uint16",
    [VMS_INT32] = "int32",
    [VMS_UINT32] = "uint32",
    [VMS_INT64] = "int64",
    [VMS_UINT64] = "uint64",
    [VMS_BUFFER] = "buffer",
    [VMS_UNUSED] = "unused_buffer",
    [VMS_STRUCT] = "struct",
    [VMS_UINT8_EQUAL] = "uint8 equal",
    [VMS_UINT16_EQUAL] = "uint16 equal",
    [VMS_UINT32_EQUAL] = "uint32 equal",
    [VMS_INT32_EQUAL] = "int32 equal",
    [VMS_INT64_EQUAL] = "int64 equal",
    [VMS_UINT64_EQUAL] = "uint64 equal",
};

const char *vmstate_type_name(VMStateType type)
{
    return type > VMS_END && type < VMS__MAX ? type_names[type] : "unknown";
}

/* Width on the wire of the integer types (equal variants included). */
static unsigned int int_width(VMStateType type)
{
    switch (type) {
    case VMS_BOOL: case VMS_INT8: case VMS_UINT8: case VMS_UINT8_EQUAL:
        return 1;
    case VMS_INT16: case VMS_UINT16: case VMS_UINT16_EQUAL:
        return 2;
    case VMS_INT32: case VMS_UINT32: case VMS_UINT32_EQUAL:
    case VMS_INT32_EQUAL:
        return 4;
    case VMS_INT64: case VMS_UINT64: case VMS_INT64_EQUAL:
    case VMS_UINT64_EQUAL:
        return 8;
    default:
        return 0;
    }
}

static bool is_equal_type(VMStateType type)
{
    return type >= VMS_UINT8_EQUAL && type <= VMS_UINT64_EQUAL;
}

/* Value of an integer field in memory, zero-extended to 64 bits. */
static uint64_t int_read(const void *p, unsigned int width)
{
    switch (width) {
    case 1: return *(const uint8_t *)p;
    case 2: return *(const uint16_t *)p;
    case 4: return *(const uint32_t *)p;
    default: return *(const uint64_t *)p;
    }
}

static void int_write(void *p, unsigned int width, uint64_t v)
{
    switch (width) {
    case 1: *(uint8_t *)p = v; break;
    case 2: *(uint16_t *)p = v; break;
    case 4: *(uint32_t *)p = v; break;
    default: *(uint64_t *)p = v; break;
    }
}

static void put_int(QEMUFile *f, unsigned int width, uint64_t v)
{
    switch (width) {
    case 1: qemu_put_byte(f, v); break;
    case 2: qemu_put_be16(f, v); break;
    case 4: qemu_put_be32(f, v); break;
    default: qemu_put_be64(f, v); break;
    }
}

static uint64_t get_int(QEMUFile *f, unsigned int width)
{
    switch (width) {
    case 1: return qemu_get_byte(f);
    case 2: return qemu_get_be16(f);
    case 4: return qemu_get_be32(f);
    default: return qemu_get_be64(f);
    }
}

static unsigned int field_count(const VMStateField *field)
{
    return field->num ? field->num : 1;
}

/* ---- save ---- */

static int save_element(QEMUFile *f, const VMStateField *field, void *p)
{
    unsigned int width = int_width(field->type);

    if (field->type == VMS_BOOL) {
        qemu_put_byte(f, *(bool *)p ? 1 : 0);
    } else if (width) {
        put_int(f, width, int_read(p, width));
    } else if (field->type == VMS_BUFFER) {
        qemu_put_buffer(f, p, field->size);
    } else if (field->type == VMS_UNUSED) {
        static const uint8_t zeros[256];

        for (size_t left = field->size; left;) {
            size_t n = MIN(left, sizeof(zeros));

            qemu_put_buffer(f, zeros, n);
            left -= n;
        }
    } else if (field->type == VMS_STRUCT) {
        return vmstate_save_state(f, field->vmsd, p);
    } else {
        return -EINVAL;
    }
    return 0;
}

static int save_fields(QEMUFile *f, const VMStateDescription *vmsd,
                       void *opaque)
{
    for (const VMStateField *field = vmsd->fields;
         field && field->type != VMS_END; field++) {
        if (field->version_id > vmsd->version_id) {
            continue;
        }
        for (unsigned int i = 0; i < field_count(field); i++) {
            uint8_t *p = (uint8_t *)opaque + field->offset + i * field->size;
            int ret;

            if (field->type == VMS_UNUSED) {
                p = NULL;   /* unused fields have no storage */
            }
            ret = save_element(f, field, p);
            if (ret < 0) {
                return ret;
            }
        }
    }
    return 0;
}

static bool subsection_needed(const VMStateDescription *sub, void *opaque)
{
    return !sub->needed || sub->needed(opaque);
}

int vmstate_save_state(QEMUFile *f, const VMStateDescription *vmsd,
                       void *opaque)
{
    int ret;

    trace_vmstate_save_state_top(vmsd->name);
    if (vmsd->pre_save) {
        ret = vmsd->pre_save(opaque);
        if (ret < 0) {
            qemu_file_set_error_obj(f, ret, g_error_new(FERRY_ERROR, 0,
                                    "pre_save of '%s' failed", vmsd->name));
            return ret;
        }
    }
    ret = save_fields(f, vmsd, opaque);
    if (ret < 0) {
        return ret;
    }
    for (const VMStateDescription *const *s = vmsd->subsections;
         s && *s; s++) {
        if (!subsection_needed(*s, opaque)) {
            continue;
        }
        trace_vmstate_subsection_save_loop(vmsd->name, (*s)->name);
        qemu_put_byte(f, VMS_SUBSECTION_MARK);
        qemu_put_counted_string(f, (*s)->name);
        qemu_put_be32(f, (*s)->version_id);
        ret = vmstate_save_state(f, *s, opaque);
        if (ret < 0) {
            return ret;
        }
    }
    return qemu_file_get_error(f);
}

/* ---- load ---- */

static int stream_error(QEMUFile *f, const VMStateDescription *vmsd,
                        const char *what, GError **errp)
{
    GError *err = NULL;
    int ret = qemu_file_get_error_obj(f, &err);

    error_setg(errp, "%s: failed to load %s: %s", vmsd->name, what,
               err ? err->message : "stream error");
    g_clear_error(&err);
    return ret ? ret : -EIO;
}

static int load_element(QEMUFile *f, const VMStateDescription *vmsd,
                        const VMStateField *field, void *p, GError **errp)
{
    unsigned int width = int_width(field->type);

    if (width) {
        uint64_t v = get_int(f, width);

        if (qemu_file_get_error(f)) {
            return stream_error(f, vmsd, field->name, errp);
        }
        if (is_equal_type(field->type)) {
            uint64_t cur = int_read(p, width);

            if (v != cur) {
                error_setg(errp, "%s: field %s: received %" PRIu64
                           ", expected %" PRIu64, vmsd->name, field->name,
                           v, cur);
                return -EINVAL;
            }
        } else if (field->type == VMS_BOOL) {
            if (v > 1) {
                error_setg(errp, "%s: field %s: invalid bool %" PRIu64,
                           vmsd->name, field->name, v);
                return -EINVAL;
            }
            *(bool *)p = v;
        } else {
            int_write(p, width, v);
        }
        return 0;
    }
    switch (field->type) {
    case VMS_BUFFER:
        qemu_get_buffer(f, p, field->size);
        break;
    case VMS_UNUSED:
        qemu_file_skip(f, field->size);
        break;
    case VMS_STRUCT:
        return vmstate_load_state(f, field->vmsd, p, field->vmsd->version_id,
                                  errp);
    default:
        error_setg(errp, "%s: field %s has an invalid type", vmsd->name,
                   field->name);
        return -EINVAL;
    }
    if (qemu_file_get_error(f)) {
        return stream_error(f, vmsd, field->name, errp);
    }
    return 0;
}

static int load_fields(QEMUFile *f, const VMStateDescription *vmsd,
                       void *opaque, int version_id, GError **errp)
{
    for (const VMStateField *field = vmsd->fields;
         field && field->type != VMS_END; field++) {
        if (field->version_id > version_id) {
            continue;
        }
        for (unsigned int i = 0; i < field_count(field); i++) {
            uint8_t *p = (uint8_t *)opaque + field->offset + i * field->size;
            int ret = load_element(f, vmsd, field, p, errp);

            if (ret < 0) {
                trace_vmstate_load_field_error(field->name, ret);
                return ret;
            }
        }
    }
    return 0;
}

static const VMStateDescription *find_subsection(
    const VMStateDescription *vmsd, const char *name)
{
    for (const VMStateDescription *const *s = vmsd->subsections;
         s && *s; s++) {
        if (!strcmp((*s)->name, name)) {
            return *s;
        }
    }
    return NULL;
}

/*
 * Peek the next subsection's name.  Returns false when the next record is
 * not a subsection of vmsd (so the parent ends here).
 */
static bool peek_subsection(QEMUFile *f, const VMStateDescription *vmsd,
                            char name[256])
{
    uint8_t *p;
    int len;

    if (qemu_peek_byte(f, 0) != VMS_SUBSECTION_MARK) {
        return false;
    }
    len = qemu_peek_byte(f, 1);
    if (len <= 0 || qemu_peek_buffer(f, &p, len, 2) != (size_t)len) {
        return false;
    }
    memcpy(name, p, len);
    name[len] = 0;
    return g_str_has_prefix(name, vmsd->name);
}

static int load_subsections(QEMUFile *f, const VMStateDescription *vmsd,
                            void *opaque, GError **errp)
{
    char name[256];

    trace_vmstate_subsection_load(vmsd->name);
    while (peek_subsection(f, vmsd, name)) {
        const VMStateDescription *sub = find_subsection(vmsd, name);
        int version_id, ret;

        if (!sub) {
            error_setg(errp, "%s: unknown subsection '%s'", vmsd->name,
                       name);
            return -ENOENT;
        }
        qemu_file_skip(f, 2 + strlen(name));
        version_id = qemu_get_be32(f);
        if (qemu_file_get_error(f)) {
            return stream_error(f, vmsd, name, errp);
        }
        ret = vmstate_load_state(f, sub, opaque, version_id, errp);
        if (ret < 0) {
            return ret;
        }
        trace_vmstate_subsection_load_good(sub->name);
    }
    return 0;
}

int vmstate_load_state(QEMUFile *f, const VMStateDescription *vmsd,
                       void *opaque, int version_id, GError **errp)
{
    int ret;

    trace_vmstate_load_state(vmsd->name, version_id);
    if (version_id > vmsd->version_id) {
        error_setg(errp, "%s: incoming version_id %d is too new "
                   "(we support up to %d)", vmsd->name, version_id,
                   vmsd->version_id);
        return -EINVAL;
    }
    if (version_id < vmsd->minimum_version_id) {
        error_setg(errp, "%s: incoming version_id %d is too old "
                   "(minimum %d)", vmsd->name, version_id,
                   vmsd->minimum_version_id);
        return -EINVAL;
    }
    if (vmsd->pre_load && (ret = vmsd->pre_load(opaque)) < 0) {
        error_setg(errp, "%s: pre_load failed (%d)", vmsd->name, ret);
        return ret;
    }
    ret = load_fields(f, vmsd, opaque, version_id, errp);
    if (ret < 0) {
        trace_vmstate_load_state_end(vmsd->name, "fields", ret);
        return ret;
    }
    ret = load_subsections(f, vmsd, opaque, errp);
    if (ret < 0) {
        trace_vmstate_load_state_end(vmsd->name, "subsections", ret);
        return ret;
    }
    if (vmsd->post_load && (ret = vmsd->post_load(opaque, version_id)) < 0) {
        error_setg(errp, "%s: post_load failed (%d)", vmsd->name, ret);
        return ret;
    }
    if (vmsd->post_load_errp &&
        !vmsd->post_load_errp(opaque, version_id, errp)) {
        g_prefix_error(errp, "%s: ", vmsd->name);
        return -EINVAL;
    }
    trace_vmstate_load_state_end(vmsd->name, "end", 0);
    return 0;
}

/* ---- VMDESCRIPTION JSON ---- */

static void json_string(GString *out, const char *s)
{
    g_string_append_c(out, '"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            g_string_append_c(out, '\\');
            g_string_append_c(out, *s);
        } else if ((unsigned char)*s < 0x20) {
            g_string_append_printf(out, "\\u%04x", (unsigned char)*s);
        } else {
            g_string_append_c(out, *s);
        }
    }
    g_string_append_c(out, '"');
}

static void describe_field(GString *out, const VMStateField *field,
                           void *opaque)
{
    g_string_append(out, "{\"name\": ");
    json_string(out, field->name);
    if (field->num) {
        g_string_append_printf(out, ", \"array_len\": %u", field->num);
    }
    g_string_append(out, ", \"type\": ");
    json_string(out, vmstate_type_name(field->type));
    if (field->type == VMS_STRUCT) {
        g_string_append(out, ", \"struct\": {");
        vmstate_describe_json(out, field->vmsd,
                              (uint8_t *)opaque + field->offset);
        g_string_append(out, "}");
    }
    g_string_append_printf(out, ", \"size\": %zu}", field->size);
}

void vmstate_describe_json(GString *out, const VMStateDescription *vmsd,
                           void *opaque)
{
    bool first = true;

    g_string_append(out, "\"vmsd_name\": ");
    json_string(out, vmsd->name);
    g_string_append_printf(out, ", \"version\": %d, \"fields\": [",
                           vmsd->version_id);
    for (const VMStateField *field = vmsd->fields;
         field && field->type != VMS_END; field++) {
        if (field->version_id > vmsd->version_id) {
            continue;
        }
        g_string_append(out, first ? "" : ", ");
        describe_field(out, field, opaque);
        first = false;
    }
    g_string_append(out, "]");

    first = true;
    for (const VMStateDescription *const *s = vmsd->subsections;
         s && *s; s++) {
        if (!subsection_needed(*s, opaque)) {
            continue;
        }
        g_string_append(out, first ? ", \"subsections\": [{" : ", {");
        vmstate_describe_json(out, *s, opaque);
        g_string_append(out, "}");
        first = false;
    }
    if (!first) {
        g_string_append(out, "]");
    }
}

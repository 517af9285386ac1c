/*
 * VMState: declarative descriptions of device state, encoded as QEMU does
 * (untagged big-endian fields, subsections introduced by 0x05).
 */
#ifndef MIGRATION_VMSTATE_H
#define MIGRATION_VMSTATE_H

#include "qemu/osdep.h"
#include "migration/qemu-file.h"

typedef struct VMStateDescription VMStateDescription;

typedef enum VMStateType {
    VMS_END = 0,            /* terminates a field list */
    VMS_BOOL,
    VMS_INT8,
    VMS_UINT8,
    VMS_INT16,
    VMS_UINT16,
    VMS_INT32,
    VMS_UINT32,
    VMS_INT64,
    VMS_UINT64,
    VMS_BUFFER,             /* size raw bytes */
    VMS_UNUSED,             /* size zero bytes on save, skipped on load */
    VMS_STRUCT,             /* nested vmsd, size = sizeof one element */
    /* Encoded as the base type; load fails unless equal to current value. */
    VMS_UINT8_EQUAL,
    VMS_UINT16_EQUAL,
    VMS_UINT32_EQUAL,
    VMS_INT32_EQUAL,
    VMS_INT64_EQUAL,
    VMS_UINT64_EQUAL,
    VMS__MAX
} VMStateType;

typedef struct VMStateField {
    const char *name;
    size_t offset;          /* in the opaque struct */
    size_t size;            /* of one element (bytes for BUFFER/UNUSED) */
    VMStateType type;
    uint32_t num;           /* 0 = scalar, n >= 1 = array of n elements */
    int version_id;         /* present when section version >= this */
    const VMStateDescription *vmsd;     /* VMS_STRUCT */
} VMStateField;

struct VMStateDescription {
    const char *name;
    int version_id;
    int minimum_version_id;
    const VMStateField *fields;                 /* ends with VMS_END */
    const VMStateDescription *const *subsections;   /* NULL-terminated */
    /* Subsections (and top-level devices) are sent only when true. */
    bool (*needed)(void *opaque);
    int (*pre_save)(void *opaque);
    int (*pre_load)(void *opaque);
    int (*post_load)(void *opaque, int version_id);
    /* Like post_load, with an error message; called after post_load. */
    bool (*post_load_errp)(void *opaque, int version_id, GError **errp);
};

#define VMSTATE_SCALAR_V(_f, _s, _t, _type, _v) {                   \
    .name = #_f, .offset = offsetof(_s, _f), .size = sizeof(_t),    \
    .type = (_type), .version_id = (_v) }
#define VMSTATE_ARRAY_V(_f, _s, _n, _t, _type, _v) {                \
    .name = #_f, .offset = offsetof(_s, _f), .size = sizeof(_t),    \
    .type = (_type), .num = (_n), .version_id = (_v) }

#define VMSTATE_BOOL(_f, _s)    VMSTATE_SCALAR_V(_f, _s, bool, VMS_BOOL, 0)
#define VMSTATE_INT8(_f, _s)    VMSTATE_SCALAR_V(_f, _s, int8_t, VMS_INT8, 0)
#define VMSTATE_UINT8(_f, _s)   VMSTATE_SCALAR_V(_f, _s, uint8_t, VMS_UINT8, 0)
#define VMSTATE_INT16(_f, _s)   VMSTATE_SCALAR_V(_f, _s, int16_t, VMS_INT16, 0)
#define VMSTATE_UINT16(_f, _s)  VMSTATE_SCALAR_V(_f, _s, uint16_t, VMS_UINT16, 0)
#define VMSTATE_INT32(_f, _s)   VMSTATE_SCALAR_V(_f, _s, int32_t, VMS_INT32, 0)
#define VMSTATE_UINT32(_f, _s)  VMSTATE_SCALAR_V(_f, _s, uint32_t, VMS_UINT32, 0)
#define VMSTATE_INT64(_f, _s)   VMSTATE_SCALAR_V(_f, _s, int64_t, VMS_INT64, 0)
#define VMSTATE_UINT64(_f, _s)  VMSTATE_SCALAR_V(_f, _s, uint64_t, VMS_UINT64, 0)
#define VMSTATE_INT64_V(_f, _s, _v) \
    VMSTATE_SCALAR_V(_f, _s, int64_t, VMS_INT64, _v)
#define VMSTATE_UINT32_V(_f, _s, _v) \
    VMSTATE_SCALAR_V(_f, _s, uint32_t, VMS_UINT32, _v)
#define VMSTATE_UINT8_EQUAL(_f, _s) \
    VMSTATE_SCALAR_V(_f, _s, uint8_t, VMS_UINT8_EQUAL, 0)
#define VMSTATE_UINT16_EQUAL(_f, _s) \
    VMSTATE_SCALAR_V(_f, _s, uint16_t, VMS_UINT16_EQUAL, 0)
#define VMSTATE_UINT32_EQUAL(_f, _s) \
    VMSTATE_SCALAR_V(_f, _s, uint32_t, VMS_UINT32_EQUAL, 0)
#define VMSTATE_INT32_EQUAL(_f, _s) \
    VMSTATE_SCALAR_V(_f, _s, int32_t, VMS_INT32_EQUAL, 0)
#define VMSTATE_INT64_EQUAL(_f, _s) \
    VMSTATE_SCALAR_V(_f, _s, int64_t, VMS_INT64_EQUAL, 0)
#define VMSTATE_UINT64_EQUAL(_f, _s) \
    VMSTATE_SCALAR_V(_f, _s, uint64_t, VMS_UINT64_EQUAL, 0)
#define VMSTATE_UINT8_ARRAY(_f, _s, _n) \
    VMSTATE_ARRAY_V(_f, _s, _n, uint8_t, VMS_UINT8, 0)
#define VMSTATE_UINT16_ARRAY(_f, _s, _n) \
    VMSTATE_ARRAY_V(_f, _s, _n, uint16_t, VMS_UINT16, 0)
#define VMSTATE_UINT32_ARRAY(_f, _s, _n) \
    VMSTATE_ARRAY_V(_f, _s, _n, uint32_t, VMS_UINT32, 0)
#define VMSTATE_UINT64_ARRAY(_f, _s, _n) \
    VMSTATE_ARRAY_V(_f, _s, _n, uint64_t, VMS_UINT64, 0)
/* A byte array member sent whole, e.g. char name[100]. */
#define VMSTATE_BUFFER(_f, _s) {                                    \
    .name = #_f, .offset = offsetof(_s, _f),                        \
    .size = sizeof(((_s *)0)->_f), .type = VMS_BUFFER }
#define VMSTATE_UNUSED(_n) {                                        \
    .name = "unused", .size = (_n), .type = VMS_UNUSED }
#define VMSTATE_STRUCT(_f, _s, _vmsd, _t) {                         \
    .name = #_f, .offset = offsetof(_s, _f), .size = sizeof(_t),    \
    .type = VMS_STRUCT, .vmsd = &(_vmsd) }
#define VMSTATE_STRUCT_ARRAY(_f, _s, _n, _vmsd, _t) {               \
    .name = #_f, .offset = offsetof(_s, _f), .size = sizeof(_t),    \
    .type = VMS_STRUCT, .num = (_n), .vmsd = &(_vmsd) }
#define VMSTATE_END_OF_LIST() { .type = VMS_END }

/*
 * Write the fields of vmsd for opaque, then its needed subsections.
 * Returns 0 or a negative errno (pre_save failure, or the file's error).
 */
int vmstate_save_state(QEMUFile *f, const VMStateDescription *vmsd,
                       void *opaque);
/*
 * Read fields as written by a sender at version_id, then any subsections.
 * Refuses version_id outside [minimum_version_id, version_id of vmsd],
 * unknown subsections, mismatching "equal" fields.  0 or negative errno.
 */
int vmstate_load_state(QEMUFile *f, const VMStateDescription *vmsd,
                       void *opaque, int version_id, GError **errp);

/*
 * Append the VMDESCRIPTION JSON members of one device (without braces):
 * "vmsd_name": ..., "version": ..., "fields": [...][, "subsections": [...]]
 */
void vmstate_describe_json(GString *out, const VMStateDescription *vmsd,
                           void *opaque);
/* JSON type name of a field type ("uint32", "buffer", ...). */
const char *vmstate_type_name(VMStateType type);

#endif

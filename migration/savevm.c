/*
 * savevm: handler registry and the top-level migration stream.
 *
 * Everything read here comes from the network: every length, id and name
 * is checked before use, and errors say what was wrong and where (section
 * name/id, command, stream offset).
 */
#include "qemu/osdep.h"
#include "qemu/bswap.h"
#include "qemu/thread.h"
#include "qemu/bitmap.h"
#include "migration/savevm.h"
#include "exec/ramblock.h"
#include "trace/trace-migration.h"

const char *savevm_machine_name;

typedef struct SaveStateEntry {
    char idstr[256];
    uint32_t instance_id;
    int version_id;
    uint32_t section_id;
    const SaveVMHandlers *ops;
    const VMStateDescription *vmsd;
    void *opaque;
} SaveStateEntry;

/*
 * The registry of state handlers: the one process-wide table of what a
 * migration carries.  Handlers register at start-up from the main thread;
 * the migration threads only read it while a migration runs.
 */
typedef struct SaveVMRegistry {
    /* In registration order, which is also the order sections are sent. */
    GPtrArray *handlers;
    const LoadvmPostcopyOps *postcopy_ops;
} SaveVMRegistry;

static SaveVMRegistry savevm_registry;

/*
 * Section ids start at 1: a QEMU 7.2 destination resolves PART/END ids
 * against every handler's last loaded id, which is 0 for handlers not
 * loaded yet, so a live section numbered 0 gets dispatched to the wrong
 * handler (seen: RAM as id 0 reached "timer" and failed the load).
 */
#define FIRST_SECTION_ID 1

static GPtrArray *handlers(void)
{
    if (!savevm_registry.handlers) {
        savevm_registry.handlers = g_ptr_array_new_with_free_func(g_free);
    }
    return savevm_registry.handlers;
}

/*
 * A section's id is its place in the registry: the same set of handlers
 * always numbers its sections the same way, whatever came and went before.
 */
static void renumber_sections(void)
{
    GPtrArray *a = handlers();

    for (guint i = 0; i < a->len; i++) {
        ((SaveStateEntry *)a->pdata[i])->section_id = FIRST_SECTION_ID + i;
    }
}

static SaveStateEntry *find_se(const char *idstr, uint32_t instance_id)
{
    GPtrArray *a = handlers();

    for (guint i = 0; i < a->len; i++) {
        SaveStateEntry *se = a->pdata[i];

        if (se->instance_id == instance_id && !strcmp(se->idstr, idstr)) {
            return se;
        }
    }
    return NULL;
}

static SaveStateEntry *se_add(const char *idstr, uint32_t instance_id,
                              int version_id)
{
    SaveStateEntry *se;

    if (strlen(idstr) == 0 || strlen(idstr) > 255 ||
        find_se(idstr, instance_id)) {
        return NULL;
    }
    se = g_new0(SaveStateEntry, 1);
    g_strlcpy(se->idstr, idstr, sizeof(se->idstr));
    se->instance_id = instance_id;
    se->version_id = version_id;
    g_ptr_array_add(handlers(), se);
    renumber_sections();
    return se;
}

int register_savevm_live(const char *idstr, uint32_t instance_id,
                         int version_id, const SaveVMHandlers *ops,
                         void *opaque)
{
    SaveStateEntry *se = se_add(idstr, instance_id, version_id);

    if (!se) {
        return -EEXIST;
    }
    se->ops = ops;
    se->opaque = opaque;
    return 0;
}

int vmstate_register(const char *idstr, uint32_t instance_id,
                     const VMStateDescription *vmsd, void *opaque)
{
    SaveStateEntry *se = se_add(idstr ? idstr : vmsd->name, instance_id,
                                vmsd->version_id);

    if (!se) {
        return -EEXIST;
    }
    se->vmsd = vmsd;
    se->opaque = opaque;
    return 0;
}

void unregister_savevm(const char *idstr, uint32_t instance_id)
{
    SaveStateEntry *se = find_se(idstr, instance_id);

    if (se) {
        g_ptr_array_remove(handlers(), se);
        renumber_sections();
    }
}

void vmstate_unregister(const VMStateDescription *vmsd, void *opaque)
{
    GPtrArray *a = handlers();

    for (guint i = 0; i < a->len; i++) {
        SaveStateEntry *se = a->pdata[i];

        if (se->vmsd == vmsd && se->opaque == opaque) {
            g_ptr_array_remove_index(a, i);
            renumber_sections();
            return;
        }
    }
}

static const char *machine_name(void)
{
    return savevm_machine_name ? savevm_machine_name : "none";
}

/* ---- source ---- */

static bool se_is_live(SaveStateEntry *se)
{
    return se->ops && (!se->ops->is_active ||
                       se->ops->is_active(se->opaque));
}

static bool se_has_postcopy(SaveStateEntry *se)
{
    return se->ops && se->ops->has_postcopy &&
           se->ops->has_postcopy(se->opaque);
}

static void save_section_header(QEMUFile *f, SaveStateEntry *se, int type)
{
    qemu_put_byte(f, type);
    qemu_put_be32(f, se->section_id);
    if (type == QEMU_VM_SECTION_START || type == QEMU_VM_SECTION_FULL) {
        qemu_put_counted_string(f, se->idstr);
        qemu_put_be32(f, se->instance_id);
        qemu_put_be32(f, se->version_id);
    }
}

static void save_section_footer(QEMUFile *f, SaveStateEntry *se)
{
    qemu_put_byte(f, QEMU_VM_SECTION_FOOTER);
    qemu_put_be32(f, se->section_id);
}

/* Record a handler's failure on f (if it did not) and return it. */
static int handler_failed(QEMUFile *f, SaveStateEntry *se, const char *what,
                          int ret)
{
    qemu_file_set_error_obj(f, ret, g_error_new(FERRY_ERROR, 0,
                            "%s of '%s' failed: %s", what, se->idstr,
                            g_strerror(-ret)));
    return qemu_file_get_error(f);
}

void qemu_savevm_state_header(QEMUFile *f)
{
    const char *name = machine_name();

    trace_savevm_state_header();
    qemu_put_be32(f, QEMU_VM_FILE_MAGIC);
    qemu_put_be32(f, QEMU_VM_FILE_VERSION);
    /* "configuration": be32 len + name; no validated capabilities */
    qemu_put_byte(f, QEMU_VM_CONFIGURATION);
    qemu_put_be32(f, strlen(name));
    qemu_put_buffer(f, (const uint8_t *)name, strlen(name));
}

int qemu_savevm_state_setup(QEMUFile *f, GError **errp)
{
    GPtrArray *a = handlers();

    trace_savevm_state_setup();
    for (guint i = 0; i < a->len; i++) {
        SaveStateEntry *se = a->pdata[i];
        int ret;

        if (!se_is_live(se) || !se->ops->save_setup) {
            continue;
        }
        trace_savevm_section_start(se->idstr, se->section_id);
        save_section_header(f, se, QEMU_VM_SECTION_START);
        ret = se->ops->save_setup(f, se->opaque);
        save_section_footer(f, se);
        trace_savevm_section_end(se->idstr, se->section_id, ret);
        if (ret < 0) {
            handler_failed(f, se, "setup", ret);
            qemu_file_get_error_obj(f, errp);
            return ret;
        }
    }
    qemu_fflush(f);
    if (qemu_file_get_error_obj(f, errp)) {
        return qemu_file_get_error(f);
    }
    return 0;
}

int qemu_savevm_state_iterate(QEMUFile *f, bool postcopy)
{
    GPtrArray *a = handlers();
    int all_done = 1;

    trace_savevm_state_iterate(postcopy);
    for (guint i = 0; i < a->len; i++) {
        SaveStateEntry *se = a->pdata[i];
        int ret;

        if (!se_is_live(se) || !se->ops->save_live_iterate) {
            continue;
        }
        if (postcopy && !se_has_postcopy(se)) {
            trace_savevm_section_skip(se->idstr, se->section_id);
            continue;
        }
        if (qemu_file_rate_limit(f)) {
            return qemu_file_get_error(f) ? qemu_file_get_error(f) : 0;
        }
        trace_savevm_section_start(se->idstr, se->section_id);
        save_section_header(f, se, QEMU_VM_SECTION_PART);
        ret = se->ops->save_live_iterate(f, se->opaque);
        save_section_footer(f, se);
        trace_savevm_section_end(se->idstr, se->section_id, ret);
        if (ret < 0) {
            return handler_failed(f, se, "iterate", ret);
        }
        if (ret == 0) {
            all_done = 0;
        }
    }
    return qemu_file_get_error(f) ? qemu_file_get_error(f) : all_done;
}

int qemu_savevm_state_complete_precopy_iterable(QEMUFile *f,
                                                bool in_postcopy)
{
    GPtrArray *a = handlers();

    trace_savevm_state_complete_precopy(in_postcopy);
    for (guint i = 0; i < a->len; i++) {
        SaveStateEntry *se = a->pdata[i];
        int ret;

        if (!se_is_live(se) || !se->ops->save_live_complete_precopy ||
            (in_postcopy && se_has_postcopy(se))) {
            continue;
        }
        trace_savevm_section_start(se->idstr, se->section_id);
        save_section_header(f, se, QEMU_VM_SECTION_END);
        ret = se->ops->save_live_complete_precopy(f, se->opaque);
        save_section_footer(f, se);
        trace_savevm_section_end(se->idstr, se->section_id, ret);
        if (ret < 0) {
            return handler_failed(f, se, "completion", ret);
        }
    }
    return qemu_file_get_error(f);
}

static bool se_device_needed(SaveStateEntry *se)
{
    return se->vmsd && (!se->vmsd->needed || se->vmsd->needed(se->opaque));
}

static void vmdesc_add_device(GString *json, SaveStateEntry *se, bool first)
{
    g_string_append(json, first ? "{\"name\": \"" : ", {\"name\": \"");
    /* idstrs are our own registrations; keep them JSON-safe anyway */
    for (const char *p = se->idstr; *p; p++) {
        if (*p == '"' || *p == '\\') {
            g_string_append_c(json, '\\');
        }
        g_string_append_c(json, *p);
    }
    g_string_append_printf(json, "\", \"instance_id\": %u, ",
                           se->instance_id);
    vmstate_describe_json(json, se->vmsd, se->opaque);
    g_string_append(json, "}");
}

int qemu_savevm_state_complete_precopy_non_iterable(QEMUFile *f,
                                                    bool in_postcopy,
                                                    bool inactivate)
{
    GPtrArray *a = handlers();
    g_autoptr(GString) json = g_string_new(NULL);
    bool first = true;

    g_string_printf(json, "{\"page_size\": %llu, \"devices\": [",
                    (unsigned long long)TARGET_PAGE_SIZE);
    for (guint i = 0; i < a->len; i++) {
        SaveStateEntry *se = a->pdata[i];
        int ret;

        if (!se_device_needed(se)) {
            trace_savevm_section_skip(se->idstr, se->section_id);
            continue;
        }
        trace_savevm_section_start(se->idstr, se->section_id);
        trace_vmstate_save(se->idstr);
        save_section_header(f, se, QEMU_VM_SECTION_FULL);
        ret = vmstate_save_state(f, se->vmsd, se->opaque);
        save_section_footer(f, se);
        trace_savevm_section_end(se->idstr, se->section_id, ret);
        if (ret < 0) {
            return handler_failed(f, se, "save", ret);
        }
        vmdesc_add_device(json, se, first);
        first = false;
    }
    g_string_append(json, "]}");
    if (!in_postcopy) {
        /* the postcopy package carries on after the devices: no EOF */
        qemu_put_byte(f, QEMU_VM_EOF);
        qemu_put_byte(f, QEMU_VM_VMDESCRIPTION);
        qemu_put_be32(f, json->len);
        qemu_put_buffer(f, (const uint8_t *)json->str, json->len);
    }
    qemu_fflush(f);
    return qemu_file_get_error(f);
}

int qemu_savevm_state_complete_precopy(QEMUFile *f, bool iterable_only,
                                       bool inactivate)
{
    int ret = qemu_savevm_state_complete_precopy_iterable(f, false);

    if (ret < 0 || iterable_only) {
        qemu_fflush(f);
        return ret < 0 ? ret : qemu_file_get_error(f);
    }
    return qemu_savevm_state_complete_precopy_non_iterable(f, false,
                                                           inactivate);
}

int qemu_savevm_state_complete_postcopy(QEMUFile *f)
{
    GPtrArray *a = handlers();

    trace_savevm_state_complete_postcopy();
    for (guint i = 0; i < a->len; i++) {
        SaveStateEntry *se = a->pdata[i];
        int ret;

        if (!se_is_live(se) || !se->ops->save_live_complete_postcopy) {
            continue;
        }
        trace_savevm_section_start(se->idstr, se->section_id);
        save_section_header(f, se, QEMU_VM_SECTION_END);
        ret = se->ops->save_live_complete_postcopy(f, se->opaque);
        save_section_footer(f, se);
        trace_savevm_section_end(se->idstr, se->section_id, ret);
        if (ret < 0) {
            return handler_failed(f, se, "postcopy completion", ret);
        }
    }
    qemu_put_byte(f, QEMU_VM_EOF);
    qemu_fflush(f);
    return qemu_file_get_error(f);
}

static void pending(bool exact, uint64_t *must_precopy,
                    uint64_t *can_postcopy)
{
    GPtrArray *a = handlers();

    *must_precopy = 0;
    *can_postcopy = 0;
    for (guint i = 0; i < a->len; i++) {
        SaveStateEntry *se = a->pdata[i];
        void (*fn)(void *, uint64_t *, uint64_t *);

        if (!se_is_live(se)) {
            continue;
        }
        fn = exact ? se->ops->state_pending_exact :
                     se->ops->state_pending_estimate;
        if (fn) {
            fn(se->opaque, must_precopy, can_postcopy);
        }
    }
}

void qemu_savevm_state_pending_estimate(uint64_t *must_precopy,
                                        uint64_t *can_postcopy)
{
    pending(false, must_precopy, can_postcopy);
}

void qemu_savevm_state_pending_exact(uint64_t *must_precopy,
                                     uint64_t *can_postcopy)
{
    pending(true, must_precopy, can_postcopy);
}

void qemu_savevm_state_cleanup(void)
{
    GPtrArray *a = handlers();

    trace_savevm_state_cleanup();
    for (guint i = 0; i < a->len; i++) {
        SaveStateEntry *se = a->pdata[i];

        if (se->ops && se->ops->save_cleanup) {
            se->ops->save_cleanup(se->opaque);
        }
    }
}

/* ---- commands (source) ---- */

int qemu_savevm_command_send(QEMUFile *f, enum qemu_vm_cmd cmd,
                             uint16_t len, const uint8_t *data)
{
    trace_savevm_command_send(cmd, len);
    qemu_put_byte(f, QEMU_VM_COMMAND);
    qemu_put_be16(f, cmd);
    qemu_put_be16(f, len);
    if (len) {
        qemu_put_buffer(f, data, len);
    }
    return qemu_fflush(f);
}

int qemu_savevm_send_open_return_path(QEMUFile *f)
{
    trace_savevm_send_open_return_path();
    return qemu_savevm_command_send(f, MIG_CMD_OPEN_RETURN_PATH, 0, NULL);
}

int qemu_savevm_send_ping(QEMUFile *f, uint32_t value)
{
    uint32_t be = GUINT32_TO_BE(value);

    trace_savevm_send_ping(value);
    return qemu_savevm_command_send(f, MIG_CMD_PING, 4, (uint8_t *)&be);
}

int qemu_savevm_send_postcopy_advise_sizes(QEMUFile *f, uint64_t summary,
                                           uint64_t target_page_size)
{
    uint64_t be[2] = { GUINT64_TO_BE(summary),
                       GUINT64_TO_BE(target_page_size) };

    trace_qemu_savevm_send_postcopy_advise(summary, target_page_size);
    return qemu_savevm_command_send(f, MIG_CMD_POSTCOPY_ADVISE, 16,
                                    (uint8_t *)be);
}

int qemu_savevm_send_postcopy_advise(QEMUFile *f)
{
    uint64_t summary = 0;
    RAMBlock *rb;

    rcu_read_lock();
    RAMBLOCK_FOREACH_MIGRATABLE(rb) {
        summary |= qemu_ram_pagesize(rb);
    }
    rcu_read_unlock();
    return qemu_savevm_send_postcopy_advise_sizes(f, summary,
                                                  TARGET_PAGE_SIZE);
}

int qemu_savevm_send_postcopy_listen(QEMUFile *f)
{
    trace_savevm_send_postcopy_listen();
    return qemu_savevm_command_send(f, MIG_CMD_POSTCOPY_LISTEN, 0, NULL);
}

int qemu_savevm_send_postcopy_run(QEMUFile *f)
{
    trace_savevm_send_postcopy_run();
    return qemu_savevm_command_send(f, MIG_CMD_POSTCOPY_RUN, 0, NULL);
}

int qemu_savevm_send_postcopy_ram_discard(QEMUFile *f, const char *idstr,
                                          uint16_t n, const uint64_t *start,
                                          const uint64_t *length)
{
    size_t namelen = strlen(idstr);
    uint8_t buf[3 + 255 + 16 * MAX_DISCARDS_PER_COMMAND];
    size_t pos = 0;

    trace_qemu_savevm_send_postcopy_ram_discard(idstr, n);
    if (n < 1 || n > MAX_DISCARDS_PER_COMMAND || namelen < 1 ||
        namelen > 255) {
        qemu_file_set_error_obj(f, -EINVAL, g_error_new(FERRY_ERROR, 0,
                                "invalid discard command for '%s' (%u "
                                "ranges)", idstr, n));
        return -EINVAL;
    }
    buf[pos++] = 0;                         /* version */
    buf[pos++] = namelen;
    memcpy(buf + pos, idstr, namelen);
    pos += namelen;
    buf[pos++] = 0;                         /* terminator */
    for (unsigned int i = 0; i < n; i++) {
        uint64_t be[2] = { GUINT64_TO_BE(start[i]),
                           GUINT64_TO_BE(length[i]) };

        memcpy(buf + pos, be, sizeof(be));
        pos += sizeof(be);
    }
    return qemu_savevm_command_send(f, MIG_CMD_POSTCOPY_RAM_DISCARD, pos,
                                    buf);
}

int qemu_savevm_send_packaged(QEMUFile *f, const uint8_t *buf, size_t len)
{
    uint32_t be;

    trace_qemu_savevm_send_packaged(len);
    if (len > MAX_VM_CMD_PACKAGED_SIZE) {
        qemu_file_set_error_obj(f, -EINVAL, g_error_new(FERRY_ERROR, 0,
                                "PACKAGED blob too large (%zu bytes)", len));
        return -EINVAL;
    }
    be = GUINT32_TO_BE(len);
    qemu_savevm_command_send(f, MIG_CMD_PACKAGED, 4, (uint8_t *)&be);
    qemu_put_buffer(f, buf, len);
    return qemu_fflush(f);
}

int qemu_savevm_send_recv_bitmap(QEMUFile *f, const char *idstr)
{
    size_t n = strlen(idstr);
    uint8_t buf[256];

    trace_savevm_send_recv_bitmap(idstr);
    if (n < 1 || n > 255) {
        qemu_file_set_error(f, -EINVAL);
        return -EINVAL;
    }
    buf[0] = n;
    memcpy(buf + 1, idstr, n);
    return qemu_savevm_command_send(f, MIG_CMD_RECV_BITMAP, n + 1, buf);
}

int qemu_savevm_send_postcopy_resume(QEMUFile *f)
{
    trace_savevm_send_postcopy_resume();
    return qemu_savevm_command_send(f, MIG_CMD_POSTCOPY_RESUME, 0, NULL);
}

/* ---- destination ---- */

/*
 * What a START/FULL told us about one handler: the sender's id for it
 * and the version.  One per handler at most (keyed by the id in
 * LoadVMContext.sections), as QEMU keeps one loaded id per handler, so a
 * stream that restarts a handler under fresh ids cannot grow the table.
 */
typedef struct LoadStateEntry {
    SaveStateEntry *se;
    uint32_t section_id;
    int version_id;
} LoadStateEntry;

static gboolean load_entry_is_for(gpointer key, gpointer value,
                                  gpointer opaque)
{
    return ((LoadStateEntry *)value)->se == opaque;
}

void loadvm_register_postcopy_ops(const LoadvmPostcopyOps *ops)
{
    savevm_registry.postcopy_ops = ops;
}

void loadvm_context_init(LoadVMContext *ctx, QEMUFile *from_src)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->from_src = from_src;
    ctx->postcopy_ops = savevm_registry.postcopy_ops;
    qemu_mutex_init(&ctx->rp_mutex);
    qemu_mutex_init(&ctx->sections_lock);
    ctx->sections = g_hash_table_new_full(g_direct_hash, g_direct_equal,
                                          NULL, g_free);
}

void loadvm_context_destroy(LoadVMContext *ctx)
{
    if (ctx->to_src) {
        qemu_fclose(ctx->to_src);
        ctx->to_src = NULL;
    }
    g_clear_pointer(&ctx->sections, g_hash_table_destroy);
    qemu_mutex_destroy(&ctx->rp_mutex);
    qemu_mutex_destroy(&ctx->sections_lock);
}

/* Turn the file's sticky error into errp, prefixed with context. */
static int stream_fail(QEMUFile *f, GError **errp, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);
static int stream_fail(QEMUFile *f, GError **errp, const char *fmt, ...)
{
    GError *err = NULL;
    g_autofree char *what = NULL;
    va_list ap;
    int ret = qemu_file_get_error_obj(f, &err);

    va_start(ap, fmt);
    what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_setg(errp, "%s: %s", what, err ? err->message : "stream error");
    g_clear_error(&err);
    return ret ? ret : -EIO;
}

static bool check_section_footer(QEMUFile *f, SaveStateEntry *se,
                                 uint32_t section_id, GError **errp)
{
    int type = qemu_get_byte(f);
    uint32_t id;

    if (qemu_file_get_error(f)) {
        stream_fail(f, errp, "reading footer of section '%s' (id %u)",
                    se->idstr, section_id);
        return false;
    }
    if (type != QEMU_VM_SECTION_FOOTER) {
        error_setg(errp, "Missing section footer for '%s' (id %u): got "
                   "0x%02x at offset %" PRIu64, se->idstr, section_id, type,
                   qemu_file_tell(f) - 1);
        return false;
    }
    id = qemu_get_be32(f);
    if (qemu_file_get_error(f)) {
        stream_fail(f, errp, "reading footer of section '%s' (id %u)",
                    se->idstr, section_id);
        return false;
    }
    if (id != section_id) {
        error_setg(errp, "Mismatched section id in footer for '%s': read "
                   "%u expected %u", se->idstr, id, section_id);
        return false;
    }
    return true;
}

/* Load one section body with the handler; errp names the section. */
static int load_section_body(QEMUFile *f, SaveStateEntry *se, int version_id,
                             GError **errp)
{
    GError *err = NULL;
    int ret;

    trace_vmstate_load(se->idstr, version_id);
    if (se->vmsd) {
        ret = vmstate_load_state(f, se->vmsd, se->opaque, version_id, &err);
    } else if (se->ops && se->ops->load_state) {
        ret = se->ops->load_state(f, se->opaque, version_id);
        if (ret >= 0 && qemu_file_get_error(f)) {
            ret = qemu_file_get_error(f);
        }
        if (ret < 0) {
            qemu_file_get_error_obj(f, &err);
        }
    } else {
        error_setg(errp, "Section '%s' cannot be loaded", se->idstr);
        return -EINVAL;
    }
    if (ret < 0) {
        error_setg(errp, "error while loading state for instance 0x%x of "
                   "device '%s': %s", se->instance_id, se->idstr,
                   err ? err->message : g_strerror(-ret));
        g_clear_error(&err);
    }
    return ret;
}

static int load_section_start_full(QEMUFile *f, LoadVMContext *ctx, int type,
                                   GError **errp)
{
    uint32_t section_id, instance_id, version_id;
    char idstr[256];
    SaveStateEntry *se;
    LoadStateEntry *le;
    int ret;

    section_id = qemu_get_be32(f);
    if (!qemu_get_counted_string(f, idstr)) {
        if (qemu_file_get_error(f)) {
            return stream_fail(f, errp, "reading section %u header",
                               section_id);
        }
        error_setg(errp, "Empty ID string for section %u", section_id);
        return -EINVAL;
    }
    instance_id = qemu_get_be32(f);
    version_id = qemu_get_be32(f);
    if (qemu_file_get_error(f)) {
        return stream_fail(f, errp, "reading header of section '%s'", idstr);
    }
    trace_qemu_loadvm_state_section_startfull(section_id, idstr,
                                              instance_id, version_id);
    se = find_se(idstr, instance_id);
    if (!se) {
        error_setg(errp, "Unknown savevm section or instance '%s' %u. "
                   "Make sure that your current VM setup matches your "
                   "saved VM setup, including any hotplugged devices",
                   idstr, instance_id);
        return -EINVAL;
    }
    if (version_id > (uint32_t)se->version_id || version_id > INT_MAX) {
        error_setg(errp, "savevm: unsupported version %u for '%s' v%d",
                   version_id, idstr, se->version_id);
        return -EINVAL;
    }

    qemu_mutex_lock(&ctx->sections_lock);
    le = g_hash_table_lookup(ctx->sections, GUINT_TO_POINTER(section_id));
    if (le && le->se != se) {
        qemu_mutex_unlock(&ctx->sections_lock);
        error_setg(errp, "Section id %u of '%s' is already used by '%s'",
                   section_id, idstr, le->se->idstr);
        return -EINVAL;
    }
    if (!le) {
        /*
         * A new id for a handler loaded before replaces its old id, as in
         * QEMU 7.2 (qemu_loadvm_section_start_full stores the id in the
         * SaveStateEntry): PART/END under the old id are then unknown.
         * The table has at most one entry per registered handler.
         */
        le = g_hash_table_find(ctx->sections, load_entry_is_for, se);
        if (le) {
            trace_qemu_loadvm_section_id_replaced(idstr, le->section_id,
                                                  section_id,
                                                  g_hash_table_size(ctx->sections));
            g_hash_table_steal(ctx->sections,
                               GUINT_TO_POINTER(le->section_id));
        } else {
            le = g_new0(LoadStateEntry, 1);
            le->se = se;
        }
        le->section_id = section_id;
        g_hash_table_insert(ctx->sections, GUINT_TO_POINTER(section_id), le);
    }
    le->version_id = version_id;
    qemu_mutex_unlock(&ctx->sections_lock);

    if (type == QEMU_VM_SECTION_START && !se->ops) {
        error_setg(errp, "Section '%s' is not a live section", idstr);
        return -EINVAL;
    }
    ret = load_section_body(f, se, version_id, errp);
    if (ret < 0) {
        return ret;
    }
    return check_section_footer(f, se, section_id, errp) ? 0 : -EINVAL;
}

static int load_section_part_end(QEMUFile *f, LoadVMContext *ctx,
                                 GError **errp)
{
    uint32_t section_id = qemu_get_be32(f);
    LoadStateEntry *le;
    SaveStateEntry *se;
    int version_id, ret;

    if (qemu_file_get_error(f)) {
        return stream_fail(f, errp, "reading section id");
    }
    trace_qemu_loadvm_state_section_partend(section_id);
    qemu_mutex_lock(&ctx->sections_lock);
    le = g_hash_table_lookup(ctx->sections, GUINT_TO_POINTER(section_id));
    se = le ? le->se : NULL;
    version_id = le ? le->version_id : 0;
    qemu_mutex_unlock(&ctx->sections_lock);
    if (!se) {
        error_setg(errp, "Unknown section id %u at offset %" PRIu64,
                   section_id, qemu_file_tell(f) - 5);
        return -EINVAL;
    }
    if (!se->ops) {
        error_setg(errp, "Section '%s' (id %u) is not a live section",
                   se->idstr, section_id);
        return -EINVAL;
    }
    ret = load_section_body(f, se, version_id, errp);
    if (ret < 0) {
        return ret;
    }
    return check_section_footer(f, se, section_id, errp) ? 0 : -EINVAL;
}

/* ---- commands (destination) ---- */

static const struct {
    const char *name;
    int len;                /* -1: variable */
} mig_cmd_args[MIG_CMD_MAX] = {
    [MIG_CMD_INVALID] = { "INVALID", -1 },
    [MIG_CMD_OPEN_RETURN_PATH] = { "OPEN_RETURN_PATH", 0 },
    [MIG_CMD_PING] = { "PING", 4 },
    [MIG_CMD_POSTCOPY_ADVISE] = { "POSTCOPY_ADVISE", -1 },
    [MIG_CMD_POSTCOPY_LISTEN] = { "POSTCOPY_LISTEN", 0 },
    [MIG_CMD_POSTCOPY_RUN] = { "POSTCOPY_RUN", 0 },
    [MIG_CMD_POSTCOPY_RAM_DISCARD] = { "POSTCOPY_RAM_DISCARD", -1 },
    [MIG_CMD_PACKAGED] = { "PACKAGED", 4 },
    [MIG_CMD_ENABLE_COLO] = { "ENABLE_COLO", 0 },
    [MIG_CMD_POSTCOPY_RESUME] = { "POSTCOPY_RESUME", 0 },
    [MIG_CMD_RECV_BITMAP] = { "RECV_BITMAP", -1 },
};


static bool have_postcopy(LoadVMContext *ctx, const char *cmd, GError **errp)
{
    if (!ctx->postcopy_ops) {
        error_setg(errp, "%s: postcopy not supported", cmd);
        return false;
    }
    return true;
}

static int cmd_open_return_path(LoadVMContext *ctx, QEMUFile *f,
                                 GError **errp)
{
    QEMUFile *main_f = ctx->from_src ? ctx->from_src : f;

    if (ctx->to_src) {
        error_setg(errp, "OPEN_RETURN_PATH: return path already open");
        return -EINVAL;
    }
    ctx->to_src = qemu_file_get_return_path(main_f);
    if (!ctx->to_src) {
        error_setg(errp, "OPEN_RETURN_PATH: this channel ('%s') cannot carry "
                   "a return path", qio_channel_get_name(
                       qemu_file_get_ioc(main_f)));
        return -ENOTSUP;
    }
    return 0;
}

static int cmd_ping(LoadVMContext *ctx, const uint8_t *data, GError **errp)
{
    uint32_t value = ldl_be_p(data);
    int ret;

    trace_loadvm_process_command_ping(value);
    if (!ctx->to_src) {
        error_setg(errp, "PING (%u) received without a return path", value);
        return -EINVAL;
    }
    ret = migrate_send_rp_pong(ctx, value);
    if (ret < 0) {
        error_setg(errp, "PING (%u): cannot send PONG: %s", value,
                   g_strerror(-ret));
    }
    return ret;
}

static int cmd_advise(LoadVMContext *ctx, const uint8_t *data, uint16_t len,
                      GError **errp)
{
    if (len != 0 && len != 16) {
        error_setg(errp, "bad length for command POSTCOPY_ADVISE: got %u "
                   "expected 0 or 16", len);
        return -ERANGE;
    }
    if (!have_postcopy(ctx, "POSTCOPY_ADVISE", errp)) {
        return -ENOTSUP;
    }
    if (len == 0) {
        if (!ctx->postcopy_ops->advise_nodata) {
            error_setg(errp, "POSTCOPY_ADVISE without page sizes: postcopy "
                       "of dirty bitmaps is not supported");
            return -ENOTSUP;
        }
        return ctx->postcopy_ops->advise_nodata(ctx, errp) ? 0 : -EINVAL;
    }
    if (!ctx->postcopy_ops->advise) {
        error_setg(errp, "POSTCOPY_ADVISE: postcopy not supported");
        return -ENOTSUP;
    }
    return ctx->postcopy_ops->advise(ctx, ldq_be_p(data), ldq_be_p(data + 8),
                                     errp) ? 0 : -EINVAL;
}

/*
 * u8 version (0), u8 namelen, name, u8 0, then N x (be64 start, be64 len).
 */
static int cmd_discard(LoadVMContext *ctx, const uint8_t *data, uint16_t len,
                       GError **errp)
{
    const char *cmd = "POSTCOPY_RAM_DISCARD";
    char idstr[256];
    g_autofree uint64_t *starts = NULL;
    g_autofree uint64_t *lens = NULL;
    unsigned int namelen, n;

    if (len < 20) {
        error_setg(errp, "%s: payload too short (%u bytes)", cmd, len);
        return -EINVAL;
    }
    if (data[0] != 0) {
        error_setg(errp, "%s: unsupported version %u", cmd, data[0]);
        return -EINVAL;
    }
    namelen = data[1];
    if (namelen == 0 || 3 + namelen > len) {
        error_setg(errp, "%s: bad block name length %u (payload %u bytes)",
                   cmd, namelen, len);
        return -EINVAL;
    }
    if (data[2 + namelen] != 0) {
        error_setg(errp, "%s: missing terminator after the block name", cmd);
        return -EINVAL;
    }
    if (memchr(data + 2, 0, namelen)) {
        error_setg(errp, "%s: block name contains a NUL byte", cmd);
        return -EINVAL;
    }
    memcpy(idstr, data + 2, namelen);
    idstr[namelen] = 0;
    if ((len - 3 - namelen) % 16 != 0) {
        error_setg(errp, "%s: '%s': range list of %u bytes is not a "
                   "multiple of 16", cmd, idstr, len - 3 - namelen);
        return -EINVAL;
    }
    n = (len - 3 - namelen) / 16;
    if (n < 1) {
        error_setg(errp, "%s: '%s': no ranges", cmd, idstr);
        return -EINVAL;
    }
    starts = g_new(uint64_t, n);
    lens = g_new(uint64_t, n);
    for (unsigned int i = 0; i < n; i++) {
        const uint8_t *p = data + 3 + namelen + 16 * i;

        starts[i] = ldq_be_p(p);
        lens[i] = ldq_be_p(p + 8);
        if (starts[i] + lens[i] < starts[i]) {
            error_setg(errp, "%s: '%s': range %u overflows (start 0x%"
                       PRIx64 " length 0x%" PRIx64 ")", cmd, idstr, i,
                       starts[i], lens[i]);
            return -EINVAL;
        }
    }
    if (!have_postcopy(ctx, cmd, errp) || !ctx->postcopy_ops->discard) {
        if (errp && !*errp) {
            error_setg(errp, "%s: postcopy not supported", cmd);
        }
        return -ENOTSUP;
    }
    return ctx->postcopy_ops->discard(ctx, idstr, n, starts, lens, errp) ?
           0 : -EINVAL;
}

static int cmd_hook(LoadVMContext *ctx, const char *cmd,
                    bool (*hook)(LoadVMContext *, GError **), GError **errp)
{
    if (!have_postcopy(ctx, cmd, errp)) {
        return -ENOTSUP;
    }
    if (!hook) {
        error_setg(errp, "%s: not supported", cmd);
        return -ENOTSUP;
    }
    return hook(ctx, errp) ? 0 : -EINVAL;
}

/*
 * Read a blob of size bytes, growing the buffer as data arrives so that a
 * lying length costs memory only as far as the stream really goes.
 */
static uint8_t *read_blob(QEMUFile *f, uint32_t size)
{
    const size_t chunk = 1 << 20;
    size_t cap = MIN(size, chunk), done = 0;
    uint8_t *buf = g_malloc(cap ? cap : 1);

    while (done < size) {
        size_t n = MIN(chunk, size - done);

        if (done + n > cap) {
            cap = MIN((size_t)size, MAX(cap * 2, done + n));
            buf = g_realloc(buf, cap);
        }
        if (qemu_get_buffer(f, buf + done, n) != n) {
            g_free(buf);
            return NULL;
        }
        done += n;
    }
    return buf;
}

static int cmd_packaged(QEMUFile *f, LoadVMContext *ctx,
                        const uint8_t *data, GError **errp)
{
    uint32_t size = ldl_be_p(data);
    QEMUFile *blob;
    uint8_t *buf;
    int ret;

    trace_loadvm_handle_cmd_packaged(size);
    if (size > MAX_VM_CMD_PACKAGED_SIZE) {
        error_setg(errp, "PACKAGED: blob of %u bytes exceeds the limit of "
                   "%llu", size, (unsigned long long)MAX_VM_CMD_PACKAGED_SIZE);
        return -E2BIG;
    }
    if (ctx->package_depth) {
        error_setg(errp, "PACKAGED: nested package");
        return -EINVAL;
    }
    buf = read_blob(f, size);
    trace_loadvm_handle_cmd_packaged_received(buf ? 0 : -EIO);
    if (!buf) {
        return stream_fail(f, errp, "PACKAGED: reading the %u byte blob",
                           size);
    }
    blob = qemu_file_new_input(qio_channel_new_from_bytes_take(buf, size));
    /* the file took its own reference; drop ours */
    qio_channel_unref(qemu_file_get_ioc(blob));
    ctx->package_depth++;
    ret = qemu_loadvm_state_main(blob, ctx, errp);
    ctx->package_depth--;
    trace_loadvm_handle_cmd_packaged_main(ret);
    qemu_fclose(blob);
    if (ret < 0) {
        g_prefix_error(errp, "in PACKAGED blob: ");
    } else if (ret == 0 && ctx->postcopy_listening) {
        /* The listen thread owns the stream now: we must not read on. */
        error_setg(errp, "PACKAGED blob started POSTCOPY_LISTEN but did not "
                   "end with POSTCOPY_RUN");
        ret = -EINVAL;
    }
    return ret;
}

static int cmd_recv_bitmap(LoadVMContext *ctx, const uint8_t *data,
                           uint16_t len, GError **errp)
{
    char idstr[256];

    if (len < 2 || data[0] + 1 != len || memchr(data + 1, 0, data[0])) {
        error_setg(errp, "RECV_BITMAP: bad payload (%u bytes)", len);
        return -EINVAL;
    }
    memcpy(idstr, data + 1, data[0]);
    idstr[data[0]] = 0;
    trace_loadvm_handle_recv_bitmap(idstr);
    if (!have_postcopy(ctx, "RECV_BITMAP", errp) ||
        !ctx->postcopy_ops->recv_bitmap) {
        if (errp && !*errp) {
            error_setg(errp, "RECV_BITMAP: not supported");
        }
        return -ENOTSUP;
    }
    return ctx->postcopy_ops->recv_bitmap(ctx, idstr, errp) ? 0 : -EINVAL;
}

/* Returns 0, LOADVM_QUIT, or negative with errp set. */
static int loadvm_process_command(QEMUFile *f, LoadVMContext *ctx,
                                  GError **errp)
{
    uint64_t offset = qemu_file_tell(f) - 1;
    uint16_t cmd = qemu_get_be16(f);
    uint16_t len = qemu_get_be16(f);
    g_autofree uint8_t *data = NULL;

    if (qemu_file_get_error(f)) {
        return stream_fail(f, errp, "reading command header at offset %"
                           PRIu64, offset);
    }
    if (cmd == MIG_CMD_INVALID || cmd >= MIG_CMD_MAX) {
        error_setg(errp, "Invalid command %u at offset %" PRIu64, cmd,
                   offset);
        return -EINVAL;
    }
    if (mig_cmd_args[cmd].len != -1 && mig_cmd_args[cmd].len != len) {
        error_setg(errp, "bad length for command %s: got %u expected %d",
                   mig_cmd_args[cmd].name, len, mig_cmd_args[cmd].len);
        return -ERANGE;
    }
    trace_loadvm_process_command(mig_cmd_args[cmd].name, len);
    data = g_malloc(len ? len : 1);
    if (qemu_get_buffer(f, data, len) != len) {
        return stream_fail(f, errp, "reading payload of command %s",
                           mig_cmd_args[cmd].name);
    }

    switch (cmd) {
    case MIG_CMD_OPEN_RETURN_PATH:
        return cmd_open_return_path(ctx, f, errp);
    case MIG_CMD_PING:
        return cmd_ping(ctx, data, errp);
    case MIG_CMD_POSTCOPY_ADVISE:
        return cmd_advise(ctx, data, len, errp);
    case MIG_CMD_POSTCOPY_RAM_DISCARD:
        return cmd_discard(ctx, data, len, errp);
    case MIG_CMD_POSTCOPY_LISTEN:
        return cmd_hook(ctx, "POSTCOPY_LISTEN",
                        ctx->postcopy_ops ? ctx->postcopy_ops->listen : NULL,
                        errp);
    case MIG_CMD_POSTCOPY_RUN: {
        int ret = cmd_hook(ctx, "POSTCOPY_RUN",
                           ctx->postcopy_ops ? ctx->postcopy_ops->run : NULL,
                           errp);
        return ret < 0 ? ret : LOADVM_QUIT;
    }
    case MIG_CMD_PACKAGED:
        return cmd_packaged(f, ctx, data, errp);
    case MIG_CMD_POSTCOPY_RESUME:
        return cmd_hook(ctx, "POSTCOPY_RESUME",
                        ctx->postcopy_ops ? ctx->postcopy_ops->resume : NULL,
                        errp);
    case MIG_CMD_RECV_BITMAP:
        return cmd_recv_bitmap(ctx, data, len, errp);
    case MIG_CMD_ENABLE_COLO:
    default:
        error_setg(errp, "Command %s is not supported",
                   mig_cmd_args[cmd].name);
        return -ENOTSUP;
    }
}

int qemu_loadvm_state_main(QEMUFile *f, LoadVMContext *ctx, GError **errp)
{
    for (;;) {
        uint64_t offset = qemu_file_tell(f);
        int type = qemu_get_byte(f);
        int ret;

        if (qemu_file_get_error(f)) {
            return stream_fail(f, errp, "reading record type at offset %"
                               PRIu64, offset);
        }
        trace_qemu_loadvm_state_section(type);
        switch (type) {
        case QEMU_VM_SECTION_START:
        case QEMU_VM_SECTION_FULL:
            ret = load_section_start_full(f, ctx, type, errp);
            break;
        case QEMU_VM_SECTION_PART:
        case QEMU_VM_SECTION_END:
            ret = load_section_part_end(f, ctx, errp);
            break;
        case QEMU_VM_COMMAND:
            ret = loadvm_process_command(f, ctx, errp);
            trace_qemu_loadvm_state_section_command(ret);
            if (ret == LOADVM_QUIT) {
                return LOADVM_QUIT;
            }
            break;
        case QEMU_VM_EOF:
            return 0;
        default:
            error_setg(errp, "Unknown savevm section type 0x%02x at offset %"
                       PRIu64, type, offset);
            return -EINVAL;
        }
        if (ret < 0) {
            return ret;
        }
    }
}

static int load_header(QEMUFile *f, GError **errp)
{
    uint32_t magic = qemu_get_be32(f);
    uint32_t version = qemu_get_be32(f);

    if (qemu_file_get_error(f)) {
        return stream_fail(f, errp, "Not a migration stream");
    }
    if (magic != QEMU_VM_FILE_MAGIC) {
        error_setg(errp, "Not a migration stream (magic 0x%08x)", magic);
        return -EINVAL;
    }
    if (version == QEMU_VM_FILE_VERSION_COMPAT) {
        error_setg(errp, "SaveVM v2 format is obsolete and doesn't work "
                   "anymore");
        return -ENOTSUP;
    }
    if (version != QEMU_VM_FILE_VERSION) {
        error_setg(errp, "Unsupported migration stream version %u", version);
        return -ENOTSUP;
    }
    return 0;
}

/* configuration subsections: 0x05 counted-name be32 version payload */
static int load_config_subsection(QEMUFile *f, GError **errp)
{
    char name[256];
    uint32_t version, v;

    qemu_get_byte(f);
    qemu_get_counted_string(f, name);
    version = qemu_get_be32(f);
    if (qemu_file_get_error(f)) {
        return stream_fail(f, errp, "reading configuration subsection");
    }
    if (version != 1) {
        error_setg(errp, "%s: unsupported version %u", name, version);
        return -EINVAL;
    }
    if (!strcmp(name, "configuration/target-page-bits")) {
        v = qemu_get_be32(f);
        if (!qemu_file_get_error(f) && v != TARGET_PAGE_BITS) {
            error_setg(errp, "Received TARGET_PAGE_BITS is %u but local is "
                       "%d", v, TARGET_PAGE_BITS);
            return -EINVAL;
        }
    } else if (!strcmp(name, "configuration/capabilities")) {
        char cap[256];

        v = qemu_get_be32(f);
        if (!qemu_file_get_error(f) && v > 0) {
            qemu_get_counted_string(f, cap);
            if (!qemu_file_get_error(f)) {
                error_setg(errp, "Capability '%s' is enabled on the source "
                           "but not supported here", cap);
                return -EINVAL;
            }
        }
    } else if (!strcmp(name, "configuration/uuid")) {
        /* we have no -uuid to validate against */
        qemu_file_skip(f, 16);
    } else {
        error_setg(errp, "configuration: unknown subsection '%s'", name);
        return -EINVAL;
    }
    if (qemu_file_get_error(f)) {
        return stream_fail(f, errp, "reading %s", name);
    }
    return 0;
}

static int load_configuration(QEMUFile *f, GError **errp)
{
    const char *local = machine_name();
    char name[257];
    uint32_t len;

    if (qemu_get_byte(f) != QEMU_VM_CONFIGURATION) {
        if (qemu_file_get_error(f)) {
            return stream_fail(f, errp, "reading configuration");
        }
        error_setg(errp, "Configuration section missing");
        return -EINVAL;
    }
    len = qemu_get_be32(f);
    if (!qemu_file_get_error(f) && len > 256) {
        error_setg(errp, "Configuration: machine name too long (%u bytes)",
                   len);
        return -EINVAL;
    }
    qemu_get_buffer(f, (uint8_t *)name, len);
    if (qemu_file_get_error(f)) {
        return stream_fail(f, errp, "reading configuration");
    }
    name[len] = 0;
    if (strlen(name) != len || strcmp(name, local) != 0) {
        error_setg(errp, "Machine type received is '%s' and local is '%s'",
                   name, local);
        return -EINVAL;
    }
    for (;;) {
        uint8_t *p;
        int n;
        int ret;

        if (qemu_peek_byte(f, 0) != QEMU_VM_SUBSECTION) {
            break;
        }
        n = qemu_peek_byte(f, 1);
        if (n < (int)strlen("configuration") ||
            qemu_peek_buffer(f, &p, n, 2) != (size_t)n ||
            memcmp(p, "configuration", strlen("configuration"))) {
            break;
        }
        ret = load_config_subsection(f, errp);
        if (ret < 0) {
            return ret;
        }
    }
    return qemu_file_get_error(f) ?
           stream_fail(f, errp, "reading configuration") : 0;
}

static int loadvm_state_setup(QEMUFile *f, GError **errp)
{
    GPtrArray *a = handlers();

    trace_loadvm_state_setup();
    for (guint i = 0; i < a->len; i++) {
        SaveStateEntry *se = a->pdata[i];
        int ret;

        if (!se->ops || !se->ops->load_setup) {
            continue;
        }
        ret = se->ops->load_setup(f, se->opaque);
        if (ret < 0) {
            GError *err = NULL;

            qemu_file_get_error_obj(f, &err);
            error_setg(errp, "Load setup of '%s' failed: %s", se->idstr,
                       err ? err->message : g_strerror(-ret));
            g_clear_error(&err);
            return ret;
        }
    }
    return 0;
}

void qemu_loadvm_state_cleanup(void)
{
    GPtrArray *a = handlers();

    trace_loadvm_state_cleanup();
    for (guint i = 0; i < a->len; i++) {
        SaveStateEntry *se = a->pdata[i];

        if (se->ops && se->ops->load_cleanup) {
            se->ops->load_cleanup(se->opaque);
        }
    }
}

/* After EOF in precopy: 0x06 + be32 len + JSON, read and dropped. */
static int load_vmdesc(QEMUFile *f, LoadVMContext *ctx, GError **errp)
{
    int type = qemu_peek_byte(f, 0);
    uint32_t len;

    if (type != QEMU_VM_VMDESCRIPTION) {
        if (qemu_file_get_error(f)) {
            return stream_fail(f, errp, "reading VMDESCRIPTION");
        }
        warn_report("Expected vmdescription section, but got %d", type);
        return 0;
    }
    qemu_get_byte(f);
    len = qemu_get_be32(f);
    if (!qemu_file_get_error(f) && len > MAX_VMDESC_SIZE) {
        error_setg(errp, "VMDESCRIPTION of %u bytes exceeds the limit of %u",
                   len, MAX_VMDESC_SIZE);
        return -E2BIG;
    }
    qemu_file_skip(f, len);
    if (qemu_file_get_error(f)) {
        return stream_fail(f, errp, "reading VMDESCRIPTION");
    }
    ctx->have_vmdesc = true;
    return 0;
}

int qemu_loadvm_state(QEMUFile *f, LoadVMContext *ctx, GError **errp)
{
    int ret;

    if (!ctx->from_src) {
        ctx->from_src = f;
    }
    ret = load_header(f, errp);
    if (ret < 0) {
        return ret;
    }
    ret = load_configuration(f, errp);
    if (ret < 0) {
        return ret;
    }
    ret = loadvm_state_setup(f, errp);
    if (ret < 0) {
        qemu_loadvm_state_cleanup();
        return ret;
    }
    ret = qemu_loadvm_state_main(f, ctx, errp);
    trace_qemu_loadvm_state_post_main(ret);
    if (ret == 0) {
        ret = load_vmdesc(f, ctx, errp);
    } else if (ret == LOADVM_QUIT) {
        ret = 0;
    }
    if (!ctx->postcopy_listening) {
        qemu_loadvm_state_cleanup();
    }
    return ret;
}

/* ---- return path: destination -> source ---- */

/* Caller holds rp_mutex. */
static int rp_send_locked(LoadVMContext *ctx, int type, uint16_t len,
                          const uint8_t *data)
{
    trace_migrate_send_rp_message(type, len);
    if (!ctx->to_src) {
        return -EIO;
    }
    qemu_put_be16(ctx->to_src, type);
    qemu_put_be16(ctx->to_src, len);
    qemu_put_buffer(ctx->to_src, data, len);
    return qemu_fflush(ctx->to_src);
}

int migrate_send_rp_message(LoadVMContext *ctx, enum mig_rp_message_type type,
                            uint16_t len, const uint8_t *data)
{
    int ret;

    qemu_mutex_lock(&ctx->rp_mutex);
    ret = rp_send_locked(ctx, type, len, data);
    qemu_mutex_unlock(&ctx->rp_mutex);
    return ret;
}

static int send_rp_u32(LoadVMContext *ctx, enum mig_rp_message_type type,
                       uint32_t value)
{
    uint32_t be = GUINT32_TO_BE(value);

    return migrate_send_rp_message(ctx, type, 4, (uint8_t *)&be);
}

int migrate_send_rp_shut(LoadVMContext *ctx, uint32_t value)
{
    return send_rp_u32(ctx, MIG_RP_MSG_SHUT, value);
}

int migrate_send_rp_pong(LoadVMContext *ctx, uint32_t value)
{
    return send_rp_u32(ctx, MIG_RP_MSG_PONG, value);
}

int migrate_send_rp_resume_ack(LoadVMContext *ctx, uint32_t value)
{
    return send_rp_u32(ctx, MIG_RP_MSG_RESUME_ACK, value);
}

QEMUFile *loadvm_context_take_return_path(LoadVMContext *ctx)
{
    QEMUFile *f;

    qemu_mutex_lock(&ctx->rp_mutex);
    f = ctx->to_src;
    ctx->to_src = NULL;
    qemu_mutex_unlock(&ctx->rp_mutex);
    return f;
}

void loadvm_context_set_channels(LoadVMContext *ctx, QEMUFile *from_src,
                                 QEMUFile *to_src)
{
    qemu_mutex_lock(&ctx->rp_mutex);
    ctx->from_src = from_src;
    ctx->to_src = to_src;
    /* The source forgot our previous block too: name it again. */
    ctx->last_rp_block[0] = 0;
    qemu_mutex_unlock(&ctx->rp_mutex);
}

/*
 * The reply to RECV_BITMAP: the message naming the block, then outside
 * it the size, the map as little-endian 64-bit words (bit i = target page
 * i received) and the end marker, all in one critical section so that no
 * page request lands in the middle of the bitmap.
 */
int migrate_send_rp_recv_bitmap(LoadVMContext *ctx, const char *idstr,
                                const unsigned long *map, uint64_t npages)
{
    size_t n = strlen(idstr);
    uint64_t words = DIV_ROUND_UP(npages, 64);
    uint8_t hdr[256];
    int ret;

    if (n < 1 || n > 255) {
        return -EINVAL;
    }
    trace_migrate_send_rp_recv_bitmap(idstr, npages);
    hdr[0] = n;
    memcpy(hdr + 1, idstr, n);
    qemu_mutex_lock(&ctx->rp_mutex);
    if (!ctx->to_src) {
        qemu_mutex_unlock(&ctx->rp_mutex);
        return -EIO;
    }
    qemu_put_be16(ctx->to_src, MIG_RP_MSG_RECV_BITMAP);
    qemu_put_be16(ctx->to_src, n + 1);
    qemu_put_buffer(ctx->to_src, hdr, n + 1);
    qemu_put_be64(ctx->to_src, words * 8);
    for (uint64_t i = 0; i < words; i++) {
        uint64_t w = bitmap_get_u64(map, i);

        if (npages - i * 64 < 64) {
            w &= (1ULL << (npages - i * 64)) - 1;
        }
        w = GUINT64_TO_LE(w);
        qemu_put_buffer(ctx->to_src, (const uint8_t *)&w, 8);
    }
    qemu_put_be64(ctx->to_src, RECV_BITMAP_ENDING);
    ret = qemu_fflush(ctx->to_src);
    qemu_mutex_unlock(&ctx->rp_mutex);
    return ret;
}

void migrate_rp_reset_last_block(LoadVMContext *ctx)
{
    qemu_mutex_lock(&ctx->rp_mutex);
    ctx->last_rp_block[0] = 0;
    qemu_mutex_unlock(&ctx->rp_mutex);
}

int migrate_send_rp_req_pages(LoadVMContext *ctx, const char *idstr,
                              uint64_t start, uint32_t len)
{
    uint8_t buf[13 + 255];
    uint64_t be64 = GUINT64_TO_BE(start);
    uint32_t be32 = GUINT32_TO_BE(len);
    size_t msglen = 12;
    int type = MIG_RP_MSG_REQ_PAGES;
    int ret = -EINVAL;

    trace_migrate_send_rp_req_pages(idstr ? idstr : "", start, len);
    memcpy(buf, &be64, 8);
    memcpy(buf + 8, &be32, 4);
    /* one critical section: "same block as before" must stay true */
    qemu_mutex_lock(&ctx->rp_mutex);
    if (idstr && strcmp(idstr, ctx->last_rp_block) != 0) {
        size_t n = strlen(idstr);

        if (n < 1 || n > 255) {
            goto out;
        }
        buf[12] = n;
        memcpy(buf + 13, idstr, n);
        msglen = 13 + n;
        type = MIG_RP_MSG_REQ_PAGES_ID;
    } else if (!ctx->last_rp_block[0]) {
        /* the source cannot know the block of a first request */
        goto out;
    }
    ret = rp_send_locked(ctx, type, msglen, buf);
    if (ret == 0 && type == MIG_RP_MSG_REQ_PAGES_ID) {
        g_strlcpy(ctx->last_rp_block, idstr, sizeof(ctx->last_rp_block));
    }
out:
    qemu_mutex_unlock(&ctx->rp_mutex);
    return ret;
}

/* ---- return path: source reader ---- */

static const int rp_msg_len[MIG_RP_MSG_MAX] = {
    [MIG_RP_MSG_INVALID] = -1,
    [MIG_RP_MSG_SHUT] = 4,
    [MIG_RP_MSG_PONG] = 4,
    [MIG_RP_MSG_REQ_PAGES_ID] = -1,
    [MIG_RP_MSG_REQ_PAGES] = 12,
    [MIG_RP_MSG_RECV_BITMAP] = -1,
    [MIG_RP_MSG_RESUME_ACK] = 4,
};

static bool rp_variable_len_ok(const RPMessage *msg)
{
    switch (msg->type) {
    case MIG_RP_MSG_REQ_PAGES_ID:
        return msg->len >= 14 && msg->data[12] + 13 == msg->len;
    case MIG_RP_MSG_RECV_BITMAP:
        return msg->len >= 2 && msg->data[0] + 1 == msg->len;
    default:
        return true;
    }
}

int source_return_path_read(QEMUFile *rp, RPMessage *msg, GError **errp)
{
    msg->type = qemu_get_be16(rp);
    msg->len = qemu_get_be16(rp);
    if (qemu_file_get_error(rp)) {
        return stream_fail(rp, errp, "reading message header");
    }
    if (msg->type == MIG_RP_MSG_INVALID || msg->type >= MIG_RP_MSG_MAX) {
        error_setg(errp, "Received invalid message type 0x%04x on the return "
                   "path", msg->type);
        return -EINVAL;
    }
    if (msg->len > MIG_RP_MAX_LEN) {
        error_setg(errp, "Return path message type %u: length %u exceeds %d",
                   msg->type, msg->len, MIG_RP_MAX_LEN);
        return -EINVAL;
    }
    if (rp_msg_len[msg->type] != -1 && rp_msg_len[msg->type] != msg->len) {
        error_setg(errp, "Return path message type %u: bad length %u "
                   "(expected %d)", msg->type, msg->len,
                   rp_msg_len[msg->type]);
        return -EINVAL;
    }
    if (qemu_get_buffer(rp, msg->data, msg->len) != msg->len) {
        return stream_fail(rp, errp, "reading message type %u",
                           msg->type);
    }
    if (!rp_variable_len_ok(msg)) {
        error_setg(errp, "Return path message type %u: inconsistent length "
                   "%u", msg->type, msg->len);
        return -EINVAL;
    }
    return 0;
}

uint32_t rp_message_get_u32(const RPMessage *msg)
{
    return msg->len >= 4 ? ldl_be_p(msg->data) : 0;
}

bool rp_message_get_req_pages(const RPMessage *msg, uint64_t *start,
                              uint32_t *len, char idstr[256], GError **errp)
{
    if ((msg->type != MIG_RP_MSG_REQ_PAGES &&
         msg->type != MIG_RP_MSG_REQ_PAGES_ID) || msg->len < 12 ||
        !rp_variable_len_ok(msg)) {
        error_setg(errp, "Not a valid page request (type %u, len %u)",
                   msg->type, msg->len);
        return false;
    }
    *start = ldq_be_p(msg->data);
    *len = ldl_be_p(msg->data + 8);
    idstr[0] = 0;
    if (msg->type == MIG_RP_MSG_REQ_PAGES_ID) {
        memcpy(idstr, msg->data + 13, msg->data[12]);
        idstr[msg->data[12]] = 0;
    }
    return true;
}

bool rp_message_get_recv_bitmap(const RPMessage *msg, char idstr[256],
                                GError **errp)
{
    if (msg->type != MIG_RP_MSG_RECV_BITMAP || !rp_variable_len_ok(msg)) {
        error_setg(errp, "Not a valid RECV_BITMAP message");
        return false;
    }
    memcpy(idstr, msg->data + 1, msg->data[0]);
    idstr[msg->data[0]] = 0;
    return true;
}

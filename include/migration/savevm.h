/*
 * savevm: the registry of state handlers and the top-level stream
 * (header, sections, commands, EOF/VMDESCRIPTION), both directions, plus
 * the return-path messages (destination -> source).
 */
#ifndef MIGRATION_SAVEVM_H
#define MIGRATION_SAVEVM_H

#include "qemu/osdep.h"
#include "qemu/thread.h"
#include "migration/qemu-file.h"
#include "migration/vmstate.h"
#include "sysemu/runstate.h"

#define QEMU_VM_FILE_MAGIC           0x5145564d
#define QEMU_VM_FILE_VERSION_COMPAT  0x00000002
#define QEMU_VM_FILE_VERSION         0x00000003

#define QEMU_VM_EOF                  0x00
#define QEMU_VM_SECTION_START        0x01
#define QEMU_VM_SECTION_PART         0x02
#define QEMU_VM_SECTION_END          0x03
#define QEMU_VM_SECTION_FULL         0x04
#define QEMU_VM_SUBSECTION           0x05
#define QEMU_VM_VMDESCRIPTION        0x06
#define QEMU_VM_CONFIGURATION        0x07
#define QEMU_VM_COMMAND              0x08
#define QEMU_VM_SECTION_FOOTER       0x7e

/* Commands (record 0x08), numbering of QEMU 3.1 .. 9.2 */
enum qemu_vm_cmd {
    MIG_CMD_INVALID = 0,
    MIG_CMD_OPEN_RETURN_PATH,
    MIG_CMD_PING,
    MIG_CMD_POSTCOPY_ADVISE,
    MIG_CMD_POSTCOPY_LISTEN,
    MIG_CMD_POSTCOPY_RUN,
    MIG_CMD_POSTCOPY_RAM_DISCARD,
    MIG_CMD_PACKAGED,
    MIG_CMD_ENABLE_COLO,
    MIG_CMD_POSTCOPY_RESUME,
    MIG_CMD_RECV_BITMAP,
    MIG_CMD_MAX
};

#define MAX_DISCARDS_PER_COMMAND 12
/* We refuse bigger PACKAGED blobs (QEMU allows up to UINT32_MAX). */
#define MAX_VM_CMD_PACKAGED_SIZE (1ULL << 30)
/* We refuse bigger VMDESCRIPTION JSON. */
#define MAX_VMDESC_SIZE (16u << 20)

/* Return-path message types (be16 type, be16 len, payload) */
enum mig_rp_message_type {
    MIG_RP_MSG_INVALID = 0,
    MIG_RP_MSG_SHUT,            /* be32: 0 = ok */
    MIG_RP_MSG_PONG,            /* be32: echoed PING value */
    MIG_RP_MSG_REQ_PAGES_ID,    /* be64 start, be32 len, counted id */
    MIG_RP_MSG_REQ_PAGES,       /* be64 start, be32 len */
    MIG_RP_MSG_RECV_BITMAP,     /* counted id, then raw bitmap data */
    MIG_RP_MSG_RESUME_ACK,      /* be32 1 */
    MIG_RP_MSG_MAX
};
#define MIGRATION_RESUME_ACK_VALUE 1
#define MIG_RP_MAX_LEN 512

/*
 * Live (iterative) state handlers, e.g. RAM.  All hooks are optional.
 * Errors: return a negative errno; set a message on f with
 * qemu_file_set_error_obj() for a better report.
 */
typedef struct SaveVMHandlers {
    /* Source */
    int (*save_setup)(QEMUFile *f, void *opaque);
    /* <0 error, 0 more to do, 1 done for this pass */
    int (*save_live_iterate)(QEMUFile *f, void *opaque);
    int (*save_live_complete_precopy)(QEMUFile *f, void *opaque);
    int (*save_live_complete_postcopy)(QEMUFile *f, void *opaque);
    void (*state_pending_estimate)(void *opaque, uint64_t *must_precopy,
                                   uint64_t *can_postcopy);
    void (*state_pending_exact)(void *opaque, uint64_t *must_precopy,
                                uint64_t *can_postcopy);
    void (*save_cleanup)(void *opaque);
    bool (*is_active)(void *opaque);            /* absent = active */
    bool (*has_postcopy)(void *opaque);         /* absent = false */
    /* Destination */
    int (*load_setup)(QEMUFile *f, void *opaque);
    int (*load_state)(QEMUFile *f, void *opaque, int version_id);
    int (*load_cleanup)(void *opaque);
} SaveVMHandlers;

/* Returns 0, or -EEXIST when (idstr, instance_id) is taken. */
int register_savevm_live(const char *idstr, uint32_t instance_id,
                         int version_id, const SaveVMHandlers *ops,
                         void *opaque);
void unregister_savevm(const char *idstr, uint32_t instance_id);
/* idstr NULL = vmsd->name.  0 or -EEXIST. */
int vmstate_register(const char *idstr, uint32_t instance_id,
                     const VMStateDescription *vmsd, void *opaque);
void vmstate_unregister(const VMStateDescription *vmsd, void *opaque);

/* Sent in CONFIGURATION and checked on load; "none" when unset. */
extern const char *savevm_machine_name;

extern const VMStateDescription vmstate_timers;       /* "timer" */
extern const VMStateDescription vmstate_globalstate;  /* "globalstate" */
/* Registers "timer" and "globalstate" (instance 0); idempotent. */
void migration_register_core_sections(void);
/* The runstate globalstate will send (captured when the VM stops). */
void global_state_store(void);
void global_state_store_runstate(RunState s);
/*
 * After a load: true and *s when a globalstate section arrived, false
 * when none did (the destination then behaves as if "running").
 */
bool global_state_received_runstate(RunState *s);
void global_state_reset_received(void);
/* "timer" values: the clock offsets the machine saves/restores. */
typedef struct TimersState {
    int64_t cpu_ticks_offset;
    int64_t cpu_clock_offset;
} TimersState;
extern TimersState timers_state;

/* ---- Source side ---- */
void qemu_savevm_state_header(QEMUFile *f);
/* SECTION_START for each active live handler.  0 or negative. */
int qemu_savevm_state_setup(QEMUFile *f, GError **errp);
/*
 * One pass over the active live handlers (only those with has_postcopy
 * when postcopy is true), SECTION_PART each; stops early when f is rate
 * limited.  1 when all handlers are done, 0 more to do, <0 error.
 */
int qemu_savevm_state_iterate(QEMUFile *f, bool postcopy);
/*
 * Precopy completion: SECTION_END per live handler; unless iterable_only,
 * SECTION_FULL per needed vmstate device, EOF, VMDESCRIPTION.
 * inactivate is accepted for QEMU parity (no block layer here).
 */
int qemu_savevm_state_complete_precopy(QEMUFile *f, bool iterable_only,
                                       bool inactivate);
/*
 * The two halves, for postcopy: with in_postcopy, live handlers that have
 * postcopy are skipped and non_iterable writes no EOF/VMDESCRIPTION
 * (it is used to fill the PACKAGED blob).
 */
int qemu_savevm_state_complete_precopy_iterable(QEMUFile *f,
                                                bool in_postcopy);
int qemu_savevm_state_complete_precopy_non_iterable(QEMUFile *f,
                                                    bool in_postcopy,
                                                    bool inactivate);
/* SECTION_END for postcopy handlers, then EOF (no VMDESCRIPTION). */
int qemu_savevm_state_complete_postcopy(QEMUFile *f);
void qemu_savevm_state_pending_estimate(uint64_t *must_precopy,
                                        uint64_t *can_postcopy);
void qemu_savevm_state_pending_exact(uint64_t *must_precopy,
                                     uint64_t *can_postcopy);
void qemu_savevm_state_cleanup(void);

/* Commands; each flushes f.  Return 0 or the file's error. */
int qemu_savevm_command_send(QEMUFile *f, enum qemu_vm_cmd cmd,
                             uint16_t len, const uint8_t *data);
int qemu_savevm_send_open_return_path(QEMUFile *f);
int qemu_savevm_send_ping(QEMUFile *f, uint32_t value);
/* Page size summary = OR of migratable RAMBlocks' page sizes. */
int qemu_savevm_send_postcopy_advise(QEMUFile *f);
int qemu_savevm_send_postcopy_advise_sizes(QEMUFile *f, uint64_t summary,
                                           uint64_t target_page_size);
int qemu_savevm_send_postcopy_listen(QEMUFile *f);
int qemu_savevm_send_postcopy_run(QEMUFile *f);
/* 1 <= n <= MAX_DISCARDS_PER_COMMAND; starts/lengths in bytes. */
int qemu_savevm_send_postcopy_ram_discard(QEMUFile *f, const char *idstr,
                                          uint16_t n, const uint64_t *start,
                                          const uint64_t *length);
/* Header + blob; -EINVAL when len > MAX_VM_CMD_PACKAGED_SIZE. */
int qemu_savevm_send_packaged(QEMUFile *f, const uint8_t *buf, size_t len);
int qemu_savevm_send_recv_bitmap(QEMUFile *f, const char *idstr);
int qemu_savevm_send_postcopy_resume(QEMUFile *f);

/* ---- Destination side ---- */
typedef struct LoadVMContext LoadVMContext;

/*
 * Postcopy command hooks (filled by postcopy-ram.c).  The payloads have
 * already been parsed and validated; hooks check the postcopy state and
 * apply.  Return false with errp set to fail the load.
 */
typedef struct LoadvmPostcopyOps {
    bool (*advise)(LoadVMContext *ctx, uint64_t page_size_summary,
                   uint64_t target_page_size, GError **errp);
    /* len 0 ADVISE (dirty bitmaps only) calls advise_nodata if set. */
    bool (*advise_nodata)(LoadVMContext *ctx, GError **errp);
    bool (*discard)(LoadVMContext *ctx, const char *idstr, unsigned n,
                    const uint64_t *starts, const uint64_t *lengths,
                    GError **errp);
    /*
     * Start the fault thread and a listen thread that runs
     * qemu_loadvm_state_main(ctx->from_src, ctx, ...) on the main stream.
     */
    bool (*listen)(LoadVMContext *ctx, GError **errp);
    /* Start the guest (or stay paused); the loader then returns. */
    bool (*run)(LoadVMContext *ctx, GError **errp);
    bool (*recv_bitmap)(LoadVMContext *ctx, const char *idstr,
                        GError **errp);
    bool (*resume)(LoadVMContext *ctx, GError **errp);
} LoadvmPostcopyOps;

struct LoadVMContext {
    QEMUFile *from_src;         /* main stream */
    QEMUFile *to_src;           /* return path: set by OPEN_RETURN_PATH */
    QemuMutex rp_mutex;            /* serialises return-path messages */
    char last_rp_block[256];    /* block of the last page request */
    const LoadvmPostcopyOps *postcopy_ops;
    void *opaque;               /* for the owner (MigrationIncomingState) */
    /*
     * Set by the listen hook: the load loop is now shared with the listen
     * thread, so qemu_loadvm_state does not run load_cleanup itself.
     */
    bool postcopy_listening;
    bool have_vmdesc;           /* a VMDESCRIPTION was read */
    /* private to savevm.c */
    QemuMutex sections_lock;
    GHashTable *sections;       /* sender id -> loaded section; one per handler */
    int package_depth;
};

/* Positive return of the load loop: a command asked to stop (RUN). */
#define LOADVM_QUIT 1

void loadvm_context_init(LoadVMContext *ctx, QEMUFile *from_src);
/* Frees private state and closes to_src if open. */
void loadvm_context_destroy(LoadVMContext *ctx);
/* Process-wide postcopy hooks (postcopy-ram.c registers them). */
void loadvm_register_postcopy_ops(const LoadvmPostcopyOps *ops);

/*
 * Full precopy load: header, configuration, load_setup, record loop until
 * EOF (or RUN), VMDESCRIPTION, load_cleanup (unless postcopy_listening).
 * 0, or negative errno with errp naming what and where.
 */
int qemu_loadvm_state(QEMUFile *f, LoadVMContext *ctx, GError **errp);
/* The record loop alone: 0 at EOF, LOADVM_QUIT, or negative with errp. */
int qemu_loadvm_state_main(QEMUFile *f, LoadVMContext *ctx, GError **errp);
/* load_cleanup of every handler (the listen thread calls it at its end). */
void qemu_loadvm_state_cleanup(void);

/* Return-path replies (destination); 0 or negative errno. */
int migrate_send_rp_message(LoadVMContext *ctx, enum mig_rp_message_type type,
                            uint16_t len, const uint8_t *data);
int migrate_send_rp_shut(LoadVMContext *ctx, uint32_t value);
int migrate_send_rp_pong(LoadVMContext *ctx, uint32_t value);
/*
 * REQ_PAGES_ID when idstr is given and differs from the previous request's
 * block, REQ_PAGES otherwise.  start and len in bytes within the block.
 */
int migrate_send_rp_req_pages(LoadVMContext *ctx, const char *idstr,
                              uint64_t start, uint32_t len);
int migrate_send_rp_resume_ack(LoadVMContext *ctx, uint32_t value);
/* Forget the previous block (after recovery). */
void migrate_rp_reset_last_block(LoadVMContext *ctx);
/*
 * Postcopy recovery: detach the return path (the caller closes it), and
 * install the new channel's files.  Both under rp_mutex, so the fault
 * thread never writes to a closed file.
 */
QEMUFile *loadvm_context_take_return_path(LoadVMContext *ctx);
void loadvm_context_set_channels(LoadVMContext *ctx, QEMUFile *from_src,
                                 QEMUFile *to_src);
/* The end of a RECV_BITMAP reply's bitmap data. */
#define RECV_BITMAP_ENDING 0x0123456789abcdefULL
/* RECV_BITMAP reply for a block of npages target pages; 0 or -errno. */
int migrate_send_rp_recv_bitmap(LoadVMContext *ctx, const char *idstr,
                                const unsigned long *map, uint64_t npages);

/* Return-path reader (source) */
typedef struct RPMessage {
    uint16_t type;
    uint16_t len;
    uint8_t data[MIG_RP_MAX_LEN];
} RPMessage;

/*
 * Read and validate one message: 0 < type < MIG_RP_MSG_MAX, fixed lengths,
 * len <= 512.  0 on success, negative errno with errp (EOF included).
 */
int source_return_path_read(QEMUFile *rp, RPMessage *msg, GError **errp);
/* Payload accessors; the message must have been validated. */
uint32_t rp_message_get_u32(const RPMessage *msg);
/*
 * REQ_PAGES / REQ_PAGES_ID: idstr gets the block name ("" for REQ_PAGES).
 * False with errp if the embedded name length is inconsistent.
 */
bool rp_message_get_req_pages(const RPMessage *msg, uint64_t *start,
                              uint32_t *len, char idstr[256], GError **errp);
/* RECV_BITMAP: the block name. */
bool rp_message_get_recv_bitmap(const RPMessage *msg, char idstr[256],
                                GError **errp);

#endif

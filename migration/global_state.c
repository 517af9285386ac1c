/*
 * The "globalstate" section (instance 0, version 1): the source's run
 * state, so the destination knows whether to start the guest.
 */
#include "qemu/osdep.h"
#include "migration/savevm.h"
#include "trace/trace-migration.h"

#define GLOBAL_STATE_NAME_LEN 100

typedef struct GlobalState {
    uint32_t size;                          /* strlen(name) + 1 */
    uint8_t runstate[GLOBAL_STATE_NAME_LEN];  /* NUL padded */
    bool stored;
    bool received;
    RunState received_state;
} GlobalState;

static GlobalState global_state;

void global_state_store_runstate(RunState s)
{
    const char *name = RunState_str(s);

    memset(global_state.runstate, 0, sizeof(global_state.runstate));
    g_strlcpy((char *)global_state.runstate, name,
              sizeof(global_state.runstate));
    global_state.size = strlen(name) + 1;
    global_state.stored = true;
}

void global_state_store(void)
{
    global_state_store_runstate(runstate_get());
}

bool global_state_received_runstate(RunState *s)
{
    if (global_state.received) {
        *s = global_state.received_state;
    }
    return global_state.received;
}

void global_state_reset_received(void)
{
    global_state.received = false;
}

static int global_state_pre_save(void *opaque)
{
    GlobalState *s = opaque;

    if (!s->stored) {
        global_state_store();
    }
    trace_migrate_global_state_pre_save((const char *)s->runstate);
    return 0;
}

static int global_state_pre_load(void *opaque)
{
    GlobalState *s = opaque;

    s->received = false;
    return 0;
}

static bool global_state_post_load(void *opaque, int version_id,
                                   GError **errp)
{
    GlobalState *s = opaque;
    RunState r;

    /* the size field is informational; the name must be terminated */
    if (!memchr(s->runstate, 0, sizeof(s->runstate))) {
        error_setg(errp, "runstate name is not NUL terminated");
        return false;
    }
    if (!runstate_parse((const char *)s->runstate, &r)) {
        error_setg(errp, "unknown runstate '%s'", (const char *)s->runstate);
        return false;
    }
    trace_migrate_global_state_post_load((const char *)s->runstate);
    s->received_state = r;
    s->received = true;
    return true;
}

const VMStateDescription vmstate_globalstate = {
    .name = "globalstate",
    .version_id = 1,
    .minimum_version_id = 1,
    .pre_save = global_state_pre_save,
    .pre_load = global_state_pre_load,
    .post_load_errp = global_state_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32(size, GlobalState),
        VMSTATE_BUFFER(runstate, GlobalState),
        VMSTATE_END_OF_LIST()
    },
};

void migration_register_core_sections(void)
{
    /* -EEXIST on a second call is fine: they are already there */
    vmstate_register(NULL, 0, &vmstate_timers, &timers_state);
    vmstate_register(NULL, 0, &vmstate_globalstate, &global_state);
}

/*
 * The "timer" section (instance 0, version 2): the clock offsets that let
 * guest time continue across a migration.
 */
#include "qemu/osdep.h"
#include "migration/savevm.h"

TimersState timers_state;

const VMStateDescription vmstate_timers = {
    .name = "timer",
    .version_id = 2,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        VMSTATE_INT64(cpu_ticks_offset, TimersState),
        VMSTATE_UNUSED(8),
        VMSTATE_INT64_V(cpu_clock_offset, TimersState, 2),
        VMSTATE_END_OF_LIST()
    },
};

#!/usr/bin/env python3
"""Tracing end to end: a -M none precopy migration whose source traces
migrate_set_state (FERRY_TRACE / FERRY_TRACE_FILE) must leave the states
setup, active, completed in that order in the trace file; -trace on the
command line must do the same for the destination.

A -M none postcopy migration traced on both sides must show the postcopy
commands, the destination's postcopy state machine, page requests and
their placements: each trace point the test enables must appear, in order
where the protocol orders them."""

import os
import re
import time

import ferrytest as ft
from ferrytest import VM, log, fail

LINE_RE = re.compile(r"^(\d+)@\d+\.\d{6}:(\w+) (.*)$")


def trace_states(path, pid):
    """The migrate_set_state states in the trace file, checking every line."""
    states = []
    for event, text in trace_events(path, pid):
        if event != "migrate_set_state":
            fail(f"{path}: event {event} was not enabled")
        states.append(text.removeprefix("new state "))
    return states


def expect_in_order(states, wanted, who):
    it = iter(states)
    for w in wanted:
        if not any(s == w for s in it):
            fail(f"{who}: trace shows {states}, expected {wanted} in order")
    log(f"{who}: traced states {states}")


def test_precopy_trace():
    d = ft.make_tmpdir("ferrytest-trace-")
    src_trace = os.path.join(d, "src.trace")
    dst_trace = os.path.join(d, "dst.trace")
    port = ft.free_tcp_port()
    uri = f"tcp:127.0.0.1:{port}"
    src = VM(["-M", "none", "-m", "64"], name="src", serial=False,
             env={"FERRY_TRACE": "migrate_set_state",
                  "FERRY_TRACE_FILE": src_trace}).launch()
    dst = VM(["-M", "none", "-m", "64", "-incoming", uri,
              "-trace", f"enable=migrate_set_*,file={dst_trace}"],
             name="dst", serial=False,
             env={"FERRY_TRACE": "", "FERRY_TRACE_FILE": ""}).launch()
    src.qmp.cmd("migrate", uri=uri)
    src.wait_migration(timeout=60)
    dst.wait_status("running", timeout=30)
    expect_in_order(trace_states(src_trace, src.proc.pid),
                    ["setup", "active", "completed"], "source")
    expect_in_order(trace_states(dst_trace, dst.proc.pid),
                    ["active", "completed"], "destination")
    src.shutdown()
    dst.shutdown()


def trace_events(path, pid):
    """[(event, text)] of the trace file, checking every line."""
    out = []
    with open(path) as f:
        for line in f.read().splitlines():
            m = LINE_RE.match(line)
            if not m:
                fail(f"{path}: malformed trace line {line!r}")
            if int(m.group(1)) != pid:
                fail(f"{path}: line from pid {m.group(1)}, expected {pid}")
            out.append((m.group(2), m.group(3)))
    return out


def first_index(events, who, name, pred=None, start=0):
    """Index of the first `name` event at or after start (matching pred)."""
    for i in range(start, len(events)):
        ev, text = events[i]
        if ev == name and (pred is None or pred(text)):
            return i
    seen = sorted({e for e, _ in events})
    fail(f"{who}: no {name} event after line {start} "
         f"(events present: {seen})")


def expect_sequence(events, who, steps):
    """steps: [(event, pred or None)], each after the previous one."""
    pos = 0
    for name, pred in steps:
        pos = first_index(events, who, name, pred, pos) + 1
    return pos


# block name and page offset of "<block> offset 0x..." style arguments
BLOCK_OFF_RE = re.compile(r"(\S+) (?:offset|start) 0x([0-9a-f]+)")


def block_offsets(events, name):
    """[(block, offset)] of every `name` event, in file order."""
    out = []
    for ev, text in events:
        if ev == name:
            m = BLOCK_OFF_RE.search(text)
            if not m:
                fail(f"{name}: cannot parse block/offset from {text!r}")
            out.append((m.group(1), int(m.group(2), 16)))
    return out


def _set_caps(vm, **caps):
    vm.qmp.cmd("migrate-set-capabilities",
               capabilities=[{"capability": k.replace("_", "-"), "state": v}
                             for k, v in caps.items()])


def _wait_status(vm, want, timeout=60.0):
    return vm.wait_migration(timeout, poll=0.05, want=want)


SRC_TRACE = ",".join([
    "qemu_savevm_send_postcopy_advise", "qemu_savevm_send_postcopy_ram_discard",
    "postcopy_discard_send_finish", "savevm_send_postcopy_listen",
    "savevm_send_postcopy_run", "qemu_savevm_send_packaged",
    "ram_save_queue_pages", "migrate_handle_rp_req_pages",
    "migrate_set_state", "postcopy_start"])
DST_TRACE = ",".join([
    "migration_socket_incoming_accepted", "loadvm_process_command",
    "postcopy_state_change", "postcopy_ram_fault_thread_request",
    "postcopy_place_page", "postcopy_place_page_zero", "migrate_set_state"])


def test_postcopy_trace():
    mem = 64 << 20
    d = ft.make_tmpdir("ferrytest-trace-")
    src_trace = os.path.join(d, "src.trace")
    dst_trace = os.path.join(d, "dst.trace")
    pattern = os.path.join(d, "pattern.bin")
    with open(pattern, "wb") as f:
        f.write(os.urandom(16 << 20))
    port = ft.free_tcp_port()
    uri = f"tcp:127.0.0.1:{port}"
    src = VM(["-M", "none", "-m", str(mem >> 20), "-device",
              f"loader,file={pattern},addr=0x100000,force-raw=on"],
             name="src", serial=False,
             env={"FERRY_TRACE": SRC_TRACE,
                  "FERRY_TRACE_FILE": src_trace}).launch()
    dst = VM(["-M", "none", "-m", str(mem >> 20), "-incoming", uri],
             name="dst", serial=False,
             env={"FERRY_TRACE": DST_TRACE,
                  "FERRY_TRACE_FILE": dst_trace}).launch()
    _set_caps(src, postcopy_ram=True)
    _set_caps(dst, postcopy_ram=True)
    # Slow precopy: most pages are left for postcopy and its requests.
    src.qmp.cmd("migrate-set-parameters", **{
        "max-bandwidth": 8 << 20, "max-postcopy-bandwidth": 8_000_000})
    src.qmp.cmd("migrate", uri=uri)
    src.qmp.cmd("migrate-start-postcopy")
    _wait_status(dst, ("postcopy-active", "completed"))
    dst.pmemsave(mem)               # fault every page in
    sst = _wait_status(src, ("completed",))
    _wait_status(dst, ("completed",))
    if sst["ram"]["postcopy-requests"] <= 0:
        fail("no page was requested in postcopy: nothing to trace")

    se = trace_events(src_trace, src.proc.pid)
    de = trace_events(dst_trace, dst.proc.pid)
    state = lambda st: (lambda t: t == f"new state {st}")

    # Source: ADVISE at setup; at the switch the state, the discards, then
    # LISTEN and RUN built into the package, the package itself; requests
    # after it; completed last.
    expect_sequence(se, "source", [
        ("qemu_savevm_send_postcopy_advise", None),
        ("postcopy_start", None),
        ("migrate_set_state", state("postcopy-active")),
        ("qemu_savevm_send_postcopy_ram_discard", None),
        ("postcopy_discard_send_finish", None),
        ("savevm_send_postcopy_listen", None),
        ("savevm_send_postcopy_run", None),
        ("qemu_savevm_send_packaged", None),
        ("migrate_handle_rp_req_pages", None),
        ("ram_save_queue_pages", None),
        ("migrate_set_state", state("completed")),
    ])
    # Destination: every POSTCOPY command, the state machine in order.
    cmd = lambda c: (lambda t: t.startswith(f"{c} "))
    expect_sequence(de, "destination", [
        ("migration_socket_incoming_accepted", None),
        ("loadvm_process_command", cmd("POSTCOPY_ADVISE")),
        ("postcopy_state_change", lambda t: t == "NONE -> ADVISE"),
        ("loadvm_process_command", cmd("POSTCOPY_RAM_DISCARD")),
        ("postcopy_state_change", lambda t: t == "ADVISE -> DISCARD"),
        ("loadvm_process_command", cmd("PACKAGED")),
        ("loadvm_process_command", cmd("POSTCOPY_LISTEN")),
        ("postcopy_state_change", lambda t: t == "DISCARD -> LISTENING"),
        ("loadvm_process_command", cmd("POSTCOPY_RUN")),
        ("postcopy_state_change", lambda t: t == "LISTENING -> RUNNING"),
        ("postcopy_state_change", lambda t: t == "RUNNING -> END"),
        ("migrate_set_state", state("completed")),
    ])
    expect_sequence(de, "destination", [
        ("migrate_set_state", state("postcopy-active")),
        ("migrate_set_state", state("completed")),
    ])

    # Every page the source queued was asked for by a destination fault,
    # and every requested page was placed after its fault (same block and
    # host page offset: docs/tracing.md's worked example).
    faults = block_offsets(de, "postcopy_ram_fault_thread_request")
    queued = block_offsets(se, "ram_save_queue_pages")
    placed = set()
    for ev, text in de:
        if ev in ("postcopy_place_page", "postcopy_place_page_zero"):
            m = BLOCK_OFF_RE.search(text)
            if not m or not text.startswith("host 0x"):
                fail(f"{ev}: unexpected arguments {text!r}")
            placed.add((m.group(1), int(m.group(2), 16)))
    if not faults or not queued or not placed:
        fail(f"faults {len(faults)}, queued {len(queued)}, placed "
             f"{len(placed)}: each must be traced")
    missing = set(queued) - set(faults)
    if missing:
        fail(f"{len(missing)} queued pages without a traced fault, e.g. "
             f"{sorted(missing)[:3]}")
    # (No line order between the two: the placement line is written just
    # before UFFDIO_COPY, so a fault on the page can still be traced after
    # it, and its request is then served by a page already on its way.)
    unplaced = set(queued) - placed
    if unplaced:
        fail(f"{len(unplaced)} requested pages never placed, e.g. "
             f"{sorted(unplaced)[:3]}")
    log(f"postcopy trace: {len(se)} source lines, {len(de)} destination "
        f"lines, {len(queued)} requests, {len(placed)} pages placed")
    src.shutdown()
    dst.shutdown()


def test_trace_off_by_default():
    """Without FERRY_TRACE nothing is written, even with a trace file."""
    d = ft.make_tmpdir("ferrytest-trace-")
    path = os.path.join(d, "quiet.trace")
    vm = VM(["-M", "none", "-m", "16"], name="quiet", serial=False,
            env={"FERRY_TRACE": "", "FERRY_TRACE_FILE": path}).launch()
    vm.shutdown()
    if os.path.getsize(path) != 0:
        fail(f"trace file written with no event enabled: "
             f"{open(path).read()[:300]!r}")


if __name__ == "__main__":
    if os.environ.get("FERRY_TRACE_BUILD") == "0":
        ft.skip("built with -Dtrace=false: trace events compile to nothing")
    ft.main([test_precopy_trace, test_postcopy_trace,
             test_trace_off_by_default], timeout=120)

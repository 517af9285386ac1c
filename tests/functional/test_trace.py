#!/usr/bin/env python3
"""Tracing end to end: a -M none precopy migration whose source traces
migrate_set_state (FERRY_TRACE / FERRY_TRACE_FILE) must leave the states
setup, active, completed in that order in the trace file; -trace on the
command line must do the same for the destination."""

import os
import re

import ferrytest as ft
from ferrytest import VM, log, fail

LINE_RE = re.compile(r"^(\d+)@\d+\.\d{6}:(\w+) (.*)$")


def trace_states(path, pid):
    """The migrate_set_state states in the trace file, checking every line."""
    states = []
    with open(path) as f:
        for line in f.read().splitlines():
            m = LINE_RE.match(line)
            if not m:
                fail(f"{path}: malformed trace line {line!r}")
            if int(m.group(1)) != pid:
                fail(f"{path}: line from pid {m.group(1)}, expected {pid}")
            if m.group(2) != "migrate_set_state":
                fail(f"{path}: event {m.group(2)} was not enabled")
            states.append(m.group(3).removeprefix("new state "))
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
              "-trace", f"enable=migrate_*,file={dst_trace}"],
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
    ft.main([test_precopy_trace, test_trace_off_by_default], timeout=120)

#!/usr/bin/env python3
"""ferry-migrate between two Debian QEMU 7.2 processes (-M none, no guest):
precopy, immediate postcopy with --json, and a destination that refuses the
stream (RAM size mismatch) -> exit 1 with the reason shown."""

import json
import os
import subprocess

from ferrytest import (FERRY_MIGRATE, QEMU, VM, fail, log, main,
                       require_file, require_qemu)


def qemu(name, mem, incoming=False):
    args = ["-M", "none", "-m", mem, "-nodefaults"]
    if incoming:
        args += ["-incoming", "defer"]
    vm = VM(args, binary=QEMU, name=name, serial=False)
    # ferry-migrate needs the monitor: launch, then free our own connection
    vm.launch(connect=True)
    vm.qmp.close()
    vm.qmp = None
    return vm


def run_tool(*args, timeout=120):
    cmd = [FERRY_MIGRATE] + list(args)
    log("run: " + " ".join(cmd))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    log(f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def setup():
    require_qemu()
    require_file(FERRY_MIGRATE, "ferry-migrate")


def test_precopy():
    setup()
    src, dst = qemu("src", "256M"), qemu("dst", "256M", incoming=True)
    p = run_tool("--src", src.qmp_path, "--dst", "unix:" + dst.qmp_path,
                 "--max-bandwidth", "1G", "--downtime-limit", "100")
    if p.returncode != 0:
        fail(f"precopy exit {p.returncode}")
    for word in ("Migration completed", "downtime", "transferred",
                 "throughput", "passes", "65536 duplicate"):
        if word not in p.stdout:
            fail(f"summary lacks '{word}'")
    if "progress:" not in p.stderr:
        fail("no plain progress lines on a non-terminal stderr")


def test_postcopy_json():
    setup()
    src, dst = qemu("src", "256M"), qemu("dst", "256M", incoming=True)
    p = run_tool("--src", src.qmp_path, "--dst", dst.qmp_path, "--postcopy",
                 "--cap", "postcopy-blocktime=on", "--json")
    if p.returncode != 0:
        fail(f"postcopy exit {p.returncode}")
    r = json.loads(p.stdout)
    if r["status"] != "completed" or r["source"]["status"] != "completed":
        fail(f"bad status in {r}")
    if not r["derived"]["postcopy"]:
        fail("migration did not go through postcopy")
    if r["source"]["ram"]["postcopy-bytes"] <= 0:
        fail("no postcopy bytes on the source")
    if "postcopy-blocktime" not in r["destination"]:
        fail(f"destination blocktime missing: {r['destination']}")
    if r["destination"]["status"] != "completed":
        fail(f"destination status {r['destination']['status']}")
    if "progress:" in p.stderr:
        fail("--json must not print progress")


def test_size_mismatch_fails():
    setup()
    src = qemu("src", "256M")
    d = src.dir
    qmp = os.path.join(d, "dst.sock")
    dst_cmd = (f"{QEMU} -M none -m 128M -nodefaults -display none "
               f"-incoming defer -qmp unix:{qmp},server=on,wait=off")
    p = run_tool("--src", src.qmp_path, "--dst-cmd", dst_cmd)
    if p.returncode != 1:
        fail(f"expected exit 1, got {p.returncode}")
    if "failed" not in p.stderr:
        fail("the failure is not reported")
    if "Size mismatch" not in p.stderr:
        fail("the destination's reason is not shown")
    # the tool kills the destination it started
    r = subprocess.run(["pgrep", "-f", qmp], capture_output=True)
    if r.returncode == 0:
        fail("destination started by --dst-cmd still runs")


def test_usage_errors():
    setup()
    p = run_tool("--src", "/nonexistent/a.sock", "--dst", "/nonexistent/b")
    if p.returncode != 2 or "cannot connect to source QMP at " \
            "/nonexistent/a.sock: No such file" not in p.stderr:
        fail("bad connection error")
    p = run_tool("--src", "x", "--dst", "y", "--max-bandwidth", "12Q")
    if p.returncode != 2 or "--max-bandwidth" not in p.stderr:
        fail("bad size not rejected")
    p = run_tool("--src", "x")
    if p.returncode != 2:
        fail("missing --dst not rejected")


if __name__ == "__main__":
    main([test_precopy, test_postcopy_json, test_size_mismatch_fails,
          test_usage_errors], timeout=280)

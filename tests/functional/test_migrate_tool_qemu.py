#!/usr/bin/env python3
"""ferry-migrate between two Debian QEMU 7.2 processes (-M none, no guest):
precopy, immediate postcopy with --json, a destination that refuses the
stream (RAM size mismatch) -> exit 1 with the reason shown, and postcopy
recovery: the link (through relay.py) reset or black-holed in
postcopy-active, recovered by the tool (RAM compared afterwards), or left
paused with --recover=off."""

import json
import os
import socket
import subprocess
import time

import relay
from ferrytest import (FERRY_MIGRATE, QEMU, QMP, VM, fail, free_tcp_port,
                       log, main, make_tmpdir, require_file, require_qemu)

RECOVER_MEM = 256 << 20
RECOVER_DATA = 32 << 20         # random bytes: ~8 s of postcopy at 4 MiB/s


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


def recover_pair():
    """Source with random data and a second monitor for the test (the tool
    holds the first); destination listening on a port behind a relay."""
    d = make_tmpdir("ferrytest-recover-")
    data = os.path.join(d, "data.bin")
    with open(data, "wb") as f:
        f.write(os.urandom(RECOVER_DATA))
    mon = os.path.join(d, "src-test.sock")
    port = free_tcp_port()
    src = VM(["-M", "none", "-m", str(RECOVER_MEM >> 20), "-nodefaults",
              "-device", f"loader,file={data},addr=0x100000,force-raw=on",
              "-qmp", f"unix:{mon},server=on,wait=off"],
             binary=QEMU, name="src", serial=False)
    dst = VM(["-M", "none", "-m", str(RECOVER_MEM >> 20), "-nodefaults",
              "-incoming", f"tcp:127.0.0.1:{port}"],
             binary=QEMU, name="dst", serial=False)
    for vm in (src, dst):
        vm.launch(connect=True)
        vm.qmp.close()
        vm.qmp = None
    return src, dst, QMP(mon), relay.Relay(port)


def start_tool(*args):
    cmd = [FERRY_MIGRATE] + list(args)
    log("start: " + " ".join(cmd))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish_tool(proc, timeout=90):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        fail(f"ferry-migrate still running after {timeout}s: {err[-2000:]}")
    log(f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}")
    return proc.returncode, out, err


def wait_postcopy(mon, rel, timeout=30):
    """Until the source is postcopy-active with the link through the relay
    up, then a second more so that some pages have gone."""
    deadline = time.time() + timeout
    while mon.cmd("query-migrate").get("status") != "postcopy-active":
        if time.time() > deadline:
            fail("the source never reached postcopy-active")
        time.sleep(0.05)
    rel.wait_connections(1)
    time.sleep(1)


def same_ram(src_mon, dst):
    """pmemsave on both sides (the tool has let go of the destination's
    monitor) and compare."""
    dst.qmp = QMP(dst.qmp_path)
    a = os.path.join(dst.dir, "src.dump")
    src_mon.cmd("pmemsave", val=0, size=RECOVER_MEM, filename=a, timeout=300)
    b = dst.pmemsave(RECOVER_MEM)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        if fa.read() != fb.read():
            fail("the destination's RAM differs from the source's")


def tool_args(src, dst, rel, *extra):
    return ["--src", src.qmp_path, "--dst", dst.qmp_path, "--uri", rel.uri,
            "--postcopy", "--max-postcopy-bandwidth", "4M"] + list(extra)


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
    # Capped, so that the (all-zero) RAM cannot all go in precopy before
    # migrate-start-postcopy arrives (it once did, in 80 ms).
    p = run_tool("--src", src.qmp_path, "--dst", dst.qmp_path, "--postcopy",
                 "--max-bandwidth", "2M", "--cap", "postcopy-blocktime=on",
                 "--json")
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
    p = run_tool("--src", "x", "--dst", "y", "--recover=sometimes")
    if p.returncode != 2 or "unknown --recover" not in p.stderr:
        fail("bad --recover not rejected")
    p = run_tool("--src", "x", "--dst", "y", "--recover-retries", "0")
    if p.returncode != 2 or "--recover-retries" not in p.stderr:
        fail("--recover-retries 0 not rejected")


def test_recover_reset():
    """An RST on both sides: both pause by themselves; the tool recovers on
    a fresh port of 127.0.0.1 (derived from --uri, bypassing the relay)."""
    setup()
    src, dst, mon, rel = recover_pair()
    try:
        proc = start_tool(*tool_args(src, dst, rel))
        wait_postcopy(mon, rel)
        rel.reset()
        rc, out, err = finish_tool(proc)
        if rc != 0:
            fail(f"exit {rc} after a reset link")
        for text in ("Migration completed", "postcopy pauses    1",
                     "recovered in"):
            if text not in out:
                fail(f"summary lacks '{text}'")
        if "recovered from pause 1" not in err:
            fail("no recovery progress line")
        if len(rel.conns) != 1:
            fail(f"the recovery went through the relay: {len(rel.conns)}")
        same_ram(mon, dst)
    finally:
        relay.stop_all()


def test_recover_blackhole_retry():
    """A black hole nobody notices; the test pauses the source (as a user
    would) and the tool must pause the destination itself (it never
    notices, and 7.2 refuses migrate-recover unless paused).  --recover-uri
    is busy for the first 3 s, so migrate-recover fails and is retried."""
    setup()
    src, dst, mon, rel = recover_pair()
    busy = socket.socket()
    try:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        rport = busy.getsockname()[1]
        proc = start_tool(*tool_args(src, dst, rel, "--json",
                                     "--recover-uri", f"tcp:127.0.0.1:{rport}",
                                     "--recover-delay", "500",
                                     "--recover-retries", "20"))
        wait_postcopy(mon, rel)
        rel.blackhole()
        time.sleep(1)
        mon.cmd("migrate-pause")
        time.sleep(3)
        busy.close()
        rc, out, err = finish_tool(proc)
        if rc != 0:
            fail(f"exit {rc} after a black hole")
        r = json.loads(out)
        d = r["derived"]
        if d["pauses"] != 1 or len(d["recoveries"]) != 1:
            fail(f"pauses: {d}")
        rec = d["recoveries"][0]
        if rec["noticed-by"] != "source" or not rec["recovered"] or \
                rec["attempts"] < 2 or rec["paused-ms"] < 2000:
            fail(f"recovery record {rec}")
        if d["paused-ms"] != rec["paused-ms"]:
            fail(f"paused-ms {d['paused-ms']} != {rec['paused-ms']}")
        if r["status"] != "completed" or \
                r["destination"]["status"] != "completed":
            fail(f"status {r['status']} / {r['destination']['status']}")
        same_ram(mon, dst)
    finally:
        busy.close()
        relay.stop_all()


def test_recover_off():
    """--recover=off: a pause ends the tool with exit 1 and the commands
    to recover by hand."""
    setup()
    src, dst, mon, rel = recover_pair()
    try:
        proc = start_tool(*tool_args(src, dst, rel, "--recover=off"))
        wait_postcopy(mon, rel)
        rel.reset()
        rc, out, err = finish_tool(proc, timeout=30)
        if rc != 1:
            fail(f"expected exit 1, got {rc}")
        for text in ("--recover=off", '"migrate-recover"', '"resume":true',
                     "migrate-pause", "tcp:127.0.0.1:PORT"):
            if text not in err:
                fail(f"hint lacks '{text}'")
        # The tool stops at the first side to pause; a QEMU source notices
        # the reset only at its next write (after a rate-limit sleep).
        deadline = time.time() + 15
        while (st := mon.cmd("query-migrate")["status"]) != "postcopy-paused":
            if time.time() > deadline:
                fail(f"source {st}, expected postcopy-paused")
            time.sleep(0.05)
    finally:
        relay.stop_all()


if __name__ == "__main__":
    main([test_precopy, test_postcopy_json, test_size_mismatch_fails,
          test_usage_errors, test_recover_reset, test_recover_blackhole_retry,
          test_recover_off], timeout=280)

#!/usr/bin/env python3
"""Hostile or dead migration peers must not cost unbounded memory or hang.

- A fake destination (Python, unix socket) takes a postcopy source's
  stream and, once it has seen POSTCOPY_RUN, floods the return path with
  REQ_PAGES for distinct pages while no longer reading: the source must
  fail with "destination sent more than 4096 outstanding page requests"
  and its RSS must stay bounded.

All -M none: runs without /dev/kvm.
"""

import os
import socket
import struct
import threading
import time

import ferrytest as ft
import streamgen as sg
from ferrytest import VM, log, fail

MIG_RP_MSG_REQ_PAGES = 4
MIG_RP_MSG_REQ_PAGES_ID = 3
# The POSTCOPY_RUN command as it appears in the stream (inside PACKAGED).
RUN_BYTES = bytes([sg.COMMAND]) + sg.be16(sg.CMD_RUN) + sg.be16(0)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def query(vm):
    return vm.qmp.cmd("query-migrate")


def wait_status(vm, wanted, timeout=30.0):
    deadline = time.time() + timeout
    while True:
        st = query(vm)
        if st.get("status") in wanted:
            return st
        vm.check_alive()
        if time.time() > deadline:
            fail(f"{vm.name}: status {st.get('status')}, wanted {wanted}: {st}")
        time.sleep(0.05)


def rp_msg(mtype, payload):
    return sg.be16(mtype) + sg.be16(len(payload)) + payload


def read_until(conn, needle, limit_s):
    """Read the source's stream until needle was seen; False on timeout."""
    conn.settimeout(1.0)
    tail = b""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        try:
            data = conn.recv(1 << 20)
        except socket.timeout:
            continue
        if not data:
            return False
        tail = (tail + data)[-(1 << 16):]
        if needle in tail:
            return True
    return False


def test_req_pages_flood():
    """A destination asking for distinct pages without end: the source's
    request queue is capped, the migration fails with a clear error, RSS
    stays bounded and the source keeps answering QMP."""
    mem = 128 << 20
    d = ft.make_tmpdir("ferrytest-flood-")
    path = os.path.join(d, "mig.sock")
    pattern = os.path.join(d, "pattern.bin")
    with open(pattern, "wb") as f:
        f.write(os.urandom(32 << 20))
    lsock = socket.socket(socket.AF_UNIX)
    lsock.bind(path)
    lsock.listen(1)
    src = VM(["-M", "none", "-m", str(mem >> 20), "-device",
              f"loader,file={pattern},addr=0x100000,force-raw=on"],
             name="src", serial=False).launch()
    src.qmp.cmd("migrate-set-capabilities", capabilities=[
        {"capability": "postcopy-ram", "state": True}])
    # Slow, so that most pages are still unsent when the flood starts.
    src.qmp.cmd("migrate-set-parameters", **{
        "max-bandwidth": 1 << 20, "max-postcopy-bandwidth": 1 << 20})
    src.qmp.cmd("migrate", uri=f"unix:{path}")
    lsock.settimeout(10)
    conn, _ = lsock.accept()
    src.qmp.cmd("migrate-start-postcopy")
    if not read_until(conn, RUN_BYTES, 20):
        fail("no POSTCOPY_RUN from the source")
    wait_status(src, ("postcopy-active",))
    rss_before = rss_kib(src.proc.pid)

    # Every other page from the top down: no two requests touch, so none
    # merge, and we stop reading so the source cannot serve them fast.
    npages = mem // sg.PAGE
    first = rp_msg(MIG_RP_MSG_REQ_PAGES_ID,
                   sg.be64((npages - 1) * sg.PAGE) + sg.be32(sg.PAGE) +
                   sg.counted("ram"))
    cycle = b"".join(rp_msg(MIG_RP_MSG_REQ_PAGES,
                            sg.be64(p * sg.PAGE) + sg.be32(sg.PAGE))
                     for p in range(npages - 3, 0, -2))
    result = {"sent": 0}

    def flood():
        try:
            conn.sendall(first)
            # Up to 2M requests (what a queue per request would need
            # ~100 MB for); the source hangs up long before with the fix.
            for _ in range((2 << 20) // (npages // 2)):
                conn.sendall(cycle)
                result["sent"] += npages // 2 - 1
        except OSError as e:
            result["error"] = e

    t = threading.Thread(target=flood, daemon=True)
    t0 = time.time()
    t.start()
    t.join(30)
    st = wait_status(src, ("failed",), timeout=30)
    elapsed = time.time() - t0
    rss_after = rss_kib(src.proc.pid)
    log(f"flood: {result}, source {st} after {elapsed:.1f}s, "
        f"RSS {rss_before} -> {rss_after} KiB")
    desc = st.get("error-desc", "")
    if "destination sent more than 4096 outstanding page requests" not in desc:
        fail(f"unclear error: {st}")
    if rss_after - rss_before > 32 << 10:
        fail(f"source RSS grew by {rss_after - rss_before} KiB")
    if src.qmp.cmd("query-status")["status"] not in ("finish-migrate",
                                                      "postmigrate", "paused"):
        log(f"source runstate {src.qmp.cmd('query-status')}")
    conn.close()
    lsock.close()


if __name__ == "__main__":
    ft.main([test_req_pages_flood], timeout=300)

#!/usr/bin/env python3
"""Descriptor passing over QMP and the fd: migration transport.

Two RAM-only ferry processes (-M none, content from -device loader); the
test makes a socketpair and hands one end to each side with getfd
(SCM_RIGHTS on the QMP unix socket), then migrate-incoming fd:NAME on the
destination and migrate fd:NAME on the source.  The destination's RAM must
equal the source's, the named descriptors must be consumed, and neither
process may keep descriptors it no longer needs (/proc/PID/fd counts).
Also the errors: getfd without a descriptor, a name starting with a digit,
closefd of an unknown name, migrate to an unknown fd name; and the limits
on named descriptors (32 per client, 128 in all), whose refused
descriptors must be closed, not kept."""

import json
import os
import socket
import time

import ferrytest as ft
from ferrytest import VM, fail, log

MEM = 64 << 20
LOAD_ADDR = 0x100000
PATTERN = 8 << 20


def fd_count(vm):
    return len(os.listdir(f"/proc/{vm.proc.pid}/fd"))


def wait_fd_count(vm, want, timeout=10.0):
    """Descriptors are closed by threads winding down: allow a moment."""
    deadline = time.time() + timeout
    while True:
        n = fd_count(vm)
        if n == want:
            return
        if time.time() > deadline:
            fail(f"{vm.name}: {n} open descriptors, expected {want}: "
                 f"{sorted(os.listdir(f'/proc/{vm.proc.pid}/fd'))}")
        time.sleep(0.05)


def cmd_with_fd(vm, name, args, fd, qmp=None):
    """Send one QMP command with fd attached; returns the reply dict."""
    qmp = qmp or vm.qmp
    data = (json.dumps({"execute": name, "arguments": args}) + "\n").encode()
    socket.send_fds(qmp.sock, [data], [fd])
    return qmp.reply()


def getfd(vm, fdname, fd):
    r = cmd_with_fd(vm, "getfd", {"fdname": fdname}, fd)
    if "error" in r:
        fail(f"{vm.name}: getfd {fdname}: {r['error']}")


def expect_error(fn, desc):
    try:
        fn()
    except ft.QMPError as e:
        if e.desc != desc:
            fail(f"error {e.desc!r}, expected {desc!r}")
        return
    fail(f"no error, expected {desc!r}")


CLIENT_NAMED_FDS = 32
TOTAL_NAMED_FDS = 128


def test_named_fd_limits():
    """A client may not pile up named descriptors without bound: past 32
    of its own, or 128 in all, getfd fails naming the limit, and the
    descriptor it came with is closed (the /proc fd count stays put)."""
    vm = VM(["-M", "none", "-m", "16M"], name="getfd-limits",
            serial=False).launch()
    r, w = os.pipe()
    clients = []
    try:
        base = fd_count(vm)
        for i in range(CLIENT_NAMED_FDS):
            getfd(vm, f"a{i}", w)
        wait_fd_count(vm, base + CLIENT_NAMED_FDS)
        for i in range(CLIENT_NAMED_FDS, CLIENT_NAMED_FDS + 40):
            reply = cmd_with_fd(vm, "getfd", {"fdname": f"a{i}"}, w)
            err = reply.get("error", {})
            if err.get("class") != "GenericError" or \
                    f"limit per client is {CLIENT_NAMED_FDS}" not in \
                    err.get("desc", ""):
                fail(f"getfd number {i + 1} of one client: {reply}")
        # replacing one of its own names is still allowed
        getfd(vm, "a0", w)
        wait_fd_count(vm, base + CLIENT_NAMED_FDS)
        log(f"per client: {err['desc']}")

        # other clients fill the table up to the total
        for k in range(TOTAL_NAMED_FDS // CLIENT_NAMED_FDS - 1):
            q = ft.QMP(vm.qmp_path)
            clients.append(q)
            for i in range(CLIENT_NAMED_FDS):
                reply = cmd_with_fd(vm, "getfd", {"fdname": f"c{k}-{i}"}, w,
                                    qmp=q)
                if "error" in reply:
                    fail(f"client {k}, getfd {i}: {reply}")
        q = ft.QMP(vm.qmp_path)
        clients.append(q)
        held = base + len(clients) + TOTAL_NAMED_FDS
        wait_fd_count(vm, held)
        for i in range(10):
            reply = cmd_with_fd(vm, "getfd", {"fdname": f"late{i}"}, w,
                                qmp=q)
            err = reply.get("error", {})
            if err.get("class") != "GenericError" or \
                    f"limit for all QMP clients is {TOTAL_NAMED_FDS}" not in \
                    err.get("desc", ""):
                fail(f"getfd past the total: {reply}")
        wait_fd_count(vm, held)
        log(f"total: {err['desc']}")

        # closefd makes room again, for any client
        q.cmd("closefd", fdname="c0-0")
        getfd_reply = cmd_with_fd(vm, "getfd", {"fdname": "late"}, w, qmp=q)
        if "error" in getfd_reply:
            fail(f"getfd after closefd: {getfd_reply}")
        wait_fd_count(vm, held)
    finally:
        for q in clients:
            q.close()
        os.close(r)
        os.close(w)
    vm.shutdown()


def pattern_file():
    d = ft.make_tmpdir("ferrytest-getfd-")
    path = os.path.join(d, "pattern.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(PATTERN))
    return path


def wait_migration(vm, timeout=60.0):
    deadline = time.time() + timeout
    while True:
        st = vm.qmp.cmd("query-migrate")
        if st.get("status") == "completed":
            return st
        if st.get("status") in ("failed", "cancelled"):
            fail(f"{vm.name}: migration {st}: {vm.stderr()[-1000:]}")
        vm.check_alive()
        if time.time() > deadline:
            fail(f"{vm.name}: migration status {st.get('status')}")
        time.sleep(0.05)


def test_errors():
    vm = VM(["-M", "none", "-m", "16M"], name="getfd-errors",
            serial=False).launch()
    base = fd_count(vm)
    expect_error(lambda: vm.qmp.cmd("getfd", fdname="x"),
                 "No file descriptor supplied via SCM_RIGHTS")
    expect_error(lambda: vm.qmp.cmd("closefd", fdname="x"),
                 "File descriptor named 'x' not found")

    r, w = os.pipe()
    try:
        reply = cmd_with_fd(vm, "getfd", {"fdname": "9lives"}, w)
        if reply.get("error", {}).get("desc") != \
                "Parameter 'fdname' expects a name not starting with a digit":
            fail(f"getfd with a digit name: {reply}")
        # a command that takes no descriptor closes the one sent with it
        reply = cmd_with_fd(vm, "query-status", {}, w)
        if "return" not in reply:
            fail(f"query-status with an fd: {reply}")
        wait_fd_count(vm, base)

        # getfd keeps it; closefd closes it (the pipe sees EOF)
        getfd(vm, "spare", w)
        wait_fd_count(vm, base + 1)
        vm.qmp.cmd("closefd", fdname="spare")
        wait_fd_count(vm, base)
        os.close(w)
        w = -1
        if os.read(r, 1) != b"":
            fail("the pipe's write end is still open after closefd")
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)

    # migrate to an unknown name fails without touching the VM
    vm.qmp.cmd("migrate", uri="fd:nosuch")
    deadline = time.time() + 30
    while True:
        st = vm.qmp.cmd("query-migrate")
        if st.get("status") == "failed":
            break
        if time.time() > deadline:
            fail(f"migrate fd:nosuch: {st}")
        time.sleep(0.05)
    if "nosuch" not in st.get("error-desc", ""):
        fail(f"error-desc does not name the fd: {st}")
    log(f"migrate fd:nosuch: {st.get('error-desc')}")
    wait_fd_count(vm, base)
    vm.shutdown()


def test_migrate_over_fd():
    pattern = pattern_file()
    src = VM(["-M", "none", "-m", str(MEM >> 20), "-device",
              f"loader,file={pattern},addr={LOAD_ADDR:#x},force-raw=on"],
             name="getfd-src", serial=False).launch()
    dst = VM(["-M", "none", "-m", str(MEM >> 20), "-incoming", "defer"],
             name="getfd-dst", serial=False).launch()
    src_base, dst_base = fd_count(src), fd_count(dst)

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        getfd(src, "mig", a.fileno())
        getfd(dst, "mig", b.fileno())
    finally:
        a.close()
        b.close()
    wait_fd_count(src, src_base + 1)
    wait_fd_count(dst, dst_base + 1)

    dst.qmp.cmd("migrate-incoming", uri="fd:mig")
    src.qmp.cmd("migrate", uri="fd:mig")
    sst = wait_migration(src)
    wait_migration(dst)
    log(f"source: {sst.get('ram')}")

    # migrate and migrate-incoming took the names
    expect_error(lambda: src.qmp.cmd("closefd", fdname="mig"),
                 "File descriptor named 'mig' not found")
    expect_error(lambda: dst.qmp.cmd("closefd", fdname="mig"),
                 "File descriptor named 'mig' not found")

    src.qmp.cmd("stop")
    dst.qmp.cmd("stop")
    src_dump = src.pmemsave(MEM)
    dst_dump = dst.pmemsave(MEM)
    with open(pattern, "rb") as f:
        want = f.read()
    with open(src_dump, "rb") as f:
        sram = f.read()
    with open(dst_dump, "rb") as f:
        dram = f.read()
    if dram[LOAD_ADDR:LOAD_ADDR + PATTERN] != want:
        fail("the destination lacks the loaded content")
    if dram != sram:
        bad = [i for i in range(0, MEM, 4096)
               if dram[i:i + 4096] != sram[i:i + 4096]]
        fail(f"{len(bad)} pages differ, first at {bad[0]:#x}")

    # the migration channels are closed on both sides once done
    wait_fd_count(src, src_base)
    wait_fd_count(dst, dst_base)
    src.shutdown()
    dst.shutdown()


if __name__ == "__main__":
    ft.main([test_errors, test_named_fd_limits, test_migrate_over_fd],
            timeout=240)

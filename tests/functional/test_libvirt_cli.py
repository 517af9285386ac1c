#!/usr/bin/env python3
"""What libvirt 9.0 does to an emulator, without libvirt: its command line
(a QMP monitor on an inherited listening socket, the options ferry accepts
without effect, the ones it refuses by name), its probe command line, and the query-migrate answer of a VM that was itself started by an
incoming migration and then migrates on.  Machine x-ram / none: no KVM
needed.  The suite that drives ferry through real libvirt daemons is
tests/libvirt/."""

import os
import re
import socket
import subprocess
import time

import ferrytest as ft


def libvirt_args(d, monitor_fd, extra=()):
    key = os.path.join(d, "master-key.aes")
    with open(key, "wb") as f:
        f.write(os.urandom(32))
    return ["-name", "guest=lv,debug-threads=on", "-S",
            "-object", f"secret,id=masterKey0,format=raw,file={key}",
            "-machine", "x-ram,usb=off,dump-guest-core=off,memory-backend=ram",
            "-accel", "tcg", "-m", "64",
            "-object", "memory-backend-ram,id=ram,size=67108864",
            "-overcommit", "mem-lock=off",
            "-smp", "1,sockets=1,cores=1,threads=1",
            "-uuid", "0f0e0d0c-0b0a-4908-8706-050403020100",
            "-display", "none", "-no-user-config", "-nodefaults",
            "-chardev", f"socket,id=charmonitor,fd={monitor_fd},server=on,wait=off",
            "-mon", "chardev=charmonitor,id=monitor,mode=control",
            "-rtc", "base=utc", "-no-shutdown", "-no-acpi", "-boot", "strict=on",
            "-audiodev", '{"id":"audio1","driver":"none"}',
            "-msg", "timestamp=on"] + list(extra)


def start_like_libvirt(d, extra=()):
    """Start ferry with a monitor socket it inherits, as libvirt does, and
    return (process, QMP client)."""
    path = os.path.join(d, "monitor.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(1)
    args = libvirt_args(d, lsock.fileno(), extra)
    ft.log("ferry " + " ".join(args))
    proc = subprocess.Popen([ft.FERRY] + args, pass_fds=(lsock.fileno(),),
                            stdin=subprocess.DEVNULL,
                            stderr=open(os.path.join(d, "stderr.log"), "wb"))
    lsock.close()
    try:
        q = ft.QMP(path)
    except Exception:
        proc.kill()
        raise
    return proc, q


def test_libvirt_command_line():
    d = ft.make_tmpdir()
    proc, q = start_like_libvirt(d)
    try:
        if q.cmd("query-status")["status"] != "prelaunch":
            ft.fail("-S was not honoured")
        devs = {c["label"]: c for c in q.cmd("query-chardev")}
        if list(devs) != ["charmonitor"] or \
                not devs["charmonitor"]["frontend-open"]:
            ft.fail(f"query-chardev: {devs}")
        q.cmd("cont")
        if q.cmd("query-status")["status"] != "running":
            ft.fail("cont did not start the VM")
        q.cmd("quit")
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_probe_command_line():
    """libvirt's capability probe: -daemonize must leave the QMP socket in
    place when the parent exits."""
    d = ft.make_tmpdir()
    sock = os.path.join(d, "qmp.monitor")
    pidfile = os.path.join(d, "qmp.pid")
    p = subprocess.run([ft.FERRY, "-S", "-no-user-config", "-nodefaults",
                        "-nographic", "-machine", "none,accel=kvm:tcg",
                        "-qmp", f"unix:{sock},server=on,wait=off",
                        "-pidfile", pidfile, "-daemonize"],
                       capture_output=True, text=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        ft.fail(f"probe command line refused: {p.stderr}")
    pid = int(open(pidfile).read())
    try:
        if not os.path.exists(sock):
            ft.fail("QMP socket missing when the daemonizing parent exited")
        q = ft.QMP(sock)
        if q.cmd("query-status")["status"] != "prelaunch":
            ft.fail("probe VM is not in prelaunch")
        q.cmd("quit")
        deadline = time.time() + 10
        while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
            time.sleep(0.05)
    finally:
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, 9)


def test_refusals_name_the_option():
    d = ft.make_tmpdir()
    for args, words in [
            (["-M", "pc", "-accel", "tcg"], ["needs KVM", "tcg"]),
            (["-M", "none", "-sandbox", "on"], ["-sandbox", "seccomp"]),
            (["-M", "none", "-audiodev", "pa,id=a"], ["-audiodev", "sound"]),
            (["-M", "none", "-overcommit", "mem-lock=on"],
             ["-overcommit", "mem-lock=on"]),
            (["-M", "none", "-chardev", "pty,id=p"], ["-chardev", "pty"]),
            (["-M", "x-ram", "-chardev", "null,id=s", "-device",
              "isa-serial,chardev=s"], ["isa-serial", "no ISA bus"]),
            (["-M", "none", "-mon", "chardev=x,mode=readline"],
             ["-mon", "readline"])]:
        p = subprocess.run([ft.FERRY] + args, capture_output=True, text=True,
                           timeout=20, stdin=subprocess.DEVNULL, cwd=d)
        if p.returncode != 1 or not all(w in p.stderr for w in words):
            ft.fail(f"{args}: exit {p.returncode}, stderr {p.stderr!r}")
    # -msg timestamp=on: reports carry QEMU's ISO 8601 UTC prefix
    p = subprocess.run([ft.FERRY, "-msg", "timestamp=on", "-M", "pc",
                        "-accel", "tcg"], capture_output=True, text=True,
                       timeout=20, stdin=subprocess.DEVNULL)
    if not re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z ferry: ",
                    p.stderr):
        ft.fail(f"no timestamp on {p.stderr!r}")


def test_query_migrate_prefers_outgoing():
    """B starts from A's stream, then migrates to a destination that drops
    the connection: B's query-migrate must report its own failed outgoing
    migration, not the completed incoming one (libvirt hangs otherwise)."""
    mem = ["-M", "none", "-m", "32M", "-nodefaults"]
    a = ft.VM(mem, name="lv-a", serial=False).launch()
    b = ft.VM(mem + ["-incoming", "defer"], name="lv-b", serial=False).launch()
    port = ft.free_tcp_port()
    b.qmp.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
    a.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
    a.wait_migration()
    b.wait_status("running")
    if b.qmp.cmd("query-migrate").get("status") != "completed":
        ft.fail("destination does not report its completed incoming migration")
    # a listener that accepts and closes at once
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    b.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{lsock.getsockname()[1]}")
    conn, _ = lsock.accept()
    conn.close()
    lsock.close()
    deadline = time.time() + 30
    while True:
        st = b.qmp.cmd("query-migrate").get("status")
        if st == "failed":
            break
        if st == "completed":
            ft.fail("query-migrate reports the incoming migration, not the "
                    "outgoing one")
        if time.time() > deadline:
            ft.fail(f"outgoing migration never failed: {st}")
        time.sleep(0.05)
    if b.query_status() != "running":
        ft.fail("B did not keep running after its failed migration")
    a.shutdown()
    b.shutdown()


if __name__ == "__main__":
    ft.main([test_libvirt_command_line, test_probe_command_line,
             test_refusals_name_the_option, test_query_migrate_prefers_outgoing],
            timeout=180)

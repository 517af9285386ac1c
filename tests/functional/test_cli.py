#!/usr/bin/env python3
"""Command line: QEMU's option syntax, clear errors, daemonize/pidfile,
memory backends and -device loader (machine 'none': no KVM needed)."""

import os
import subprocess
import sys
import time

import ferrytest as ft


def run(args, timeout=20):
    return subprocess.run([ft.FERRY] + args, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def expect_error(args, words):
    p = run(args)
    if p.returncode != 1:
        ft.fail(f"{args}: exit {p.returncode}, expected 1; stderr {p.stderr!r}")
    for w in words:
        if w not in p.stderr:
            ft.fail(f"{args}: stderr {p.stderr!r} lacks {w!r}")


def test_bad_options():
    expect_error(["-foo"], ["-foo", "invalid option"])
    expect_error(["-m"], ["-m", "requires an argument"])
    expect_error(["-M", "none", "-m", "12Q"], ["12Q"])
    expect_error(["-M", "none", "-m", "-5"], ["-5"])
    expect_error(["-M", "nosuchmachine"], ["nosuchmachine"])
    expect_error(["-M", "none", "-smp", "0"], ["smp"])
    expect_error(["-M", "none", "-serial", "bogus:x"], ["bogus"])
    expect_error(["-M", "none", "-qmp", "carrier-pigeon:x"], ["carrier-pigeon"])
    expect_error(["-M", "none", "-object", "memory-backend-ram,id=m,size=1M,colour=red"],
                 ["colour"])
    expect_error(["-M", "none,memory-backend=nothere", "-m", "64M"], ["nothere"])
    pc_kernel = ["-M", "pc", "-accel", "kvm", "-kernel", "/nonexistent/kernel"]
    if ft.kvm_usable():
        expect_error(pc_kernel, ["/nonexistent/kernel"])
    else:
        # ferry opens /dev/kvm before the kernel: the error must say so.
        msg = ("SKIPPED: -kernel /nonexistent/kernel: no /dev/kvm (checking "
               "the KVM error instead of the missing-kernel one)")
        ft.log(msg)
        print(msg, file=sys.stderr, flush=True)
        expect_error(pc_kernel, ["pc", "KVM", "/dev/kvm"])


def test_version_and_help():
    p = run(["-version"])
    if p.returncode != 0 or "version" not in p.stdout:
        ft.fail(f"-version: {p.returncode} {p.stdout!r}")
    p = run(["-h"])
    if p.returncode != 0 or "-incoming" not in p.stdout:
        ft.fail(f"-h: {p.returncode} {p.stdout[:200]!r}")
    p = run(["-M", "help"])
    if p.returncode != 0 or "pc" not in p.stdout or "none" not in p.stdout:
        ft.fail(f"-M help: {p.stdout!r}")


def test_daemonize_pidfile():
    d = ft.make_tmpdir()
    pidfile = os.path.join(d, "ferry.pid")
    sock = os.path.join(d, "qmp.sock")
    p = run(["-M", "none", "-m", "32M", "-display", "none", "-daemonize",
             "-pidfile", pidfile, "-qmp", f"unix:{sock},server=on,wait=off"])
    if p.returncode != 0:
        ft.fail(f"-daemonize exited {p.returncode}: {p.stderr}")
    pid = int(open(pidfile).read().strip())
    try:
        os.kill(pid, 0)
        q = ft.QMP(sock)
        if q.cmd("query-status")["status"] != "running":
            ft.fail("daemonized VM not running")
        q.cmd("quit")
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            ft.fail("daemon did not exit after quit")
        if os.path.exists(pidfile):
            ft.fail("pidfile left behind")
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def test_machine_merge_backend_and_loader():
    d = ft.make_tmpdir()
    blob = os.path.join(d, "blob.bin")
    data = os.urandom(3 * 4096 + 100)
    with open(blob, "wb") as f:
        f.write(data)
    vm = ft.VM(["-M", "none", "-machine", "memory-backend=mem0",
                "-object", "memory-backend-memfd,id=mem0,size=64M,share=on",
                "-m", "64M", "-device", f"loader,file={blob},addr=0x201000,force-raw=on"],
               name="backend").launch()
    dump = vm.pmemsave(len(data), addr=0x201000)
    if open(dump, "rb").read() != data:
        ft.fail("-device loader data not found in guest RAM")
    # the last page of RAM is there; one past the end is refused
    vm.pmemsave(4096, addr=64 * 1024 * 1024 - 4096)
    try:
        vm.qmp.cmd("pmemsave", val=64 * 1024 * 1024, size=4096,
                   filename=os.path.join(d, "x"))
        ft.fail("pmemsave past the end of RAM succeeded")
    except ft.QMPError as e:
        ft.log(f"pmemsave past RAM refused: {e}")
    vm.shutdown()
    expect_error(["-M", "none", "-machine", "memory-backend=mem0",
                  "-object", "memory-backend-ram,id=mem0,size=64M", "-m", "128M"],
                 ["memory-backend", "-m"])
    expect_error(["-M", "none", "-m", "16M",
                  "-device", f"loader,file={blob},addr=0xfff000,force-raw=on"],
                 ["loader"])


if __name__ == "__main__":
    ft.main([test_bad_options, test_version_and_help, test_daemonize_pidfile,
             test_machine_merge_backend_and_loader], timeout=180)

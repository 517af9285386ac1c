#!/usr/bin/env python3
"""Precopy failure semantics between real ferry processes.

- migrate_cancel while active: the source is cancelled, keeps running its
  guest, and a second migration to a fresh destination succeeds.
- migrate_cancel of a paused source: it stays paused.
- the destination killed mid-way: the source reports failed with an
  error-desc, keeps running, and can be migrated again.
- corrupted streams fed to a destination (-incoming exec:cat FILE): it
  exits non-zero with one error line naming what was wrong, never with a
  signal or a sanitizer report.

The guest tests need /dev/kvm and the test guest; the stream tests use
-M none and run anywhere.
"""

import os
import signal
import socket
import subprocess
import time

import ferrytest as ft
from ferrytest import wait_runstate
import streamgen as sg

GUEST_MEM = "256M"
GUEST_MEM_BYTES = 256 << 20
# A 32 MiB swept region keeps the dirty set small enough to converge.
GUEST_APPEND = "start=0x400000 end=0x2400000 seed=0x77"
NONE_MEM = "64M"
NONE_MEM_BYTES = 64 << 20


# ---- helpers -----------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def guest_vm(name, incoming=None):
    args = ft.ferry_guest_args(GUEST_MEM, 1, GUEST_APPEND)
    if incoming:
        args += ["-incoming", incoming]
    return ft.VM(args, name=name)


def start_source():
    src = guest_vm("src").launch()
    src.wait_serial("guest: ncpus=", timeout=120)
    src.wait_sweeps(1, 2, timeout=120)
    return src


def start_destination(name):
    port = free_port()
    dst = guest_vm(name, incoming=f"tcp:127.0.0.1:{port}").launch()
    return dst, f"tcp:127.0.0.1:{port}"


def query(vm):
    return vm.qmp.cmd("query-migrate")


def wait_status(vm, wanted, timeout=120.0):
    """Poll query-migrate until its status is in wanted; return the reply."""
    deadline = time.time() + timeout
    while True:
        info = query(vm)
        if info.get("status") in wanted:
            return info
        vm.check_alive()
        if time.time() > deadline:
            ft.fail(f"{vm.name}: migration status {info.get('status')}, "
                    f"wanted one of {wanted}")
        time.sleep(0.1)


def runstate(vm):
    return vm.qmp.cmd("query-status")["status"]


def assert_sweeping(vm, more=2, timeout=60):
    """The guest is alive and still writing RAM: new sweeps keep coming."""
    before = vm.sweeps(1)[0]
    vm.wait_sweeps(1, before + more, timeout=timeout)


def migrate_and_check(src, name):
    """A full, successful migration to a fresh destination, RAM verified."""
    params = src.guest_params()
    dst, uri = start_destination(name)
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=0)
    src.qmp.cmd("migrate", uri=uri)
    info = wait_status(src, ("completed", "failed", "cancelled"), timeout=240)
    if info["status"] != "completed":
        ft.fail(f"second migration did not complete: {info}")
    wait_runstate(src, "postmigrate")
    wait_status(dst, ("completed",), timeout=60)
    wait_runstate(dst, "running")
    time.sleep(0.5)
    dst.qmp.cmd("stop")
    dump = dst.pmemsave(GUEST_MEM_BYTES)
    ok, report = ft.guest_check(dump, 1, params["start"], params["end"],
                                params["seed"], min_sweeps=1)
    if not ok:
        ft.fail(f"destination RAM check failed:\n{report}")
    ft.log(f"{name}: RAM verified: {report.strip().splitlines()[-1]}")
    dst.shutdown()


# ---- guest tests -----------------------------------------------------------

def test_cancel_active():
    src = start_source()
    dst, uri = start_destination("dst1")
    # 4 MB/s: the first pass over the 32 MiB region takes seconds.
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=4 << 20)
    src.qmp.cmd("migrate", uri=uri)
    wait_status(src, ("active",), timeout=30)
    time.sleep(1.0)
    info = query(src)
    if info["status"] != "active":
        ft.fail(f"migration not active before cancel: {info}")
    src.qmp.cmd("migrate_cancel")
    info = wait_status(src, ("cancelled", "failed", "completed"), timeout=30)
    if info["status"] != "cancelled":
        ft.fail(f"status after migrate_cancel: {info}")
    wait_runstate(src, "running")
    assert_sweeping(src)
    # The destination saw its stream cut: it must not be running a guest.
    deadline = time.time() + 30
    while dst.proc.poll() is None and time.time() < deadline:
        try:
            if query(dst).get("status") == "failed":
                break
        except (AssertionError, OSError):
            break
        time.sleep(0.1)
    rc = dst.proc.poll()
    if rc is not None and rc < 0:
        ft.fail(f"destination died with signal {-rc}: {dst.stderr()}")
    if rc is None and runstate(dst) == "running":
        ft.fail("destination runs a guest after a cancelled migration")
    dst.kill()
    migrate_and_check(src, "dst2")
    src.shutdown()


def test_cancel_paused():
    src = start_source()
    src.qmp.cmd("stop")
    src.qmp.wait_event("STOP")
    dst, uri = start_destination("dst1")
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=1 << 20)
    src.qmp.cmd("migrate", uri=uri)
    wait_status(src, ("active",), timeout=30)
    time.sleep(0.5)
    src.qmp.cmd("migrate_cancel")
    info = wait_status(src, ("cancelled", "failed", "completed"), timeout=30)
    if info["status"] != "cancelled":
        ft.fail(f"status after migrate_cancel: {info}")
    wait_runstate(src, "paused")
    before = src.sweeps(1)
    time.sleep(1.0)
    if src.sweeps(1) != before:
        ft.fail("guest swept while the source should be paused")
    dst.kill()
    src.qmp.cmd("cont")
    assert_sweeping(src)
    src.shutdown()


def test_destination_killed():
    src = start_source()
    dst, uri = start_destination("dst1")
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=4 << 20)
    src.qmp.cmd("migrate", uri=uri)
    wait_status(src, ("active",), timeout=30)
    time.sleep(1.0)
    dst.proc.send_signal(signal.SIGKILL)
    dst.proc.wait(10)
    info = wait_status(src, ("failed", "cancelled", "completed"), timeout=60)
    if info["status"] != "failed":
        ft.fail(f"status after the destination died: {info}")
    desc = info.get("error-desc", "")
    if not desc:
        ft.fail(f"failed migration without error-desc: {info}")
    ft.log(f"error-desc: {desc}")
    wait_runstate(src, "running")
    assert_sweeping(src)
    migrate_and_check(src, "dst2")
    src.shutdown()


# ---- corrupted streams -----------------------------------------------------

SANITIZER_WORDS = ("AddressSanitizer", "runtime error:", "LeakSanitizer",
                   "UndefinedBehaviorSanitizer", "Segmentation fault")


def load_stream(data, workdir, name):
    """Feed data to a -M none destination; (returncode, stderr)."""
    path = os.path.join(workdir, name + ".bin")
    with open(path, "wb") as f:
        f.write(data)
    try:
        p = subprocess.run([ft.FERRY, "-M", "none", "-m", NONE_MEM,
                            "-nodefaults", "-display", "none",
                            "-incoming", f"exec:cat {path}"],
                           stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, errors="replace", timeout=60)
    except subprocess.TimeoutExpired:
        ft.fail(f"{name}: the destination hung on a corrupted stream")
    return p.returncode, p.stderr


def expect_rejected(data, workdir, name, words):
    rc, err = load_stream(data, workdir, name)
    lines = [l for l in err.splitlines() if l.strip()]
    if rc < 0:
        ft.fail(f"{name}: killed by signal {-rc}: {err}")
    if rc == 0:
        ft.fail(f"{name}: corrupted stream accepted (exit 0)")
    for w in SANITIZER_WORDS:
        if w in err:
            ft.fail(f"{name}: sanitizer/crash report:\n{err}")
    if len(lines) != 1:
        ft.fail(f"{name}: expected one error line, got {len(lines)}:\n{err}")
    for w in words:
        if w.lower() not in lines[0].lower():
            ft.fail(f"{name}: error line does not mention {w!r}: {lines[0]}")
    ft.log(f"{name}: rc={rc} {lines[0]}")


def valid_stream():
    return sg.precopy_stream(NONE_MEM_BYTES, sg.sample_pages(4))


def flipped(s, mark, delta=0, xor=0xFF):
    b = bytearray(s.bytes())
    b[s.marks[mark] + delta] ^= xor
    return bytes(b)


def ram_stream(blocks=(("ram", NONE_MEM_BYTES),)):
    """Header and a RAM START for the -M none destination."""
    s = sg.Stream()
    s.header("none")
    s.ram_start(sg.SID_RAM, list(blocks))
    return s


def test_valid_stream_loads():
    """The generator itself is right: its stream loads and lands in RAM."""
    workdir = ft.make_tmpdir()
    path = os.path.join(workdir, "valid.bin")
    pages = sg.sample_pages(4)
    with open(path, "wb") as f:
        f.write(sg.precopy_stream(NONE_MEM_BYTES, pages).bytes())
    vm = ft.VM(["-M", "none", "-m", NONE_MEM, "-incoming", f"exec:cat {path}"],
               name="dst-valid", serial=False).launch()
    info = wait_status(vm, ("completed", "failed"), timeout=30)
    if info["status"] != "completed":
        ft.fail(f"valid generated stream not loaded: {info} {vm.stderr()}")
    dump = vm.pmemsave(NONE_MEM_BYTES)
    with open(dump, "rb") as f:
        ram = f.read()
    for off, data in pages:
        want = bytes([data]) * sg.PAGE if isinstance(data, int) else data
        if ram[off:off + sg.PAGE] != want:
            ft.fail(f"page {off:#x} not loaded as sent")
    vm.shutdown()


def test_corrupted_generated():
    workdir = ft.make_tmpdir()
    s = valid_stream()
    v = s.bytes()
    cases = [
        ("flip-magic", flipped(s, "header", 0), ["migration stream"]),
        ("flip-version", flipped(s, "header", 7), ["version"]),
        ("flip-machine", flipped(s, "configuration", 5, 0x20), ["machine"]),
        ("flip-section-type", flipped(s, "section:ram:1", 0, 0x40),
         ["section type"]),
        ("flip-section-id", flipped(s, "section:2:2", 4, 0x01),
         ["section id"]),
        ("flip-idstr", flipped(s, "idstr:ram", 1, 0x01), ["sam"]),
        ("flip-page-header", flipped(s, "page:0x100000", 7, 0x40),
         ["flags", "ram"]),
        ("flip-page-offset", flipped(s, "page:0x100000", 3, 0x80),
         ["offset", "ram", "0x8000100000"]),
        ("flip-block-name", flipped(s, "blockname:0x100000", 1, 0x01),
         ["ramblock", "sam"]),
        ("flip-block-length", flipped(s, "ram:block:ram", 5, 0x01),
         ["length", "ram"]),
    ]
    for mark in ("configuration", "section:ram:1", "ram:block:ram",
                 "blockname:0x100000", "payload:0x111000",
                 "section:timer:4", "eof"):
        cases.append((f"truncated-at-{mark}", v[:s.marks[mark] + 3],
                      ["end of stream"]))

    t = sg.Stream()
    t.header("none")
    t.section_header(sg.FULL, 9, "nosuchdev", 0, 1)
    t.put(bytes(8)).footer(9).eof_vmdesc()
    cases.append(("unknown-section", t.bytes(),
                  ["unknown", "section", "nosuchdev"]))

    t = ram_stream([("pc.ram", NONE_MEM_BYTES)])
    cases.append(("wrong-block-setup", t.bytes(), ["ramblock", "pc.ram"]))
    t = ram_stream()
    t.ram_part(sg.SID_RAM, [("pc.ram", 0x1000, sg.page_pattern(0x1000))])
    cases.append(("wrong-block-page", t.bytes(), ["ramblock", "pc.ram"]))

    for off in (NONE_MEM_BYTES, NONE_MEM_BYTES + 0x10000,
                0xFFFFFFFFFFFFF000):
        t = ram_stream()
        t.ram_part(sg.SID_RAM, [("ram", off, sg.page_pattern(off))])
        cases.append((f"page-past-end-{off:#x}", t.bytes(),
                      ["offset", "ram", f"{off:#x}"]))

    t = sg.Stream()
    t.header("none")
    t.put(bytes([sg.START]), sg.be32(2), b"\0", sg.be32(0), sg.be32(4))
    cases.append(("idstr-length-0", t.bytes(), ["ID string"]))
    t = ram_stream()
    t.section_header(sg.PART, sg.SID_RAM)
    t.put(sg.be64(0x1000 | sg.RAM_PAGE), b"\xff" + b"ram")
    cases.append(("block-name-length-255", t.bytes(), ["ram", "end of stream"]))

    for name, cmd, payload, length, words in (
            ("cmd-ping-length-3", sg.CMD_PING, b"\0\0\0", None,
             ["length", "PING"]),
            ("cmd-open-rp-length-5", sg.CMD_OPEN_RP, bytes(5), None,
             ["length", "OPEN_RETURN_PATH"]),
            ("cmd-ping-length-past-end", sg.CMD_PING, b"", 60000,
             ["length", "PING"]),
            ("cmd-packaged-huge", sg.CMD_PACKAGED, sg.be32(0xFFFFFFFF), None,
             ["PACKAGED"]),
            ("cmd-discard-short", sg.CMD_DISCARD, bytes(7), None,
             ["DISCARD"]),
            ("cmd-unknown", 0x55, b"", None, ["command"])):
        t = sg.Stream()
        t.header("none")
        t.command(cmd, payload, length)
        cases.append((name, t.bytes(), words))

    for flags in (0x001, 0x040, 0x080, 0x100, 0x200, 0x400, 0x800):
        t = ram_stream()
        t.section_header(sg.PART, sg.SID_RAM)
        t.ram_record("ram", 0x1000, 0, flags=flags)
        cases.append((f"ram-flags-{flags:#x}", t.bytes(), ["flags", "ram"]))

    t = ram_stream()
    t.section_header(sg.PART, sg.SID_RAM)
    t.ram_record("ram", 0x1000, 0, cont=True)
    cases.append(("continue-without-block", t.bytes(), ["CONTINUE", "ram"]))

    for name, data, words in cases:
        expect_rejected(data, workdir, name, words)


def locate_ram_records(buf):
    """Offsets in a saved ferry/QEMU -M none stream: the first SECTION_PART
    header, its first page record header and block name.  Assumes the
    layout of §1.7: header, configuration, ram START with one block."""
    pos = 8
    if buf[pos] != sg.CONFIG:
        ft.fail("saved stream has no configuration record")
    pos += 5 + int.from_bytes(buf[pos + 1:pos + 5], "big")
    if buf[pos] != sg.START:
        ft.fail(f"saved stream: no SECTION_START at {pos:#x}")
    start = pos
    idlen = buf[pos + 5]
    pos += 6 + idlen + 8 + 8                    # header, MEM_SIZE word
    pos += 1 + buf[pos] + 8                     # one block: name, length
    pos += 8 + 5                                # EOS, footer
    if buf[pos] != sg.PART:
        ft.fail(f"saved stream: no SECTION_PART at {pos:#x}")
    return {"section": start, "part": pos, "record": pos + 5,
            "block-name": pos + 5 + 8}


def test_corrupted_saved():
    """Byte flips and truncations of a stream a ferry source really sent."""
    workdir = ft.make_tmpdir()
    blob = os.path.join(workdir, "blob")
    with open(blob, "wb") as f:
        f.write(os.urandom(64 << 10))
    saved = os.path.join(workdir, "saved.bin")
    src = ft.VM(["-M", "none", "-m", NONE_MEM, "-device",
                 f"loader,file={blob},addr=0x100000,force-raw=on"],
                name="src-none", serial=False).launch()
    src.qmp.cmd("migrate", uri=f"exec:cat > {saved}")
    info = wait_status(src, ("completed", "failed"), timeout=60)
    if info["status"] != "completed":
        ft.fail(f"saving the stream failed: {info}")
    src.shutdown()
    with open(saved, "rb") as f:
        v = f.read()
    at = locate_ram_records(v)

    def flip(off, xor=0xFF):
        b = bytearray(v)
        b[off] ^= xor
        return bytes(b)

    cases = [
        ("saved-flip-magic", flip(1), ["migration stream"]),
        ("saved-flip-section-start", flip(at["section"], 0x40),
         ["section type"]),
        ("saved-flip-part-id", flip(at["part"] + 4, 0x10), ["section id"]),
        ("saved-flip-record-flags", flip(at["record"] + 7, 0x40),
         ["flags", "ram"]),
        ("saved-flip-record-offset", flip(at["record"] + 2, 0x10),
         ["offset", "ram"]),
        ("saved-flip-block-name", flip(at["block-name"] + 1, 0x01),
         ["ramblock", "sam"]),
    ]
    for frac in (0.001, 0.3, 0.7, 0.999):
        cut = max(9, int(len(v) * frac))
        cases.append((f"saved-truncated-{cut}", v[:cut], ["end of stream"]))
    for name, data, words in cases:
        expect_rejected(data, workdir, name, words)


def main():
    ft.require_file(ft.FERRY, "ferry")
    tests = [test_valid_stream_loads, test_corrupted_generated,
             test_corrupted_saved]
    if ft.kvm_usable() and os.path.exists(ft.GUEST):
        tests += [test_cancel_active, test_cancel_paused,
                  test_destination_killed]
    else:
        ft.log("no /dev/kvm or no test guest: guest tests not run")
    ft.main(tests, timeout=900)


if __name__ == "__main__":
    main()

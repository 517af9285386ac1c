#!/usr/bin/env python3
"""Multifd between two ferry processes (-M none, no vCPU): precopy, and
precopy then postcopy.

The source's RAM (128 MiB; 256 MiB for the bandwidth case) holds random
data with zero pages mixed in, loaded with -device
loader,file=F,addr=0,force-raw=on; the file is the oracle: after a
migration the destination's pmemsave dump must equal it byte for byte,
and so must the source's after a failed migration.  Both sides turn
`multifd` on and set the same `multifd-channels` before migrate-incoming
(-incoming defer) / migrate.

- tcp with 1, 2 and 8 channels, unix with 2 (its socket file is gone
  afterwards, as after a plain migration): both complete, the
  destination runs, the source's normal/duplicate counters equal the
  file's non-zero/zero pages, ram.multifd-bytes covers every non-zero
  page (zero pages stay on the main stream) and counts in transferred;
  without multifd, multifd-bytes is 0.
- max-bandwidth 64 MiB/s over 256 MiB: completes, and the rate measured
  from transferred/total-time stays below 1.5x the cap (the bytes of the
  multifd channels count toward the limit).
- x-dirtier writing 4 MiB at 64 MiB/s during a 4-channel precopy with a
  20 ms downtime limit: several passes, pages sent more than once, both
  RAMs identical at the end (no old copy overtaking a new one).
- the destination SIGKILLed mid-migration, and one multifd channel reset
  mid-migration (relay.py): the source reports failed with an error-desc,
  runs again with its RAM intact, and then migrates to a fresh
  destination.
- multifd-channels different on the two sides: no completion, the
  destination does not run, the source fails (or is cancelled: with
  fewer channels than the destination waits for, both wait, as QEMU
  7.2 does) and runs on with its RAM.
- postcopy after a multifd precopy (2 channels, postcopy-ram on both
  sides; 256 MiB: a 64 MiB pattern at 0, x-dirtier writing 200 MiB/s
  over 64-96 MiB on both sides, zero above; a 32 MiB/s link, so it never
  converges): migrate-start-postcopy once the channels carried 16 MiB
  (multifd-bytes > 0 at the switch); both complete, the destination's
  writer took faults, its RAM is the pattern, zeros, and the source's
  region up to pages it rewrote after the switch
  (dirtier.compare_postcopy over all of RAM, check_region).  From the
  trace: the destination's channels entered postcopy at LISTEN, carried
  pages before it and only SYNCs after it, placed every page sent and
  read every SYNC but the last few (none held at a SYNC).
- the same through relay.py, recovered after the main connection was
  reset in postcopy-active, and after all three (channels first): both
  pause, migrate-recover / migrate resume:true, both complete, RAM as
  above; with all reset, the destination traced both channels' failure
  and the source dropped its channels, neither failing the migration.
- refusals: migrate with multifd to exec:, fd:, file: (only tcp: and
  unix: carry channels); multifd with postcopy-preempt in any order (on
  a source and on a destination), while multifd with postcopy-ram is
  accepted in any order; multifd-compression other than none with
  multifd on, on either side.

The migration cases can be run against QEMU 7.2 to check the test
itself: MULTIFD_SRC=qemu MULTIFD_DST=qemu python3 test_multifd.py (the
refusals, whose wording is ferry's, then run on ferry only; so do the
postcopy cases, which need x-dirtier).
"""

import json
import os
import signal
import socket
import time

import dirtier
import ferrytest as ft
import relay as rl
from ferrytest import VM, QMPError, fail, log, wait_runstate

SRC = os.environ.get("MULTIFD_SRC", "ferry")
DST = os.environ.get("MULTIFD_DST", "ferry")
MiB = 1 << 20
PAGE = 4096
MEM = 128 * MiB
BIG = 256 * MiB                 # the bandwidth case
SMALL = 32 * MiB
FAST = 4 << 30                  # max-bandwidth when speed is not the point
CAP = 64 * MiB                  # bytes/s, the bandwidth case


def binary(kind):
    if kind == "qemu":
        ft.require_qemu()
        return ft.QEMU
    if kind != "ferry":
        fail(f"MULTIFD_SRC/MULTIFD_DST must be ferry or qemu, not {kind!r}")
    ft.require_file(ft.FERRY, "ferry")
    return ft.FERRY


# --------------------------------------------------------------------------
# The RAM image

class Pattern:
    """`size` bytes of random data, with every page whose number is 1 mod 4
    zero and one zero run of size/8 in the middle (ZERO pages on the main
    stream, PAGE pages on the channels).  The first and last pages are
    random."""

    def __init__(self, size):
        self.size = size
        d = ft.make_tmpdir("ferrytest-multifd-")
        self.path = os.path.join(d, f"pattern-{size >> 20}M.bin")
        data = bytearray(os.urandom(size))
        zero = bytes(PAGE)
        npages = size // PAGE
        hole = range(npages // 2, npages // 2 + npages // 8)
        self.zero_pages = 0
        for pfn in range(npages):
            if pfn % 4 == 1 or pfn in hole:
                data[pfn * PAGE:(pfn + 1) * PAGE] = zero
                self.zero_pages += 1
        self.nonzero_pages = npages - self.zero_pages
        with open(self.path, "wb") as f:
            f.write(data)

    def check(self, dump, who):
        ft.compare_files(dump, self.path, who)
        os.remove(dump)     # gigabytes of dumps slow the host's disk down


_patterns = {}


def pattern(size):
    if size not in _patterns:
        t0 = time.time()
        _patterns[size] = Pattern(size)
        log(f"pattern {size >> 20} MiB in {time.time() - t0:.1f}s: "
            f"{_patterns[size].nonzero_pages} non-zero, "
            f"{_patterns[size].zero_pages} zero pages")
    return _patterns[size]


# --------------------------------------------------------------------------
# Helpers

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm_args(size, extra=()):
    return ["-M", "none", "-m", f"{size >> 20}M", "-nodefaults"] + list(extra)


def source(pat, name="src", kind=None):
    kind = kind or SRC
    return VM(vm_args(pat.size, ["-device", f"loader,file={pat.path},"
                                 "addr=0,force-raw=on"]),
              binary=binary(kind), name=f"{kind}-{name}",
              serial=False).launch()


def destination(size, name="dst", channels=2, multifd=True):
    vm = VM(vm_args(size, ["-incoming", "defer"]), binary=binary(DST),
            name=f"{DST}-{name}", serial=False).launch()
    if multifd:
        enable_multifd(vm, channels)
    return vm


def set_caps(vm, caps, state=True):
    vm.qmp.cmd("migrate-set-capabilities", capabilities=[
        {"capability": c, "state": state} for c in caps])


def caps_of(vm):
    return {c["capability"]: c["state"]
            for c in vm.qmp.cmd("query-migrate-capabilities")}


def enable_multifd(vm, channels):
    set_caps(vm, ["multifd"])
    vm.qmp.cmd("migrate-set-parameters", multifd_channels=channels)
    if not caps_of(vm).get("multifd"):
        fail(f"{vm.name}: multifd not on after migrate-set-capabilities")
    got = vm.qmp.cmd("query-migrate-parameters").get("multifd-channels")
    if got != channels:
        fail(f"{vm.name}: multifd-channels {got}, set {channels}")


def query(vm):
    return vm.qmp.cmd("query-migrate")


def wait_final(vm, timeout):
    """Poll query-migrate until completed, failed or cancelled."""
    deadline = time.time() + timeout
    while True:
        info = query(vm)
        if info.get("status") in ("completed", "failed", "cancelled"):
            return info
        vm.check_alive()
        if time.time() > deadline:
            fail(f"{vm.name}: migration still {info.get('status')} after "
                 f"{timeout}s")
        time.sleep(0.05)


def expect_completed(vm, info, side):
    if info.get("status") != "completed":
        fail(f"{side} {vm.name}: migration {info.get('status')}: "
             f"{info.get('error-desc', '')}; stderr: {vm.stderr()[-600:]}")


def check_stats(src, info, pat, multifd=True):
    ram = info.get("ram", {})
    mfd = ram.get("multifd-bytes")
    log(f"{src.name}: normal {ram.get('normal')} duplicate "
        f"{ram.get('duplicate')} transferred {ram.get('transferred')} "
        f"multifd-bytes {mfd} total-time {info.get('total-time')} ms")
    if (ram.get("normal"), ram.get("duplicate"), ram.get("total")) != \
            (pat.nonzero_pages, pat.zero_pages, pat.size):
        fail(f"{src.name}: {ram.get('normal')} normal and "
             f"{ram.get('duplicate')} duplicate pages of {ram.get('total')} "
             f"bytes; the pattern has {pat.nonzero_pages} non-zero and "
             f"{pat.zero_pages} zero pages of {pat.size}")
    if not isinstance(mfd, int):
        fail(f"{src.name}: ram.multifd-bytes missing: {ram}")
    if not multifd:
        if mfd != 0:
            fail(f"{src.name}: multifd-bytes {mfd} without multifd")
        return
    if mfd < pat.nonzero_pages * PAGE:
        fail(f"{src.name}: multifd-bytes {mfd} < {pat.nonzero_pages} "
             "non-zero pages: not every page went over the channels")
    if ram.get("transferred", 0) < mfd:
        fail(f"{src.name}: transferred {ram.get('transferred')} < "
             f"multifd-bytes {mfd}")


def migrate(src, dst, uri, timeout=60.0):
    """migrate-incoming + migrate; both sides' final query-migrate and the
    seconds from migrate to the source's completion."""
    dst.qmp.cmd("migrate-incoming", uri=uri)
    t0 = time.time()
    src.qmp.cmd("migrate", uri=uri)
    s = wait_final(src, timeout)
    took = time.time() - t0
    t = wait_final(dst, 30)
    log(f"{src.name} -> {dst.name} over {uri.split(':')[0]}: src "
        f"{s.get('status')}, dst {t.get('status')} in {took:.2f}s")
    return s, t, took


def migrate_and_check(src, pat, channels=2, uri=None, name="dst"):
    """A complete multifd migration of src to a fresh destination, RAM
    checked on both sides."""
    dst = destination(pat.size, name, channels)
    if not caps_of(src).get("multifd"):
        fail(f"{src.name}: multifd no longer on")
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=FAST)
    s, t, _ = migrate(src, dst, uri or f"tcp:127.0.0.1:{free_port()}")
    expect_completed(src, s, "source")
    expect_completed(dst, t, "destination")
    check_stats(src, s, pat)
    wait_runstate(dst, "running")
    wait_runstate(src, "postmigrate")
    pat.check(dst.pmemsave(pat.size), f"destination {dst.name}")
    return s, dst


def src_intact(src, pat, what):
    """After a failed migration: running again, RAM untouched."""
    wait_runstate(src, "running")
    pat.check(src.pmemsave(pat.size), f"source {src.name} {what}")


# --------------------------------------------------------------------------
# Successful migrations

def run(channels, transport, check_source=False):
    pat = pattern(MEM)
    src = source(pat)
    enable_multifd(src, channels)
    if transport == "unix":
        uri = f"unix:{os.path.join(src.dir, 'migrate.sock')}"
    else:
        uri = f"tcp:127.0.0.1:{free_port()}"
    _, dst = migrate_and_check(src, pat, channels, uri)
    if transport == "unix" and os.path.exists(uri[len("unix:"):]):
        fail(f"{dst.name}: {uri} still there after the migration")
    if check_source:
        pat.check(src.pmemsave(MEM), f"source {src.name} after")
    for vm in (src, dst):
        vm.shutdown()


def test_tcp_1_channel():
    run(1, "tcp")


def test_tcp_2_channels():
    run(2, "tcp", check_source=True)


def test_tcp_8_channels():
    run(8, "tcp")


def test_unix_2_channels():
    run(2, "unix")


def test_without_multifd_no_multifd_bytes():
    pat = pattern(SMALL)
    src = source(pat)
    dst = destination(SMALL, multifd=False)
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=FAST)
    s, t, _ = migrate(src, dst, f"tcp:127.0.0.1:{free_port()}")
    expect_completed(src, s, "source")
    expect_completed(dst, t, "destination")
    check_stats(src, s, pat, multifd=False)
    pat.check(dst.pmemsave(SMALL), f"destination {dst.name}")


def test_bandwidth_cap():
    pat = pattern(BIG)
    src = source(pat)
    enable_multifd(src, 2)
    dst = destination(BIG)
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=CAP)
    s, t, took = migrate(src, dst, f"tcp:127.0.0.1:{free_port()}",
                         timeout=40)
    expect_completed(src, s, "source")
    expect_completed(dst, t, "destination")
    check_stats(src, s, pat)
    ram = s["ram"]
    secs = s["total-time"] / 1000.0
    rate = ram["transferred"] / secs
    wall = ram["transferred"] / took
    log(f"{ram['transferred'] / MiB:.1f} MiB in {secs:.2f}s: "
        f"{rate / MiB:.1f} MiB/s by total-time, {wall / MiB:.1f} MiB/s by "
        f"the wall clock; cap {CAP / MiB:.0f} MiB/s")
    if rate > 1.5 * CAP:
        fail(f"{rate / MiB:.1f} MiB/s with max-bandwidth "
             f"{CAP / MiB:.0f} MiB/s: the multifd channels are not limited")
    pat.check(dst.pmemsave(BIG), f"destination {dst.name}")


def test_dirtier_passes():
    """x-dirtier (ferry's RAM-writing device, machine none) writes while a
    4-channel precopy runs, with a downtime limit low enough for several
    passes: a page sent again in a later pass, perhaps on another
    channel, must not be overtaken by its older copy.  Both RAMs must be
    identical once completed (the destination starts with -S, so it
    does not write), with written pages in the region."""
    if SRC != "ferry" or DST != "ferry":
        log("not run: x-dirtier is ferry's")
        return
    # 1024 pages written at 64 MiB/s: most are sent two or more times
    region = (0, 4 * MiB)
    args = vm_args(MEM, ["-device", f"x-dirtier,rate=64M,size={region[1]}"])
    src = VM(args, name="ferry-src", serial=False).launch()
    dst = VM(args + ["-incoming", "defer", "-S"], name="ferry-dst",
             serial=False).launch()
    for vm in (src, dst):
        enable_multifd(vm, 4)
    dirtier.wait_writes(src, 3000, timeout=20)
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=128 * MiB,
                downtime_limit=20)
    s, t, took = migrate(src, dst, f"tcp:127.0.0.1:{free_port()}",
                         timeout=60)
    expect_completed(src, s, "source")
    expect_completed(dst, t, "destination")
    ram = s["ram"]
    log(f"{ram['dirty-sync-count']} dirty syncs, {ram['normal']} pages "
        f"sent, multifd-bytes {ram['multifd-bytes']}, downtime "
        f"{s.get('downtime')} ms")
    if ram["dirty-sync-count"] < 3 or ram["multifd-bytes"] <= 0:
        fail(f"wanted several passes over the channels: {ram}")
    if dst.query_status() == "running":
        fail("destination started despite -S")
    sd = src.pmemsave(MEM)
    dd = dst.pmemsave(MEM)
    try:
        stats = dirtier.compare_precopy(sd, dd, region)
    except dirtier.PageError as e:
        fail(f"RAM differs after a multifd precopy with a writer: {e}")
    log(f"identical; region {stats}")
    if stats["dirtier"] < 900:
        fail(f"too few written pages in the region: {stats}")
    if ram["normal"] <= stats["dirtier"]:
        fail(f"{ram['normal']} pages sent for {stats['dirtier']} written "
             "ones: no page went twice")
    for path in (sd, dd):
        os.remove(path)


# --------------------------------------------------------------------------
# Failures mid-migration

def wait_progress(src, nbytes, timeout=20.0):
    """Until the channels carried nbytes (the migration is well under way)."""
    info = src.wait_multifd_bytes(nbytes, timeout, poll=0.05)
    log(f"{src.name}: {info['ram']['multifd-bytes'] >> 20} MiB over the "
        f"channels, transferred {info['ram']['transferred'] >> 20} MiB")
    return info


def expect_failed(src, timeout=30.0):
    t0 = time.time()
    info = wait_final(src, timeout)
    if info["status"] != "failed":
        fail(f"{src.name}: status {info['status']} after the fault, "
             "expected failed")
    if not info.get("error-desc"):
        fail(f"{src.name}: failed without error-desc: {info}")
    log(f"{src.name}: failed {time.time() - t0:.2f}s after the fault: "
        f"{info['error-desc']!r}")


def test_destination_killed():
    pat = pattern(MEM)
    src = source(pat)
    enable_multifd(src, 2)
    dst = destination(MEM)
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=32 * MiB)
    uri = f"tcp:127.0.0.1:{free_port()}"
    dst.qmp.cmd("migrate-incoming", uri=uri)
    src.qmp.cmd("migrate", uri=uri)
    wait_progress(src, 16 * MiB)
    dst.proc.send_signal(signal.SIGKILL)
    dst.proc.wait(10)
    expect_failed(src)
    src_intact(src, pat, "after the destination died")
    migrate_and_check(src, pat, 2, name="dst2")


def test_channel_reset():
    """One multifd channel reset mid-way: the first connection to carry
    8 MiB, which only a channel does (the main stream has the zero pages
    and headers only, well under 1 MiB)."""
    pat = pattern(MEM)
    src = source(pat)
    enable_multifd(src, 2)
    dst = destination(MEM)
    port = free_port()
    relay = rl.Relay(port)
    try:
        relay.reset_when(lambda c: c.main >= 8 * MiB)
        src.qmp.cmd("migrate-set-parameters", max_bandwidth=32 * MiB)
        dst.qmp.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        src.qmp.cmd("migrate", uri=relay.uri)
        relay.wait_connections(3, timeout=20)
        expect_failed(src)
        reset = [c.index for c in relay.conns if c.closed]
        log(f"relay: {len(relay.conns)} connections, closed: {reset}")
        src_intact(src, pat, "after the channel reset")
        # the destination must not run half a VM
        dst_not_running(dst, "after a channel was reset")
        log(f"{dst.name}: exit {dst.proc.poll()}, stderr "
            f"{dst.stderr().strip()[-300:]!r}")
        dst.kill()
    finally:
        relay.stop()
    migrate_and_check(src, pat, 2, name="dst2")


def dst_not_running(dst, what):
    """A destination whose migration went wrong: dead with status 1, or
    alive and neither completed nor running."""
    if dst.proc.poll() is None:
        try:
            d = dst.qmp.cmd("query-migrate", timeout=5)
            st = dst.qmp.cmd("query-status", timeout=5)["status"]
        except (AssertionError, OSError):
            if dst.proc.poll() is None:
                if DST == "qemu":
                    # QEMU 7.2's main thread at times hangs in the load
                    log(f"{dst.name}: QMP does not answer {what} (QEMU)")
                    return
                fail(f"{dst.name}: alive but QMP does not answer {what}")
        else:
            if st == "running" or d.get("status") == "completed":
                fail(f"{dst.name}: {d.get('status')}, {st} {what}")
            log(f"{dst.name}: {d.get('status')}, {st} {what}")
    if dst.proc.returncode not in (None, 1):
        if DST == "qemu":
            # QEMU 7.2 crashes on a channel id >= its multifd-channels
            log(f"{dst.name}: exit status {dst.proc.returncode} {what} "
                "(QEMU)")
            return
        fail(f"{dst.name}: exit status {dst.proc.returncode} {what}")


def test_channel_count_mismatch():
    """multifd-channels differs between the sides (a configuration
    error).  More channels than the destination expects: the source
    fails.  Fewer: the destination waits for channels that never come
    (as QEMU 7.2's does) while the source waits for it, so the source is
    cancelled after a while.  Either way the migration does not complete,
    the destination does not run, the source runs on with its RAM."""
    pat = pattern(MEM)
    for s_ch, d_ch in ((4, 2), (2, 4)):
        what = f"with {s_ch} channels against {d_ch}"
        if SRC == "qemu" and s_ch < d_ch:
            # its send threads stay blocked: migrate_cancel never ends
            log(f"not run {what}: a QEMU 7.2 source hangs in cancelling")
            continue
        src = source(pat, f"src{s_ch}")
        enable_multifd(src, s_ch)
        dst = destination(MEM, f"dst{d_ch}", d_ch)
        src.qmp.cmd("migrate-set-parameters", max_bandwidth=FAST)
        uri = f"tcp:127.0.0.1:{free_port()}"
        dst.qmp.cmd("migrate-incoming", uri=uri)
        src.qmp.cmd("migrate", uri=uri)
        deadline = time.time() + 5
        while True:
            info = query(src)
            if info.get("status") in ("completed", "failed", "cancelled") \
                    or time.time() > deadline:
                break
            time.sleep(0.1)
        if info["status"] in ("setup", "active"):
            log(f"{src.name}: still {info['status']} {what}: cancelling")
            src.qmp.cmd("migrate_cancel")
            info = wait_final(src, 15)
            if info["status"] != "cancelled":
                fail(f"{src.name}: {info['status']} after migrate_cancel")
        elif info["status"] != "failed":
            fail(f"{src.name}: migration {info['status']} {what}")
        log(f"{src.name}: {info['status']} {what}: "
            f"{info.get('error-desc', '')!r}")
        src_intact(src, pat, what)
        dst_not_running(dst, what)
        for vm in (src, dst):
            vm.kill()


def expect_exit(dst, words, within):
    deadline = time.time() + within
    while dst.proc.poll() is None:
        if time.time() > deadline:
            fail(f"{dst.name}: still there {within}s after its source went "
                 f"away: {query(dst)}")
        time.sleep(0.1)
    err = dst.stderr()
    if dst.proc.returncode != 1 or not all(w in err for w in words):
        fail(f"{dst.name}: exit {dst.proc.returncode}, stderr {err!r}; "
             f"wanted exit 1 with {words}")
    log(f"{dst.name}: exit 1: {err.strip().splitlines()[-1]}")


def test_source_gone_before_channels():
    """The source goes away before its multifd channels connected: the
    destination must fail, not wait in setup for channels that will never
    come.  Two ways: the main connection ends after the header, and in
    the middle of a stream (as a QEMU source, which sends at once, would
    leave it) whose first RAM EOS waits for the channels."""
    uri = f"tcp:127.0.0.1:{free_port()}"
    dst = destination(SMALL, "dst-hdr")
    dst.qmp.cmd("migrate-incoming", uri=uri)
    with socket.create_connection(("127.0.0.1", int(uri.rsplit(":", 1)[1]))) \
            as c:
        c.sendall(b"QEVM\0\0\0\3")
    expect_exit(dst, ["unexpected end of stream"], 15)

    pat = pattern(SMALL)
    src = source(pat, "src-file")
    path = os.path.join(ft.make_tmpdir("multifd-stream-"), "stream")
    src.qmp.cmd("migrate", uri=f"file:{path}")
    expect_completed(src, wait_final(src, 60), "source (to a file)")
    src.kill()
    uri = f"tcp:127.0.0.1:{free_port()}"
    dst = destination(SMALL, "dst-stream")
    # Its main socket shows nothing while the data in flight hold back the
    # end: the channels' wait is bounded by x-net-timeout.
    dst.qmp.cmd("migrate-set-parameters", **{"x-net-timeout": 2000})
    dst.qmp.cmd("migrate-incoming", uri=uri)
    with socket.create_connection(("127.0.0.1", int(uri.rsplit(":", 1)[1]))) \
            as c, open(path, "rb") as f:
        # the destination stops reading at the first RAM EOS: send what
        # it takes, then go away with the rest unsent
        c.settimeout(3)
        try:
            c.sendall(f.read())
        except (socket.timeout, ConnectionError):
            pass                # or it gave up first and reset us
    expect_exit(dst, ["0 of 2 channels connected within x-net-timeout"], 15)


# --------------------------------------------------------------------------
# Postcopy after a multifd precopy (ferry <-> ferry, x-dirtier)

PC_MEM = 256 * MiB
PC_PATTERN = 64 * MiB               # pattern at 0, sent on the channels
PC_REGION = (64 * MiB, 32 * MiB)    # x-dirtier's; zero above 96 MiB
PC_DEV = ["-device", f"x-dirtier,rate=200M,size={PC_REGION[1] >> 20}M,"
          f"addr={PC_REGION[0] >> 20}M"]
# compiled out of a build configured with -Dtrace=false (meson says so)
TRACED = os.environ.get("FERRY_TRACE_BUILD") != "0"
PC_TRACE = ("multifd_recv", "multifd_recv_enter_postcopy",
            "multifd_recv_postcopy_error", "ram_multifd_dropped_in_postcopy",
            "multifd_send_thread_end", "multifd_recv_thread_end")


def traced(vm):
    """[(event, text)] of vm's trace file (-trace enable=... below)."""
    out = []
    with open(os.path.join(vm.dir, "trace.log")) as f:
        for line in f:
            head, _, text = line.rstrip("\n").partition(" ")
            out.append((head.rsplit(":", 1)[-1], text))
    return out


class PostcopyPair:
    """A source holding the pattern at 0 with x-dirtier writing 200 MiB/s
    over PC_REGION (a 32 MiB/s link never converges), a destination with
    the same writer (it runs from the switch on, faulting), multifd with
    2 channels and postcopy-ram on both, optionally through relay.py."""

    def __init__(self, relay=False):
        self.pat = pattern(PC_PATTERN)
        trace = []
        for ev in PC_TRACE if TRACED else ():
            trace += ["-trace", f"enable={ev}"]
        self.src = VM(vm_args(PC_MEM, ["-device", f"loader,file="
                                       f"{self.pat.path},addr=0,"
                                       "force-raw=on"] + PC_DEV + trace),
                      name="ferry-src", serial=False)
        self.dst = VM(vm_args(PC_MEM, PC_DEV + trace +
                              ["-incoming", "defer"]),
                      name="ferry-dst", serial=False)
        for vm in (self.src, self.dst):
            if TRACED:
                vm.args += ["-trace", "file=" +
                            os.path.join(vm.dir, "trace.log")]
            vm.launch()
            enable_multifd(vm, 2)
            set_caps(vm, ["postcopy-ram"])
            expect_caps_on(vm, ["multifd", "postcopy-ram"], "set")
        self.src.qmp.cmd("migrate-set-parameters", max_bandwidth=32 * MiB,
                         max_postcopy_bandwidth=16 * MiB)
        port = free_port()
        self.relay = rl.Relay(port) if relay else None
        self.dst.qmp.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        self.uri = self.relay.uri if relay else f"tcp:127.0.0.1:{port}"
        self.t0 = None

    def start(self):
        """migrate, then the switch once the channels carried 16 MiB of
        the pattern; both sides in postcopy-active.  Returns the source's
        multifd-bytes just before the switch."""
        dirtier.wait_writes(self.src, 2000, timeout=20)
        self.t0 = time.time()
        self.src.qmp.cmd("migrate", uri=self.uri)
        info = wait_progress(self.src, 16 * MiB)
        self.src.qmp.cmd("migrate-start-postcopy")
        mfd = info["ram"]["multifd-bytes"]
        if mfd <= 0:
            fail(f"multifd-bytes {mfd} at the switch: {info['ram']}")
        for vm in (self.dst, self.src):
            wait_status(vm, ("postcopy-active",), 30)
        log(f"switched after {time.time() - self.t0:.2f}s with "
            f"{mfd >> 20} MiB over the channels")
        return mfd

    def break_and_recover(self, conns):
        """Reset these relay connections, in this order, in
        postcopy-active: both sides pause; migrate-recover on a new port,
        resume through the relay."""
        time.sleep(0.5)
        for vm in (self.src, self.dst):
            st = query(vm)["status"]
            if st != "postcopy-active":
                fail(f"{vm.name}: {st} before the break (too fast?)")
        for c in conns:
            c.reset()
        log(f"relay: reset connection(s) {[c.index for c in conns]} of "
            f"{len(self.relay.conns)}")
        for vm in (self.src, self.dst):
            wait_status(vm, ("postcopy-paused",), 30)
        port = free_port()
        self.dst.qmp.cmd("migrate-recover", uri=f"tcp:127.0.0.1:{port}")
        self.relay.retarget(port)
        n = len(self.relay.conns)
        self.src.qmp.cmd("migrate", uri=self.relay.uri, resume=True)
        self.relay.wait_connections(n + 1)
        for vm in (self.src, self.dst):
            wait_status(vm, ("postcopy-active", "completed"), 30)
        log("both sides recovered")

    def finish(self, mfd_at_switch):
        """Both completed; the destination's writer took faults; RAM: the
        pattern and the zero pages equal, the region the source's up to
        pages the destination rewrote after the switch."""
        src, dst = self.src, self.dst
        dirtier.wait_writes(dst, 300, timeout=30)
        s = wait_final(src, 120)
        expect_completed(src, s, "source")
        d = wait_final(dst, 30)
        expect_completed(dst, d, "destination")
        ram = s["ram"]
        log(f"completed in {time.time() - self.t0:.2f}s: multifd-bytes "
            f"{ram['multifd-bytes']}, postcopy-bytes "
            f"{ram.get('postcopy-bytes')}, postcopy-requests "
            f"{ram.get('postcopy-requests')}; destination faults "
            f"{d.get('postcopy-faults')}")
        if ram["multifd-bytes"] < mfd_at_switch:
            fail(f"multifd-bytes went down: {mfd_at_switch} -> "
                 f"{ram['multifd-bytes']}")
        if d.get("postcopy-faults", 0) <= 0:
            fail(f"the destination's writer took no fault: {d}")
        if ram.get("postcopy-requests", 0) <= 0:
            fail(f"no page requested in postcopy: {ram}")
        wait_runstate(src, "postmigrate")
        dst.qmp.cmd("stop")
        sd = src.pmemsave(PC_MEM, path=os.path.join(src.dir, "ram.dump"))
        dd = dst.pmemsave(PC_MEM, path=os.path.join(dst.dir, "ram.dump"))
        try:
            out = dirtier.compare_postcopy(sd, dd, PC_REGION)
            region = dirtier.check_region(dd, PC_REGION)
        except dirtier.PageError as e:
            fail(f"RAM after a multifd precopy and postcopy: {e}")
        log(f"compare_postcopy {out}; destination region {region}")
        if out["rewritten"] == 0:
            fail("no page rewritten on the destination after the switch")
        with open(dd, "rb") as f, open(self.pat.path, "rb") as p:
            if f.read(PC_PATTERN) != p.read():
                fail("the destination's pattern differs from the file")
        for path in (sd, dd):
            os.remove(path)
        return s, d

    def check_traces(self, dropped="no", counts=False):
        """Destination: LISTEN reached multifd (enter_postcopy), and after
        it every packet was a SYNC without pages, some of them read.
        dropped "all": each destination channel failed, traced only, and
        the source dropped its channels; "no": nothing failed; "maybe":
        either (the source shuts its channels down when its return path
        breaks, then drops them; the destination sees their end).
        counts: each channel placed every page its source sent and read
        its SYNCs up to the last few (the load's end stops the channels
        without waiting for the last EOS's): one that held at a SYNC
        after the switch would have read one or two of postcopy's many."""
        if not TRACED:
            log("trace checks skipped: trace events compiled out")
            return
        ev = traced(self.dst)
        names = [e for e, _ in ev]
        if names.count("multifd_recv_enter_postcopy") != 1:
            fail(f"{self.dst.name}: multifd_recv_enter_postcopy traced "
                 f"{names.count('multifd_recv_enter_postcopy')} times")
        at = names.index("multifd_recv_enter_postcopy")
        before = [t for e, t in ev[:at] if e == "multifd_recv"]
        after = [t for e, t in ev[at:] if e == "multifd_recv"]
        paged = [t for t in after if " pages 0 " not in t]
        log(f"{self.dst.name}: {len(before)} packets before LISTEN, "
            f"{len(after)} after ({ev[at][1]})")
        if not any(" pages 0 " not in t for t in before):
            fail(f"{self.dst.name}: no packet with pages before LISTEN")
        if paged:
            fail(f"{self.dst.name}: packets with pages after LISTEN: "
                 f"{paged[:3]}")
        if not after:
            fail(f"{self.dst.name}: no SYNC read after LISTEN")
        errors = [t for e, t in ev if e == "multifd_recv_postcopy_error"]
        drops = [t for e, t in traced(self.src)
                 if e == "ram_multifd_dropped_in_postcopy"]
        log(f"channel errors after LISTEN {errors}, source drops {drops}")
        if dropped == "no" and (errors or drops):
            fail(f"channels failed without a fault: {errors} {drops}")
        if len(drops) > 1:
            fail(f"the source dropped its channels {len(drops)} times")
        if dropped == "all" and (len(errors) != 2 or len(drops) != 1):
            fail(f"all channels reset: {len(errors)} destination channels "
                 f"failed (want 2), source dropped them {len(drops)} "
                 "times (want 1)")
        if not counts:
            return
        ends = {}
        for vm, name in ((self.src, "multifd_send_thread_end"),
                         (self.dst, "multifd_recv_thread_end")):
            for e, t in traced(vm):
                if e == name:
                    w = t.split()       # channel N packets P pages G
                    ends.setdefault(int(w[1]), []).append((int(w[3]),
                                                           int(w[5])))
        log(f"channels' (packets, pages), source then destination: {ends}")
        if sorted(ends) != [0, 1] or any(len(v) != 2 for v in ends.values()):
            fail(f"thread ends traced: {ends}")
        for ch, ((sp, sg), (dp, dg)) in ends.items():
            if dg != sg or not sp - 3 <= dp <= sp:
                fail(f"channel {ch}: the source sent {sp} packets with {sg} "
                     f"pages, the destination read {dp} with {dg}")


def wait_status(vm, want, timeout):
    """Poll query-migrate until one of want; fails on failed/cancelled."""
    return vm.wait_migration(timeout, poll=0.05, want=want)


def test_postcopy():
    """multifd for the first pass, postcopy for a writer that never
    converges: the pages on the channels before the switch, the rest on
    the main stream, faults served, RAM exact."""
    if SRC != "ferry" or DST != "ferry":
        log("not run: x-dirtier is ferry's")
        return
    m = PostcopyPair()
    mfd = m.start()
    m.finish(mfd)
    m.check_traces(counts=True)


def test_postcopy_recovery():
    """The same through a relay; in postcopy-active the main connection
    is reset: both pause, recover on a new port and complete, RAM exact.
    Then every connection (main and both channels): the source drops
    its channels, the destination only traces their loss, and the
    migration recovers and completes all the same."""
    if SRC != "ferry" or DST != "ferry":
        log("not run: x-dirtier is ferry's")
        return
    for what in ("main", "all"):
        log(f"--- reset {what}")
        m = PostcopyPair(relay=True)
        try:
            mfd = m.start()
            m.relay.wait_connections(3)
            conns = m.relay.conns[:3]
            # main first (the return path comes back on it), then channels
            if conns[0].rp == 0 or conns[1].rp or conns[2].rp:
                fail(f"relay: bytes back {[c.rp for c in conns]}: the "
                     "first connection is not the main one")
            # The channels before the main connection: once the main one
            # breaks, the source shuts its channels down itself, and the
            # destination would see their end instead of a reset.
            m.break_and_recover(conns[:1] if what == "main" else
                                conns[1:] + conns[:1])
            m.finish(mfd)
            m.check_traces(dropped="all" if what == "all" else "maybe")
            if m.relay.errors:
                fail(f"relay errors: {m.relay.errors}")
        finally:
            m.relay.stop()
        for vm in (m.src, m.dst):
            vm.shutdown()


# --------------------------------------------------------------------------
# Refusals (ferry's own wording)

def expect_refused(fn, words, what):
    try:
        fn()
    except QMPError as e:
        low = e.desc.lower()
        if not all(any(w.lower() in low for w in alt) for alt in words):
            fail(f"{what}: refused with {e.desc!r}, expected words {words}")
        log(f"{what}: refused: {e.desc!r}")
        return e.desc
    fail(f"{what}: accepted")


def cmd_with_fd(vm, name, args, fd):
    data = (json.dumps({"execute": name, "arguments": args}) + "\n").encode()
    socket.send_fds(vm.qmp.sock, [data], [fd])
    return vm.qmp.reply()


def migrate_refused(src, uri, words, what):
    """migrate must fail: synchronously (a QMP error) or as status
    failed with the reason in error-desc; either way the VM runs on."""
    try:
        src.qmp.cmd("migrate", uri=uri)
    except QMPError as e:
        desc = e.desc
    else:
        info = wait_final(src, 10)
        if info["status"] != "failed":
            fail(f"{what}: migration {info['status']}")
        desc = info.get("error-desc", "")
    low = desc.lower()
    if not all(any(w.lower() in low for w in alt) for alt in words):
        fail(f"{what}: refused with {desc!r}, expected words {words}")
    log(f"{what}: refused: {desc!r}")
    wait_runstate(src, "running")


def migrate_incoming_refused(dst, uri, words, what):
    """migrate-incoming must fail: synchronously, or the incoming
    migration fails or the destination exits 1, with the words said."""
    try:
        dst.qmp.cmd("migrate-incoming", uri=uri)
    except QMPError as e:
        desc = e.desc
    else:
        info = None
        try:
            info = wait_final(dst, 10)
        except (AssertionError, OSError):
            if dst.proc.poll() is None:
                raise           # alive and neither refused nor failed
        if info is None:
            if dst.proc.wait(10) != 1:
                fail(f"{what}: destination exit {dst.proc.returncode}")
            desc = dst.stderr()
        elif info["status"] != "failed":
            fail(f"{what}: incoming migration {info['status']}")
        else:
            desc = info.get("error-desc", "") + " " + dst.stderr()
    low = desc.lower()
    if not all(any(w.lower() in low for w in alt) for alt in words):
        fail(f"{what}: refused with {desc!r}, expected words {words}")
    log(f"{what}: refused: {desc.strip()!r}")


def test_refuse_uris():
    pat = pattern(SMALL)
    src = source(pat, kind="ferry")
    enable_multifd(src, 2)
    words = [("multifd",), ("tcp", "unix")]
    out = os.path.join(src.dir, "out.bin")
    migrate_refused(src, f"exec:cat > {out}", words, "exec:")
    migrate_refused(src, f"file:{out}", words, "file:")
    r, w = os.pipe()
    try:
        reply = cmd_with_fd(src, "getfd", {"fdname": "mig"}, w)
        if "error" in reply:
            fail(f"getfd: {reply}")
    finally:
        os.close(w)
    migrate_refused(src, "fd:mig", words, "fd:")
    os.set_blocking(r, False)
    try:
        got = os.read(r, 1)
    except BlockingIOError:
        got = None
    os.close(r)
    if got:
        fail("fd: a refused multifd migration wrote to the descriptor")
    if os.path.exists(out) and os.path.getsize(out):
        fail(f"a refused multifd migration wrote {os.path.getsize(out)} "
             f"bytes to {out}")
    # nothing stuck: the same source migrates over tcp with multifd
    migrate_and_check(src, pat, 2)


def expect_caps_on(vm, on, what):
    """Of multifd and the postcopy capabilities, exactly `on` are on."""
    c = caps_of(vm)
    got = {k for k in ("multifd", "postcopy-ram", "postcopy-preempt")
           if c.get(k)}
    if got != set(on):
        fail(f"{vm.name}: capabilities {sorted(got)} {what}, expected "
             f"{sorted(on)}")


def test_refuse_postcopy_preempt():
    """multifd with postcopy-preempt is refused whichever comes first (a
    QEMU 7.2 destination takes every connection after the main one for
    a multifd channel, so it could not tell the preempt channel from
    them); multifd with postcopy-ram is accepted, in either order and in
    one command, on a source and on a destination."""
    pat = pattern(SMALL)
    words = [("postcopy-preempt",), ("multifd",)]
    src = source(pat, kind="ferry")
    dst = VM(vm_args(SMALL, ["-incoming", "defer"]), name="ferry-dst",
             serial=False).launch()
    for vm in (src, dst):
        # multifd, then postcopy-ram: accepted; then preempt: refused
        set_caps(vm, ["multifd"])
        set_caps(vm, ["postcopy-ram"])
        expect_caps_on(vm, ["multifd", "postcopy-ram"],
                       "after multifd, then postcopy-ram")
        expect_refused(lambda: set_caps(vm, ["postcopy-preempt"]), words,
                       f"{vm.name}: postcopy-preempt after multifd")
        expect_caps_on(vm, ["multifd", "postcopy-ram"], "after the refusal")
        set_caps(vm, ["multifd", "postcopy-ram"], state=False)
        # all three in one command: refused, nothing changes
        expect_refused(lambda: set_caps(vm, ["multifd", "postcopy-ram",
                                             "postcopy-preempt"]),
                       words, f"{vm.name}: the three together")
        expect_caps_on(vm, [], "after the refusal")
        # postcopy-ram and multifd in one command: accepted
        set_caps(vm, ["postcopy-ram", "multifd"])
        expect_caps_on(vm, ["multifd", "postcopy-ram"], "set together")
        set_caps(vm, ["multifd"], state=False)
        # preempt first, then multifd: refused
        set_caps(vm, ["postcopy-preempt"])
        expect_refused(lambda: set_caps(vm, ["multifd"]), words,
                       f"{vm.name}: multifd after postcopy-preempt")
        expect_caps_on(vm, ["postcopy-ram", "postcopy-preempt"],
                       "after the refusal")
        # preempt off again: multifd after postcopy-ram is accepted
        set_caps(vm, ["postcopy-preempt"], state=False)
        set_caps(vm, ["multifd"])
        expect_caps_on(vm, ["multifd", "postcopy-ram"],
                       "after postcopy-ram, then multifd")
    wait_runstate(src, "running")


def test_refuse_compression():
    pat = pattern(SMALL)
    src = source(pat, kind="ferry")
    words = [("compression",)]
    for method in ("zlib", "zstd"):
        # multifd on, then a compression method
        enable_multifd(src, 2)
        try:
            src.qmp.cmd("migrate-set-parameters", multifd_compression=method)
        except QMPError as e:
            if "compression" not in e.desc.lower():
                fail(f"multifd-compression {method}: {e.desc!r}")
            log(f"multifd-compression {method} with multifd on: refused: "
                f"{e.desc!r}")
        else:
            # accepted as a parameter: migrate must refuse it
            migrate_refused(src, f"tcp:127.0.0.1:{free_port()}", words,
                            f"migrate with multifd-compression {method}")
        src.qmp.cmd("migrate-set-parameters", multifd_compression="none")
        # a compression method first, then multifd
        set_caps(src, ["multifd"], state=False)
        try:
            src.qmp.cmd("migrate-set-parameters", multifd_compression=method)
        except QMPError as e:
            log(f"multifd-compression {method} without multifd: refused too: "
                f"{e.desc!r}")
            continue
        try:
            set_caps(src, ["multifd"])
        except QMPError as e:
            if "compression" not in e.desc.lower():
                fail(f"multifd after compression {method}: {e.desc!r}")
            log(f"multifd after multifd-compression {method}: refused: "
                f"{e.desc!r}")
        else:
            migrate_refused(src, f"tcp:127.0.0.1:{free_port()}", words,
                            f"migrate with multifd-compression {method}")
        src.qmp.cmd("migrate-set-parameters", multifd_compression="none")
    # a destination refuses it as well
    dst = destination(SMALL)
    dst.qmp.cmd("migrate-set-parameters", multifd_compression="zlib")
    migrate_incoming_refused(dst, f"tcp:127.0.0.1:{free_port()}", words,
                             "migrate-incoming with multifd-compression zlib")
    dst.kill()
    got = src.qmp.cmd("query-migrate-parameters").get("multifd-compression")
    if got != "none":
        fail(f"multifd-compression {got!r} after setting none")
    enable_multifd(src, 2)
    migrate_and_check(src, pat, 2)


def main():
    tests = [test_tcp_1_channel, test_tcp_2_channels, test_tcp_8_channels,
             test_unix_2_channels, test_without_multifd_no_multifd_bytes,
             test_bandwidth_cap, test_dirtier_passes,
             test_destination_killed, test_channel_reset,
             test_channel_count_mismatch, test_postcopy,
             test_postcopy_recovery]
    if DST == "ferry":
        tests += [test_source_gone_before_channels]
    if SRC == "ferry":
        tests += [test_refuse_uris, test_refuse_postcopy_preempt,
                  test_refuse_compression]
    else:
        log("refusal tests not run: the source is not ferry")
    # about 75 s here, 210 s under ThreadSanitizer (postcopy: 25 s, 65 s)
    ft.main([ft.checked(t) for t in tests], timeout=500)


if __name__ == "__main__":
    main()

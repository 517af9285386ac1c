#!/usr/bin/env python3
"""Multifd between QEMU 7.2 and ferry, both ways, machine none with 256
MiB of known content (interop.Content): precopy, and precopy then
postcopy.

Both sides turn the `multifd` capability on and set `multifd-channels`
(the same number) before `migrate-incoming` / `migrate`; the destination
starts with `-incoming defer`.  After each migration:
- both sides report `completed`, the destination runs, the source is in
  postmigrate;
- the source's `normal`/`duplicate` counters equal the content's non-zero
  and zero pages, and `ram.multifd-bytes` covers at least every non-zero
  page (only zero pages stay on the main stream): pages really went over
  the extra channels;
- the destination's RAM, and the source's afterwards, equal the content
  byte for byte.

Cases: 2 channels both ways, 4 channels both ways (with return-path on),
3 channels over a unix socket both ways (64 MiB; the socket file is gone
afterwards), ferry -> QEMU with ferry's x-dirtier writing during a
precopy of several passes (both RAMs identical), and different `-uuid`s
on the two sides: the destination refuses the channels ("multifd:
received uuid ... and expected uuid ..."), the source's migration fails,
it keeps running with its RAM intact, and a second migration to a
destination with the right uuid completes.

Postcopy after a multifd precopy, both ways (2 channels, postcopy-ram):
the switch once the channels carried 8 MiB at 32 MiB/s; in postcopy the
destination reads the last 4 MiB (faults) and the first 64 MiB (pages
the channels placed, the switch's boundary): equal to the content; both
complete, the source counted page requests, multifd-bytes > 0 at the
switch but below the content's non-zero pages (the rest went on the main
stream); both RAMs equal the content.  A QEMU 7.2 destination aborts
right after completing (a 7.2 bug, see QEMU72_YANK_ABORT), so its RAM is
checked during postcopy only, and that abort is the only failure
accepted.  QEMU -> ferry also recovers from a reset of the main
connection in postcopy (through relay.py), QEMU's channels carrying
their SYNCs on after it; the other way a QEMU 7.2 destination cannot
recover with multifd at all.

MULTIFD_CONTROL=1 runs every case QEMU <-> QEMU (but x-dirtier's and
the recovery), to check the test itself against the reference
implementation.
"""

import os
import signal
import threading
import time

from interop import (PAGE, MiB, Content, dump, expect_completed,
                     fail, free_port, log, main, make_tmpdir, migrate,
                     set_caps, start, status, wait_status,
                     wait_runstate)
import dirtier  # noqa: E402  (../functional, on the path through interop)
import relay as rl  # noqa: E402

MEM = 256 * MiB
SMALL = 64 * MiB
TOUCH = 4 * MiB                 # read on the destination in postcopy
UUID_SRC = "5ec0a1d3-0000-4000-8000-00000000000a"
UUID_DST = "5ec0a1d3-0000-4000-8000-00000000000b"
CONTROL = os.environ.get("MULTIFD_CONTROL") == "1"

_contents = {}


def kind(k):
    return "qemu" if CONTROL else k


def content(size):
    """One content file per size for the whole run (it takes seconds)."""
    if size not in _contents:
        d = make_tmpdir("interop-multifd-")
        t0 = time.time()
        _contents[size] = Content(d, size, seed=11)
        log(f"content {size >> 20} MiB in {time.time() - t0:.1f}s: "
            f"{_contents[size].counts}")
    return _contents[size]


def enable_multifd(vm, channels, extra_caps=()):
    set_caps(vm, ["multifd"] + list(extra_caps))
    vm.qmp.cmd("migrate-set-parameters", multifd_channels=channels)
    caps = {c["capability"]: c["state"]
            for c in vm.qmp.cmd("query-migrate-capabilities")}
    if not caps.get("multifd"):
        fail(f"{vm.name}: multifd not on after migrate-set-capabilities: "
             f"{caps}")
    got = vm.qmp.cmd("query-migrate-parameters").get("multifd-channels")
    if got != channels:
        fail(f"{vm.name}: multifd-channels {got}, set {channels}")


def check_ram(c, vm, size, directory, who):
    """vm's RAM equals the content; the dump goes once checked (gigabytes
    of dumps slow the host's disk down)."""
    path = dump(vm, size, directory)
    c.check_dump(path, who)
    os.remove(path)


def check_source_stats(src, info, c):
    ram = info["ram"]
    mfd = ram.get("multifd-bytes")
    log(f"source stats: normal {ram['normal']} duplicate {ram['duplicate']} "
        f"transferred {ram['transferred']} multifd-bytes {mfd} "
        f"total {ram['total']}")
    if (ram["normal"], ram["duplicate"], ram["total"]) != \
            (c.nonzero_pages, c.counts["zero"], c.size):
        fail(f"{src.name}: counted {ram['normal']} normal and "
             f"{ram['duplicate']} duplicate pages of {ram['total']} bytes; "
             f"the content has {c.nonzero_pages} non-zero and "
             f"{c.counts['zero']} zero pages of {c.size}")
    if not isinstance(mfd, int) or mfd <= 0:
        fail(f"{src.name}: ram.multifd-bytes is {mfd!r} after a multifd "
             "migration")
    if mfd < c.nonzero_pages * PAGE:
        fail(f"{src.name}: multifd-bytes {mfd} < {c.nonzero_pages} non-zero "
             "pages: some pages did not go over the multifd channels")
    if ram["transferred"] < mfd:
        fail(f"{src.name}: transferred {ram['transferred']} < multifd-bytes "
             f"{mfd}: multifd bytes not counted in the total")


def run(src_kind, dst_kind, channels, return_path=False, mem=MEM,
        transport="tcp"):
    src_kind, dst_kind = kind(src_kind), kind(dst_kind)
    c = content(mem)
    d = make_tmpdir("interop-multifd-dumps-")
    src = start(src_kind, mem, f"{src_kind}-src", content=c)
    dst = start(dst_kind, mem, f"{dst_kind}-dst", incoming="defer")
    extra = ["return-path"] if return_path else []
    for vm in (src, dst):
        enable_multifd(vm, channels, extra)
    # QEMU's default cap is 32 MiB/s
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=4 << 30)
    if transport == "unix":
        path = os.path.join(d, "migrate.sock")
        uri = f"unix:{path}"
    else:
        uri = f"tcp:127.0.0.1:{free_port()}"
    s, t = migrate(src, dst, uri, timeout=90)
    expect_completed(src, s, "source")
    expect_completed(dst, t, "destination")
    check_source_stats(src, s, c)
    wait_runstate(dst, "running")
    wait_runstate(src, "postmigrate")
    if transport == "unix" and os.path.exists(path):
        fail(f"{dst.name}: {path} still there after the migration")
    check_ram(c, dst, mem, d, f"destination {dst.name}")
    check_ram(c, src, mem, d, f"source {src.name} after")
    for vm in (src, dst):
        vm.shutdown()


def test_qemu_to_ferry_2ch():
    run("qemu", "ferry", 2)


def test_ferry_to_qemu_2ch():
    run("ferry", "qemu", 2)


def test_qemu_to_ferry_4ch_return_path():
    run("qemu", "ferry", 4, return_path=True)


def test_ferry_to_qemu_4ch_return_path():
    run("ferry", "qemu", 4, return_path=True)


def test_qemu_to_ferry_unix_3ch():
    run("qemu", "ferry", 3, mem=SMALL, transport="unix")


def test_ferry_to_qemu_unix_3ch():
    run("ferry", "qemu", 3, mem=SMALL, transport="unix")


def test_ferry_to_qemu_dirtier():
    """ferry's x-dirtier writes 4 MiB at 64 MiB/s during the migration,
    with a 20 ms downtime limit: several passes, pages sent more than
    once over 4 channels; QEMU's destination orders them by the SYNC
    packets and RAM EOS ferry sends, so both RAMs must be identical (the
    destination starts with -S and stays stopped)."""
    if CONTROL:
        log("not run: x-dirtier is ferry's")
        return
    mem = 128 * MiB
    region = (0, 4 * MiB)
    d = make_tmpdir("interop-multifd-dirtier-")
    src = start("ferry", mem, "ferry-src",
                extra=["-device", f"x-dirtier,rate=64M,size={region[1]}"])
    dst = start("qemu", mem, "qemu-dst", incoming="defer", extra=["-S"])
    for vm in (src, dst):
        enable_multifd(vm, 4)
    dirtier.wait_writes(src, 3000, timeout=20)
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=128 * MiB,
                downtime_limit=20)
    s, t = migrate(src, dst, f"tcp:127.0.0.1:{free_port()}", timeout=60)
    expect_completed(src, s, "source")
    expect_completed(dst, t, "destination")
    ram = s["ram"]
    log(f"{ram['dirty-sync-count']} dirty syncs, {ram['normal']} pages "
        f"sent, multifd-bytes {ram['multifd-bytes']}")
    if ram["dirty-sync-count"] < 3 or ram["multifd-bytes"] <= 0:
        fail(f"wanted several passes over the channels: {ram}")
    if dst.query_status() == "running":
        fail("destination started despite -S")
    sd, dd = dump(src, mem, d), dump(dst, mem, d)
    try:
        stats = dirtier.compare_precopy(sd, dd, region)
    except dirtier.PageError as e:
        fail(f"QEMU's RAM differs from ferry's: {e}")
    log(f"identical; region {stats}")
    if stats["dirtier"] < 900 or ram["normal"] <= stats["dirtier"]:
        fail(f"{ram['normal']} pages sent for {stats['dirtier']} written "
             "ones: wanted most of the region, some pages twice")
    for path in (sd, dd):
        os.remove(path)


# QEMU 7.2's destination aborts at the end of every postcopy with multifd:
# the postcopy listen thread ends with migration_incoming_state_destroy(),
# whose yank_unregister_instance() asserts that no yank function is left,
# but the multifd channels' are only unregistered by multifd_load_cleanup(),
# which 7.2 calls after a precopy only (migration/migration.c,
# process_incoming_migration_bh; savevm.c, postcopy_ram_listen_thread).
QEMU72_YANK_ABORT = ("yank_unregister_instance: Assertion "
                     "`QLIST_EMPTY(&entry->yankfns)' failed")


def read_during_postcopy(dst, c, addr, size, d):
    """pmemsave of [addr, addr + size) on a destination in postcopy (pages
    not there yet fault and are requested); must equal the content."""
    part = os.path.join(d, f"part-{addr >> 20}M.dump")
    done, err = threading.Event(), []

    def read():
        try:
            dst.pmemsave(size, path=part, addr=addr)
        except Exception as e:             # reported below
            err.append(e)
        done.set()
    t0 = time.time()
    threading.Thread(target=read, daemon=True).start()
    if not done.wait(60):
        fail(f"{dst.name}: a pmemsave of [{addr >> 20}, "
             f"{(addr + size) >> 20}) MiB blocked 60 s in postcopy")
    if err:
        raise err[0]
    with open(c.path, "rb") as f, open(part, "rb") as g:
        f.seek(addr)
        if f.read(size) != g.read():
            fail(f"{dst.name}: [{addr >> 20}, {(addr + size) >> 20}) MiB "
                 "read in postcopy differs from the content")
    os.remove(part)
    log(f"{dst.name}: [{addr >> 20}, {(addr + size) >> 20}) MiB read in "
        f"postcopy in {time.time() - t0:.2f}s, equal to the content")


def postcopy(src_kind, dst_kind):
    """multifd (2 channels) and postcopy-ram on both sides; at 32 MiB/s
    the switch comes once the channels carried 8 MiB, with most of RAM
    unsent, and postcopy runs at 32 MiB/s.  In postcopy the destination
    reads the last 4 MiB of RAM, then the first 64 MiB (the pages the
    channels placed, the switch's boundary, pages requested): both equal
    the content.  Both complete; the source counted page requests, and
    its channels carried pages before the switch but not all of them.
    Then the destination's RAM is checked whole, and the source's.

    A QEMU 7.2 destination aborts right after completing (see
    QEMU72_YANK_ABORT): that abort, and only that, is accepted in place
    of the final check of its RAM, and said loudly."""
    src_kind, dst_kind = kind(src_kind), kind(dst_kind)
    c = content(MEM)
    d = make_tmpdir("interop-multifd-postcopy-")
    src = start(src_kind, MEM, f"{src_kind}-src", content=c)
    dst = start(dst_kind, MEM, f"{dst_kind}-dst", incoming="defer")
    for vm in (src, dst):
        enable_multifd(vm, 2, ["postcopy-ram"])
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=32 * MiB,
                max_postcopy_bandwidth=32 * MiB)
    uri = f"tcp:127.0.0.1:{free_port()}"
    dst.qmp.cmd("migrate-incoming", uri=uri)
    t0 = time.time()
    src.qmp.cmd("migrate", uri=uri)
    info = src.wait_multifd_bytes(8 * MiB)
    src.qmp.cmd("migrate-start-postcopy")
    at_switch = info["ram"]["multifd-bytes"]
    log(f"switch requested after {time.time() - t0:.2f}s: multifd-bytes "
        f"{at_switch}, transferred {info['ram']['transferred']}")
    t = wait_status(dst, ("postcopy-active",), 30)
    if t["status"] != "postcopy-active":
        fail(f"{dst.name}: {t['status']} after the switch: "
             f"{t.get('error-desc', '')}; stderr {dst.stderr()[-600:]}")
    # RAM goes out from 0 up: the end is not there yet
    read_during_postcopy(dst, c, MEM - TOUCH, TOUCH, d)
    # (a QEMU 7.2 destination that completed meanwhile would abort and
    # fail this read: the background scan at 32 MiB/s takes seconds)
    read_during_postcopy(dst, c, 0, 64 * MiB, d)
    s = wait_status(src, ("completed",), 90)
    expect_completed(src, s, "source")
    ram = s["ram"]
    log(f"source completed in {time.time() - t0:.2f}s: multifd-bytes "
        f"{ram['multifd-bytes']}, postcopy-requests "
        f"{ram.get('postcopy-requests')}, transferred {ram['transferred']}")
    if at_switch <= 0 or ram["multifd-bytes"] < at_switch:
        fail(f"multifd-bytes {at_switch} at the switch, "
             f"{ram['multifd-bytes']} at the end")
    if ram["multifd-bytes"] >= c.nonzero_pages * PAGE:
        fail(f"multifd-bytes {ram['multifd-bytes']}: every page went on "
             "the channels, the switch came too late")
    if ram.get("postcopy-requests", 0) <= 0:
        fail(f"{src.name}: no page request in postcopy: {ram}")
    wait_runstate(src, "postmigrate")
    check_ram(c, src, MEM, d, f"source {src.name} after")
    if dst_kind == "qemu" and qemu_aborted(dst):
        return
    t = wait_status(dst, ("completed",), 30)
    expect_completed(dst, t, "destination")
    wait_runstate(dst, "running")
    check_ram(c, dst, MEM, d, f"destination {dst.name}")
    for vm in (src, dst):
        vm.shutdown()


def qemu_aborted(dst, within=10.0):
    """True if the QEMU destination died of QEMU72_YANK_ABORT (logged as
    the QEMU 7.2 bug it is); fails if it died of anything else."""
    deadline = time.time() + within
    while dst.proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    if dst.proc.poll() is None:
        return False
    err = dst.stderr()
    if dst.proc.returncode != -signal.SIGABRT or QEMU72_YANK_ABORT not in err:
        fail(f"{dst.name}: exit status {dst.proc.returncode} after the "
             f"migration: {err[-600:]!r}")
    log(f"QEMU 7.2 BUG: {dst.name} aborted after completing a postcopy "
        f"with multifd ({QEMU72_YANK_ABORT}); its RAM was checked during "
        "postcopy only")
    return True


def test_postcopy_ferry_to_qemu():
    postcopy("ferry", "qemu")


def test_postcopy_qemu_to_ferry():
    postcopy("qemu", "ferry")


def test_postcopy_recovery_qemu_to_ferry():
    """QEMU 7.2 source, ferry destination, multifd and postcopy-ram,
    through relay.py: in postcopy-active the main connection is reset,
    both pause, migrate-recover / migrate resume:true bring both back;
    QEMU keeps its channels and sends a SYNC on each at every EOS after
    the recovery too, which ferry reads without waiting: both complete,
    RAM equal.  Not run the other way: a QEMU 7.2 destination with
    multifd never takes the recovery connection (it waits for the
    channels that follow a first connection; migration.c,
    migration_ioc_process_incoming), QEMU <-> QEMU as well."""
    if CONTROL:
        log("not run: a QEMU 7.2 destination cannot recover with multifd")
        return
    c = content(MEM)
    d = make_tmpdir("interop-multifd-recovery-")
    src = start("qemu", MEM, "qemu-src", content=c)
    dst = start("ferry", MEM, "ferry-dst", incoming="defer")
    for vm in (src, dst):
        enable_multifd(vm, 2, ["postcopy-ram"])
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=32 * MiB,
                max_postcopy_bandwidth=32 * MiB)
    port = free_port()
    relay = rl.Relay(port)
    try:
        dst.qmp.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        t0 = time.time()
        src.qmp.cmd("migrate", uri=relay.uri)
        src.wait_multifd_bytes(8 * MiB)
        src.qmp.cmd("migrate-start-postcopy")
        for vm in (dst, src):
            expect_status(vm, "postcopy-active")
        relay.wait_connections(3)
        main_conn, chans = relay.conns[0], relay.conns[1:3]
        if main_conn.rp == 0 or any(ch.rp for ch in chans):
            fail(f"relay: bytes back {[x.rp for x in relay.conns]}: the "
                 "first connection is not the main one")
        time.sleep(0.5)
        main_conn.reset()
        for vm in (src, dst):
            expect_status(vm, "postcopy-paused")
        before = [ch.main for ch in chans]
        new = free_port()
        dst.qmp.cmd("migrate-recover", uri=f"tcp:127.0.0.1:{new}")
        relay.retarget(new)
        src.qmp.cmd("migrate", uri=relay.uri, resume=True)
        relay.wait_connections(4)
        s = wait_status(src, ("completed",), 90)
        t = wait_status(dst, ("completed",), 30)
        expect_completed(src, s, "source")
        expect_completed(dst, t, "destination")
        after = [ch.main for ch in chans]
        log(f"completed in {time.time() - t0:.2f}s; channel bytes at the "
            f"break {before}, at the end {after}; postcopy-requests "
            f"{s['ram'].get('postcopy-requests')}")
        if any(ch.closed for ch in chans) or \
                not all(a > b for a, b in zip(after, before)):
            fail("QEMU's channels did not carry on after the recovery: "
                 f"closed {[ch.closed for ch in chans]}, bytes {before} "
                 f"-> {after}")
        if relay.errors:
            fail(f"relay errors: {relay.errors}")
    finally:
        relay.stop()
    wait_runstate(dst, "running")
    check_ram(c, dst, MEM, d, f"destination {dst.name}")
    check_ram(c, src, MEM, d, f"source {src.name} after")
    for vm in (src, dst):
        vm.shutdown()


def expect_status(vm, want, timeout=30):
    info = wait_status(vm, (want,), timeout)
    if info.get("status") != want:
        fail(f"{vm.name}: {info.get('status')}, expected {want}: "
             f"{info.get('error-desc', '')}; stderr {vm.stderr()[-600:]}")


def dst_outcome(dst):
    """What a refusing destination says: its stderr, plus its error-desc
    if it is still up (QEMU 7.2's stays in inmigrate, ferry's may exit).
    Fails if it completed or runs."""
    text = dst.stderr()
    if dst.proc.poll() is None:
        try:
            info = status(dst)
            runstate = dst.query_status()
        except (AssertionError, OSError):
            dst.proc.wait(10)
        else:
            if info.get("status") == "completed" or runstate == "running":
                fail(f"{dst.name}: migration {info.get('status')}, run state "
                     f"{runstate} despite the uuid mismatch")
            text += " " + info.get("error-desc", "")
    if dst.proc.returncode is not None and dst.proc.returncode not in (0, 1):
        fail(f"{dst.name}: exit status {dst.proc.returncode} (a crash?)")
    return text


def uuid_mismatch(src_kind, dst_kind):
    src_kind, dst_kind = kind(src_kind), kind(dst_kind)
    c = content(SMALL)
    d = make_tmpdir("interop-multifd-uuid-")
    src = start(src_kind, SMALL, f"{src_kind}-src", content=c,
                extra=["-uuid", UUID_SRC])
    dst = start(dst_kind, SMALL, f"{dst_kind}-dst", incoming="defer",
                extra=["-uuid", UUID_DST])
    for vm in (src, dst):
        enable_multifd(vm, 2)
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=4 << 30)
    port = free_port()
    dst.qmp.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
    t0 = time.time()
    src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
    s = wait_status(src, ("completed",), 30)
    if s.get("status") != "failed":
        fail(f"{src.name}: migration {s.get('status')} although the uuids "
             f"differ; destination stderr: {dst.stderr()[-500:]}")
    log(f"source failed after {time.time() - t0:.2f}s: "
        f"{s.get('error-desc')!r}")
    # The destination refuses the channel: give it a moment to say so.
    deadline = time.time() + 10
    while True:
        text = dst_outcome(dst)
        if "uuid" in text.lower() or time.time() > deadline:
            break
        time.sleep(0.1)
    log(f"destination says: {text.strip()!r}")
    low = text.lower()
    if "received uuid" not in low or "expected uuid" not in low or \
            UUID_SRC not in low or UUID_DST not in low:
        state = (f"query-migrate {status(dst)}" if dst.proc.poll() is None
                 else f"exit status {dst.proc.returncode}")
        fail(f"{dst.name}: no uuid error naming both uuids: {text!r} "
             f"({state})")
    # The source keeps running, its RAM untouched.
    wait_runstate(src, "running")
    check_ram(c, src, SMALL, d, f"source {src.name} after the refusal")
    dst.kill()
    # ... and a destination with the source's uuid takes it.
    dst2 = start(dst_kind, SMALL, f"{dst_kind}-dst2", incoming="defer",
                 extra=["-uuid", UUID_SRC])
    enable_multifd(dst2, 2)
    s, t = migrate(src, dst2, f"tcp:127.0.0.1:{free_port()}", timeout=60)
    expect_completed(src, s, "source (second try)")
    expect_completed(dst2, t, "destination (second try)")
    if s["ram"].get("multifd-bytes", 0) <= 0:
        fail(f"{src.name}: second try: multifd-bytes "
             f"{s['ram'].get('multifd-bytes')!r}")
    check_ram(c, dst2, SMALL, d, f"destination {dst2.name}")
    for vm in (src, dst2):
        vm.shutdown()


def test_uuid_mismatch_qemu_to_ferry():
    uuid_mismatch("qemu", "ferry")


def test_uuid_mismatch_ferry_to_qemu():
    uuid_mismatch("ferry", "qemu")


if __name__ == "__main__":
    main([test_qemu_to_ferry_2ch, test_ferry_to_qemu_2ch,
          test_qemu_to_ferry_4ch_return_path,
          test_ferry_to_qemu_4ch_return_path,
          test_qemu_to_ferry_unix_3ch, test_ferry_to_qemu_unix_3ch,
          test_ferry_to_qemu_dirtier,
          test_postcopy_ferry_to_qemu, test_postcopy_qemu_to_ferry,
          test_postcopy_recovery_qemu_to_ferry,
          test_uuid_mismatch_qemu_to_ferry,
          test_uuid_mismatch_ferry_to_qemu], timeout=170)

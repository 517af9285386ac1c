#!/usr/bin/env python3
"""Multifd precopy between QEMU 7.2 and ferry, both ways, machine none
with 256 MiB of known content (interop.Content).

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

MULTIFD_CONTROL=1 runs every case QEMU <-> QEMU, to check the test
itself against the reference implementation.
"""

import os
import time

from interop import (PAGE, MiB, Content, dump, expect_completed,
                     fail, free_port, log, main, make_tmpdir, migrate,
                     set_caps, start, status, wait_status,
                     wait_runstate)
import dirtier  # noqa: E402  (../functional, on the path through interop)

MEM = 256 * MiB
SMALL = 64 * MiB
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
        fail(f"{dst.name}: no uuid error naming both uuids: {text!r}")
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
          test_uuid_mismatch_qemu_to_ferry,
          test_uuid_mismatch_ferry_to_qemu], timeout=170)

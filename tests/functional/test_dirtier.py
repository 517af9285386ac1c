#!/usr/bin/env python3
"""x-dirtier, ferry's RAM-writing workload device, end to end (-M none:
no KVM needed).

- option refusals, each naming the option;
- the writer runs only while the VM runs (stop/cont);
- precopy ferry -> ferry with a 20 MiB/s writer converges, and the two
  RAMs are identical page by page, with written pages in them; the
  destination continues the source's generation counter;
- a writer faster than max-bandwidth never converges; migrate_cancel
  leaves the source running and writing;
- postcopy with the destination's writer running after the switch: it
  takes userfaults, and every page is identical or rewritten after the
  switch (dirtier.compare_postcopy).
"""

import os
import socket
import subprocess
import time

import dirtier
import ferrytest as ft
from ferrytest import VM, log, fail

MEM = 256 << 20
REGION = (0, 64 << 20)
BASE = ["-M", "none", "-m", "256M", "-nodefaults"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dev(rate, size="64M", extra=""):
    return ["-device", f"x-dirtier,rate={rate},size={size}{extra}"]


def query(vm):
    return vm.qmp.cmd("x-query-dirtier")


def set_caps(vm, **caps):
    vm.qmp.cmd("migrate-set-capabilities",
               capabilities=[{"capability": k.replace("_", "-"), "state": v}
                             for k, v in caps.items()])


def wait_status(vm, want, timeout=60.0):
    return vm.wait_migration(timeout, poll=0.05, want=want)


def pair(src_dev, dst_extra=()):
    port = free_port()
    uri = f"tcp:127.0.0.1:{port}"
    src = VM(BASE + src_dev, name="src", serial=False).launch()
    dst = VM(BASE + src_dev + ["-incoming", uri] + list(dst_extra), name="dst",
             serial=False).launch()
    return src, dst, uri


# ---- (a) ----------------------------------------------------------------

REFUSALS = [
    (["-device", "x-dirtier,rate=0,size=64M"], "'rate' must be more than 0"),
    (["-device", "x-dirtier,rate=1M,size=4K"], "'size' must be a multiple"),
    (["-device", "x-dirtier,rate=1M,size=6000"], "'size' must be a multiple"),
    (["-device", "x-dirtier,rate=1M,size=64M,colour=red"], "invalid parameter 'colour'"),
    (["-device", "x-dirtier,rate=fast,size=64M"], "parameter 'rate'"),
    (["-device", "x-dirtier,rate=1M,size=64M,seed=x"], "parameter 'seed'"),
    (["-device", "x-dirtier,rate=1M,size=64M,addr=0x800"], "'addr' must be aligned"),
    (["-device", "x-dirtier,rate=1M,size=64M,addr=224M"], "not inside guest RAM"),
    (["-device", "x-dirtier,rate=1M,size=1G"], "not inside guest RAM"),
    (["-device", "x-dirtier,rate=1M,size=64M,pattern=zigzag"], "'pattern' must be random or sweep"),
    (["-device", "x-dirtier,size=64M"], "parameter 'rate' is missing"),
    (["-device", "x-dirtier,rate=1M"], "parameter 'size' is missing"),
    (["-device", "x-dirtier,rate=1M,size=64M"] * 2, "only one x-dirtier"),
]


def run_refused(args, want):
    p = subprocess.run([ft.FERRY] + args + ["-display", "none"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=20)
    if p.returncode != 1 or want not in p.stderr:
        fail(f"{' '.join(args)}: exit {p.returncode}, stderr {p.stderr!r}; "
             f"wanted exit 1 with {want!r}")
    if "x-dirtier" not in p.stderr:
        fail(f"{' '.join(args)}: the error does not name x-dirtier: {p.stderr!r}")


def test_refusals():
    for args, want in REFUSALS:
        run_refused(BASE + args, want)
    # pc: refused for its vCPUs, before KVM is even looked for.
    run_refused(["-M", "pc", "-m", "256M", "-device", "x-dirtier,rate=1M,size=64M"],
                "x-dirtier needs a machine without vCPUs: its writes would "
                "escape KVM's dirty log")
    # Accepted forms: suffixes, hex, both patterns, on x-ram too.
    vm = VM(["-M", "x-ram", "-m", "64M", "-nodefaults"] +
            dev("1.5M", "0x100000", ",addr=8M,pattern=sweep,seed=7"),
            name="ok", serial=False).launch()
    q = query(vm)
    if q["rate"] != 1572864 or q["size"] != 1 << 20:
        fail(f"rate/size not parsed as given: {q}")
    vm.shutdown()
    vm = VM(["-M", "none", "-m", "64M"], name="nodev", serial=False).launch()
    try:
        vm.qmp.cmd("x-query-dirtier")
        fail("x-query-dirtier answered without the device")
    except ft.QMPError as e:
        if e.cls != "DeviceNotFound":
            fail(f"x-query-dirtier without the device: {e}")
    vm.shutdown()


# ---- (b) ----------------------------------------------------------------

def test_runs_only_while_running():
    vm = VM(BASE + dev("8M", "16M", ",pattern=sweep"), name="vm",
            serial=False).launch()
    dirtier.wait_writes(vm, 100)
    vm.qmp.cmd("stop")
    a = query(vm)
    if a["running"]:
        fail(f"writer still running after stop: {a}")
    time.sleep(0.5)
    b = query(vm)
    if b["pages-written"] != a["pages-written"]:
        fail(f"pages written while stopped: {a['pages-written']} -> "
             f"{b['pages-written']}")
    dump = vm.pmemsave(MEM)
    stats = dirtier.check_region(dump, (0, 16 << 20))
    if stats["control"] != b["generation"] or stats["dirtier"] == 0:
        fail(f"RAM does not match the writer: {stats} vs {b}")
    t0 = time.time()
    vm.qmp.cmd("cont")
    dirtier.wait_writes(vm, 400)
    c = query(vm)
    rate = (c["pages-written"] - b["pages-written"]) * 4096 / (time.time() - t0)
    log(f"stopped at {b['pages-written']}, after cont {c['pages-written']} "
        f"(~{rate / 1e6:.1f} MB/s for 8 MiB/s asked); {stats}")
    if not c["running"] or c["generation"] <= b["generation"]:
        fail(f"writer did not resume from the counter: {c}")
    vm.shutdown()


# ---- (c) ----------------------------------------------------------------

def test_precopy_converges():
    # -S on the destination: it must not write before both are dumped.
    src, dst, uri = pair(dev("20M"), ["-S"])
    dirtier.wait_writes(src, 5000)
    src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 30})
    t0 = time.time()
    src.qmp.cmd("migrate", uri=uri)
    info = src.wait_migration(timeout=120)
    took = time.time() - t0
    dst.wait_migration(timeout=30)
    ram = info["ram"]
    log(f"completed in {took:.2f}s, {ram.get('dirty-sync-count')} syncs, "
        f"downtime {info.get('downtime')} ms, "
        f"{ram.get('transferred')} bytes")
    if ram.get("dirty-sync-count", 0) < 2:
        fail(f"no dirty sync after the first pass: {ram}")
    if query(src)["running"]:
        fail("source writer still running after completion")
    if dst.query_status() == "running":
        fail("destination started despite -S")
    ctl = query(src)["generation"]
    sd = src.pmemsave(MEM)
    dd = dst.pmemsave(MEM)
    t1 = time.time()
    stats = dirtier.compare_precopy(sd, dd, REGION)
    log(f"identical; region {stats} (checked in {time.time() - t1:.1f}s)")
    if stats["dirtier"] < 2000 or stats["max-generation"] < 5000:
        fail(f"too few written pages in the region: {stats}")
    if stats["control"] != ctl:
        fail(f"control counter {stats['control']} != source generation {ctl}")
    # The destination continues the sequence from the migrated counter.
    dst.qmp.cmd("cont")
    dirtier.wait_writes(dst, 50)
    q = query(dst)
    if q["generation"] != ctl + q["pages-written"]:
        fail(f"destination did not continue from {ctl}: {q}")
    src.shutdown()
    dst.shutdown()


# ---- (d) ----------------------------------------------------------------

def test_precopy_does_not_converge():
    src, dst, uri = pair(dev("200M"))
    t0, w0 = time.time(), query(src)["pages-written"]
    dirtier.wait_writes(src, 20000)
    rate = (query(src)["pages-written"] - w0) * 4096 / (time.time() - t0)
    log(f"writer at ~{rate / 1e6:.0f} MB/s (200 MiB/s asked)")
    src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 32 << 20})
    src.qmp.cmd("migrate", uri=uri)
    # Each pass resends most of the region (64 MiB at 32 MiB/s, ~2 s):
    # wait for a few passes, however slow the build (TSan), never done.
    syncs = []
    t0 = time.time()
    deadline = t0 + 90
    while True:
        info = src.qmp.cmd("query-migrate")
        st = info.get("status")
        if st != "active" and not (st == "setup" and not syncs):
            fail(f"a precopy dirtied at 200 MB/s left 'active': {info}")
        syncs.append(info.get("ram", {}).get("dirty-sync-count", 0))
        if syncs[-1] >= 3 and time.time() - t0 >= 4:
            break
        if time.time() > deadline:
            fail(f"dirty-sync-count did not reach 3 in 90 s: {info}")
        time.sleep(0.2)
    info = src.qmp.cmd("query-migrate")
    log(f"after {time.time() - t0:.1f}s: status {info['status']}, syncs "
        f"{syncs[0]} -> {syncs[-1]}, remaining {info['ram'].get('remaining')}, "
        f"dirty rate {info['ram'].get('dirty-pages-rate')} pages/s")
    if info["status"] != "active" or syncs[-1] <= syncs[0]:
        fail(f"dirty-sync-count did not grow while active: {syncs[0]} -> "
             f"{syncs[-1]}, {info}")
    src.qmp.cmd("migrate_cancel")
    deadline = time.time() + 30
    while src.qmp.cmd("query-migrate")["status"] != "cancelled":
        if time.time() > deadline:
            fail(f"not cancelled: {src.qmp.cmd('query-migrate')}")
        time.sleep(0.05)
    if src.query_status() != "running":
        fail(f"source {src.query_status()} after cancel, expected running")
    q = query(src)
    if not q["running"]:
        fail(f"source writer parked after cancel: {q}")
    dirtier.wait_writes(src, 1000)
    src.shutdown()
    dst.kill()


# ---- (e) ----------------------------------------------------------------

def test_postcopy():
    src, dst, uri = pair(dev("20M"))
    set_caps(src, postcopy_ram=True)
    set_caps(dst, postcopy_ram=True)
    src.qmp.cmd("migrate-set-parameters", **{
        "max-bandwidth": 32 << 20, "max-postcopy-bandwidth": 8 << 20})
    dirtier.wait_writes(src, 5000)
    t0 = time.time()
    src.qmp.cmd("migrate", uri=uri)
    src.qmp.cmd("migrate-start-postcopy")
    wait_status(dst, ("postcopy-active", "completed"))
    # The destination's writer runs after the switch and waits on faults.
    dirtier.wait_writes(dst, 300, timeout=30)
    mid = dst.qmp.cmd("query-migrate")
    log(f"destination after switch: {query(dst)}, status {mid['status']}")
    sst = src.wait_migration(timeout=120)
    dstst = dst.wait_migration(timeout=60)
    log(f"completed in {time.time() - t0:.2f}s; source requests "
        f"{sst['ram'].get('postcopy-requests')}, destination faults "
        f"{dstst.get('postcopy-faults')}, latency p50 "
        f"{dstst.get('postcopy-latency-p50-us')} us")
    if dstst.get("postcopy-faults", 0) <= 0:
        fail(f"the destination's writer took no fault: {dstst}")
    if sst["ram"].get("postcopy-requests", 0) <= 0:
        fail(f"no page requested in postcopy: {sst}")
    src_q = query(src)
    dst.qmp.cmd("stop")
    dst_q = query(dst)
    if src_q["running"] or dst_q["running"]:
        fail(f"writers not parked after stop: src {src_q} dst {dst_q}")
    if dst_q["generation"] <= src_q["generation"]:
        fail(f"destination did not continue the counter: {src_q} / {dst_q}")
    sd = src.pmemsave(MEM)
    dd = dst.pmemsave(MEM)
    t1 = time.time()
    out = dirtier.compare_postcopy(sd, dd, REGION)
    st = dirtier.check_region(dd, REGION)
    log(f"compare_postcopy: {out}; destination region {st} "
        f"({time.time() - t1:.1f}s)")
    if out["rewritten"] == 0:
        fail("no page was rewritten on the destination after the switch")
    if out["source-control"] != src_q["generation"]:
        fail(f"source counter in RAM {out['source-control']} != "
             f"{src_q['generation']}")
    src.shutdown()
    dst.shutdown()


# ---- the checker itself ---------------------------------------------------

def test_checker_catches():
    """compare_postcopy and compare_precopy must fail on a stale page,
    a misplaced page and a torn page (so the tests above can fail)."""
    size = 16 * 4096
    region = (0, size)
    src = bytearray(size)
    src[0:8] = (100).to_bytes(8, "little")
    for i, g in ((1, 10), (2, 50), (3, 100)):
        src[i * 4096:(i + 1) * 4096] = dirtier.expected_page(i * 4096, g)
    good = bytearray(src)
    good[0:8] = (105).to_bytes(8, "little")
    good[2 * 4096:3 * 4096] = dirtier.expected_page(2 * 4096, 101)
    good[5 * 4096:6 * 4096] = dirtier.expected_page(5 * 4096, 103)
    out = dirtier.compare_postcopy(bytes(src), bytes(good), region)
    if out["rewritten"] != 2:
        fail(f"compare_postcopy on a good pair: {out}")
    dirtier.compare_precopy(bytes(src), bytes(src), region)
    bad_cases = {
        "stale (older than the switch)": (2, dirtier.expected_page(2 * 4096, 60)),
        "misplaced": (4, dirtier.expected_page(2 * 4096, 104)),
        "lost (back to zero)": (3, bytes(4096)),
        "torn": (6, dirtier.expected_page(6 * 4096, 104)[:2048] +
                 dirtier.expected_page(6 * 4096, 102)[2048:]),
    }
    for what, (page, data) in bad_cases.items():
        bad = bytearray(good)
        bad[page * 4096:(page + 1) * 4096] = data
        try:
            dirtier.compare_postcopy(bytes(src), bytes(bad), region)
            fail(f"compare_postcopy accepted a {what} page")
        except dirtier.PageError as e:
            log(f"{what}: {e}")
    try:
        dirtier.compare_precopy(bytes(src), bytes(good), region)
        fail("compare_precopy accepted differing dumps")
    except dirtier.PageError as e:
        log(f"precopy: {e}")


if __name__ == "__main__":
    ft.require_file(ft.FERRY, "ferry")
    ft.main([test_checker_catches, test_refusals, test_runs_only_while_running,
             test_precopy_converges, test_precopy_does_not_converge,
             test_postcopy], timeout=400)

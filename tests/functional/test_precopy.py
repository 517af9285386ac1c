#!/usr/bin/env python3
"""Precopy live migration of the test guest between two real ferry
processes (-M pc -accel kvm), and save/restore through a file.

After each migration the destination must have the guest's RAM (stopped,
dumped with pmemsave, checked page by page with the parameters the guest
announced on the SOURCE's serial line) and its vCPUs: once continued, every
vCPU keeps sweeping on the destination (new digits on its serial).

The guest dirties RAM at GB/s without throttling, which no link keeps up
with; delay= slows it to a rate precopy converges against at
MAX_BANDWIDTH (see the measurements in DIRTY_DELAY)."""

import os
import time

import ferrytest as ft

# Busy-loop iterations per page.  Measured on the 2-core nested host
# without dirty logging: 4.7 GB/s per vCPU at 0, 0.7 GB/s at 10000,
# ~60 MB/s at 100000.  With dirty logging on, every first write to a page
# after a sync traps (shadow paging), which slows the guest a lot: at
# 20000 and 1 GiB/s, 512 MiB and 1 GiB converge in 2-3 s after 4-5 dirty
# syncs, with the guest still sweeping throughout.
DIRTY_DELAY = 20000
MAX_BANDWIDTH = 1 << 30         # bytes/s
DOWNTIME_LIMIT = 300            # ms
CONVERGE_BUDGET = 40            # s, from "migrate" to "completed"


def guest_append(seed, delay):
    return f"seed={seed} delay={delay}"


def start_source(mem, smp, seed, delay, name):
    src = ft.VM(ft.ferry_guest_args(mem, smp, guest_append(seed, delay)),
                name=name).launch()
    src.wait_serial("guest: ncpus=", timeout=90)
    ft.log(f"{name} banner: {src.serial().splitlines()[0]}")
    # the first sweep faults in all of RAM; migrate a guest in its stride
    src.wait_sweeps(smp, 1, timeout=120)
    return src


def start_destination(mem, smp, seed, delay, incoming, name, kernel=True):
    """kernel=False starts it as QEMU users do: no -kernel, RAM and vCPU
    state come from the stream."""
    if kernel:
        args = ft.ferry_guest_args(mem, smp, guest_append(seed, delay),
                                   extra=["-incoming", incoming])
    else:
        args = ["-M", "pc", "-accel", "kvm", "-m", mem, "-smp", str(smp),
                "-incoming", incoming]
    dst = ft.VM(args, name=name).launch()
    st = dst.query_status()
    if st != "inmigrate":
        ft.fail(f"{name}: run state {st} before the migration, "
                "expected inmigrate")
    return dst


def check_migrate_info(info, ram_bytes, live):
    """The source's query-migrate once completed."""
    ram = info.get("ram", {})
    for key in ("total-time", "downtime"):
        if key not in info:
            ft.fail(f"query-migrate lacks {key}: {info}")
    if info["total-time"] < info["downtime"] or info["downtime"] < 0:
        ft.fail(f"total-time {info['total-time']} < downtime "
                f"{info['downtime']}")
    if ram.get("total") != ram_bytes:
        ft.fail(f"ram.total {ram.get('total')} != RAM size {ram_bytes}")
    if ram.get("transferred", 0) <= 0:
        ft.fail(f"ram.transferred is {ram.get('transferred')}")
    # one sync when dirty logging starts, at least one more at the switch
    if ram.get("dirty-sync-count", 0) < 2:
        ft.fail(f"dirty-sync-count {ram.get('dirty-sync-count')} < 2")
    if live and info["downtime"] > 10000:
        ft.fail(f"downtime {info['downtime']} ms for a converged precopy")


def check_destination_ram(dst, ram_bytes, params, min_sweeps):
    """Stopped destination: its RAM must be a consistent guest image."""
    ok, report, dump = dst.check_guest_ram(ram_bytes, min_sweeps=min_sweeps,
                                           params=params)
    lines = report.strip().splitlines()
    ft.log(f"{dst.name}: {lines[-1] if lines else '(no report)'}")
    if not ok:
        ft.fail(f"{dst.name}: guest RAM check failed:\n{report}")
    return dump


def check_keeps_sweeping(dst, smp, timeout=90):
    """cont: every vCPU must complete more sweeps on the destination."""
    before = dst.sweeps(smp)
    dst.qmp.cmd("cont")
    dst.wait_status("running")
    after = dst.wait_sweeps(smp, [b + 1 for b in before], timeout=timeout)
    ft.log(f"{dst.name}: sweeps per vCPU on the destination {before} -> "
           f"{after}")
    if "!" in dst.serial():
        ft.fail(f"{dst.name}: guest exception after migration: "
                f"{dst.serial()[-300:]!r}")


def live_migration(smp, mem, transport, seed, dst_kernel=True):
    ram_bytes = ft.parse_size(mem)
    src = start_source(mem, smp, seed, DIRTY_DELAY, f"src-smp{smp}")
    if transport == "tcp":
        uri = f"tcp:127.0.0.1:{ft.free_tcp_port()}"
    else:
        uri = f"unix:{os.path.join(src.dir, 'migrate.sock')}"
    dst = start_destination(mem, smp, seed, DIRTY_DELAY, uri,
                            f"dst-smp{smp}", kernel=dst_kernel)
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=MAX_BANDWIDTH,
                downtime_limit=DOWNTIME_LIMIT)
    base = min(src.sweeps(smp))
    t0 = time.time()
    src.qmp.cmd("migrate", uri=uri)
    info = src.wait_migration(timeout=CONVERGE_BUDGET + 30)
    elapsed = time.time() - t0
    ram = info.get("ram", {})
    ft.log(f"completed in {elapsed:.1f}s: total-time {info.get('total-time')}"
           f" ms, downtime {info.get('downtime')} ms, transferred "
           f"{ram.get('transferred', 0) >> 20} MiB, dirty-sync-count "
           f"{ram.get('dirty-sync-count')}")
    check_migrate_info(info, ram_bytes, live=True)
    if elapsed > CONVERGE_BUDGET:
        ft.fail(f"precopy took {elapsed:.1f}s (budget {CONVERGE_BUDGET}s)")
    # "completed" comes first, the run state follows (as in QEMU)
    src.wait_status("postmigrate", timeout=10)
    dst.wait_status("running", timeout=30)
    # the device state carried the vCPUs: stop, check RAM, then cont
    dst.qmp.cmd("stop")
    dst.wait_status("paused")
    dump = check_destination_ram(dst, ram_bytes, src.guest_params(), base)
    os.unlink(dump)
    check_keeps_sweeping(dst, smp)
    dst.shutdown()
    src.shutdown()


def test_tcp_smp1_512m():
    # the destination has no -kernel: everything comes from the stream
    live_migration(1, "512M", "tcp", seed=0x51, dst_kernel=False)


def test_unix_smp2_1g():
    live_migration(2, "1G", "unix", seed=0x1234)


def test_file_save_restore():
    """migrate to a file from a paused guest; a new ferry restores it."""
    smp, mem, seed = 2, "256M", 0x77
    ram_bytes = ft.parse_size(mem)
    src = start_source(mem, smp, seed, 0, "save")
    src.wait_sweeps(smp, 2, timeout=60)
    src.qmp.cmd("stop")
    src.wait_status("paused")
    base = min(src.sweeps(smp))
    src_dump = src.pmemsave(ram_bytes)
    path = os.path.join(src.dir, "state.mig")
    src.qmp.cmd("migrate", uri=f"file:{path}")
    info = src.wait_migration(timeout=60)
    check_migrate_info(info, ram_bytes, live=False)
    ft.log(f"saved {os.path.getsize(path) >> 20} MiB to {path}; source "
           f"run state {src.query_status()}")
    params = src.guest_params()
    src.shutdown()

    # another -smp cannot take this state: a clear error, exit status 1
    bad = ft.VM(ft.ferry_guest_args(mem, 1, guest_append(seed, 0),
                                    extra=["-incoming", f"file:{path}"]),
                name="restore-smp1").launch(connect=False)
    rc = bad.wait_exit(timeout=60)
    if rc != 1 or "-smp must be the same" not in bad.stderr():
        ft.fail(f"restore with -smp 1: exit {rc}, stderr {bad.stderr()!r}")
    ft.log(f"-smp 1 refused: {bad.stderr().strip().splitlines()[-1]}")

    dst = ft.VM(ft.ferry_guest_args(mem, smp, guest_append(seed, 0),
                                    extra=["-incoming", f"file:{path}"]),
                name="restore").launch()
    # the source was paused: so is the restored guest
    dst.wait_status("paused", timeout=60)
    dump = check_destination_ram(dst, ram_bytes, params, base)
    with open(src_dump, "rb") as a, open(dump, "rb") as b:
        while True:
            x, y = a.read(1 << 20), b.read(1 << 20)
            if x != y:
                ft.fail("restored RAM differs from the saved guest's RAM "
                        f"near offset {a.tell() - len(x):#x}")
            if not x:
                break
    os.unlink(dump)
    os.unlink(src_dump)
    if dst.sweeps(smp) != [0] * smp:
        ft.fail("the restored guest ran before cont")
    check_keeps_sweeping(dst, smp)
    dst.shutdown()


if __name__ == "__main__":
    ft.require_kvm()
    ft.require_file(ft.GUEST_CHECK, "guest RAM checker")
    ft.main([test_tcp_smp1_512m, test_unix_smp2_1g, test_file_save_restore],
            timeout=280)

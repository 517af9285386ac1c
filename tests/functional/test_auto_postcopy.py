#!/usr/bin/env python3
"""x-auto-postcopy end to end, without KVM: machine none with an x-dirtier
writer (docs/usage.md) standing in for a guest.

- A writer that out-dirties the link: the source must switch to postcopy
  by itself during the first pass (before any pass ended), and the
  destination's RAM must then be the source's, or newer writes of the
  destination's writer (dirtier.compare_postcopy).
- A writer well below the link: the migration completes in precopy, with
  no switch, and both RAMs are identical.
- A fast writer whose whole working set fits in the downtime (8 MiB at
  the end of RAM): precopy converges, so no switch either.
- ferry-migrate --switch-policy=auto uses the capability on a ferry
  source and says why it switched.
"""

import os
import socket
import subprocess
import time

import dirtier
import ferrytest as ft
from ferrytest import VM, log, fail

MEM = 256 << 20
# The writer's region is the lower half; the upper half holds random
# content (zero pages would make a pass take no time, whatever the link).
REGION = (0, MEM // 2)
BASE = ["-M", "none", "-m", "256M", "-nodefaults"]
BANDWIDTH = 64 << 20            # bytes/s: 4 s for one pass of 256 MiB
MIGRATE_TOOL = os.path.join(ft.BUILD, "tools", "ferry-migrate")


def dirtier_dev(rate, size="128M", addr=0):
    return ["-device", f"x-dirtier,rate={rate},size={size},addr={addr}"]


def caps(vm, *names):
    vm.qmp.cmd("migrate-set-capabilities", capabilities=[
        {"capability": n, "state": True} for n in names])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_content = []


def content():
    """Random content for the upper half of the source's RAM."""
    if not _content:
        path = os.path.join(ft.make_tmpdir("auto-postcopy-"), "ram.bin")
        with open(path, "wb") as f:
            for _ in range((MEM - REGION[1]) >> 20):
                f.write(os.urandom(1 << 20))
        _content.append(path)
    return _content[0]


def pair(dev, dst_extra=()):
    uri = f"tcp:127.0.0.1:{free_port()}"
    src = VM(BASE + dev + ["-device", f"loader,file={content()},"
                                      f"addr={REGION[1]},force-raw=on"],
             name="src", serial=False).launch()
    dst = VM(BASE + dev + ["-incoming", uri] + list(dst_extra), name="dst",
             serial=False).launch()
    return src, dst, uri


def migrate(src, dst, uri):
    caps(src, "postcopy-ram", "x-auto-postcopy")
    caps(dst, "postcopy-ram")
    src.qmp.cmd("migrate-set-parameters", **{
        "max-bandwidth": BANDWIDTH, "max-postcopy-bandwidth": BANDWIDTH})
    t0 = time.time()
    src.qmp.cmd("migrate", uri=uri)
    info = src.wait_migration(timeout=120)
    dst.wait_migration(timeout=60)
    log(f"{info['status']} in {time.time() - t0:.1f}s: "
        f"x-auto-postcopy {info.get('x-auto-postcopy')}, "
        f"{info['ram'].get('dirty-sync-count')} passes, "
        f"{info['ram'].get('postcopy-requests')} page requests")
    return info


def test_outdirtying_switches_in_first_pass():
    # 200 MiB/s of writes over half of RAM against a 64 MiB/s link.
    src, dst, uri = pair(dirtier_dev("200M"))
    dirtier.wait_writes(src, 500)
    info = migrate(src, dst, uri)
    auto = info.get("x-auto-postcopy")
    if not auto:
        fail(f"no automatic switch: {info}")
    pass_ms = MEM * 1000 // BANDWIDTH
    if auto["time"] >= pass_ms:
        fail(f"switched at {auto['time']} ms, after the first pass would "
             f"have ended ({pass_ms} ms)")
    if auto["dirty-rate"] < auto["bandwidth"]:
        fail(f"switched with a dirty rate below the bandwidth: {auto}")
    if info["ram"].get("postcopy-bytes", 0) <= 0:
        fail(f"no page went in postcopy: {info['ram']}")
    src_gen = src.qmp.cmd("x-query-dirtier")["generation"]
    dst.qmp.cmd("stop")
    out = dirtier.compare_postcopy(src.pmemsave(MEM), dst.pmemsave(MEM),
                                   REGION)
    log(f"compare_postcopy: {out}")
    if out["source-control"] != src_gen:
        fail(f"source counter {out['source-control']} != {src_gen}")
    src.shutdown()
    dst.shutdown()


def expect_precopy(dev):
    src, dst, uri = pair(dev, ["-S"])
    dirtier.wait_writes(src, 100)
    info = migrate(src, dst, uri)
    if "x-auto-postcopy" in info or info["ram"].get("postcopy-bytes"):
        fail(f"switched to postcopy although precopy converges: {info}")
    stats = dirtier.compare_precopy(src.pmemsave(MEM), dst.pmemsave(MEM))
    log(f"identical: {stats}")
    src.shutdown()
    dst.shutdown()


def test_converging_writer_stays_in_precopy():
    # Over the upper half, where the first pass comes after the lower one:
    # the estimate then sees the writes spread as they are.  (A writer
    # confined to the pages sent first looks faster than it is: a
    # sanitizer build's slow link would then make 4 MiB/s look too fast.)
    expect_precopy(dirtier_dev("2M", addr=MEM // 2))


def test_small_hot_set_stays_in_precopy():
    # Faster than the link, but 8 MiB fit in 300 ms x 64 MiB/s; at the end
    # of RAM, where the first pass comes last.
    expect_precopy(dirtier_dev("200M", size="8M", addr=MEM - (8 << 20)))


def test_migrate_tool_auto():
    src, dst, uri = pair(dirtier_dev("200M"))
    dirtier.wait_writes(src, 500)
    p = subprocess.run(
        [MIGRATE_TOOL, "--src", src.qmp_path, "--dst", dst.qmp_path,
         "--uri", uri, "--switch-policy=auto", "--max-bandwidth",
         str(BANDWIDTH), "--timeout", "120"],
        capture_output=True, text=True, timeout=180)
    log(p.stdout.strip().splitlines()[-1] if p.stdout.strip() else "")
    if p.returncode != 0:
        fail(f"ferry-migrate exit {p.returncode}: {p.stdout}\n{p.stderr}")
    if "switches to postcopy by itself" not in p.stderr or \
            "(postcopy)" not in p.stdout:
        fail(f"ferry-migrate did not report the source's switch:\n"
             f"{p.stdout}\n{p.stderr}")
    src.shutdown()
    dst.shutdown()


if __name__ == "__main__":
    ft.require_file(ft.FERRY, "ferry")
    ft.main([test_outdirtying_switches_in_first_pass,
             test_converging_writer_stays_in_precopy,
             test_small_hot_set_stays_in_precopy,
             test_migrate_tool_auto], timeout=400)

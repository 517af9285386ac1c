#!/usr/bin/env python3
"""When to switch to postcopy: ferry's x-auto-postcopy against switching
after the first pass (what libvirt's --postcopy-after-precopy does), on a
guest that out-dirties the link and one that does not.  No KVM needed.

Machine none, SIZE of RAM (default 1 GiB) full of random data (loaded
with -device loader, so one copy of RAM is SIZE bytes on the wire), all
of it written by an x-dirtier device (docs/usage.md) at RATE bytes/s,
uniformly at random, standing in for a guest.  Every migration runs at --bandwidth (default
1 Gbit/s, also for the postcopy phase) over loopback TCP, ferry -> ferry.

Policies:
  auto      postcopy-ram + x-auto-postcopy on the source: ferry decides.
  after     postcopy-ram; migrate-start-postcopy once dirty-sync-count
            reaches 2 (the first pass is over).
For each: total time, the ratio total / (SIZE / bandwidth) (1.0 is one
copy of RAM at the link's rate), when the switch came, the passes, bytes
sent.  RAM is checked after every run: both sides must be identical
but for the destination's newer writes (its writer runs on after the
end, or the switch): tests/functional/dirtier.py's compare_postcopy.

QEMU 7.2 cannot run this workload (x-dirtier is ferry's); the issue's
reference figure for switching after the first pass on QEMU is ~1.95x.
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402
from bench import ft, log  # noqa: E402

sys.path.insert(0, os.path.join(bench.SRCDIR, "tests", "functional"))
import dirtier  # noqa: E402

POLICIES = ("auto", "after")


def vm_pair(size, rate, content, binary):
    base = ["-M", "none", "-m", f"{size >> 20}M", "-nodefaults",
            "-device", f"x-dirtier,rate={rate},size={size},addr=0"]
    src = ft.VM(base + ["-device", f"loader,file={content},addr=0,"
                                   "force-raw=on"],
                binary=binary, name="src", serial=False)
    uri = f"tcp:127.0.0.1:{bench.free_port()}"
    dst = ft.VM(base + ["-incoming", uri], binary=binary, name="dst",
                serial=False)
    return src.launch(), dst.launch(), uri


def run_one(binary, size, rate, policy, bandwidth, content, timeout):
    res = {"policy": policy, "rate": rate, "status": "error"}
    src, dst, uri = vm_pair(size, rate, content, binary)
    try:
        # the writer runs before the migration starts
        dirtier.wait_writes(src, 2000, timeout=30)
        caps = ["postcopy-ram"] + (["x-auto-postcopy"] if policy == "auto"
                                   else [])
        src.qmp.cmd("migrate-set-capabilities", capabilities=[
            {"capability": c, "state": True} for c in caps])
        dst.qmp.cmd("migrate-set-capabilities", capabilities=[
            {"capability": "postcopy-ram", "state": True}])
        src.qmp.cmd("migrate-set-parameters", **{
            "max-bandwidth": bandwidth, "max-postcopy-bandwidth": bandwidth})
        t0 = time.monotonic()
        src.qmp.cmd("migrate", uri=uri)
        switched_at = None
        while True:
            info = src.qmp.cmd("query-migrate")
            st = info.get("status")
            if st in ("completed", "failed", "cancelled"):
                break
            if time.monotonic() - t0 > timeout:
                src.qmp.cmd("migrate_cancel")
                res["status"] = "timeout"
                return res
            if policy == "after" and switched_at is None and st == "active" \
                    and info.get("ram", {}).get("dirty-sync-count", 0) >= 2:
                src.qmp.cmd("migrate-start-postcopy")
                switched_at = time.monotonic() - t0
            time.sleep(0.02)
        dinfo = dst.wait_migration(timeout=60)
        res["status"] = st if dinfo.get("status") == "completed" else \
            f"destination {dinfo.get('status')}"
        ram = info.get("ram", {})
        auto = info.get("x-auto-postcopy")
        if auto:
            switched_at = auto["time"] / 1000
        postcopy = ram.get("postcopy-bytes", 0) > 0
        res.update({
            "total_s": info.get("total-time", 0) / 1000,
            "ratio": round(info.get("total-time", 0) / 1000 /
                           (size / bandwidth), 3),
            "postcopy": postcopy,
            "switch_s": round(switched_at, 3) if postcopy and switched_at
            else None,
            "passes": ram.get("dirty-sync-count"),
            "transferred": ram.get("transferred"),
            "requests": ram.get("postcopy-requests"),
            "auto": auto,
        })
        if res["status"] == "completed":
            dst.qmp.cmd("stop")
            sd, dd = src.pmemsave(size), dst.pmemsave(size)
            # The destination ran its writer since the end (postcopy: since
            # the switch): its pages may only be newer than the source's.
            res["check"] = dirtier.compare_postcopy(sd, dd, (0, size),
                                                    any_initial=True)
            for path in (sd, dd):
                os.unlink(path)
        return res
    except (AssertionError, ft.QMPError, dirtier.PageError) as e:
        res["status"] = "failed"
        res["error"] = str(e)
        return res
    finally:
        for vm in (src, dst):
            vm.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(bench.SRCDIR, "build"))
    ap.add_argument("--size", default="1G")
    ap.add_argument("--rates", default="200M,20M",
                    help="writer rates (bytes/s), comma-separated")
    ap.add_argument("--bandwidth", default=str(bench.GBIT),
                    help="bytes/s, or with a K/M/G suffix (default 1 Gbit/s)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--out")
    args = ap.parse_args()
    ft.log = lambda msg: None
    size = ft.parse_size(args.size)
    # a bare number is bytes/s here, as in migrate-set-parameters
    bandwidth = int(args.bandwidth) if args.bandwidth.isdigit() else \
        ft.parse_size(args.bandwidth)
    binary = os.path.join(os.path.abspath(args.build), "ferry")
    d = ft.make_tmpdir("ferrybench-switch-")
    content = os.path.join(d, "ram.bin")
    with open(content, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    runs = []
    for rate in [r.strip() for r in args.rates.split(",") if r.strip()]:
        for rep in range(args.reps):
            for policy in (POLICIES if rep % 2 == 0 else POLICIES[::-1]):
                r = run_one(binary, size, ft.parse_size(rate), policy,
                            bandwidth, content, args.timeout)
                r["rep"] = rep
                r["rate_arg"] = rate
                runs.append(r)
                log(f"rate {rate} {policy}: {r['status']}, total "
                    f"{r.get('total_s')} s = {r.get('ratio')} x RAM/bandwidth,"
                    f" {'postcopy from ' + str(r.get('switch_s')) + ' s' if r.get('postcopy') else 'precopy'}"
                    f", {r.get('passes')} passes"
                    + (f" ({r['error']})" if r.get("error") else ""))
    print(f"RAM {size >> 20} MiB, bandwidth {bandwidth / 1e6:.0f} MB/s: "
          f"one copy of RAM takes {size / bandwidth:.2f} s")
    print(f"{'rate':>6}  {'policy':<6}  {'total s':>8}  {'x RAM/bw':>8}  "
          f"{'switch s':>8}  {'passes':>6}  ok")
    for rate in dict.fromkeys(r["rate_arg"] for r in runs):
        for policy in POLICIES:
            rs = [r for r in runs if r["rate_arg"] == rate and
                  r["policy"] == policy]
            ok = [r for r in rs if r["status"] == "completed"]

            def med(k):
                v = [r[k] for r in ok if r.get(k) is not None]
                return statistics.median(v) if v else None
            sw = med("switch_s")
            print(f"{rate:>6}  {policy:<6}  {bench.fmt(med('total_s')):>8}  "
                  f"{bench.fmt(med('ratio')):>8}  "
                  f"{bench.fmt(sw) if sw is not None else 'precopy':>8}  "
                  f"{bench.fmt(med('passes')):>6}  {len(ok)}/{len(rs)}")
    out = args.out or os.path.join(
        HERE, "results", "switch-" +
        datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S") + ".json")
    with open(out, "w") as f:
        json.dump({"date": datetime.datetime.now().isoformat(
            timespec="seconds"), "size": size, "bandwidth": bandwidth,
            "host": bench.host_info(), "runs": runs}, f, indent=1)
    print(f"results: {out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Postcopy benchmark: ferry -> ferry against QEMU -> QEMU, same guest,
same host, same run.

The test guest (-M pc -accel kvm, every vCPU writing all of its RAM with
delay=0) runs until each vCPU finished one sweep; the source migrates over
loopback TCP and switches to postcopy right after "migrate", so nearly all
RAM moves after the switch while the vCPUs keep faulting on the
destination.  Cases: max-postcopy-bandwidth 1 Gbit/s (125000000 B/s) and
unlimited.

Per run: total time (and its ratio to RAM size / bandwidth), switch-over
downtime, page requests, fault count and fault latency p50/p99/max.
ferry's destination reports the latencies itself (query-migrate
postcopy-latency-*).  QEMU 7.2 has no per-fault latency: its destination
runs with the trace events postcopy_ram_fault_thread_request and
postcopy_place_page (log backend, -msg timestamp=on, to a file), and the
latency of a fault is the time from its request to the placement of that
host page; faults on pages placed meanwhile have no placement after them
and are left out.  Its blocktime per request (sum of
postcopy-vcpu-blocktime / postcopy-requests) is given for both too.

Standard library only; reuses bench/bench.py's helpers.
"""

import argparse
import datetime
import json
import os
import re
import signal
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402
from bench import ft, log  # noqa: E402

GBIT = 125000000
BANDWIDTHS = {"1gbit": GBIT, "unlimited": 0}
GUEST_APPEND = "delay=0"
TRACE_EVENTS = ("postcopy_ram_fault_thread_request", "postcopy_place_page")
TRACE_RE = re.compile(r"^(\d+)@(\d+)\.(\d+):(\w+) (.*)$")


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    return sorted_vals[(len(sorted_vals) - 1) * p // 100]


def qemu_trace_latencies(path):
    """Request -> placement of the same host page, in us, from QEMU's
    trace log."""
    pending = {}
    lat = []
    try:
        f = open(path, errors="replace")
    except OSError:
        return []
    with f:
        for line in f:
            m = TRACE_RE.match(line.strip())
            if not m:
                continue
            t = int(m.group(2)) * 1000000 + int(m.group(3))
            ev, rest = m.group(4), m.group(5)
            if ev == "postcopy_ram_fault_thread_request":
                a = re.search(r"HVA=(0x[0-9a-f]+)", rest)
                if a:
                    addr = int(a.group(1), 16) & ~0xfff
                    pending.setdefault(addr, t)
            elif ev == "postcopy_place_page":
                a = re.search(r"host=(0x[0-9a-f]+)", rest)
                if a:
                    addr = int(a.group(1), 16)
                    t0 = pending.pop(addr, None)
                    if t0 is not None:
                        lat.append(t - t0)
    return lat


def start_vm(impl, mem, smp, name, incoming=False, trace=None):
    binary = ft.QEMU if impl == "qemu" else ft.FERRY
    args = bench.guest_args(impl, mem, smp, GUEST_APPEND)
    if incoming:
        args += ["-incoming", "defer"]
    if trace:
        args += ["-msg", "timestamp=on", "-D", trace]
        for ev in TRACE_EVENTS:
            args += ["-trace", f"enable={ev}"]
    return ft.VM(args, binary=binary, name=name)


def set_caps(vm, caps):
    vm.qmp.cmd("migrate-set-capabilities", capabilities=[
        {"capability": c, "state": True} for c in caps])


def run_one(impl, mem, smp, bwname, timeout, verify):
    bw = BANDWIDTHS[bwname]
    src = start_vm(impl, mem, smp, f"{impl}-src")
    trace = None
    if impl == "qemu":
        trace = os.path.join(ft.make_tmpdir("ferrybench-trace-"), "trace.log")
    dst = start_vm(impl, mem, smp, f"{impl}-dst", incoming=True, trace=trace)
    try:
        src.launch()
        dst.launch()
        src.wait_serial("guest:", timeout=120)
        src.wait_sweeps(smp, 1, timeout=300)
        caps = ["postcopy-ram", "return-path", "events"]
        set_caps(src, caps)
        set_caps(dst, caps + ["postcopy-blocktime"])
        uri = f"tcp:127.0.0.1:{bench.free_port()}"
        dst.qmp.cmd("migrate-incoming", uri=uri)
        src.qmp.cmd("migrate-set-parameters", **{
            "max-bandwidth": bw or bench.UNLIMITED,
            "max-postcopy-bandwidth": bw, "downtime-limit": 300})
        t0 = time.monotonic()
        src.qmp.cmd("migrate", uri=uri)
        src.qmp.cmd("migrate-start-postcopy")
        deadline = t0 + timeout
        while True:
            info = src.qmp.cmd("query-migrate")
            st = info.get("status")
            if st in ("completed", "failed", "cancelled"):
                break
            if time.monotonic() > deadline:
                st = "timeout"
                break
            time.sleep(0.05)
        wall = time.monotonic() - t0
        dinfo = {}
        for _ in range(100):
            dinfo = dst.qmp.cmd("query-migrate")
            if dinfo.get("status") in ("completed", "failed"):
                break
            time.sleep(0.05)
        return collect(impl, mem, bwname, st, wall, info, dinfo, trace,
                       verify and st == "completed" and
                       bench.verify_destination(src, dst, mem))
    finally:
        for vm in (src, dst):
            vm.kill()
            if vm.qmp:
                vm.qmp.close()
            if vm in ft._vms:
                ft._vms.remove(vm)


def collect(impl, mem, bwname, status, wall, info, dinfo, trace, verified):
    bw = BANDWIDTHS[bwname]
    ram = info.get("ram", {})
    total_ms = info.get("total-time", int(wall * 1000))
    vcpu_bt = dinfo.get("postcopy-vcpu-blocktime") or []
    reqs = ram.get("postcopy-requests", 0)
    res = {
        "impl": impl, "bandwidth": bwname, "status": status,
        "error": info.get("error-desc"),
        "total_time_ms": total_ms,
        "downtime_ms": info.get("downtime"),
        "transferred": ram.get("transferred"),
        "postcopy_bytes": ram.get("postcopy-bytes"),
        "postcopy_requests": reqs,
        "blocktime_ms": dinfo.get("postcopy-blocktime"),
        "vcpu_blocktime_ms": vcpu_bt,
        "blocktime_per_request_us": (round(sum(vcpu_bt) * 1000 / reqs, 1)
                                     if reqs and vcpu_bt else None),
        "verified": verified,
    }
    if bw:
        ideal_ms = ft.parse_size(mem) / bw * 1000
        res["ideal_ms"] = round(ideal_ms)
        res["time_vs_ideal"] = round(total_ms / ideal_ms, 3)
    if impl == "ferry":
        res["latency_source"] = "ferry query-migrate"
        res["faults"] = dinfo.get("postcopy-faults")
        res["latency_p50_us"] = dinfo.get("postcopy-latency-p50-us")
        res["latency_p99_us"] = dinfo.get("postcopy-latency-p99-us")
        res["latency_max_us"] = dinfo.get("postcopy-latency-max-us")
    else:
        lat = sorted(qemu_trace_latencies(trace))
        res["latency_source"] = ("qemu trace postcopy_ram_fault_thread_request"
                                 " -> postcopy_place_page")
        res["faults"] = len(lat)
        res["latency_p50_us"] = percentile(lat, 50)
        res["latency_p99_us"] = percentile(lat, 99)
        res["latency_max_us"] = lat[-1] if lat else None
    return res


METRICS = [
    ("total_time_ms", "total ms"),
    ("time_vs_ideal", "t/ideal"),
    ("downtime_ms", "downtime ms"),
    ("postcopy_requests", "requests"),
    ("faults", "faults"),
    ("latency_p50_us", "p50 us"),
    ("latency_p99_us", "p99 us"),
    ("latency_max_us", "max us"),
    ("blocktime_per_request_us", "bt/req us"),
]


def median(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(runs):
    out = {}
    for bwname in BANDWIDTHS:
        row = {}
        for impl in ("ferry", "qemu"):
            sel = [r for r in runs if r["impl"] == impl and
                   r["bandwidth"] == bwname and r["status"] == "completed"]
            row[impl] = {k: median(sel, k) for k, _ in METRICS}
        row["ratio"] = {}
        for k, _ in METRICS:
            a, b = row["ferry"].get(k), row["qemu"].get(k)
            row["ratio"][k] = round(a / b, 3) if a is not None and b else None
        out[bwname] = row
    return out


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def print_table(summary):
    head = f"{'case':<10} {'metric':<12} {'ferry':>10} {'qemu':>10} {'ferry/qemu':>11}"
    print(head)
    print("-" * len(head))
    for bwname, row in summary.items():
        for k, name in METRICS:
            print(f"{bwname:<10} {name:<12} {fmt(row['ferry'].get(k)):>10} "
                  f"{fmt(row['qemu'].get(k)):>10} "
                  f"{fmt(row['ratio'].get(k)):>11}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(bench.SRCDIR, "build"))
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--mem", default="1G")
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--impl", action="append", choices=["ferry", "qemu"])
    ap.add_argument("--bandwidth", action="append", choices=list(BANDWIDTHS))
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--verify", action="store_true",
                    help="check the destination's RAM after each run")
    ap.add_argument("--out", help="JSON file (default "
                    "bench/results/postcopy-<date>.json)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))

    bench.use_build(args.build)
    impls = args.impl or ["ferry", "qemu"]
    if "qemu" in impls and not ft.QEMU:
        sys.exit("qemu-system-x86_64 not found, or pass --impl ferry")
    for f in (ft.FERRY, ft.GUEST):
        if not os.path.exists(f):
            sys.exit(f"{f} is missing: build first (ninja -C {ft.BUILD})")
    if not ft.kvm_usable():
        sys.exit("/dev/kvm is not usable")

    runs = []
    for bwname in args.bandwidth or list(BANDWIDTHS):
        for rep in range(args.reps):
            for impl in (impls if rep % 2 == 0 else impls[::-1]):
                r = run_one(impl, args.mem, args.smp, bwname, args.timeout,
                            args.verify)
                r["rep"] = rep
                runs.append(r)
                log(f"postcopy {bwname} rep {rep} {impl}: {r['status']} "
                    f"total {r['total_time_ms']} ms, downtime "
                    f"{r['downtime_ms']} ms, requests "
                    f"{r['postcopy_requests']}, faults {r['faults']}, p50 "
                    f"{r['latency_p50_us']} us, p99 {r['latency_p99_us']} us"
                    + (f" ({r['error']})" if r.get("error") else ""))
    summary = summarize(runs)
    doc = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": bench.host_info(),
        "config": {"mem": args.mem, "smp": args.smp, "reps": args.reps,
                   "guest": GUEST_APPEND, "switch": "at once",
                   "bandwidths": {b: BANDWIDTHS[b] for b in
                                  args.bandwidth or BANDWIDTHS}},
        "runs": runs,
        "summary": summary,
    }
    out = args.out
    if not out:
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        out = os.path.join(HERE, "results", "postcopy-" +
                           datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
                           + ".json")
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    print_table(summary)
    print(f"results: {out}")
    return 1 if any(r["status"] != "completed" for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())

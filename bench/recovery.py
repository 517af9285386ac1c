#!/usr/bin/env python3
"""Postcopy recovery and postcopy-preempt benchmark without KVM: machine
`none`, RAM full of random data, ferry -> ferry against QEMU 7.2 -> QEMU
7.2 in the same run.

Same processes as bench/none.py: `-M none -m SIZE -nodefaults` (no vCPU,
no /dev/kvm), the source's RAM loaded from one random file with `-device
loader,file=F,addr=0,force-raw=on`, the destination `-incoming defer`,
postcopy switched right after `migrate`.  Two kinds of cases:

recovery[+preempt]: max-postcopy-bandwidth low (--recovery-bw, 32 MiB/s)
so postcopy lasts several seconds; the link goes through
tests/functional/relay.py.  About 1 s after both sides are
postcopy-active the relay resets every connection (RST both ways); the
run polls both query-migrate every 10 ms until both say postcopy-paused
("detection time", from the reset), then issues `migrate-recover` on the
destination (a new port) and `migrate {"resume": true}` on the source
(through the relay, retargeted to that port) and polls until both are
postcopy-active again ("recovery time", from the first command).  Then
the migration completes and the destination's RAM must equal the file.

latency/<bw>[+preempt]: no break, max-postcopy-bandwidth 1 Gbit/s or
unlimited; during postcopy the destination reads all of its RAM with
`pmemsave` in 16 MiB chunks from the top down (bench/none.py's reader),
so missing pages are requested.  Per-fault latency: ferry's destination
query-migrate (postcopy-latency-*); QEMU 7.2 has none, so it is taken
from its trace events exactly as bench/postcopy.py does
(postcopy_ram_fault_thread_request -> postcopy_place_page of the same
host page).  Also the pmemsave wall time per MiB read.

Implementations alternate order between repetitions.  Standard library
only; processes and temporary dirs are managed by
tests/functional/ferrytest.py.
"""

import argparse
import datetime
import json
import os
import signal
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402  (free_port, SRCDIR, sets up tests/functional)
from bench import fmt, ft, log  # noqa: E402
import none  # noqa: E402  (content, verification, reader, host/build info)
import postcopy as pcbench  # noqa: E402  (QEMU trace latencies)
import relay  # noqa: E402  (tests/functional/relay.py)

GBIT = bench.GBIT
UNLIMITED = bench.UNLIMITED
MIB = 1 << 20
DOWNTIME_LIMIT = 300
POLL = 0.01                     # query-migrate every 10 ms around a break

# name: (kind, preempt, max-postcopy-bandwidth; None = --recovery-bw)
CASES = {
    "recovery": ("recovery", False, None),
    "recovery+preempt": ("recovery", True, None),
    "latency/1gbit": ("latency", False, GBIT),
    "latency/1gbit+preempt": ("latency", True, GBIT),
    "latency/unlimited": ("latency", False, 0),
    "latency/unlimited+preempt": ("latency", True, 0),
}
IMPLS = ("ferry", "qemu")
END_STATES = ("completed", "failed", "cancelled")


class RunError(AssertionError):
    pass


def status(vm):
    return vm.qmp.cmd("query-migrate").get("status")


def wait_both(src, dst, want, deadline, bad=END_STATES):
    """Poll both sides every 10 ms until both are in one of `want`; returns
    (when both were, {side: when it first was}).  A status in `bad` (not
    in want) or the deadline ends the run."""
    first = {}
    while True:
        now = time.monotonic()
        for side, vm in (("src", src), ("dst", dst)):
            if side in first:
                continue
            st = status(vm)
            if st in want:
                first[side] = time.monotonic()
            elif st in bad:
                info = vm.qmp.cmd("query-migrate")
                raise RunError(f"{vm.name} {st} while waiting for "
                               f"{'/'.join(want)}: "
                               f"{info.get('error-desc', '')}")
        if len(first) == 2:
            return max(first.values()), first
        for vm in (src, dst):
            vm.check_alive()
        if now > deadline:
            raise RunError(f"not both {'/'.join(want)} in time "
                           f"(reached: {sorted(first)})")
        time.sleep(POLL)


def wait_done(vm, deadline, poll=0.05):
    info = none.poll_until_done(vm, deadline, poll)
    if info.get("status") != "completed":
        raise RunError(f"{vm.name} {info.get('status')}: "
                       f"{info.get('error-desc', '')}")
    return info


def start_pair(impl, binary, size, content, preempt, trace=False):
    src = ft.VM(none.vm_args(size, content=content), binary=binary,
                name=f"{impl}-src", serial=False)
    dst = ft.VM(none.vm_args(size, incoming=True), binary=binary,
                name=f"{impl}-dst", serial=False)
    tpath = None
    if trace:
        # bench/postcopy.py's flags: log backend with timestamps to a file
        tpath = os.path.join(dst.dir, "trace.log")
        dst.args += ["-msg", "timestamp=on", "-D", tpath]
        for ev in pcbench.TRACE_EVENTS:
            dst.args += ["-trace", f"enable={ev}"]
    src.launch()
    dst.launch()
    extra = ["postcopy-preempt"] if preempt else []
    none.set_caps(src, ["postcopy-ram", "events"] + extra)
    none.set_caps(dst, ["postcopy-ram", "postcopy-blocktime"] + extra)
    return src, dst, tpath


def run_one(impl, binary, size, case, content, want, args):
    kind, preempt, pbw = CASES[case]
    if pbw is None:
        pbw = args.recovery_bw
    res = {"impl": impl, "case": case, "status": "error"}
    src = dst = rel = None
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    try:
        src, dst, tpath = start_pair(impl, binary, size, content, preempt,
                                     trace=(impl == "qemu" and
                                            kind == "latency"))
        dport = bench.free_port()
        dst.qmp.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{dport}")
        if kind == "recovery":
            rel = relay.Relay(dport)
            uri = rel.uri
            # the whole migration at the low rate: nothing much is sent
            # before the switch either
            bw = pbw
        else:
            uri = f"tcp:127.0.0.1:{dport}"
            bw = pbw or UNLIMITED
        src.qmp.cmd_args("migrate-set-parameters", {
            "max-bandwidth": bw, "max-postcopy-bandwidth": pbw,
            "downtime-limit": DOWNTIME_LIMIT})
        t0 = time.monotonic()
        deadline = t0 + args.timeout
        src.qmp.cmd("migrate", uri=uri)
        src.qmp.cmd("migrate-start-postcopy")
        if kind == "recovery":
            run_recovery(res, src, dst, rel, size, t0, deadline, args)
        else:
            run_latency(res, src, dst, tpath, size, t0, deadline, args)
        res["status"] = "completed"
        # verification, outside the measured window
        dumps = res.pop("_dumps", [])
        vdl = time.monotonic() + max(args.timeout, 120)
        path, sha = none.dump_hash(dst, size, vdl, "final")
        dumps.append(("destination after completion", path, sha))
        if not none.verify(res, content, want, dumps):
            res["status"] = "failed"
        return res
    except (AssertionError, ft.QMPError) as e:
        res["status"] = "failed"
        res["error"] = str(e)
        for vm in (src, dst):
            if vm and vm.proc and vm.proc.poll() is not None:
                res["error"] += (f" [{vm.name} exited {vm.proc.returncode}: "
                                 f"{vm.stderr()[-300:].strip()}]")
        return res
    finally:
        res.pop("_dumps", None)
        if rel:
            rel.stop()
            if rel in relay._relays:
                relay._relays.remove(rel)
        for vm in (src, dst):
            if vm:
                none.forget(vm)
        res["wall_s"] = round(time.monotonic() - t0, 3)


def run_recovery(res, src, dst, rel, size, t0, deadline, args):
    t_active, _ = wait_both(src, dst, ("postcopy-active",), deadline)
    res["postcopy_active_ms"] = round((t_active - t0) * 1000)
    time.sleep(args.break_after)
    if status(src) != "postcopy-active":
        raise RunError("migration left postcopy-active before the break: "
                       "lower --recovery-bw or --break-after")
    rinfo = src.qmp.cmd("query-migrate").get("ram", {})
    res["sent_before_break"] = rinfo.get("transferred")
    t_reset = time.monotonic()
    res["relay_conns_reset"] = rel.reset()
    t_paused, first = wait_both(src, dst, ("postcopy-paused",), deadline)
    res["detection_ms"] = round((t_paused - t_reset) * 1000, 1)
    res["detection_src_ms"] = round((first["src"] - t_reset) * 1000, 1)
    res["detection_dst_ms"] = round((first["dst"] - t_reset) * 1000, 1)

    rport = bench.free_port()
    rel.retarget(rport)
    t_rec = time.monotonic()
    dst.qmp.cmd("migrate-recover", uri=f"tcp:127.0.0.1:{rport}")
    src.qmp.cmd("migrate", uri=rel.uri, resume=True)
    # a tail small enough may even complete before the poll sees active
    t_back, first = wait_both(src, dst, ("postcopy-active", "completed"),
                              deadline, bad=("failed", "cancelled"))
    res["recovery_ms"] = round((t_back - t_rec) * 1000, 1)
    res["recovery_src_ms"] = round((first["src"] - t_rec) * 1000, 1)
    res["recovery_dst_ms"] = round((first["dst"] - t_rec) * 1000, 1)

    info = wait_done(src, deadline)
    dinfo = wait_done(dst, deadline)
    res["total_time_ms"] = info.get("total-time",
                                    round((time.monotonic() - t0) * 1000))
    ram = info.get("ram", {})
    res["transferred"] = ram.get("transferred")
    res["postcopy_requests"] = ram.get("postcopy-requests")
    # ferry only (x-: ferry's own fields)
    for side, i in (("src", info), ("dst", dinfo)):
        if "x-postcopy-pauses" in i:
            res[f"{side}_pauses"] = i["x-postcopy-pauses"]
            res[f"{side}_paused_time_ms"] = i.get("x-postcopy-paused-time")


def run_latency(res, src, dst, tpath, size, t0, deadline, args):
    reader = none.start_reader(dst, size, t0, deadline, "reverse",
                               args.read_chunk)
    info = wait_done(src, deadline)
    t_done = time.monotonic()
    reader["thread"].join(max(deadline - time.monotonic(), 1))
    if reader["thread"].is_alive():
        raise RunError("destination pmemsave during postcopy did not return")
    if reader.get("error"):
        raise RunError(f"destination read: {reader['error']}")
    dinfo = wait_done(dst, min(deadline, time.monotonic() + 30))
    ram = info.get("ram", {})
    res["total_time_ms"] = info.get("total-time")
    res["transferred"] = ram.get("transferred")
    res["postcopy_requests"] = ram.get("postcopy-requests")
    res["postcopy_bytes"] = ram.get("postcopy-bytes")
    res["blocktime_ms"] = dinfo.get("postcopy-blocktime")
    res["read_status"] = reader.get("status_at_read")
    res["read_start_ms"] = round(reader["start_s"] * 1000)
    res["read_ms"] = round(reader["read_s"] * 1000)
    res["read_ms_per_MiB"] = round(reader["read_s"] * 1000 / (size / MIB), 2)
    # how much of the read ran while the migration was still going (what
    # was read after completion cannot fault)
    in_pc = (t_done - t0) - reader["start_s"]
    res["read_in_postcopy"] = round(max(0.0, min(1.0, in_pc /
                                                 reader["read_s"])), 3) \
        if reader["read_s"] else None
    if tpath is None:
        res["latency_source"] = "ferry query-migrate"
        res["faults"] = dinfo.get("postcopy-faults")
        res["latency_p50_us"] = dinfo.get("postcopy-latency-p50-us")
        res["latency_p99_us"] = dinfo.get("postcopy-latency-p99-us")
        res["latency_max_us"] = dinfo.get("postcopy-latency-max-us")
    else:
        lat = sorted(pcbench.qemu_trace_latencies(tpath))
        res["latency_source"] = ("qemu trace postcopy_ram_fault_thread_"
                                 "request -> postcopy_place_page")
        res["faults"] = len(lat)
        res["latency_p50_us"] = pcbench.percentile(lat, 50)
        res["latency_p99_us"] = pcbench.percentile(lat, 99)
        res["latency_max_us"] = lat[-1] if lat else None
    res["_dumps"] = [("destination during postcopy",)
                     + none.assemble(reader)]


# ---------------------------------------------------------------------------
# Summary

METRICS = {
    "recovery": [
        ("detection_ms", "detect ms"),
        ("detection_src_ms", "src"),
        ("detection_dst_ms", "dst"),
        ("recovery_ms", "recover ms"),
        ("recovery_src_ms", "src"),
        ("recovery_dst_ms", "dst"),
        ("total_time_ms", "total ms"),
    ],
    "latency": [
        ("total_time_ms", "total ms"),
        ("postcopy_requests", "requests"),
        ("faults", "faults"),
        ("latency_p50_us", "p50 us"),
        ("latency_p99_us", "p99 us"),
        ("latency_max_us", "max us"),
        ("read_ms_per_MiB", "read ms/MiB"),
        ("read_in_postcopy", "read in pc"),
    ],
}


def summarize(runs):
    summary = {}
    for r in runs:
        summary.setdefault(r["case"], {}).setdefault(r["impl"], []).append(r)
    for case, impls in summary.items():
        metrics = METRICS[CASES[case][0]]
        for impl, rs in list(impls.items()):
            med = {k: none.median_of(rs, k) for k, _ in metrics}
            med["completed"] = sum(r["status"] == "completed" for r in rs)
            med["runs"] = len(rs)
            impls[impl] = med
        if "ferry" in impls and "qemu" in impls:
            a, b = impls["ferry"], impls["qemu"]
            impls["ferry/qemu"] = {
                k: (round(a[k] / b[k], 3)
                    if a[k] is not None and b[k] else None)
                for k, _ in metrics}
    return summary


def print_table(summary):
    for kind in ("recovery", "latency"):
        cases = [c for c in CASES if c in summary and CASES[c][0] == kind]
        if not cases:
            continue
        metrics = METRICS[kind]
        head = ["case", "impl"] + [m[1] for m in metrics] + ["ok"]
        rows = [head]
        for case in cases:
            for impl in IMPLS + ("ferry/qemu",):
                s = summary[case].get(impl)
                if s is None:
                    continue
                rows.append([case, impl] + [fmt(s.get(k)) for k, _ in metrics]
                            + [f"{s['completed']}/{s['runs']}"
                               if "runs" in s else ""])
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        for r in rows:
            print("  ".join(c.rjust(w) if i > 1 else c.ljust(w)
                            for i, (c, w) in enumerate(zip(r, widths)))
                  .rstrip())
        print()


def describe(r):
    if CASES[r["case"]][0] == "recovery":
        s = (f"detect {r.get('detection_ms')} ms (src "
             f"{r.get('detection_src_ms')}, dst {r.get('detection_dst_ms')})"
             f", recover {r.get('recovery_ms')} ms (src "
             f"{r.get('recovery_src_ms')}, dst {r.get('recovery_dst_ms')})"
             f", total {r.get('total_time_ms')} ms")
    else:
        s = (f"total {r.get('total_time_ms')} ms, requests "
             f"{r.get('postcopy_requests')}, faults {r.get('faults')}, p50 "
             f"{r.get('latency_p50_us')} p99 {r.get('latency_p99_us')} max "
             f"{r.get('latency_max_us')} us, read "
             f"{r.get('read_ms_per_MiB')} ms/MiB ("
             f"{r.get('read_in_postcopy')} in postcopy)")
    if r.get("error"):
        s += f" ({r['error']})"
    if r.get("verify_error"):
        s += f" [{r['verify_error']}]"
    return s


# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(bench.SRCDIR, "build"),
                    help="ferry build directory (default build)")
    ap.add_argument("--impl", default="both",
                    choices=["ferry", "qemu", "both"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mem", default="256M", help="guest RAM (256M)")
    ap.add_argument("--cases", default=",".join(CASES),
                    help="comma-separated, of " + ", ".join(CASES))
    ap.add_argument("--recovery-bw", default="32M",
                    help="max-postcopy-bandwidth of the recovery cases, "
                    "per second (32M = 32 MiB/s)")
    ap.add_argument("--break-after", type=float, default=1.0,
                    help="seconds of postcopy-active before the reset (1)")
    ap.add_argument("--read-chunk", default="16M",
                    help="pmemsave size of the latency cases' reads (16M)")
    ap.add_argument("--timeout", type=float, default=120,
                    help="seconds a run may take (120)")
    ap.add_argument("--out", help="JSON file (default "
                    "bench/results/recovery-<date>.json)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    ft.log = lambda msg: None         # keep stdout for the table (relay too)

    size = ft.parse_size(args.mem)
    if size <= 0 or size % MIB:
        sys.exit("--mem must be a positive number of MiB")
    args.recovery_bw = ft.parse_size(args.recovery_bw)
    args.read_chunk = ft.parse_size(args.read_chunk)
    if args.read_chunk <= 0 or args.read_chunk % 4096:
        sys.exit("--read-chunk must be a positive multiple of 4 KiB")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASES:
            sys.exit(f"unknown case {c}: {', '.join(CASES)}")
    impls = list(IMPLS) if args.impl == "both" else [args.impl]
    build = os.path.abspath(args.build)
    binaries = {"ferry": os.path.join(build, "ferry"), "qemu": ft.QEMU}
    if "qemu" in impls and not ft.QEMU:
        sys.exit("qemu-system-x86_64 not found (apt-get install "
                 "qemu-system-x86), or pass --impl ferry")
    if "ferry" in impls and not os.access(binaries["ferry"], os.X_OK):
        sys.exit(f"{binaries['ferry']} is missing: build first "
                 f"(ninja -C {build})")

    host = none.host_info()          # load average before the runs
    d = ft.make_tmpdir("ferrybench-recovery-")
    t = time.monotonic()
    content, want = none.make_content(d, size)
    log(f"content: {size >> 20} MiB random, sha256 {want[:16]}... "
        f"({time.monotonic() - t:.1f} s)")

    runs = []
    t_start = time.monotonic()
    try:
        for case in cases:
            for rep in range(args.reps):
                # alternate so drifts of the host hit both alike
                for impl in (impls if rep % 2 == 0 else impls[::-1]):
                    r = run_one(impl, binaries[impl], size, case, content,
                                want, args)
                    r["rep"] = rep
                    runs.append(r)
                    log(f"{case} rep {rep} {impl}: {r['status']} "
                        f"({r['wall_s']:.1f} s) " + describe(r))
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
    log(f"all runs: {time.monotonic() - t_start:.0f} s")

    try:
        with open("/proc/loadavg") as f:
            host["loadavg_end"] = f.read().split()[:3]
    except OSError:
        pass
    summary = summarize(runs)
    doc = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "benchmark": "recovery",
        "host": host,
        "builds": {impl: none.build_info(build if impl == "ferry" else None,
                                         binaries[impl]) for impl in impls},
        "config": {"machine": "none", "size": size, "reps": args.reps,
                   "impls": impls,
                   "cases": {c: {"kind": CASES[c][0],
                                 "postcopy-preempt": CASES[c][1],
                                 "max-postcopy-bandwidth":
                                 CASES[c][2] if CASES[c][2] is not None
                                 else args.recovery_bw} for c in cases},
                   "break_after_s": args.break_after,
                   "poll_ms": POLL * 1000,
                   "read_chunk": args.read_chunk,
                   "downtime_limit_ms": DOWNTIME_LIMIT,
                   "content": "os.urandom, loaded at 0 with -device loader",
                   "content_sha256": want, "timeout_s": args.timeout},
        "runs": runs,
        "summary": summary,
    }
    out = args.out
    if not out:
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        out = os.path.join(HERE, "results", "recovery-" +
                           datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
                           + ".json")
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    print_table(summary)
    print(f"results: {out}")
    ok = runs and all(r["status"] == "completed" for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

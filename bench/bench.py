#!/usr/bin/env python3
"""Migration benchmark: ferry -> ferry against QEMU -> QEMU, same guest,
same host, same run.

For every case (workload x bandwidth limit) and repetition, a fresh source
boots the test guest, runs until every vCPU has finished one sweep (all of
its RAM is written, so nothing is trivially zero), a fresh destination waits
with -incoming defer, and the source migrates over loopback TCP.  Figures
come from the source's final query-migrate plus /proc accounting of the
source process.  Medians over the repetitions, ferry/QEMU ratios, and the
loopback TCP single-stream rate as the ceiling.

Standard library only; processes are managed by tests/functional/ferrytest.
"""

import argparse
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRCDIR, "tests", "functional"))

import ferrytest as ft  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
UNLIMITED = 100 * 1000 * 1000 * 1000     # 100 GB/s: "no limit" for QEMU
GBIT = 125000000                          # 1 Gbit/s in bytes/s

# Guest workloads.  delay= is busy-loop iterations per page written; on the
# development host 400000 gives ~43 MB/s of dirtying over 2 vCPUs, about a
# third of 1 Gbit/s, so precopy converges at that limit.  "idle" stops
# after the first sweep (RAM full of data, nothing dirtied afterwards).
WORKLOADS = {
    "idle": "sweeps=1",
    "busy": "delay=400000",
}
BANDWIDTHS = {
    "unlimited": UNLIMITED,
    "1gbit": GBIT,
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# /proc accounting

def _stat_ticks(path):
    """utime + stime in clock ticks from a /proc stat file, or None."""
    try:
        with open(path) as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def _vcpu_ticks(pid):
    """CPU ticks of the vCPU threads ("CPU n/KVM", both QEMU with
    debug-threads=on and ferry name them so)."""
    total = 0
    base = f"/proc/{pid}/task"
    try:
        tids = os.listdir(base)
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"{base}/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm.startswith("CPU ") and comm.endswith("/KVM"):
            total += _stat_ticks(f"{base}/{tid}/stat") or 0
    return total


def cpu_sample(pid):
    return {
        "process": _stat_ticks(f"/proc/{pid}/stat") or 0,
        "vcpu": _vcpu_ticks(pid),
    }


def cpu_delta(before, after):
    """Seconds of CPU: whole process, and the process minus its vCPU
    threads (the migration and main threads: the cost of migrating)."""
    proc = (after["process"] - before["process"]) / CLK_TCK
    vcpu = (after["vcpu"] - before["vcpu"]) / CLK_TCK
    return proc, max(proc - vcpu, 0.0)


# ---------------------------------------------------------------------------
# Loopback reference

def loopback_rate(total=2 << 30, chunk=1 << 20):
    """Single TCP stream over 127.0.0.1, sender and receiver in two
    processes: bytes per second."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        try:
            s = socket.create_connection(("127.0.0.1", port))
            buf = memoryview(bytearray(b"\xa5" * chunk))
            left = total
            while left > 0:
                n = s.send(buf[:min(chunk, left)])
                left -= n
            s.shutdown(socket.SHUT_WR)
            s.recv(1)
            s.close()
        finally:
            os._exit(0)
    conn, _ = lsock.accept()
    lsock.close()
    buf = bytearray(chunk)
    got = 0
    t0 = time.monotonic()
    while got < total:
        n = conn.recv_into(buf)
        if not n:
            break
        got += n
    dt = time.monotonic() - t0
    conn.close()
    os.waitpid(pid, 0)
    return got / dt if dt > 0 else 0.0


# ---------------------------------------------------------------------------
# One migration

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def guest_args(impl, mem, smp, append):
    if impl == "qemu":
        args = ft.qemu_guest_args(mem, smp, append)
        return args + ["-name", "bench,debug-threads=on"]
    return ft.ferry_guest_args(mem, smp, append)


def use_build(path):
    """Point the test helpers at a build directory; keep stdout for the
    table."""
    build = os.path.abspath(path)
    ft.BUILD = build
    ft.FERRY = os.path.join(build, "ferry")
    ft.GUEST = os.path.join(build, "tests", "guest", "guest.bin")
    ft.GUEST_CHECK = os.path.join(build, "tests", "guest", "guest-check")
    ft.log = lambda msg: None


def run_one(impl, mem, smp, workload, bandwidth, timeout, verify):
    binary = ft.QEMU if impl == "qemu" else ft.FERRY
    append = WORKLOADS[workload]
    src = ft.VM(guest_args(impl, mem, smp, append), binary=binary,
                name=f"{impl}-src")
    dst = ft.VM(guest_args(impl, mem, smp, append) + ["-incoming", "defer"],
                binary=binary, name=f"{impl}-dst")
    try:
        src.launch()
        dst.launch()
        src.wait_serial("guest:", timeout=120)
        # every vCPU has written its whole slice once
        src.wait_sweeps(smp, 1, timeout=300)

        port = free_port()
        uri = f"tcp:127.0.0.1:{port}"
        dst.qmp.cmd("migrate-incoming", uri=uri)
        src.qmp.cmd("migrate-set-parameters", max_bandwidth=bandwidth)
        src.qmp.cmd("migrate-set-parameters", downtime_limit=300)

        pid = src.proc.pid
        before = cpu_sample(pid)
        dbefore = cpu_sample(dst.proc.pid)
        t0 = time.monotonic()
        src.qmp.cmd("migrate", uri=uri)
        info = {}
        deadline = t0 + timeout
        while True:
            info = src.qmp.cmd("query-migrate")
            st = info.get("status")
            if st in ("completed", "failed", "cancelled"):
                break
            if time.monotonic() > deadline:
                src.qmp.cmd("migrate_cancel")
                break
            time.sleep(0.05)
        wall = time.monotonic() - t0
        after = cpu_sample(pid)
        dafter = cpu_sample(dst.proc.pid)
        status = info.get("status")
        if status not in ("completed", "failed", "cancelled"):
            status = "timeout"
        cpu_proc, cpu_mig = cpu_delta(before, after)
        ram = info.get("ram", {})
        total_ms = info.get("total-time", int(wall * 1000))
        res = {
            "impl": impl,
            "workload": workload,
            "bandwidth": bandwidth,
            "status": status,
            "error": info.get("error-desc"),
            "total_time_ms": total_ms,
            "downtime_ms": info.get("downtime"),
            "setup_time_ms": info.get("setup-time"),
            "wall_s": round(wall, 3),
            "transferred": ram.get("transferred"),
            "ram_mbps": ram.get("mbps"),
            "normal_pages": ram.get("normal"),
            "zero_pages": ram.get("duplicate"),
            "passes": ram.get("dirty-sync-count"),
            "cpu_process_s": round(cpu_proc, 3),
            "cpu_nonvcpu_s": round(cpu_mig, 3),
            "cpu_dst_s": round(cpu_delta(dbefore, dafter)[0], 3),
        }
        if res["transferred"] and total_ms:
            res["throughput_MBps"] = round(
                res["transferred"] / (total_ms / 1000) / 1e6, 1)
        if status == "completed" and verify:
            res["verified"] = verify_destination(src, dst, mem)
        return res
    finally:
        src.kill()
        dst.kill()
        for vm in (src, dst):
            if vm.qmp:
                vm.qmp.close()
            if vm in ft._vms:
                ft._vms.remove(vm)


def verify_destination(src, dst, mem):
    """Let the destination run a little, stop it and check its RAM (the
    guest's parameters are on the source's serial)."""
    if dst.qmp.cmd("query-status")["status"] != "running":
        dst.qmp.cmd("cont")
    time.sleep(0.5)
    dst.qmp.cmd("stop")
    p = src.guest_params()
    dump = dst.pmemsave(ft.parse_size(mem))
    ok, report = ft.guest_check(dump, p["ncpus"], p["start"], p["end"],
                                p["seed"], min_sweeps=1)
    os.unlink(dump)
    if "!" in dst.serial():
        log(f"{dst.name}: guest exception: {dst.serial()[-200:]!r}")
        ok = False
    if not ok:
        log(report)
    return ok


# ---------------------------------------------------------------------------
# Summary

METRICS = [
    ("total_time_ms", "total ms", "lower"),
    ("downtime_ms", "downtime ms", "lower"),
    ("throughput_MBps", "MB/s", "higher"),
    ("ram_mbps", "ram.mbps", "higher"),
    ("cpu_nonvcpu_s", "cpu mig s", "lower"),
    ("cpu_process_s", "cpu proc s", "lower"),
    ("cpu_dst_s", "cpu dst s", "lower"),
    ("passes", "passes", "lower"),
]


def median_of(runs, key):
    vals = [r[key] for r in runs
            if r.get("status") == "completed" and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(runs):
    out = {}
    for r in runs:
        k = f"{r['workload']}/{bw_name(r['bandwidth'])}"
        out.setdefault(k, {}).setdefault(r["impl"], []).append(r)
    summary = {}
    for case, impls in out.items():
        summary[case] = {}
        for impl, rs in impls.items():
            med = {key: median_of(rs, key) for key, _, _ in METRICS}
            med["completed"] = sum(r["status"] == "completed" for r in rs)
            med["runs"] = len(rs)
            summary[case][impl] = med
        if "ferry" in impls and "qemu" in impls:
            ratio = {}
            for key, _, _ in METRICS:
                a = summary[case]["ferry"][key]
                b = summary[case]["qemu"][key]
                ratio[key] = round(a / b, 3) if a is not None and b else None
            summary[case]["ratio"] = ratio
    return summary


def bw_name(bw):
    for k, v in BANDWIDTHS.items():
        if v == bw:
            return k
    return str(bw)


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def print_table(summary, loopback):
    if loopback:
        print(f"loopback TCP single stream: {loopback / 1e6:.0f} MB/s "
              f"({loopback * 8 / 1e9:.2f} Gbit/s)")
    head = ["case", "impl"] + [m[1] for m in METRICS] + ["ok"]
    rows = [head]
    for case in sorted(summary):
        for impl in ("ferry", "qemu", "ratio"):
            s = summary[case].get(impl)
            if s is None:
                continue
            row = [case, impl if impl != "ratio" else "ferry/qemu"]
            row += [fmt(s.get(k)) for k, _, _ in METRICS]
            row.append(f"{s['completed']}/{s['runs']}" if impl != "ratio"
                       else "")
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join(c.rjust(w) if i > 1 else c.ljust(w)
                        for i, (c, w) in enumerate(zip(r, widths))))


def host_info():
    info = {"host": platform.node(), "kernel": platform.release(),
            "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        v = subprocess.run([ft.QEMU, "--version"], capture_output=True,
                           text=True, timeout=10).stdout.splitlines()[0]
        info["qemu"] = v
    except Exception:
        pass
    try:
        info["ferry_commit"] = subprocess.run(
            ["git", "-C", SRCDIR, "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        pass
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(SRCDIR, "build"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mem", default="1G")
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--impl", action="append", choices=["ferry", "qemu"])
    ap.add_argument("--workload", action="append", choices=list(WORKLOADS))
    ap.add_argument("--bandwidth", action="append", choices=list(BANDWIDTHS))
    ap.add_argument("--busy-delay", type=int,
                    help="delay= of the busy workload (default 400000)")
    ap.add_argument("--timeout", type=float, default=240,
                    help="seconds before a migration is cancelled")
    ap.add_argument("--verify", action="store_true",
                    help="check the destination's RAM after each run")
    ap.add_argument("--no-loopback", action="store_true")
    ap.add_argument("--out", help="JSON file (default "
                    "bench/results/<date>.json)")
    args = ap.parse_args()
    # SIGTERM unwinds like ^C, so the finally blocks kill the VMs
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))

    use_build(args.build)
    impls = args.impl or ["ferry", "qemu"]
    if "qemu" in impls and not ft.QEMU:
        sys.exit("qemu-system-x86_64 not found (apt-get install "
                 "qemu-system-x86), or pass --impl ferry")
    for f in (ft.FERRY, ft.GUEST):
        if not os.path.exists(f):
            sys.exit(f"{f} is missing: build first (ninja -C {ft.BUILD})")
    if not ft.kvm_usable():
        sys.exit("/dev/kvm is not usable")
    if args.busy_delay is not None:
        WORKLOADS["busy"] = f"delay={args.busy_delay}"

    loopback = None
    if not args.no_loopback:
        loopback = loopback_rate()
        log(f"loopback: {loopback / 1e6:.0f} MB/s")

    runs = []
    for workload in args.workload or list(WORKLOADS):
        for bwn in args.bandwidth or list(BANDWIDTHS):
            for rep in range(args.reps):
                # alternate so drifts of the host hit both alike
                for impl in (impls if rep % 2 == 0 else impls[::-1]):
                    r = run_one(impl, args.mem, args.smp, workload,
                                BANDWIDTHS[bwn], args.timeout, args.verify)
                    r["rep"] = rep
                    runs.append(r)
                    log(f"{workload}/{bwn} rep {rep} {impl}: {r['status']} "
                        f"total {r['total_time_ms']} ms, downtime "
                        f"{r['downtime_ms']} ms, "
                        f"{r.get('throughput_MBps')} MB/s, cpu "
                        f"{r['cpu_nonvcpu_s']} s"
                        + (f" ({r['error']})" if r.get("error") else ""))

    summary = summarize(runs)
    doc = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": host_info(),
        "config": {"mem": args.mem, "smp": args.smp, "reps": args.reps,
                   "workloads": {w: WORKLOADS[w] for w in
                                 args.workload or WORKLOADS},
                   "downtime_limit_ms": 300},
        "loopback_Bps": loopback,
        "runs": runs,
        "summary": summary,
    }
    out = args.out
    if not out:
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        out = os.path.join(HERE, "results", datetime.datetime.now()
                           .strftime("%Y-%m-%d-%H%M%S") + ".json")
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    print_table(summary, loopback)
    print(f"results: {out}")
    failed = any(r["status"] != "completed" for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

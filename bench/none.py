#!/usr/bin/env python3
"""Migration benchmark without KVM: machine `none`, RAM full of random
data, ferry -> ferry against QEMU 7.2 -> QEMU 7.2 in the same run.

Both implementations run `-M none -m SIZE -nodefaults` (no vCPU, so no
/dev/kvm), the source's RAM filled from one random file of SIZE bytes with
`-device loader,file=F,addr=0,force-raw=on` (the same loader the interop
tests use with QEMU 7.2), the destination `-incoming defer` then
`migrate-incoming tcp:127.0.0.1:PORT`.  Nothing is dirtied during the
migration, so this measures the cost of moving pages: the send path, the
wire, the receive path, and for postcopy the page-request path (the
destination reads all of its RAM with QMP pmemsave while in postcopy).

Cases: precopy and postcopy (switched right after `migrate`), each with
unlimited bandwidth (100 GB/s) and 1 Gbit/s.  Every run is verified: both
sides' RAM is dumped afterwards (pmemsave) and must equal the random file
(SHA-256), else the run counts as failed.

Several implementations per run (`--impl`, plus a second ferry build as
`ferry-base` with `--ferry-baseline-build`), order alternating between
repetitions.  Standard library only; processes and temporary files are
managed by tests/functional/ferrytest.py.
"""

import argparse
import datetime
import hashlib
import json
import mmap
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402  (loopback_rate, _stat_ticks, free_port)
from bench import fmt, ft, log  # noqa: E402

UNLIMITED = bench.UNLIMITED     # 100 GB/s: QEMU has no "unlimited"
GBIT = bench.GBIT               # 125000000 bytes/s
CASES = {
    # name: (postcopy?, max-bandwidth, max-postcopy-bandwidth)
    "precopy/unlimited": (False, UNLIMITED, None),
    "precopy/1gbit": (False, GBIT, None),
    "postcopy/unlimited": (True, UNLIMITED, 0),
    "postcopy/1gbit": (True, GBIT, GBIT),
}
IMPLS = ("ferry", "ferry-base", "qemu")
# "IMPL+mfdN": the same implementation with the multifd capability and N
# channels on both sides (precopy cases only).
MFD_SUFFIX = "+mfd"


def split_impl(impl):
    """("ferry", 0) for "ferry", ("qemu", 4) for "qemu+mfd4"."""
    base, sep, n = impl.partition(MFD_SUFFIX)
    if not sep:
        return impl, 0
    if not n.isdigit() or not 1 <= int(n) <= 255:
        raise ValueError(f"bad multifd channel count in {impl}")
    return base, int(n)
DOWNTIME_LIMIT = 300
HASH_CHUNK = 8 << 20


# ---------------------------------------------------------------------------
# Content and verification

SPARSE_EVERY = 16      # --fill sparse: one random page in this many


def random_chunk(n, fill):
    if fill == "random":
        return os.urandom(n)
    page = 4096
    b = bytearray(n)
    for off in range(0, n, page * SPARSE_EVERY):
        b[off:off + page] = os.urandom(min(page, n - off))
    return bytes(b)


def make_content(directory, size, fill="random"):
    """SIZE bytes in a file, all random or (sparse) one random page in
    SPARSE_EVERY and zeros; returns (path, sha256 hex)."""
    path = os.path.join(directory, "ram.bin")
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = random_chunk(min(HASH_CHUNK, left), fill)
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return path, h.hexdigest()


def file_hash(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(HASH_CHUNK)
            if not b:
                return h.hexdigest()
            h.update(b)


def first_difference(a, b, page=4096):
    """Offset of the first differing page of two files, and how many pages
    differ (only called when the hashes differ)."""
    first, count, off = None, 0, 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(HASH_CHUNK), fb.read(HASH_CHUNK)
            if not x and not y:
                return first, count
            for i in range(0, max(len(x), len(y)), page):
                if x[i:i + page] != y[i:i + page]:
                    count += 1
                    if first is None:
                        first = off + i
            off += max(len(x), len(y))


def dump_hash(vm, size, deadline, name):
    """pmemsave all of RAM into the VM's temporary dir; returns (path,
    sha256).  The dump is kept until the run ends (for a diff on
    mismatch)."""
    path = os.path.join(vm.dir, f"{name}.dump")
    vm.qmp.cmd("pmemsave", val=0, size=size, filename=path,
               timeout=max(deadline - time.monotonic(), 5))
    got = os.path.getsize(path)
    if got != size:
        ft.fail(f"{vm.name}: pmemsave wrote {got} bytes, expected {size}")
    return path, file_hash(path)


def verify(res, content, want, dumps):
    """dumps: [(label, path, sha)]; all must equal the content."""
    bad = []
    for label, path, sha in dumps:
        if sha != want:
            first, n = first_difference(content, path)
            where = f"first at {first:#x}" if first is not None else "?"
            bad.append(f"{label}: {n} pages differ, {where}")
    res["verified"] = not bad
    if bad:
        res["verify_error"] = "; ".join(bad)
    return not bad


# ---------------------------------------------------------------------------
# Processes

def prewarm(nbytes):
    """Touch nbytes of fresh memory, then free it.  On a host whose own
    memory is backed lazily (a VM: its hypervisor faults pages in on first
    touch), a process's first touch of memory nobody used recently costs
    several times a warm one, and whichever implementation runs second
    reuses the first one's pages: warming before every run gives each the
    same warm pool, so what is measured is the software."""
    m = mmap.mmap(-1, nbytes)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        m.madvise(mmap.MADV_HUGEPAGE)
    for off in range(0, nbytes, mmap.PAGESIZE):
        m[off] = 1
    m.close()


def cpu_ticks(pid):
    return bench._stat_ticks(f"/proc/{pid}/stat") or 0


def vm_args(size, content=None, incoming=False):
    args = ["-M", "none", "-m", f"{size >> 20}M", "-nodefaults"]
    if content:
        args += ["-device", f"loader,file={content},addr=0,force-raw=on"]
    if incoming:
        args += ["-incoming", "defer"]
    return args


def set_caps(vm, caps):
    if caps:
        vm.qmp.cmd("migrate-set-capabilities", capabilities=[
            {"capability": c, "state": True} for c in caps])


def forget(vm):
    """Kill the process and delete its temporary dir now (dumps are SIZE
    bytes each: they must not pile up until exit)."""
    vm.kill()
    if vm.qmp:
        vm.qmp.close()
    if vm in ft._vms:
        ft._vms.remove(vm)
    if not ft.KEEP:
        shutil.rmtree(vm.dir, ignore_errors=True)
        if vm.dir in ft._tmpdirs:
            ft._tmpdirs.remove(vm.dir)


def run_one(impl, binary, size, case, content, want, timeout,
            read_order="reverse", read_chunk=4 << 20):
    postcopy, bw, pbw = CASES[case]
    channels = split_impl(impl)[1]
    res = {"impl": impl, "case": case, "status": "error"}
    src = ft.VM(vm_args(size, content=content), binary=binary,
                name=f"{impl}-src", serial=False)
    dst = ft.VM(vm_args(size, incoming=True), binary=binary,
                name=f"{impl}-dst", serial=False)
    t0 = time.monotonic()
    deadline = t0 + timeout
    try:
        src.launch()
        dst.launch()
        if postcopy:
            # QEMU 7.2 wants postcopy-ram on both sides; blocktime is the
            # only fault-time figure its destination reports
            set_caps(src, ["postcopy-ram", "events"])
            set_caps(dst, ["postcopy-ram", "postcopy-blocktime"])
        if channels:
            for vm in (src, dst):
                set_caps(vm, ["multifd"])
                vm.qmp.cmd_args("migrate-set-parameters",
                                {"multifd-channels": channels})
        uri = f"tcp:127.0.0.1:{bench.free_port()}"
        dst.qmp.cmd("migrate-incoming", uri=uri)
        params = {"max-bandwidth": bw, "downtime-limit": DOWNTIME_LIMIT}
        if postcopy:
            params["max-postcopy-bandwidth"] = pbw
        src.qmp.cmd_args("migrate-set-parameters", params)

        sb, db = cpu_ticks(src.proc.pid), cpu_ticks(dst.proc.pid)
        t0 = time.monotonic()
        deadline = t0 + timeout
        src.qmp.cmd("migrate", uri=uri)
        reader = None
        if postcopy:
            src.qmp.cmd("migrate-start-postcopy")
            reader = start_reader(dst, size, t0, deadline, read_order,
                                      read_chunk)
        info = poll_until_done(src, deadline)
        status = info.get("status")
        if status not in ("completed", "failed", "cancelled"):
            status = "timeout"
            try:
                src.qmp.cmd("migrate_cancel")
            except Exception:
                pass
        dinfo = {}
        if status == "completed":
            if reader:
                reader["thread"].join(max(deadline - time.monotonic(), 1))
                if reader["thread"].is_alive():
                    status = "timeout"
                    res["error"] = "destination pmemsave during postcopy " \
                        "did not return"
                elif reader.get("error"):
                    status = "failed"
                    res["error"] = f"destination read: {reader['error']}"
            if status == "completed":
                dinfo = poll_until_done(dst, min(deadline,
                                                 time.monotonic() + 30))
                if dinfo.get("status") != "completed":
                    status = "failed"
                    res["error"] = (f"destination {dinfo.get('status')}: "
                                    f"{dinfo.get('error-desc', '')}")
        wall = time.monotonic() - t0
        sa, da = cpu_ticks(src.proc.pid), cpu_ticks(dst.proc.pid)
        res.update(collect(impl, postcopy, info, dinfo, wall, sa - sb, da - db))
        if reader:
            # when the destination's read started (after migrate) and what
            # the destination said then: "completed" means no page could
            # come through a page request
            res["read_status"] = reader.get("status_at_read")
            res["read_start_ms"] = round(reader.get("start_s", 0) * 1000)
            res["read_ms"] = round(reader.get("read_s", 0) * 1000)
            if reader.get("read_s"):
                res["read_MBps"] = round(size / reader["read_s"] / 1e6, 1)
        res["status"] = status
        if info.get("error-desc") and not res.get("error"):
            res["error"] = info["error-desc"]

        if status == "completed":
            dumps = []
            if reader:
                dumps.append(("destination during postcopy",)
                             + assemble(reader))
            vdl = time.monotonic() + max(timeout, 120)
            for vm, label in ((src, "source"), (dst, "destination")):
                path, sha = dump_hash(vm, size, vdl, "final")
                dumps.append((f"{label} after completion", path, sha))
            if not verify(res, content, want, dumps):
                res["status"] = "failed"
        return res
    except (AssertionError, ft.QMPError) as e:
        res["status"] = "failed"
        res["error"] = str(e)
        for vm in (src, dst):
            if vm.proc and vm.proc.poll() is not None:
                res["error"] += f" [{vm.name} exited {vm.proc.returncode}: " \
                    f"{vm.stderr()[-300:].strip()}]"
        return res
    finally:
        forget(src)
        forget(dst)
        res.setdefault("wall_s", round(time.monotonic() - t0, 3))


def poll_until_done(vm, deadline, poll=0.05):
    while True:
        info = vm.qmp.cmd("query-migrate")
        if info.get("status") in ("completed", "failed", "cancelled"):
            return info
        vm.check_alive()
        if time.monotonic() > deadline:
            return info
        time.sleep(poll)


def start_reader(dst, size, t0, deadline, order, chunk):
    """Once the destination is in postcopy, read all of its RAM with
    pmemsave in a thread (each missing page becomes a page request); the
    main thread keeps polling the source meanwhile.  The thread uses only
    the destination's QMP connection.

    order "forward": one pmemsave of all RAM from 0 (test_postcopy.py's
    flow).  The background stream also goes up from 0, so a reader slower
    than the stream never meets a missing page (QEMU 7.2's pmemsave, 1 KiB
    per fwrite, is that slow): no page requests at all.  order "reverse":
    chunk-sized pmemsaves from the top of RAM down, so every chunk starts
    ahead of the stream and faults."""
    st = {"path": os.path.join(dst.dir, "postcopy.dump"), "parts": []}

    def body():
        try:
            while True:
                s = dst.qmp.cmd("query-migrate").get("status")
                if s in ("postcopy-active", "completed"):
                    break
                if s in ("failed", "cancelled"):
                    raise AssertionError(f"destination {s}")
                if time.monotonic() > deadline:
                    raise AssertionError("destination never reached "
                                         "postcopy-active")
                time.sleep(0.005)
            st["status_at_read"] = s
            t = time.monotonic()
            st["start_s"] = t - t0
            if order == "forward":
                ranges = [(0, size)]
            else:
                ranges = [(a, min(chunk, size - a))
                          for a in range(0, size, chunk)][::-1]
            for i, (addr, n) in enumerate(ranges):
                path = f"{st['path']}.{addr:x}"
                dst.qmp.cmd("pmemsave", val=addr, size=n, filename=path,
                            timeout=max(deadline - time.monotonic(), 5))
                st["parts"].append((addr, path))
            st["read_s"] = time.monotonic() - t
        except Exception as e:             # reported by run_one
            st["error"] = str(e)

    st["thread"] = threading.Thread(target=body, daemon=True)
    st["thread"].start()
    return st


def assemble(reader):
    """The parts the reader dumped, in address order, as one file (after
    the measurement: this costs CPU and I/O)."""
    with open(reader["path"], "wb") as out:
        for _, path in sorted(reader["parts"]):
            with open(path, "rb") as f:
                shutil.copyfileobj(f, out, HASH_CHUNK)
            os.unlink(path)
    return reader["path"], file_hash(reader["path"])


def collect(impl, postcopy, info, dinfo, wall, src_ticks, dst_ticks):
    ram = info.get("ram", {})
    total_ms = info.get("total-time", int(wall * 1000))
    res = {
        "total_time_ms": total_ms,
        "downtime_ms": info.get("downtime"),
        "setup_time_ms": info.get("setup-time"),
        "wall_s": round(wall, 3),
        "transferred": ram.get("transferred"),
        "normal_pages": ram.get("normal"),
        "zero_pages": ram.get("duplicate"),
        "ram_mbps": ram.get("mbps"),
        "cpu_src_s": round(src_ticks / bench.CLK_TCK, 3),
        "cpu_dst_s": round(dst_ticks / bench.CLK_TCK, 3),
    }
    dt = res["downtime_ms"]
    if dt is not None and total_ms is not None and dt > total_ms:
        # QEMU 7.2 after postcopy sometimes reports the host's monotonic
        # clock (ms since boot) as downtime: not a figure, keep it aside
        res["downtime_reported_ms"] = dt
        res["downtime_ms"] = None
    if res["transferred"] and total_ms:
        res["throughput_MBps"] = round(
            res["transferred"] / (total_ms / 1000) / 1e6, 1)
    if postcopy:
        res["postcopy_requests"] = ram.get("postcopy-requests")
        res["postcopy_bytes"] = ram.get("postcopy-bytes")
        res["blocktime_ms"] = dinfo.get("postcopy-blocktime")
        res["vcpu_blocktime_ms"] = dinfo.get("postcopy-vcpu-blocktime")
        # ferry's destination only; QEMU 7.2 has no per-fault latency
        res["faults"] = dinfo.get("postcopy-faults")
        res["latency_p50_us"] = dinfo.get("postcopy-latency-p50-us")
        res["latency_p99_us"] = dinfo.get("postcopy-latency-p99-us")
        res["latency_max_us"] = dinfo.get("postcopy-latency-max-us")
    return res


# ---------------------------------------------------------------------------
# Builds and host

def build_info(build, binary):
    """Version of a binary and, for a ferry build, the git commit of the
    source tree it was built from (meson-info says where that is)."""
    info = {"build": build, "binary": binary}
    try:
        p = subprocess.run([binary, "--version"], capture_output=True,
                           text=True, timeout=10)
        info["version"] = (p.stdout or p.stderr).strip().splitlines()[0]
    except Exception:
        pass
    if build is None:
        return info
    src = None
    try:
        with open(os.path.join(build, "meson-info", "meson-info.json")) as f:
            src = json.load(f)["directories"]["source"]
    except (OSError, ValueError, KeyError):
        pass
    info["source"] = src
    if src:
        for key, cmd in (("commit", ["rev-parse", "HEAD"]),
                         ("describe", ["describe", "--always", "--dirty"])):
            try:
                info[key] = subprocess.run(
                    ["git", "-C", src] + cmd, capture_output=True, text=True,
                    timeout=10).stdout.strip()
            except Exception:
                pass
    return info


def host_info():
    info = {"host": platform.node(), "kernel": platform.release(),
            "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/loadavg") as f:
            info["loadavg_start"] = f.read().split()[:3]
    except OSError:
        pass
    try:
        info["bench_commit"] = subprocess.run(
            ["git", "-C", bench.SRCDIR, "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        pass
    return info


# ---------------------------------------------------------------------------
# Summary

METRICS = [
    ("total_time_ms", "total ms"),
    ("downtime_ms", "downtime ms"),
    ("throughput_MBps", "MB/s"),
    ("cpu_src_s", "cpu src s"),
    ("cpu_dst_s", "cpu dst s"),
    ("postcopy_requests", "requests"),
    ("faults", "faults"),
    ("latency_p50_us", "p50 us"),
    ("latency_p99_us", "p99 us"),
    ("latency_max_us", "max us"),
    ("blocktime_ms", "blocktime ms"),
    ("read_MBps", "read MB/s"),
]
RATIOS = [("ferry", "qemu"), ("ferry-base", "qemu"), ("ferry", "ferry-base")]


def ratios_for(impls):
    """The fixed pairs, plus each multifd variant against QEMU on one
    stream and against QEMU with as many channels."""
    pairs = [p for p in RATIOS if p[0] in impls and p[1] in impls]
    for impl in impls:
        base, n = split_impl(impl)
        if n and base != "qemu":
            for other in ("qemu", f"qemu{MFD_SUFFIX}{n}"):
                if other in impls:
                    pairs.append((impl, other))
    return pairs


def median_of(runs, key):
    vals = [r[key] for r in runs
            if r.get("status") == "completed" and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(runs):
    summary = {}
    for r in runs:
        summary.setdefault(r["case"], {}).setdefault(r["impl"], []).append(r)
    for case, impls in summary.items():
        for impl, rs in list(impls.items()):
            med = {k: median_of(rs, k) for k, _ in METRICS}
            med["completed"] = sum(r["status"] == "completed" for r in rs)
            med["runs"] = len(rs)
            impls[impl] = med
        for a, b in ratios_for(list(impls)):
            if a in impls and b in impls:
                impls[f"{a}/{b}"] = {
                    k: (round(impls[a][k] / impls[b][k], 3)
                        if impls[a][k] is not None and impls[b][k] else None)
                    for k, _ in METRICS}
    return summary


def print_table(summary, loopback):
    if loopback:
        print(f"loopback TCP single stream: {loopback / 1e6:.0f} MB/s "
              f"({loopback * 8 / 1e9:.2f} Gbit/s)")
    head = ["case", "impl"] + [m[1] for m in METRICS] + ["ok"]
    rows = [head]
    impls = sorted({i for c in summary.values() for i in c if "/" not in i},
                   key=lambda i: (split_impl(i)[0] not in IMPLS,
                                  IMPLS.index(split_impl(i)[0])
                                  if split_impl(i)[0] in IMPLS else 0,
                                  split_impl(i)[1]))
    order = impls + [f"{a}/{b}" for a, b in ratios_for(impls)]
    for case in [c for c in CASES if c in summary]:
        postcopy = CASES[case][0]
        for impl in order:
            s = summary[case].get(impl)
            if s is None:
                continue
            row = [case, impl]
            for k, _ in METRICS:
                pc_only = k in ("postcopy_requests", "faults",
                                "blocktime_ms", "read_MBps") \
                    or k.startswith("latency")
                row.append(fmt(s.get(k)) if postcopy or not pc_only else "")
            row.append(f"{s['completed']}/{s['runs']}" if "runs" in s else "")
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join(c.rjust(w) if i > 1 else c.ljust(w)
                        for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    if loopback and "precopy/unlimited" in summary:
        for impl in impls:
            s = summary["precopy/unlimited"].get(impl)
            if s and s.get("throughput_MBps"):
                print(f"precopy/unlimited {impl}: "
                      f"{s['throughput_MBps'] * 1e6 / loopback:.0%} of the "
                      f"loopback stream")


# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ferry-build", default=os.path.join(bench.SRCDIR,
                                                          "build"),
                    help="build directory of ferry (default build)")
    ap.add_argument("--build", dest="ferry_build",
                    help="same as --ferry-build (as bench.py)")
    ap.add_argument("--ferry-baseline-build", metavar="DIR",
                    help="a second ferry build, labelled ferry-base")
    ap.add_argument("--impl", default="ferry,qemu",
                    help="comma-separated, of ferry, ferry-base, qemu, "
                    "each optionally with +mfdN for multifd with N channels "
                    "(precopy cases only), e.g. ferry+mfd2 (default "
                    "ferry,qemu; ferry-base is added when "
                    "--ferry-baseline-build is given)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size", default="1G", help="guest RAM (default 1G)")
    ap.add_argument("--cases", default=",".join(CASES),
                    help="comma-separated, of " + ", ".join(CASES))
    ap.add_argument("--timeout", type=float, default=300,
                    help="seconds a migration may take before it counts "
                    "as failed")
    ap.add_argument("--read", choices=["reverse", "forward"],
                    default="reverse",
                    help="how the postcopy destination reads its RAM: "
                    "chunks from the top down (default) or one pmemsave "
                    "from 0")
    ap.add_argument("--read-chunk", default="4M",
                    help="pmemsave size for --read reverse (default 4M)")
    ap.add_argument("--loopback-size", default="2G")
    ap.add_argument("--prewarm", action="store_true",
                    help="before each run, touch and free 2 x SIZE of "
                    "memory (see prewarm())")
    ap.add_argument("--fill", choices=["random", "sparse"], default="random",
                    help="RAM content: all random (default) or one random "
                    f"page in {SPARSE_EVERY}, the rest zero")
    ap.add_argument("--no-loopback", action="store_true")
    ap.add_argument("--out", help="JSON file (default "
                    "bench/results/none-<date>.json)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    ft.log = lambda msg: None         # keep stdout for the table

    size = ft.parse_size(args.size)
    if size % (1 << 20) or size <= 0:
        sys.exit("--size must be a positive number of MiB")
    read_chunk = ft.parse_size(args.read_chunk)
    if read_chunk <= 0 or read_chunk % 4096:
        sys.exit("--read-chunk must be a positive multiple of 4 KiB")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASES:
            sys.exit(f"unknown case {c}: {', '.join(CASES)}")
    impls = [i.strip() for i in args.impl.split(",") if i.strip()]
    if args.ferry_baseline_build and "ferry-base" not in impls:
        impls.insert(impls.index("ferry") + 1 if "ferry" in impls else 0,
                     "ferry-base")
    builds = {"ferry": os.path.abspath(args.ferry_build)}
    if args.ferry_baseline_build:
        builds["ferry-base"] = os.path.abspath(args.ferry_baseline_build)
    binaries = {}
    for impl in impls:
        try:
            base, _ = split_impl(impl)
        except ValueError as e:
            sys.exit(str(e))
        if base == "qemu":
            if not ft.QEMU:
                sys.exit("qemu-system-x86_64 not found (apt-get install "
                         "qemu-system-x86), or pass --impl ferry")
            binaries[impl] = ft.QEMU
        elif base in builds:
            binaries[impl] = os.path.join(builds[base], "ferry")
            if not os.access(binaries[impl], os.X_OK):
                sys.exit(f"{binaries[impl]} is missing: build first "
                         f"(ninja -C {builds[impl]})")
        else:
            sys.exit(f"unknown implementation {impl} (ferry-base needs "
                     "--ferry-baseline-build)")

    loopback = None
    if not args.no_loopback:
        loopback = bench.loopback_rate(total=ft.parse_size(args.loopback_size))
        log(f"loopback: {loopback / 1e6:.0f} MB/s")

    d = ft.make_tmpdir("ferrybench-none-")
    t = time.monotonic()
    content, want = make_content(d, size, args.fill)
    log(f"content: {size >> 20} MiB {args.fill}, sha256 {want[:16]}... "
        f"({time.monotonic() - t:.1f} s)")

    runs = []
    try:
        for case in cases:
            for rep in range(args.reps):
                # alternate so drifts of the host hit all alike
                for impl in (impls if rep % 2 == 0 else impls[::-1]):
                    if CASES[case][0] and split_impl(impl)[1]:
                        # postcopy switches at once here, so multifd
                        # would carry nothing (and QEMU 7.2's destination
                        # aborts after a postcopy with multifd)
                        continue
                    if args.prewarm:
                        prewarm(2 * size)
                    r = run_one(impl, binaries[impl], size, case, content,
                                want, args.timeout, args.read, read_chunk)
                    r["rep"] = rep
                    runs.append(r)
                    extra = ""
                    if CASES[case][0]:
                        extra = (f", requests {r.get('postcopy_requests')}, "
                                 f"p50 {r.get('latency_p50_us')} us, "
                                 f"blocktime {r.get('blocktime_ms')} ms")
                    log(f"{case} rep {rep} {impl}: {r['status']} total "
                        f"{r.get('total_time_ms')} ms, downtime "
                        f"{r.get('downtime_ms')} ms, "
                        f"{r.get('throughput_MBps')} MB/s, cpu src "
                        f"{r.get('cpu_src_s')} s dst {r.get('cpu_dst_s')} s"
                        + extra
                        + (f" ({r['error']})" if r.get("error") else "")
                        + (f" [{r['verify_error']}]"
                           if r.get("verify_error") else ""))
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")

    summary = summarize(runs)
    doc = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "benchmark": "none",
        "host": host_info(),
        "builds": {impl: build_info(builds.get(split_impl(impl)[0]),
                                    binaries[impl])
                   for impl in impls},
        "config": {"machine": "none", "size": size, "reps": args.reps,
                   "impls": impls, "cases": {c: {
                       "postcopy": CASES[c][0],
                       "max-bandwidth": CASES[c][1],
                       "max-postcopy-bandwidth": CASES[c][2]} for c in cases},
                   "downtime_limit_ms": DOWNTIME_LIMIT,
                   "content": f"os.urandom ({args.fill}), loaded at 0 "
                              "with -device loader",
                   "content_sha256": want, "timeout_s": args.timeout,
                   "postcopy_read": args.read,
                   "postcopy_read_chunk": read_chunk,
                   "prewarm": args.prewarm},
        "loopback_Bps": loopback,
        "runs": runs,
        "summary": summary,
    }
    out = args.out
    if not out:
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        out = os.path.join(HERE, "results", "none-" + datetime.datetime.now()
                           .strftime("%Y-%m-%d-%H%M%S") + ".json")
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    print_table(summary, loopback)
    print(f"results: {out}")
    ok = runs and all(r["status"] == "completed" for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

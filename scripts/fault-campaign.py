#!/usr/bin/env python3
"""Fault-injection campaign: break live migrations at random moments, many
times, and check after every break that ferry failed (or recovered) the way
it promises to.  Standard library only; RAM-only `-M none` VMs, so it runs
without /dev/kvm.

Every VM is a ferry process `-M none -m MEM -nodefaults` whose first 64 MiB
(or all of MEM if smaller) hold a random pattern loaded with
`-device loader,file=PATTERN,addr=0,force-raw=on`; the rest is zero.  "RAM
equals the pattern" means a pmemsave of all of MEM equals pattern + zeros
byte for byte.  Destinations start with `-incoming defer` and get
`migrate-incoming`.  Links go through tests/functional/relay.py, which can
reset (RST both ways) or black-hole them.  Each campaign first times one
clean migration (the "calibration"); faults land uniformly at random within
that expected duration.

Campaigns (--campaign, default all):

precopy (default 100 runs)
    source -> relay -> destination at --bandwidth (64 MiB/s: ~1-2 s), with
    the return-path capability on both sides in half of the runs.  At a
    random moment, reset the link or kill -9 the destination (chosen at
    random).  Checked each run: the source reports "failed" with an
    error-desc within 30 s, its run state is again "running", it answers
    QMP, its RAM equals the pattern.  A source that reports "completed"
    (the fault came too late: "late") must be in postmigrate, and a reset
    destination must run with the pattern; a killed one must have been
    completed when killed if the return path was on (the source waits for
    its SHUT(0)); without it the source, like QEMU's, completes once the
    stream is flushed, unconfirmed ("late-unconfirmed", not a violation).
    Every --follow-every runs (10) a new migration to a fresh destination
    (no relay, no bandwidth cap) must complete with the destination
    running and its RAM equal to the pattern (if that run was late, the
    next failed run does it).  What the destination did is recorded.

incoming (default 100 runs)
    the same migration, but kill -9 the SOURCE at a random moment.  The
    destination has x-net-timeout 2000 and TMPDIR pointing at an empty
    private directory.  tcp through the relay, or (10% of the runs) a
    unix: socket in a private directory, directly.  Checked: it exits with
    status 1 within 15 s (stderr's last lines are recorded), and leaves
    nothing behind: no process whose command line names its directory, no
    listening TCP socket on the migration port (/proc/net/tcp, tcp6), no
    unix socket file nor /proc/net/unix entry for the migration path,
    nothing in its TMPDIR.  If the source had already finished, the
    destination must have completed instead, run, and hold the pattern
    ("late").  A kill before any connection reached the destination is
    "missed" (it is rightly still listening), not a violation.

postcopy (default 20 runs)
    postcopy-ram on both sides, migrate-start-postcopy right after migrate,
    max-postcopy-bandwidth --postcopy-bandwidth (16 MiB/s).  At a random
    moment in postcopy-active break the link: relay reset, or relay black
    hole + migrate-pause on both sides (alternating, run by run), wait for
    both sides in postcopy-paused (30 s), then recover: migrate-recover on
    a fresh port, relay.retarget, migrate resume through the relay; 30% of
    the runs get a second break of the other kind after recovering.  At the
    end both sides must be completed, the destination running, and both
    RAMs equal to the pattern.  Pause and recovery times are reported.

--writer RATE (a guest that writes its memory during the migration)
    every VM, source and destination, also gets `-device x-dirtier,
    rate=RATE,size=--writer-size (32 MiB),addr=<end of the pattern>,
    pattern=--writer-pattern (sweep)` (docs/usage.md): the pattern shrinks
    to fit (min(64 MiB, MEM - the region)), the region follows it, the
    rest is zero; a destination's writer starts when its VM runs.  The
    pattern checks above stay as they are for the pattern part (and the
    zero part); the region is checked with tests/functional/dirtier.py,
    on dumps of stopped VMs (no page in flight):
    precopy: a failed source's writer runs again (writes 64 more pages
      within 10 s); then, stopped, every page of its region is valid
      (check_region), and it is continued.  A late reset destination
      must run and write; both stopped, it must hold the source's RAM
      up to pages its own writer rewrote since (compare_postcopy).  A
      follow-up destination starts with -S: its RAM must be the source's
      byte for byte (compare_precopy); after cont its writer must write.
    incoming: unchanged (the source's writer keeps the stream live); a
      late destination must run and write, and its region be valid.
    postcopy: at each break and before the end, the destination's
      pages-written is read while the status is not yet completed; if
      it wrote, postcopy-faults must be > 0.  At the end the destination
      must write, and, stopped, hold the source's RAM up to pages its
      writer rewrote after the switch (compare_postcopy).
    Every dump is deleted right after its check.

Each run is bounded (an alarm: 120 s precopy, 90 s incoming, 240 s
postcopy) and every process, relay and temporary directory is removed
after it.  A violation is recorded with its campaign, run number, seed,
what was seen and the tail of each process's stderr, and the campaign goes
on; the exit status is 1 if there was any violation.  A run is replayed
with the same choices and timings by --seed S --campaign C --first-run K
--runs 1 (each run's random generator is seeded from "S:C:K").

The ferry binary is $FERRY_BUILD/ferry as in tests/functional/ferrytest.py;
--build DIR sets FERRY_BUILD (default: $FERRY_BUILD, else ./build).

Examples:
    scripts/fault-campaign.py --runs 3                 # quick look
    scripts/fault-campaign.py --seed 1 --out fc.json   # full default run
    scripts/fault-campaign.py --campaign postcopy --runs 5 --verbose
    scripts/fault-campaign.py --writer 32M --seed 1   # with a sweeping guest
"""

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import sys
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUNCTIONAL = os.path.join(REPO, "tests", "functional")

MiB = 1 << 20
PATTERN_MAX = 64 * MiB
CAMPAIGNS = ("precopy", "incoming", "postcopy")
DEFAULT_RUNS = {"precopy": 100, "incoming": 100, "postcopy": 20}
RUN_TIMEOUT = {"precopy": 120, "incoming": 90, "postcopy": 240}

ft = None           # tests/functional/ferrytest.py, imported in main()
relay = None        # tests/functional/relay.py
dirtier = None      # tests/functional/dirtier.py

VERBOSE = False
RUNLOG = []         # the current run's log lines (ferrytest, relay, ours)


def runlog(msg):
    """ferrytest.log and relay's logging go here: kept for the run's
    violation report, printed only with --verbose."""
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    RUNLOG.append(line)
    if VERBOSE:
        print(line, flush=True)


def say(msg):
    print(msg, flush=True)


class RunTimeout(Exception):
    pass


# ---- small helpers --------------------------------------------------------

class Ctx:
    """What all runs share: the pattern, sizes, bandwidths, the writer."""

    def __init__(self, args):
        self.args = args
        self.mem = args.mem * MiB
        # --writer: an x-dirtier over [psize, psize + wsize), right after
        # the pattern; the rest of RAM stays zero
        self.writer = args.writer_bytes
        self.wsize = args.writer_size * MiB if self.writer else 0
        self.psize = min(PATTERN_MAX, self.mem - self.wsize)
        self.region = (self.psize, self.wsize) if self.writer else None
        self.zero_from = self.psize + self.wsize
        d = ft.make_tmpdir("fault-campaign-")
        self.pattern_path = os.path.join(d, "pattern.bin")
        self.pattern = random.Random(f"{args.seed}:pattern").randbytes(self.psize)
        with open(self.pattern_path, "wb") as f:
            f.write(self.pattern)
        self.zeros = bytes(self.mem - self.zero_from)
        self.expected = {}      # campaign -> calibrated duration (s)

    def writer_dev(self):
        """The same -device on every VM, source and destination."""
        if not self.writer:
            return []
        return ["-device", f"x-dirtier,rate={self.writer},size={self.wsize},"
                f"addr={self.psize},pattern={self.args.writer_pattern},"
                f"seed={self.args.seed % (1 << 32) or 1}"]


def vm_args(ctx, *extra):
    return (["-M", "none", "-m", str(ctx.mem // MiB), "-nodefaults"]
            + ctx.writer_dev() + list(extra))


def start_source(ctx, name="src"):
    src = ft.VM(vm_args(ctx, "-device",
                        f"loader,file={ctx.pattern_path},addr=0,force-raw=on"),
                name=name, serial=False).launch()
    return src


def start_destination(ctx, name="dst", env=None, params=None, uri=None,
                      caps=None, extra=()):
    """A -incoming defer destination, set up and listening on uri (default
    a free tcp port on 127.0.0.1).  Returns (vm, uri)."""
    dst = ft.VM(vm_args(ctx, "-incoming", "defer", *extra), name=name,
                serial=False, env=env).launch()
    if caps:
        set_caps(dst, **caps)
    if params:
        dst.qmp.cmd_args("migrate-set-parameters", params)
    uri = uri or f"tcp:127.0.0.1:{ft.free_tcp_port()}"
    dst.qmp.cmd("migrate-incoming", uri=uri)
    return dst, uri


def port_of(uri):
    return int(uri.rsplit(":", 1)[1])


def set_caps(vm, **caps):
    vm.qmp.cmd("migrate-set-capabilities",
               capabilities=[{"capability": k.replace("_", "-"), "state": v}
                             for k, v in caps.items()])


def mig(vm):
    return vm.qmp.cmd("query-migrate")


def wait_mig(vm, want, timeout, bad=()):
    """Poll query-migrate until its status is in want; fail at once on a
    status in bad, or at the timeout."""
    deadline = time.time() + timeout
    while True:
        info = mig(vm)
        st = info.get("status")
        if st in want:
            return info
        if st in bad:
            ft.fail(f"{vm.name}: migration status {st} (waiting for "
                    f"{'/'.join(want)}): {info.get('error-desc', '')}")
        vm.check_alive()
        if time.time() > deadline:
            ft.fail(f"{vm.name}: migration status {st} after {timeout}s, "
                    f"wanted {'/'.join(want)}")
        time.sleep(0.05)


def check_static(ctx, data, what):
    """The pattern part of a RAM image (bytes) equals the pattern, and
    everything after the pattern and the writer's region is zero."""
    if data[:ctx.psize] == ctx.pattern and data[ctx.zero_from:] == ctx.zeros:
        return
    want = ctx.pattern + bytes(ctx.wsize) + ctx.zeros
    bad = [a for a in range(0, ctx.mem, 4096)
           if not ctx.psize <= a < ctx.zero_from
           and data[a:a + 4096] != want[a:a + 4096]]
    ft.fail(f"{what}: RAM differs from the pattern in {len(bad)} page(s), "
            f"first at {bad[0]:#x}")


def dump_path(vm, name="ram.dump"):
    return os.path.join(vm.dir, name)


def dump_ram(ctx, vm, path):
    """pmemsave all of RAM to path (the caller unlinks it, even if this
    fails half-way)."""
    return vm.pmemsave(ctx.mem, path=path)


def unlink(*paths):
    for p in paths:
        if p:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def check_ram(ctx, vm, what):
    """pmemsave all of RAM and compare it with pattern + zeros; with
    --writer, every page of the writer's region must also be valid
    (dirtier.check_region: no torn page), so the VM must be stopped (its
    writer parked) first.  Returns check_region's figures, or None."""
    path = dump_path(vm)
    try:
        dump_ram(ctx, vm, path)
        with open(path, "rb") as f:
            check_static(ctx, f.read(), what)
        if ctx.writer:
            try:
                return dirtier.check_region(path, ctx.region)
            except dirtier.PageError as e:
                ft.fail(f"{what}: writer region: {e}")
    finally:
        unlink(path)


def stop_vm(vm):
    """stop a running VM (its writer parks before the reply)."""
    if vm.query_status() == "running":
        vm.qmp.cmd("stop")
        ft.wait_runstate(vm, "paused")


def writer_info(vm):
    return vm.qmp.cmd("x-query-dirtier")


def writer_writes(vm, what, more=64, timeout=10.0):
    """The VM's writer is running and writes `more` further pages.
    Returns the seconds that took."""
    t0 = time.time()
    start = writer_info(vm)["pages-written"]
    deadline = t0 + timeout
    while True:
        info = writer_info(vm)
        if info["running"] and info["pages-written"] >= start + more:
            return round(time.time() - t0, 3)
        vm.check_alive()
        if time.time() > deadline:
            ft.fail(f"{what}: the writer did not write {more} pages in "
                    f"{timeout:.0f} s: {info}")
        time.sleep(0.02)


def check_migrated(ctx, src, dst, what, exact=False):
    """With --writer: the destination holds the source's RAM.  Both are
    stopped (the source is already, in postmigrate), both dumped; the
    source's dump must pass the pattern checks and check_region, and the
    destination's must equal it byte for byte (exact: the destination
    never ran, dirtier.compare_precopy) or up to pages its own writer
    rewrote after the switch (dirtier.compare_postcopy).  Returns the
    figures."""
    stop_vm(dst)
    spath, dpath = dump_path(src, "src.dump"), dump_path(dst, "dst.dump")
    try:
        dump_ram(ctx, src, spath)
        dump_ram(ctx, dst, dpath)
        with open(spath, "rb") as f:
            check_static(ctx, f.read(), f"{what}: source")
        try:
            out = {"src": dirtier.check_region(spath, ctx.region)}
            if exact:
                dirtier.compare_precopy(spath, dpath)
                out["cmp"] = "identical"
            else:
                out["cmp"] = dirtier.compare_postcopy(spath, dpath, ctx.region)
        except dirtier.PageError as e:
            ft.fail(f"{what}: {e}")
        return out
    finally:
        unlink(spath, dpath)


def sleep_until(t):
    left = t - time.time()
    if left > 0:
        time.sleep(left)


def norm(desc):
    """An error text with numbers and paths blanked, for grouping."""
    desc = re.sub(r"/\S+", "PATH", desc or "")
    return re.sub(r"\d+", "N", desc)[:160]


def listening_tcp(port):
    """Lines of /proc/net/tcp{,6} for a LISTEN socket on port."""
    hits = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            w = line.split()
            if len(w) > 3 and w[3] == "0A" and int(w[1].rsplit(":", 1)[1], 16) == port:
                hits.append(f"{name}: {line.strip()}")
    return hits


def unix_socket_entries(path):
    try:
        with open("/proc/net/unix") as f:
            return [l.strip() for l in f if l.rstrip().endswith(" " + path)]
    except OSError:
        return []


def processes_naming(text):
    """pids of live processes whose command line contains text."""
    pids = []
    me = str(os.getpid())
    for p in os.listdir("/proc"):
        if not p.isdigit() or p == me:
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(p))
        except OSError:
            pass
    return pids


def load_error(lines):
    """The line saying why the load failed, else the last one."""
    for l in lines:
        if "load of migration failed" in l:
            return l
    return lines[-1] if lines else ""


def stderr_tail(vm, n=4):
    return [l for l in vm.stderr().splitlines() if l.strip()][-n:]


# ---- campaigns --------------------------------------------------------------

class Campaign:
    name = None

    def __init__(self, ctx, runs, first):
        self.ctx = ctx
        self.args = ctx.args
        self.runs = runs
        self.first = first
        self.records = []
        self.violations = []
        self.calibration = None

    def rng(self, i):
        return random.Random(f"{self.args.seed}:{self.name}:{i}")

    # subclasses: calibrate() -> seconds, run(i, rng, rec)

    def execute(self):
        say(f"== {self.name}: calibrating (one clean migration)")
        cal = {"run": "calibration"}
        if not self.guarded("calibration", lambda: self.calibrate(cal), cal):
            say(f"== {self.name}: calibration failed, campaign skipped")
            return
        self.calibration = cal["duration"]
        say(f"== {self.name}: a clean migration took {self.calibration:.2f} s; "
            f"{self.runs} runs, faults uniform in [0, "
            f"{self.fault_window():.2f}] s")
        for i in range(self.first, self.first + self.runs):
            rec = {"run": i}
            t0 = time.time()
            ok = self.guarded(i, lambda: self.run(i, self.rng(i), rec), rec)
            rec["seconds"] = round(time.time() - t0, 2)
            rec["ok"] = ok
            self.records.append(rec)
            say(f"{self.name} {i + 1 - self.first}/{self.runs} (run {i}): "
                f"{self.describe(rec)}{'' if ok else '  VIOLATION'} "
                f"[{rec['seconds']:.1f}s]")

    def guarded(self, i, fn, rec):
        """Run fn bounded by the alarm; turn any failure into a violation;
        clean everything up afterwards."""
        del RUNLOG[:]

        def on_alarm(signum, frame):
            raise RunTimeout(f"run exceeded {RUN_TIMEOUT[self.name]} s")
        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(RUN_TIMEOUT[self.name])
        ok = True
        try:
            fn()
            ft.check_sanitizer_reports()
        except (AssertionError, RunTimeout, ft.QMPError, OSError) as e:
            ok = False
            self.violation(i, rec, f"{type(e).__name__}: {e}")
        except Exception as e:      # a bug of this script: report it too
            ok = False
            self.violation(i, rec, f"harness error {type(e).__name__}: {e}\n"
                           f"{traceback.format_exc()}")
        finally:
            signal.alarm(0)
            self.cleanup()
        return ok

    def violation(self, i, rec, what):
        v = {"campaign": self.name, "run": i, "seed": self.args.seed,
             "what": what, "record": dict(rec),
             "stderr": {vm.name: vm.stderr()[-2000:] for vm in ft._vms if vm.proc},
             "log": RUNLOG[-40:]}
        rec["violation"] = what
        self.violations.append(v)
        say(f"VIOLATION {self.name} run {i} (seed {self.args.seed}): {what}")
        for name, err in v["stderr"].items():
            for line in err.splitlines()[-6:]:
                say(f"    {name} stderr: {line}")

    def cleanup(self):
        ft._cleanup_vms()
        relay.stop_all()
        # per run, not at exit: 200+ runs of RAM dumps would pile up
        keep = self.ctx.pattern_path
        for d in list(ft._tmpdirs):
            if not keep.startswith(d + os.sep):
                shutil.rmtree(d, ignore_errors=True)
                ft._tmpdirs.remove(d)

    def fault_window(self):
        return self.calibration

    def describe(self, rec):
        return json.dumps({k: v for k, v in rec.items()
                           if k not in ("run", "seconds", "ok", "violation")})

    def summary(self):
        recs = self.records
        s = {"runs": len(recs), "ok": sum(r["ok"] for r in recs),
             "violations": len(self.violations),
             "calibration_s": self.calibration}
        return s


def stats(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"n": len(xs), "min": round(min(xs), 3),
            "median": round(statistics.median(xs), 3), "max": round(max(xs), 3)}


def fmt_stats(st, unit="s"):
    if not st:
        return "-"
    if not unit:
        return f"{st['median']:g} median ({st['min']:g}-{st['max']:g}, n={st['n']})"
    return f"{st['median']:.2f} {unit} median ({st['min']:.2f}-{st['max']:.2f}, n={st['n']})"


def count(recs, key):
    out = {}
    for r in recs:
        if key in r:
            out[str(r[key])] = out.get(str(r[key]), 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def writer_rows(s):
    w = s.get("writer")
    if not w:
        return []
    if "faults" in w:
        return [("writer: dst wrote in postcopy", f"{w['wrote_in_postcopy']} "
                 f"runs, {w['wrote_with_faults']} of them with postcopy-faults > 0"),
                ("writer: postcopy-faults", fmt_stats(w["faults"], "")),
                ("writer: pages rewritten on dst", fmt_stats(w["rewritten"], "")),
                ("writer: source generation", fmt_stats(w["src_generation"], ""))]
    if "resumed_s" in w:
        return [("writer: failed source writes again", fmt_stats(w["resumed_s"])),
                ("writer: source regions valid",
                 f"{w['src_regions_checked']} (written pages: "
                 f"{fmt_stats(w['src_pages_written'], '')})"),
                ("writer: late reset dst = src+newer", f"{w['late_compared']} "
                 f"(rewritten: {fmt_stats(w['late_rewritten'], '')})"),
                ("writer: follow-ups byte-identical", w["follow_ups_identical"])]
    return [("writer: late dst regions valid", w["late_dst_checked"])]


class Precopy(Campaign):
    name = "precopy"

    def migrate_through_relay(self, src, dst_uri):
        rel = relay.Relay(port_of(dst_uri))
        src.qmp.cmd_args("migrate-set-parameters",
                         {"max-bandwidth": self.args.bandwidth * MiB})
        src.qmp.cmd("migrate", uri=rel.uri)
        return rel, time.time()

    def calibrate(self, cal):
        src = start_source(self.ctx)
        dst, uri = start_destination(self.ctx)
        rel, t0 = self.migrate_through_relay(src, uri)
        wait_mig(src, ("completed",), 60, bad=("failed", "cancelled"))
        cal["duration"] = time.time() - t0
        wait_mig(dst, ("completed",), 30, bad=("failed", "cancelled"))
        if self.ctx.writer:
            ft.wait_runstate(src, "postmigrate")
            ft.wait_runstate(dst, "running")
            writer_writes(dst, "calibration destination")
            cal["writer"] = check_migrated(self.ctx, src, dst,
                                           "calibration")["cmp"]
        else:
            check_ram(self.ctx, dst, "calibration destination")

    def run(self, i, rng, rec):
        ctx = self.ctx
        fault = rng.choice(("reset", "kill-dst"))
        at = rng.uniform(0, self.calibration)
        rp = rng.random() < 0.5
        rec.update(fault=fault, at=round(at, 3), return_path=rp)
        src = start_source(ctx)
        before = src.query_status()
        dst, uri = start_destination(ctx, caps={"return-path": rp})
        set_caps(src, return_path=rp)
        rel, t0 = self.migrate_through_relay(src, uri)
        sleep_until(t0 + at)
        rec["src_status_at_fault"] = mig(src).get("status")
        rec["dst_status_at_fault"] = mig(dst).get("status")
        tf = time.time()
        if fault == "reset":
            rec["conns_reset"] = rel.reset()
        else:
            dst.proc.kill()
            dst.proc.wait(10)
        info = wait_mig(src, ("failed", "completed", "cancelled"), 30)
        rec["outcome"] = st = info["status"]
        rec["fail_latency"] = round(time.time() - tf, 3)
        if st == "cancelled":
            ft.fail("source reports cancelled after a link fault")
        if st == "failed":
            rec["error"] = info.get("error-desc", "")
            if not rec["error"]:
                ft.fail(f"failed without error-desc: {info}")
            ft.wait_runstate(src, before)
            if ctx.writer:
                # the guest goes on writing its memory
                rec["writer_resumed_s"] = writer_writes(
                    src, "source after the failure")
        else:
            rec["outcome"] = "late"
            ft.wait_runstate(src, "postmigrate")
            self.check_late(rec, src, dst)
        # still answering, RAM untouched
        src.qmp.cmd("query-status")
        mig(src)
        if not rec.get("src_checked"):
            if ctx.writer and st == "failed":
                stop_vm(src)        # no page in flight in the dump
            wr = check_ram(ctx, src, "source after the fault")
            if wr:
                rec["src_writer"] = wr
            if ctx.writer and st == "failed":
                src.qmp.cmd("cont")
                ft.wait_runstate(src, "running")
        if fault == "reset":
            rec["dst_exit"] = self.dst_fate(dst)
        if st == "failed" and (self.follow_pending or
                               i % self.args.follow_every == 0):
            self.follow_pending = False
            t1 = time.time()
            self.follow_up(src, rec)
            rec["follow_up"] = round(time.time() - t1, 2)
        elif i % self.args.follow_every == 0:
            self.follow_pending = True

    follow_pending = False

    def check_late(self, rec, src, dst):
        """The source says completed.  A reset destination is alive: it
        must have had the whole stream, run, and hold the pattern (with
        --writer: its writer runs; both stopped, it holds the source's RAM
        up to pages its own writer rewrote since, compare_postcopy).  For a
        killed one: without the return-path capability the source, like
        QEMU's, completes once the stream is flushed to the socket, with no
        word from the destination (counted as "late-unconfirmed"); with it,
        the source waits for SHUT(0), so the destination must have been
        completed when it was killed (its status was read just before)."""
        if rec["fault"] == "reset":
            wait_mig(dst, ("completed",), 10, bad=("failed", "cancelled"))
            ft.wait_runstate(dst, "running")
            if self.ctx.writer:
                writer_writes(dst, "destination of a late reset")
                out = check_migrated(self.ctx, src, dst,
                                     "destination of a late reset")
                rec["src_writer"] = out["src"]
                rec["late_cmp"] = out["cmp"]
                rec["src_checked"] = True
            else:
                check_ram(self.ctx, dst, "destination of a late reset")
        elif not rec["return_path"]:
            if rec["dst_status_at_fault"] != "completed":
                rec["outcome"] = "late-unconfirmed"
        elif rec["dst_status_at_fault"] != "completed":
            ft.fail("the source reports completed, but the destination was "
                    "killed in status "
                    f"{rec['dst_status_at_fault']!r} (source: "
                    f"{rec['src_status_at_fault']!r} at the kill)")

    def dst_fate(self, dst):
        """What a destination whose link was reset did (recorded only)."""
        try:
            rc = dst.proc.wait(10)
            return rc
        except Exception:
            try:
                return "alive:" + mig(dst).get("status", "?")
            except Exception as e:
                return f"alive:unreachable ({e})"

    def follow_up(self, src, rec):
        """With --writer the destination starts with -S, so that it has
        not written when both are dumped: its RAM must be the source's
        byte for byte (compare_precopy); then cont, and its writer must
        run."""
        w = self.ctx.writer
        dst, uri = start_destination(self.ctx, name="dst2",
                                     extra=["-S"] if w else [])
        src.qmp.cmd_args("migrate-set-parameters", {"max-bandwidth": 0})
        src.qmp.cmd("migrate", uri=uri)
        wait_mig(src, ("completed",), 60, bad=("failed", "cancelled"))
        wait_mig(dst, ("completed",), 30, bad=("failed", "cancelled"))
        ft.wait_runstate(src, "postmigrate")
        if not w:
            ft.wait_runstate(dst, "running")
            check_ram(self.ctx, dst, "follow-up destination")
            return
        ft.wait_runstate(dst, "paused")
        out = check_migrated(self.ctx, src, dst, "follow-up destination",
                             exact=True)
        rec["follow_up_writer"] = out["src"]
        dst.qmp.cmd("cont")
        ft.wait_runstate(dst, "running")
        writer_writes(dst, "follow-up destination after cont")

    def describe(self, rec):
        s = (f"{rec.get('fault')}{' +rp' if rec.get('return_path') else ''} "
             f"at {rec.get('at', 0):.2f}s -> {rec.get('outcome', '?')}")
        if "fail_latency" in rec:
            s += f" in {rec['fail_latency']:.2f}s"
        if "dst_exit" in rec:
            s += f", dst exit {rec['dst_exit']}"
        if "follow_up" in rec:
            s += f", follow-up migration ok ({rec['follow_up']:.1f}s)"
        return s

    def summary(self):
        s = super().summary()
        recs = self.records
        s["faults"] = count(self.records, "fault")
        s["outcomes"] = count(recs, "outcome")
        s["by_fault"] = {f"{f}{'+rp' if rp else ''}":
                         count([r for r in recs if r.get("fault") == f and
                                r.get("return_path") == rp], "outcome")
                         for f in ("reset", "kill-dst") for rp in (False, True)}
        s["fail_latency"] = stats([r.get("fail_latency") for r in recs
                                   if r.get("outcome") == "failed"])
        s["follow_ups"] = sum("follow_up" in r for r in recs)
        s["errors"] = count([{"e": norm(r["error"])} for r in recs if "error" in r], "e")
        s["dst_exit_after_reset"] = count(recs, "dst_exit")
        if self.ctx.writer:
            s["writer"] = {
                "resumed_s": stats([r.get("writer_resumed_s") for r in recs]),
                "src_regions_checked": sum("src_writer" in r for r in recs),
                "src_pages_written": stats([r["src_writer"]["dirtier"]
                                            for r in recs if "src_writer" in r]),
                "late_compared": sum("late_cmp" in r for r in recs),
                "late_rewritten": stats([r["late_cmp"]["rewritten"]
                                         for r in recs if "late_cmp" in r]),
                "follow_ups_identical": sum("follow_up_writer" in r
                                            for r in recs)}
        return s

    def table(self, s):
        return [("runs", s["runs"]), ("ok", s["ok"]), ("violations", s["violations"]),
                ("faults", s["faults"]), ("outcomes", s["outcomes"]),
                ("by fault (+rp: return-path on)", s["by_fault"]),
                ("fault -> failed", fmt_stats(s["fail_latency"])),
                ("follow-up migrations ok", s["follow_ups"]),
                ("dst exit after reset", s["dst_exit_after_reset"]),
                ("error-desc", s["errors"])] + writer_rows(s)


class Incoming(Precopy):
    name = "incoming"

    def run(self, i, rng, rec):
        ctx = self.ctx
        transport = "unix" if rng.random() < self.args.unix_share else "tcp"
        at = rng.uniform(0, self.calibration)
        rec.update(fault="kill-src", transport=transport, at=round(at, 3))
        own = ft.make_tmpdir("fault-incoming-")
        tmp = os.path.join(own, "tmp")
        os.mkdir(tmp)
        params = {"x-net-timeout": 2000}
        if transport == "unix":
            sock = os.path.join(own, "mig.sock")
            dst, uri = start_destination(ctx, env={"TMPDIR": tmp},
                                         params=params, uri=f"unix:{sock}")
            src_uri, rel = uri, None
        else:
            dst, uri = start_destination(ctx, env={"TMPDIR": tmp}, params=params)
            rel = relay.Relay(port_of(uri))
            src_uri = rel.uri
        src = start_source(ctx)
        src.qmp.cmd_args("migrate-set-parameters",
                         {"max-bandwidth": self.args.bandwidth * MiB})
        src.qmp.cmd("migrate", uri=src_uri)
        t0 = time.time()
        sleep_until(t0 + at)
        rec["src_status_at_fault"] = mig(src).get("status")
        src.proc.kill()
        src.proc.wait(10)
        tk = time.time()
        # the destination must exit (or, if the stream was complete, run)
        deadline = tk + 15
        dst_status = None
        while dst.proc.poll() is None and time.time() < deadline:
            try:
                dst_status = mig(dst).get("status")
            except (AssertionError, OSError):
                dst_status = None       # exiting right now
            if dst_status == "completed":
                break
            if (dst_status in ("none", "setup") and time.time() > tk + 3
                    and (rel is None or not rel.conns)):
                break                   # nothing ever arrived
            time.sleep(0.05)
        rc = dst.proc.poll()
        if rc is None:
            if dst_status == "completed":
                rec["outcome"] = "late"
                ft.wait_runstate(dst, "running")
                if ctx.writer:
                    writer_writes(dst, "destination of a finished stream")
                    stop_vm(dst)
                wr = check_ram(ctx, dst, "destination of a finished stream")
                if wr:
                    rec["dst_writer"] = wr
                return
            if dst_status in ("none", "setup"):
                rec["outcome"] = "missed"
                return
            ft.fail(f"destination still alive {time.time() - tk:.1f}s after "
                    f"the source was killed (migration status {dst_status})")
        rec["outcome"] = "exited"
        rec["exit"] = rc
        rec["exit_latency"] = round(time.time() - tk, 3)
        rec["stderr"] = stderr_tail(dst)
        if rc != 1:
            ft.fail(f"destination exited with status {rc}, expected 1")
        left = []
        pids = processes_naming(dst.dir)
        if pids:
            left.append(f"processes naming {dst.dir}: {pids}")
        if transport == "tcp":
            left += listening_tcp(port_of(uri))
        else:
            if os.path.exists(sock):
                left.append(f"unix socket file {sock} still exists")
            left += unix_socket_entries(sock)
        if os.listdir(tmp):
            left.append(f"files in its TMPDIR: {os.listdir(tmp)}")
        rec["qmp_socket_left"] = os.path.exists(dst.qmp_path)
        if left:
            ft.fail("the destination left things behind: " + "; ".join(left))

    def describe(self, rec):
        s = (f"kill-src ({rec.get('transport')}) at {rec.get('at', 0):.2f}s -> "
             f"{rec.get('outcome', '?')}")
        if "exit" in rec:
            s += f" status {rec['exit']} in {rec['exit_latency']:.2f}s"
        if rec.get("stderr"):
            s += f": {load_error(rec['stderr'])}"
        return s

    def summary(self):
        s = Campaign.summary(self)
        recs = self.records
        s["transports"] = count(self.records, "transport")
        s["outcomes"] = count(recs, "outcome")
        s["exit_status"] = count(recs, "exit")
        s["exit_latency"] = stats([r.get("exit_latency") for r in recs])
        s["load_error"] = count([{"e": norm(load_error(r["stderr"]))}
                                 for r in recs if r.get("stderr")], "e")
        s["qmp_socket_left"] = count(recs, "qmp_socket_left")
        if self.ctx.writer:
            s["writer"] = {"late_dst_checked": sum("dst_writer" in r
                                                   for r in recs)}
        return s

    def table(self, s):
        return [("runs", s["runs"]), ("ok", s["ok"]), ("violations", s["violations"]),
                ("transports", s["transports"]), ("outcomes", s["outcomes"]),
                ("exit status", s["exit_status"]),
                ("kill -> exit", fmt_stats(s["exit_latency"])),
                ("load error on stderr", s["load_error"]),
                ("QMP socket file left (info)", s["qmp_socket_left"])] + writer_rows(s)


class Postcopy(Campaign):
    name = "postcopy"

    def pair(self):
        ctx = self.ctx
        src = start_source(ctx)
        dst = ft.VM(vm_args(ctx, "-incoming", "defer"), name="dst",
                    serial=False).launch()
        for vm in (src, dst):
            set_caps(vm, postcopy_ram=True)
        src.qmp.cmd_args("migrate-set-parameters", {
            "max-bandwidth": self.args.bandwidth * MiB,
            "max-postcopy-bandwidth": self.args.postcopy_bandwidth * MiB})
        port = ft.free_tcp_port()
        dst.qmp.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        rel = relay.Relay(port)
        src.qmp.cmd("migrate", uri=rel.uri)
        src.qmp.cmd("migrate-start-postcopy")
        for vm in (src, dst):
            wait_mig(vm, ("postcopy-active", "completed"), 30,
                     bad=("failed", "cancelled"))
        return src, dst, rel, time.time()

    def probe(self, dst, rec):
        """With --writer: did the destination's writer write a page while
        the migration was still in postcopy (read before the status)?"""
        if not self.ctx.writer:
            return
        pages = writer_info(dst)["pages-written"]
        if pages and mig(dst).get("status") != "completed":
            rec["dst_wrote_in_postcopy"] = max(
                pages, rec.get("dst_wrote_in_postcopy", 0))

    def finish(self, src, dst, rec):
        for vm in (src, dst):
            wait_mig(vm, ("completed",), 120, bad=("failed", "cancelled"))
        ft.wait_runstate(dst, "running")
        ft.wait_runstate(src, "postmigrate")
        if not self.ctx.writer:
            check_ram(self.ctx, dst, "destination")
            check_ram(self.ctx, src, "source")
            return
        # The destination's writer ran since the switch: a page it wrote
        # before the page arrived was a userfault.
        rec["postcopy_faults"] = faults = mig(dst).get("postcopy-faults")
        if rec.get("dst_wrote_in_postcopy") and not faults:
            ft.fail(f"the destination's writer wrote "
                    f"{rec['dst_wrote_in_postcopy']} pages in postcopy, but "
                    f"postcopy-faults is {faults!r}")
        writer_writes(dst, "destination after completion")
        out = check_migrated(self.ctx, src, dst, "postcopy")
        rec["src_generation"] = out["src"]["control"]
        rec["dst_rewritten"] = out["cmp"]["rewritten"]

    def calibrate(self, cal):
        src, dst, rel, t0 = self.pair()
        wait_mig(src, ("completed",), 120, bad=("failed", "cancelled"))
        cal["duration"] = time.time() - t0
        self.finish(src, dst, cal)

    def run(self, i, rng, rec):
        kinds = ("reset", "blackhole") if i % 2 == 0 else ("blackhole", "reset")
        nbreaks = 2 if rng.random() < self.args.second_break else 1
        ats = [rng.uniform(0, self.calibration),
               rng.uniform(0, self.calibration / 2)][:nbreaks]
        rec.update(breaks=[{"kind": k, "at": round(a, 3)}
                           for k, a in zip(kinds, ats)])
        src, dst, rel, t_active = self.pair()
        t_from = t_active
        for b, (kind, at) in enumerate(zip(kinds, ats)):
            brk = rec["breaks"][b]
            sleep_until(t_from + at)
            self.probe(dst, rec)
            st = mig(src).get("status")
            if st == "completed":
                brk["late"] = True      # nothing left to break
                break
            tf = time.time()
            if kind == "reset":
                rel.reset()
            else:
                rel.blackhole()
                for vm in (src, dst):
                    try:
                        vm.qmp.cmd("migrate-pause")
                    except ft.QMPError as e:
                        # paused already by itself is fine; say so
                        brk.setdefault("pause_refused", []).append(
                            f"{vm.name}: {e.desc}")
            for vm in (src, dst):
                wait_mig(vm, ("postcopy-paused",), 30,
                         bad=("failed", "cancelled", "completed"))
            brk["pause_s"] = round(time.time() - tf, 3)
            brk["recovery_s"], brk["resume_attempts"] = self.recover(src, dst, rel)
            t_from = time.time()
        self.probe(dst, rec)
        self.finish(src, dst, rec)
        pauses = [mig(vm).get("x-postcopy-pauses") for vm in (src, dst)]
        rec["pauses"] = pauses
        rec["total_s"] = round(time.time() - t_active, 2)

    def recover(self, src, dst, rel):
        """migrate-recover on a fresh port, retarget the relay, resume the
        source through it.  Returns (seconds until both sides are back in
        postcopy-active or completed, resume attempts)."""
        t0 = time.time()
        port = ft.free_tcp_port()
        dst.qmp.cmd("migrate-recover", uri=f"tcp:127.0.0.1:{port}")
        rel.retarget(port)
        attempts = 0
        while True:
            attempts += 1
            src.qmp.cmd("migrate", uri=rel.uri, resume=True)
            info = wait_mig(src, ("postcopy-active", "completed", "postcopy-paused"),
                            30, bad=("failed", "cancelled"))
            # postcopy-paused right after the command may be the old state
            if info["status"] == "postcopy-paused":
                time.sleep(0.2)
                info = wait_mig(src, ("postcopy-active", "completed",
                                      "postcopy-paused"), 30,
                                bad=("failed", "cancelled"))
            if info["status"] != "postcopy-paused":
                break
            if attempts >= 3:
                ft.fail(f"source still postcopy-paused after {attempts} resumes")
        wait_mig(dst, ("postcopy-active", "completed"), 30,
                 bad=("failed", "cancelled"))
        return round(time.time() - t0, 3), attempts

    def describe(self, rec):
        parts = []
        for b in rec.get("breaks", []):
            p = f"{b['kind']} at {b['at']:.2f}s"
            if b.get("late"):
                p += " (late: completed)"
            elif "recovery_s" in b:
                p += f" paused {b['pause_s']:.2f}s recovered {b['recovery_s']:.2f}s"
                if b["resume_attempts"] > 1:
                    p += f" ({b['resume_attempts']} resumes)"
            parts.append(p)
        s = "; ".join(parts)
        if "pauses" in rec:
            s += f" -> completed, RAM equal (pauses src/dst {rec['pauses']})"
        return s

    def summary(self):
        s = Campaign.summary(self)
        recs = self.records
        breaks = [b for r in recs for b in r.get("breaks", [])]
        done = [b for b in breaks if "recovery_s" in b]
        s["breaks_late"] = sum(bool(b.get("late")) for b in breaks)
        s["recovered"] = len(done)
        s["attempted"] = len([b for b in breaks if not b.get("late")])
        s["by_kind"] = {k: sum(b["kind"] == k for b in done)
                        for k in ("reset", "blackhole")}
        s["second_breaks"] = sum(len(r.get("breaks", [])) > 1 for r in recs)
        s["pause_s"] = stats([b["pause_s"] for b in done])
        s["recovery_s"] = stats([b["recovery_s"] for b in done])
        s["recovery_s_by_kind"] = {k: stats([b["recovery_s"] for b in done
                                             if b["kind"] == k])
                                   for k in ("reset", "blackhole")}
        s["extra_resumes"] = sum(b["resume_attempts"] - 1 for b in done)
        s["completed_ram_equal"] = sum(r["ok"] for r in recs)
        if self.ctx.writer:
            s["writer"] = {
                "wrote_in_postcopy": sum(bool(r.get("dst_wrote_in_postcopy"))
                                         for r in recs),
                "wrote_with_faults": sum(bool(r.get("dst_wrote_in_postcopy"))
                                         and bool(r.get("postcopy_faults"))
                                         for r in recs),
                "faults": stats([r.get("postcopy_faults") for r in recs]),
                "rewritten": stats([r.get("dst_rewritten") for r in recs]),
                "src_generation": stats([r.get("src_generation") for r in recs])}
        return s

    def table(self, s):
        return [("runs", s["runs"]), ("ok (completed, RAM equal)", s["ok"]),
                ("violations", s["violations"]),
                ("recovered", f"{s['recovered']}/{s['attempted']} breaks "
                              f"(reset {s['by_kind']['reset']}, blackhole+pause "
                              f"{s['by_kind']['blackhole']}); runs with a 2nd "
                              f"break {s['second_breaks']}; late {s['breaks_late']}"),
                ("fault -> both paused", fmt_stats(s["pause_s"])),
                ("recovery (recover -> both active)", fmt_stats(s["recovery_s"])),
                ("  after reset", fmt_stats(s["recovery_s_by_kind"]["reset"])),
                ("  after blackhole+pause", fmt_stats(s["recovery_s_by_kind"]["blackhole"])),
                ("resumes that had to be repeated", s["extra_resumes"])] + writer_rows(s)


# ---- main ---------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Fault-injection campaigns against ferry's live migration "
                    "(see the docstring and docs/testing.md).")
    p.add_argument("--campaign", choices=CAMPAIGNS + ("all",), default="all")
    p.add_argument("--runs", type=int, help="runs per campaign (default: "
                   "precopy 100, incoming 100, postcopy 20)")
    p.add_argument("--first-run", type=int, default=0,
                   help="number of the first run (to replay run K: "
                        "--first-run K --runs 1 with the same --seed)")
    p.add_argument("--seed", type=int, help="random seed (default: from time)")
    p.add_argument("--build", help="ferry build directory (sets FERRY_BUILD; "
                   "default $FERRY_BUILD, else build)")
    p.add_argument("--out", help="write the results as JSON to this file")
    p.add_argument("--mem", type=int, default=128, help="guest RAM in MiB (128)")
    p.add_argument("--bandwidth", type=int, default=64,
                   help="precopy max-bandwidth, MiB/s (64)")
    p.add_argument("--postcopy-bandwidth", type=int, default=16,
                   help="max-postcopy-bandwidth, MiB/s (16)")
    p.add_argument("--follow-every", type=int, default=10,
                   help="precopy: a follow-up migration every N runs (10)")
    p.add_argument("--unix-share", type=float, default=0.1,
                   help="incoming: share of runs over a unix: socket (0.1)")
    p.add_argument("--second-break", type=float, default=0.3,
                   help="postcopy: share of runs with a second break (0.3)")
    p.add_argument("--keep-going", action="store_true", default=True,
                   help="go on after a violation (always the case; every "
                        "violation is reported, exit status 1)")
    p.add_argument("--writer", metavar="RATE",
                   help="give every VM an x-dirtier writing RATE bytes/s "
                        "(suffix K, M, G: 32M) into the region after the "
                        "pattern, which it keeps writing while it runs "
                        "(a guest that writes its memory); default: none")
    p.add_argument("--writer-pattern", choices=("sweep", "random"),
                   default="sweep", help="x-dirtier's pattern (sweep: in "
                   "order, a sweeping guest)")
    p.add_argument("--writer-size", type=int, default=32,
                   help="the writer's region in MiB, after the pattern (32)")
    p.add_argument("--verbose", action="store_true",
                   help="print every VM command line and relay event")
    a = p.parse_args(argv)
    if a.seed is None:
        a.seed = int(time.time() * 1000) % 1000000007
    if a.mem < 4 or a.follow_every < 1 or (a.runs is not None and a.runs < 0):
        p.error("bad --mem, --follow-every or --runs")
    a.writer_bytes = None
    if a.writer is not None:
        m = re.fullmatch(r"(\d+)([KMG]?)", a.writer.strip(), re.I)
        if not m or int(m.group(1)) == 0:
            p.error(f"--writer {a.writer}: a rate in bytes/s above 0, "
                    "with an optional suffix K, M or G")
        a.writer_bytes = int(m.group(1)) << {"": 0, "K": 10, "M": 20,
                                             "G": 30}[m.group(2).upper()]
        # the pattern (at most 64 MiB, at least 1 MiB) comes first, the
        # region right after it; both must fit in RAM
        if a.writer_size < 1 or a.mem - a.writer_size < 1:
            p.error(f"--writer: --mem {a.mem} leaves no room for a pattern "
                    f"and a {a.writer_size} MiB writer region (--writer-size "
                    f">= 1, --mem >= --writer-size + 1)")
    return a


def main(argv=None):
    global ft, relay, dirtier, VERBOSE
    args = parse_args(argv if argv is not None else sys.argv[1:])
    VERBOSE = args.verbose
    if args.build:
        os.environ["FERRY_BUILD"] = os.path.abspath(args.build)
    elif not os.environ.get("FERRY_BUILD"):
        os.environ["FERRY_BUILD"] = os.path.join(REPO, "build")
    sys.path.insert(0, FUNCTIONAL)
    import ferrytest
    import relay as relay_mod
    import dirtier as dirtier_mod
    ft, relay, dirtier = ferrytest, relay_mod, dirtier_mod
    ft.log = runlog
    ft.require_file(ft.FERRY, "ferry")
    # SIGTERM: unwind, so that ferrytest's atexit kills the VMs and
    # removes the directories
    signal.signal(signal.SIGTERM, lambda n, f: sys.exit(143))

    names = CAMPAIGNS if args.campaign == "all" else (args.campaign,)
    started = time.time()
    say(f"fault-campaign: seed {args.seed}, campaigns {', '.join(names)}, "
        f"ferry {ft.FERRY}, -M none -m {args.mem}, "
        f"{'KVM present' if ft.kvm_usable() else 'no KVM'}"
        + (f", writer {args.writer}/s {args.writer_pattern} over "
           f"{args.writer_size} MiB" if args.writer else ""))
    ctx = Ctx(args)
    classes = {"precopy": Precopy, "incoming": Incoming, "postcopy": Postcopy}
    done = []
    for n in names:
        runs = args.runs if args.runs is not None else DEFAULT_RUNS[n]
        c = classes[n](ctx, runs, args.first_run)
        t = time.time()
        c.execute()
        c.elapsed = time.time() - t
        done.append(c)
    elapsed = time.time() - started

    violations = [v for c in done for v in c.violations]
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "seed": args.seed,
           "argv": sys.argv[1:], "ferry": ft.FERRY,
           "host": f"{platform.node()} {platform.release()} "
                   f"{os.cpu_count()} cpus, kvm={'yes' if ft.kvm_usable() else 'no'}",
           "elapsed_s": round(elapsed, 1), "campaigns": {}, "violations": violations}
    say("")
    say(f"==== summary (seed {args.seed}, {elapsed / 60:.1f} min)")
    for c in done:
        s = c.summary()
        s["elapsed_s"] = round(c.elapsed, 1)
        out["campaigns"][c.name] = {"summary": s, "runs": c.records}
        say(f"-- {c.name} ({c.elapsed / 60:.1f} min, calibration "
            f"{(c.calibration or 0):.2f} s)")
        if c.calibration is None:
            say("   calibration failed")
            continue
        for k, v in c.table(s):
            say(f"   {k:36} {v}")
    if violations:
        say(f"{len(violations)} VIOLATION(S), seed {args.seed}:")
        kinds = {}
        for v in violations:
            k = (v["campaign"], norm(v["what"].splitlines()[0]))
            kinds.setdefault(k, []).append(v["run"])
        for (camp, what), runs in kinds.items():
            say(f"   {camp} runs {', '.join(map(str, runs))}: {what}")
    else:
        say("no violations")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
        say(f"results written to {args.out}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())

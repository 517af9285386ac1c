#!/usr/bin/env python3
"""Postcopy live migration of the sweeping test guest, ferry -> ferry,
-M pc -accel kvm.

Every case ends the same way: the destination's RAM, stopped and dumped,
is checked page by page against the parameters the guest announced on the
SOURCE's serial line, and once continued every vCPU keeps sweeping there
(new digits on the destination's serial).

(a) 2 vCPUs, 1 GiB, delay=0, a precopy that cannot converge, switched by
    ferry-migrate --postcopy-after-precopy --json;
(b) switched at once, postcopy-blocktime on the destination: the vCPU
    threads themselves fault and are counted per vCPU;
(c) -S on the destination: paused after RUN and still paused when
    postcopy completes; while it runs, a sequential 4 MiB read of pages
    not sent yet costs a handful of page requests (source readahead);
(d) 2 MiB hugetlbfs RAM (memfd hugetlb=on, huge pages reserved here and
    given back);
(e) memfd share=on RAM;
(f) postcopy-preempt through a relay that breaks the link twice: a reset
    (both sides pause by themselves), then a black hole with migrate-pause
    on both sides; each time migrate-recover + migrate resume, and the
    vCPUs that faulted meanwhile go on once it is recovered.
"""

import json
import os
import subprocess
import time

import ferrytest as ft
import relay
import test_precopy as tp
from ferrytest import fail, log

SMP = 2
MiB = 1 << 20
# (a): the guest writes all its RAM at GB/s; even slowed down by dirty
# logging it dirties far more than 96 MiB/s, so precopy cannot converge
# under a 20 ms downtime limit and the first pass alone takes ~10 s.
A_BANDWIDTH = "96M"
A_DOWNTIME_MS = 20
# (c): sequential read of not-yet-sent pages.  The source's readahead
# sends 1 MiB after each requested page at once, so 4 MiB need 4 windows;
# the reader also faults on readahead pages still in flight (each such
# request costs no data: the source skips pages already sent), measured
# 17-90 requests in all.  Without readahead: one per page, 1024.
SEQ_READ = 4 * MiB
SEQ_MAX_REQUESTS = 256


def guest_vm(name, mem, seed, backend=None, incoming=None, paused=False):
    machine = "pc,memory-backend=mem0" if backend else "pc"
    args = ["-M", machine, "-accel", "kvm", "-m", mem, "-smp", str(SMP),
            "-kernel", ft.GUEST, "-append",
            f"ncpus={SMP} seed={seed} delay=0"]
    if backend:
        args += ["-object", f"{backend},id=mem0,size={mem}"]
    if incoming:
        args += ["-incoming", incoming]
    if paused:
        args += ["-S"]
    return ft.VM(args, name=name)


def start_pair(tag, mem, seed, backend=None, dst_paused=False):
    """A sweeping source and a destination listening on TCP."""
    src = guest_vm(f"src-{tag}", mem, seed, backend).launch()
    src.wait_serial("guest: ncpus=", timeout=90)
    log(f"{src.name} banner: {src.serial().splitlines()[0]}")
    src.wait_sweeps(SMP, 1, timeout=120)
    uri = f"tcp:127.0.0.1:{ft.free_tcp_port()}"
    dst = guest_vm(f"dst-{tag}", mem, seed, backend, incoming=uri,
                   paused=dst_paused).launch()
    if dst.query_status() != "inmigrate":
        fail(f"{dst.name}: not inmigrate before the migration")
    return src, dst, uri


def set_caps(vm, **caps):
    vm.qmp.cmd("migrate-set-capabilities",
               capabilities=[{"capability": k.replace("_", "-"), "state": v}
                             for k, v in caps.items()])


def wait_migrate_status(vm, want, timeout=60.0):
    deadline = time.time() + timeout
    while True:
        info = vm.qmp.cmd("query-migrate")
        st = info.get("status")
        if st in want:
            return info
        if st in ("failed", "cancelled"):
            fail(f"{vm.name}: migration {st}: {info.get('error-desc')}")
        vm.check_alive()
        if time.time() > deadline:
            fail(f"{vm.name}: migration {st}, wanted {want}")
        time.sleep(0.05)


def check_latency_fields(dinfo):
    """The destination's ferry extension fields after a postcopy."""
    for key in ("postcopy-faults", "postcopy-latency-p50-us",
                "postcopy-latency-p99-us", "postcopy-latency-max-us",
                "postcopy-latency-histogram"):
        if key not in dinfo:
            fail(f"destination query-migrate lacks {key}: {dinfo}")
    p50, p99 = dinfo["postcopy-latency-p50-us"], dinfo["postcopy-latency-p99-us"]
    mx, hist = dinfo["postcopy-latency-max-us"], dinfo["postcopy-latency-histogram"]
    if not p50 <= p99 <= mx:
        fail(f"latency p50 {p50} <= p99 {p99} <= max {mx} does not hold")
    # every requested page placed gives one latency sample
    if sum(hist) != dinfo["postcopy-faults"]:
        fail(f"histogram holds {sum(hist)} samples for "
             f"{dinfo['postcopy-faults']} faults")


def check_blocktime(dinfo, wall_ms):
    """postcopy-blocktime on: one entry per vCPU, the vCPUs really waited,
    and no longer than the migration lasted."""
    vb = dinfo.get("postcopy-vcpu-blocktime")
    if not isinstance(vb, list) or len(vb) != SMP:
        fail(f"postcopy-vcpu-blocktime {vb!r}: want one entry per vCPU")
    if max(vb) <= 0:
        fail(f"no vCPU blocked at all: postcopy-vcpu-blocktime {vb}")
    if max(vb) > wall_ms:
        fail(f"a vCPU blocked {max(vb)} ms in a {wall_ms} ms migration")
    total = dinfo.get("postcopy-blocktime")
    # all vCPUs blocked at once can last no longer than any one of them
    if total is None or total < 0 or total > min(vb):
        fail(f"postcopy-blocktime {total} vs per vCPU {vb}")


def finish_and_check(src, dst, mem, base, dst_state="running"):
    """Both completed: run states, RAM check (stopped), cont, sweeping."""
    src.wait_status("postmigrate", timeout=10)
    dst.wait_status(dst_state, timeout=30)
    if dst_state == "running":
        dst.qmp.cmd("stop")
        dst.wait_status("paused")
    dump = tp.check_destination_ram(dst, ft.parse_size(mem),
                                    src.guest_params(), base)
    os.unlink(dump)
    tp.check_keeps_sweeping(dst, SMP)


def qmp_postcopy(src, dst, uri, mem, base, postcopy_bw, dst_paused=False,
                 during=None):
    """migrate + migrate-start-postcopy at once over QMP; returns the
    source's and the destination's final query-migrate."""
    set_caps(src, postcopy_ram=True, events=True)
    set_caps(dst, postcopy_ram=True, postcopy_blocktime=True)
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=postcopy_bw,
                max_postcopy_bandwidth=postcopy_bw, downtime_limit=50)
    t0 = time.time()
    src.qmp.cmd("migrate", uri=uri)
    src.qmp.cmd("migrate-start-postcopy")
    wait_migrate_status(dst, ("postcopy-active", "completed"))
    if during:
        during()
    sinfo = src.wait_migration(timeout=120)
    dinfo = wait_migrate_status(dst, ("completed",), timeout=30)
    sinfo["wall-ms"] = int((time.time() - t0) * 1000)
    ram = sinfo["ram"]
    log(f"postcopy done in {time.time() - t0:.1f}s: requests "
        f"{ram['postcopy-requests']}, precopy-bytes {ram['precopy-bytes']}, "
        f"postcopy-bytes {ram['postcopy-bytes']}, downtime "
        f"{sinfo['downtime']} ms")
    log(f"destination: { {k: v for k, v in dinfo.items() if k != 'postcopy-latency-histogram'} }")
    check_latency_fields(dinfo)
    return sinfo, dinfo


def test_a_after_precopy_tool():
    mem = "1G"
    src, dst, uri = start_pair("a", mem, 0xa1)
    base = min(src.sweeps(SMP))
    # the tool needs both monitors; give ours back meanwhile
    for vm in (src, dst):
        vm.qmp.close()
        vm.qmp = None
    cmd = [ft.FERRY_MIGRATE, "--src", src.qmp_path, "--dst", dst.qmp_path,
           "--uri", uri, "--postcopy-after-precopy",
           "--max-bandwidth", A_BANDWIDTH, "--downtime-limit",
           str(A_DOWNTIME_MS), "--cap", "postcopy-blocktime=on",
           "--timeout", "150", "--json"]
    log("run: " + " ".join(cmd))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=170)
    for vm in (src, dst):
        vm.qmp = ft.QMP(vm.qmp_path)
    if p.returncode != 0:
        fail(f"ferry-migrate exit {p.returncode}: {p.stdout[-1500:]} "
             f"{p.stderr[-1500:]}")
    out = json.loads(p.stdout)
    s, d, der = out["source"], out["destination"], out["derived"]
    ram = s["ram"]
    log(f"tool: status {out['status']}, passes {der['passes']}, switched "
        f"after {der.get('postcopy-requested-after-ms')} ms, total "
        f"{s.get('total-time')} ms, downtime {s.get('downtime')} ms, "
        f"requests {ram.get('postcopy-requests')}, precopy-bytes "
        f"{ram.get('precopy-bytes')}, postcopy-bytes "
        f"{ram.get('postcopy-bytes')}, faults {d.get('postcopy-faults')}, "
        f"p50 {d.get('postcopy-latency-p50-us')} us, p99 "
        f"{d.get('postcopy-latency-p99-us')} us, vCPU blocktime "
        f"{d.get('postcopy-vcpu-blocktime')}")
    if out["status"] != "completed" or not der.get("postcopy"):
        fail(f"tool says {out['status']}, postcopy {der.get('postcopy')}")
    if der.get("passes", 0) < 2 or ram.get("dirty-sync-count", 0) < 2:
        fail(f"switched before the first pass was over: {der}")
    if ram.get("postcopy-requests", 0) <= 0:
        fail("no page requested in postcopy: the vCPUs never faulted")
    if ram.get("postcopy-bytes", 0) <= 0 or ram.get("precopy-bytes", 0) < \
            ft.parse_size(mem) // 2:
        fail(f"precopy-bytes {ram.get('precopy-bytes')}, postcopy-bytes "
             f"{ram.get('postcopy-bytes')}: not a full first pass")
    check_latency_fields(d)
    check_blocktime(d, der["wall-time-ms"])
    finish_and_check(src, dst, mem, base)


def test_b_immediate_blocktime():
    mem = "512M"
    src, dst, uri = start_pair("b", mem, 0xb2)
    base = min(src.sweeps(SMP))
    sinfo, dinfo = qmp_postcopy(src, dst, uri, mem, base, 100 * MiB)
    ram = sinfo["ram"]
    # the vCPUs sweep far faster than 100 MiB/s: they fault all the time
    if ram["postcopy-requests"] < 100:
        fail(f"only {ram['postcopy-requests']} pages requested in postcopy")
    if ram["postcopy-bytes"] < 4 * ram["precopy-bytes"]:
        fail(f"switched at once, yet precopy-bytes {ram['precopy-bytes']} "
             f"vs postcopy-bytes {ram['postcopy-bytes']}")
    check_blocktime(dinfo, sinfo["wall-ms"])
    finish_and_check(src, dst, mem, base)


def test_c_paused_destination_and_locality():
    mem = "256M"
    src, dst, uri = start_pair("c", mem, 0xc3, dst_paused=True)
    base = min(src.sweeps(SMP))
    seen = {}

    def during():
        # the destination ran RUN but must not start its vCPUs
        if dst.query_status() != "paused":
            fail(f"-S destination is {dst.query_status()} in postcopy")
        # Far ahead of the background scan (it restarts at 0 at the
        # switch): only this read faults here, the vCPUs are stopped.
        addr = ft.parse_size(mem) - 16 * MiB
        r0 = src.qmp.cmd("query-migrate")["ram"]["postcopy-requests"]
        t0 = time.time()
        dst.pmemsave(SEQ_READ, path=os.path.join(dst.dir, "seq.dump"),
                     addr=addr)
        ms = (time.time() - t0) * 1000
        r1 = src.qmp.cmd("query-migrate")["ram"]["postcopy-requests"]
        st = src.qmp.cmd("query-migrate")["status"]
        seen["requests"] = r1 - r0
        log(f"sequential {SEQ_READ >> 20} MiB read at {addr:#x}: "
            f"{r1 - r0} page requests, {ms:.0f} ms (source {st})")
        if st != "postcopy-active":
            fail(f"postcopy ended ({st}) before the read: slow it down")
        if not 1 <= r1 - r0 <= SEQ_MAX_REQUESTS:
            fail(f"a sequential {SEQ_READ >> 20} MiB read cost {r1 - r0} "
                 f"page requests (want 1..{SEQ_MAX_REQUESTS})")

    bw = 24 * MiB
    sinfo, _ = qmp_postcopy(src, dst, uri, mem, base, bw, dst_paused=True,
                            during=during)
    if "requests" not in seen:
        fail("the locality read did not run")
    # readahead and urgent pages are charged to max-postcopy-bandwidth:
    # the vCPUs are stopped, so the whole RAM moves at that rate
    ideal_ms = ft.parse_size(mem) * 1000 // bw
    if sinfo["total-time"] < ideal_ms * 0.85:
        fail(f"postcopy took {sinfo['total-time']} ms, RAM size / "
             f"max-postcopy-bandwidth is {ideal_ms} ms: the limit leaks")
    if dst.query_status() != "paused":
        fail(f"-S destination is {dst.query_status()} after postcopy")
    if dst.sweeps(SMP) != [0] * SMP:
        fail("the -S destination ran its vCPUs before cont")
    finish_and_check(src, dst, mem, base, dst_state="paused")


def test_d_hugetlb():
    mem = "256M"
    with ft.hugepages(2 * (ft.parse_size(mem) >> 21) + 8) as ok:
        if not ok:
            return
        backend = "memory-backend-memfd,hugetlb=on,hugetlbsize=2M"
        src, dst, uri = start_pair("d", mem, 0xd4, backend=backend)
        base = min(src.sweeps(SMP))
        sinfo, dinfo = qmp_postcopy(src, dst, uri, mem, base, 64 * MiB)
        if sinfo["ram"]["postcopy-requests"] <= 0:
            fail("no page requested in postcopy")
        finish_and_check(src, dst, mem, base)


def test_e_memfd_shared():
    mem = "256M"
    src, dst, uri = start_pair("e", mem, 0xe5,
                               backend="memory-backend-memfd,share=on")
    base = min(src.sweeps(SMP))
    sinfo, dinfo = qmp_postcopy(src, dst, uri, mem, base, 64 * MiB)
    if sinfo["ram"]["postcopy-requests"] <= 0:
        fail("no page requested in postcopy")
    finish_and_check(src, dst, mem, base)


def wait_both(vms, want, timeout=30.0):
    return [wait_migrate_status(vm, want, timeout) for vm in vms]


def recover(src, dst, link):
    """Both paused: a new destination port, the relay pointed at it, and
    the source resumed through the relay."""
    wait_both((src, dst), ("postcopy-paused",))
    port = ft.free_tcp_port()
    dst.qmp.cmd("migrate-recover", uri=f"tcp:127.0.0.1:{port}")
    link.retarget(port)
    t0 = time.time()
    src.qmp.cmd("migrate", uri=link.uri, resume=True)
    wait_both((src, dst), ("postcopy-active", "completed"))
    log(f"recovered in {(time.time() - t0) * 1000:.0f} ms")


def test_f_recovery_preempt():
    mem = "512M"
    src, dst, uri = start_pair("f", mem, 0xf6)
    base = min(src.sweeps(SMP))
    link = relay.Relay(int(uri.rsplit(":", 1)[1]))
    for vm in (src, dst):
        set_caps(vm, postcopy_ram=True, postcopy_preempt=True)

    def during():
        time.sleep(1)
        link.reset()
        recover(src, dst, link)
        time.sleep(1)
        link.blackhole()
        for vm in (src, dst):
            vm.qmp.cmd("migrate-pause")
        recover(src, dst, link)

    try:
        sinfo, dinfo = qmp_postcopy(src, dst, link.uri, mem, base,
                                    64 * MiB, during=during)
    finally:
        relay.stop_all()
    for info, side in ((sinfo, "source"), (dinfo, "destination")):
        if info.get("x-postcopy-pauses") != 2:
            fail(f"{side}: x-postcopy-pauses {info.get('x-postcopy-pauses')},"
                 " want 2")
    # the preempt channels (connections 1, 3, 5) carried urgent pages
    if not any(c.main > 0 for c in link.conns[1::2]):
        fail(f"no bytes on any preempt channel: "
             f"{[(c.index, c.main) for c in link.conns]}")
    finish_and_check(src, dst, mem, base)


if __name__ == "__main__":
    ft.require_kvm()
    ft.require_file(ft.GUEST_CHECK, "guest RAM checker")
    ft.require_file(ft.FERRY_MIGRATE, "ferry-migrate")
    ft.main([test_c_paused_destination_and_locality, test_b_immediate_blocktime,
             test_e_memfd_shared, test_d_hugetlb, test_f_recovery_preempt,
             test_a_after_precopy_tool],
            timeout=280)

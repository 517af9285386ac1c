"""Postcopy live migration end to end, ferry -> ferry.

RAM-only guests (-M none) with random content loaded by -device loader:
the destination touches every page with pmemsave while in postcopy (so the
pages come through userfaultfd page requests), and its RAM must equal the
source's byte for byte afterwards.  Variants: anonymous RAM switched at
once, memfd share=on RAM, 2 MiB hugetlbfs RAM (memfd hugetlb=on, huge
pages reserved for the test and given back), and the destination killed
during postcopy (the source pauses, keeps answering QMP with the guest
stopped, and a recovery towards nobody fails back into postcopy-paused).
"""

import os
import shutil
import socket
import tempfile
import time

import ferrytest as ft
import streamgen as sg
from ferrytest import VM, log, fail

MEM = 256 << 20
PATTERN = 64 << 20


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pattern_file(size=PATTERN):
    d = ft.make_tmpdir("ferrytest-pc-")
    path = os.path.join(d, "pattern.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return path


def set_caps(vm, **caps):
    vm.qmp.cmd("migrate-set-capabilities",
               capabilities=[{"capability": k.replace("_", "-"), "state": v}
                             for k, v in caps.items()])


def wait_status(vm, want, timeout=60.0, bad=("failed", "cancelled")):
    deadline = time.time() + timeout
    while True:
        st = vm.qmp.cmd("query-migrate")
        if st.get("status") in want:
            return st
        if st.get("status") in bad:
            fail(f"{vm.name}: migration {st.get('status')}: {st} {vm.stderr()[-1000:]}")
        vm.check_alive()
        if time.time() > deadline:
            fail(f"{vm.name}: status {st.get('status')}, wanted {want}")
        time.sleep(0.05)


def pair(backend=(), mem=MEM, pattern=None, postcopy_bw=20_000_000,
         bandwidth=20 << 20):
    """Source with content, destination listening; both with postcopy-ram."""
    pattern = pattern or pattern_file(min(PATTERN, mem // 2))
    port = free_port()
    machine = ["-M", "none"] if not backend else \
        ["-M", "none,memory-backend=mem0"] + list(backend)
    src = VM(machine + ["-m", str(mem >> 20),
                        "-device", f"loader,file={pattern},addr=0x100000,force-raw=on"],
             name="src", serial=False).launch()
    dst = VM(machine + ["-m", str(mem >> 20),
                        "-incoming", f"tcp:127.0.0.1:{port}"],
             name="dst", serial=False).launch()
    set_caps(src, postcopy_ram=True, events=True)
    set_caps(dst, postcopy_ram=True, postcopy_blocktime=True)
    src.qmp.cmd("migrate-set-parameters", **{
        "max-bandwidth": bandwidth, "max-postcopy-bandwidth": postcopy_bw})
    return src, dst, f"tcp:127.0.0.1:{port}"


def postcopy_and_compare(src, dst, uri, mem=MEM):
    t0 = time.time()
    src.qmp.cmd("migrate", uri=uri)
    src.qmp.cmd("migrate-start-postcopy")
    wait_status(dst, ("postcopy-active", "completed"))
    # Touch every page on the destination while the rest streams in.
    dst_dump = dst.pmemsave(mem)
    sst = wait_status(src, ("completed",))
    dstst = wait_status(dst, ("completed",))
    total = time.time() - t0
    log(f"source: {sst}")
    log(f"destination: {dstst}")
    src_dump = src.pmemsave(mem)
    with open(src_dump, "rb") as a, open(dst_dump, "rb") as b:
        pa, pb = a.read(), b.read()
    if pa != pb:
        bad = [i for i in range(0, mem, 4096) if pa[i:i + 4096] != pb[i:i + 4096]]
        fail(f"{len(bad)} pages differ, first at 0x{bad[0]:x}")
    ram = sst["ram"]
    if ram["postcopy-requests"] <= 0:
        fail("no page was requested in postcopy")
    if ram["postcopy-bytes"] <= 0:
        fail("no postcopy-bytes counted")
    if dstst.get("postcopy-faults", 0) <= 0 or "postcopy-latency-p50-us" not in dstst:
        fail(f"destination latency stats missing: {dstst}")
    if "postcopy-vcpu-blocktime" not in dstst:
        fail(f"postcopy-blocktime missing: {dstst}")
    st = dst.qmp.cmd("query-status")
    log(f"ok in {total:.2f}s: {ram['postcopy-requests']} requests, "
        f"latency p50 {dstst['postcopy-latency-p50-us']} us, "
        f"p99 {dstst['postcopy-latency-p99-us']} us; dst {st['status']}")
    if st["status"] != "running":
        fail(f"destination should run after RUN, is {st['status']}")
    srcst = src.qmp.cmd("query-status")
    if srcst["status"] != "postmigrate":
        fail(f"source runstate {srcst['status']}, expected postmigrate")
    return sst, dstst


def test_anon_immediate():
    src, dst, uri = pair()
    # Not before migrate: QEMU refuses it in state "none".
    try:
        src.qmp.cmd("migrate-start-postcopy")
        fail("migrate-start-postcopy accepted before any migration")
    except ft.QMPError as e:
        if "after migration has been started" not in e.desc:
            fail(f"unexpected error: {e.desc}")
    postcopy_and_compare(src, dst, uri)
    src.shutdown()
    dst.shutdown()


def test_start_postcopy_needs_capability():
    vm = VM(["-M", "none", "-m", "64"], name="nocap", serial=False).launch()
    try:
        vm.qmp.cmd("migrate-start-postcopy")
        fail("migrate-start-postcopy accepted without postcopy-ram")
    except ft.QMPError as e:
        if "Enable postcopy with migrate_set_capability" not in e.desc:
            fail(f"unexpected error: {e.desc}")
    vm.shutdown()


def test_memfd_shared():
    src, dst, uri = pair(backend=["-object",
                                  f"memory-backend-memfd,id=mem0,size={MEM >> 20}M,share=on"])
    postcopy_and_compare(src, dst, uri)
    src.shutdown()
    dst.shutdown()


def test_file_shared():
    """memory-backend-file share=on: a file on tmpfs (userfaultfd's MISSING
    mode covers anonymous, shmem and hugetlbfs memory, not disk files)."""
    shm = "/dev/shm"
    if not os.path.isdir(shm) or os.statvfs(shm).f_bavail * os.statvfs(shm).f_frsize < 4 * MEM:
        log("SKIPPED test_file_shared: /dev/shm (tmpfs) is missing or too "
            "small for file-backed shared RAM")
        return
    d = tempfile.mkdtemp(prefix="ferrytest-shm-", dir=shm)
    try:
        # a directory: each VM creates its own unlinked file in it
        src, dst, uri = pair(backend=["-object",
                                      f"memory-backend-file,id=mem0,size={MEM >> 20}M,"
                                      f"mem-path={d},share=on"])
        postcopy_and_compare(src, dst, uri)
        src.shutdown()
        dst.shutdown()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_hugetlb():
    mem = 64 << 20
    with ft.hugepages(2 * (mem >> 21) + 4) as ok:
        if not ok:
            return
        src, dst, uri = pair(backend=["-object",
                                      f"memory-backend-memfd,id=mem0,size={mem >> 20}M,"
                                      "hugetlb=on,hugetlbsize=2M"], mem=mem)
        postcopy_and_compare(src, dst, uri, mem=mem)
        src.shutdown()
        dst.shutdown()


def test_destination_killed():
    """A source cannot tell a dead destination from a broken link: it
    pauses (as QEMU does), keeps answering QMP with the guest stopped,
    refuses what would lose the guest, and a recovery towards nobody
    fails back into postcopy-paused."""
    # Slow background stream so that postcopy lasts long enough to kill.
    src, dst, uri = pair(postcopy_bw=2_000_000)
    src.qmp.cmd("migrate", uri=uri)
    src.qmp.cmd("migrate-start-postcopy")
    wait_status(src, ("postcopy-active",))
    wait_status(dst, ("postcopy-active",))
    time.sleep(0.3)
    dst.kill()
    st = wait_status(src, ("postcopy-paused",), timeout=30)
    if st.get("x-postcopy-pauses") != 1:
        fail(f"pause not counted: {st}")
    rs = src.qmp.cmd("query-status")
    if rs["status"] == "running":
        fail("source resumed a guest whose RAM is partly on a dead host")
    for cmd, args, want in (
            ("migrate_cancel", {}, "refused in postcopy-paused"),
            ("migrate", {"uri": uri}, "paused"),
            ("migrate-recover", {"uri": uri}, "only be run when postcopy "
             "is paused")):
        try:
            src.qmp.cmd(cmd, **args)
            fail(f"{cmd} accepted on a paused source")
        except ft.QMPError as e:
            if want not in e.desc:
                fail(f"{cmd}: unclear refusal {e.desc!r}")
    # Nobody listens there: the attempt fails and the source pauses again.
    src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{free_port()}", resume=True)
    deadline = time.time() + 30
    while True:
        st = src.qmp.cmd("query-migrate")
        if st["status"] == "postcopy-paused" and \
                st.get("x-postcopy-pauses") == 1 and \
                "recovery over" in src.stderr():
            break
        if st["status"] not in ("postcopy-paused", "postcopy-recover"):
            fail(f"failed recovery left the source {st['status']}")
        if time.time() > deadline:
            fail(f"source did not pause again after a failed recovery: {st}")
        time.sleep(0.1)
    src.check_alive()
    src.kill()


def ram_in_package_stream(mem):
    """A postcopy stream whose PACKAGED blob carries a RAM page after
    POSTCOPY_LISTEN: that page would be loaded by the main loader while
    the listen thread owns the RAM channel."""
    page = sg.page_pattern(0x200000)
    pkg = sg.Stream()
    pkg.command(sg.CMD_LISTEN)
    pkg.ram_part(1, [("ram", 0x200000, page)])
    pkg.command(sg.CMD_RUN)
    blob = pkg.bytes()
    s = sg.Stream().header()
    s.ram_start(1, [("ram", mem)])
    s.command(sg.CMD_OPEN_RP)
    s.command(sg.CMD_ADVISE, sg.be64(4096) + sg.be64(4096))
    s.command(sg.CMD_DISCARD, bytes([0, 3]) + b"ram" + bytes([0]) +
              sg.be64(0) + sg.be64(4096))
    s.command(sg.CMD_PACKAGED, sg.be32(len(blob)))
    s.put(blob)
    s.ram_end(1)
    s.put(bytes([sg.EOF_]))
    return s.bytes()


def test_ram_inside_package_refused():
    """RAM records inside the package after LISTEN fail the load with a
    clear error; the destination never reports completed."""
    mem = 64 << 20
    d = ft.make_tmpdir("ferrytest-pkg-")
    path = os.path.join(d, "mig.sock")
    dst = VM(["-M", "none", "-m", str(mem >> 20), "-incoming", "defer"],
             name="dst", serial=False).launch()
    set_caps(dst, postcopy_ram=True)
    dst.qmp.cmd("migrate-incoming", uri=f"unix:{path}")
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    try:
        sock.sendall(ram_in_package_stream(mem))
        rc = dst.wait_exit(30)
    finally:
        sock.close()
    err = dst.stderr()
    log(f"destination exited {rc}: {err.strip()[-300:]}")
    if rc == 0:
        fail("the destination accepted RAM inside the PACKAGED blob")
    if "not inside the PACKAGED blob" not in err:
        fail(f"unclear error: {err[-1000:]}")


if __name__ == "__main__":
    ft.main([test_ram_inside_package_refused,
             test_start_postcopy_needs_capability, test_anon_immediate,
             test_memfd_shared, test_file_shared, test_hugetlb, test_destination_killed])

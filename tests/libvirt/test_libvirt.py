#!/usr/bin/env python3
"""libvirt 9.0 drives an emulator: two private libvirt daemons on this host
(libvirtenv.py), a diskless domain, virsh only.

LIBVIRT_EMULATOR=ferry (default) or qemu chooses the domain's <emulator>:

  ferry, /dev/kvm usable   the test guest on machine pc (type kvm): it sweeps
                           its RAM, which guest-check verifies page by page
  ferry, no KVM            machine x-ram (RAM only, no vCPUs; type 'qemu',
                           which ferry runs as "no accelerator"): 32 MiB of
                           random data loaded by -device loader on the first
                           start only, so what the others hold can only have
                           come through the migration stream
  qemu                     real QEMU 7.2 under TCG with the test guest: the
                           harness itself, known good

Scenarios: lifecycle (start, suspend/resume, save + restore), precopy
(migrate --live A -> B), postcopy (B -> A: --postcopy-after-precopy with
the sweeping guest; migrate-postcopy and pages faulted on the destination
with the RAM-only one), a destination that dies (virsh reports the failure,
the source domain keeps running, its RAM intact), and the clean-up.  After
each step the domain's RAM is checked page by page (pmemsave through
virsh qemu-monitor-command) and domjobinfo --completed is checked for
sanity.
"""

import filecmp
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import libvirtenv as lv  # noqa: E402
import ferrytest as ft  # noqa: E402
from ferrytest import fail, log  # noqa: E402

EMULATOR = os.environ.get("LIBVIRT_EMULATOR", "ferry")
MEM_MIB = 128
# One vCPU sweeping 16 MiB dirties it faster than 20 MiB/s: capped at that,
# precopy cannot converge and libvirt must switch to postcopy.
REGION_END = 0x1400000
PATTERN_ADDR = 0x100000
PATTERN_SIZE = 32 << 20

_tmp = None
_daemons = {}


def setup():
    lv.require_libvirt()
    global _tmp
    if _tmp is None:
        _tmp = ft.make_tmpdir("ferry-libvirt-")
    for name in ("A", "B"):
        if name not in _daemons:
            _daemons[name] = lv.LibvirtDaemon(name, _tmp)
    return _daemons["A"], _daemons["B"]


class SweepGuest:
    """The test guest (tests/guest) as a domain: it announces its
    parameters on the serial port and sweeps its RAM; guest-check verifies
    a dump of it page by page."""

    sweeps_on_its_own = True

    def __init__(self, name, daemon, emulator, virt_type):
        ft.require_file(ft.GUEST, "test guest")
        self.name = name
        self.serial = os.path.join(_tmp, name + ".serial")
        self.dest_xml = None
        xml = lv.domain_xml(name, emulator, MEM_MIB, virt_type, "pc",
                            kernel=ft.GUEST,
                            cmdline=f"ncpus=1 end={REGION_END:#x}",
                            serial_path=self.serial)
        define_and_start(daemon, name, xml)
        self.params = self.wait_params()
        log(f"{name}: {self.params}")

    def serial_text(self):
        try:
            with open(self.serial, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_params(self, timeout=60):
        deadline = time.time() + timeout
        while "guest: ncpus=" not in self.serial_text():
            if time.time() > deadline:
                fail(f"{self.name}: no parameter line on serial after "
                     f"{timeout}s: {self.serial_text()[:300]!r}")
            time.sleep(0.2)
        return ft.guest_params(self.serial_text())

    def sweeps(self):
        text = self.serial_text()
        if "!" in text:
            fail(f"{self.name}: guest exception on serial: {text[-300:]!r}")
        after = text.split("guest: ncpus=", 1)[1].split("\n", 1)
        return len(re.findall(r"\d", after[1])) if len(after) > 1 else 0

    def wait_running(self, more=3, timeout=60):
        """The guest runs: `more` sweeps complete from now."""
        base = self.sweeps()
        deadline = time.time() + timeout
        while self.sweeps() < base + more:
            if time.time() > deadline:
                fail(f"{self.name}: fewer than {more} sweeps in {timeout}s "
                     f"(serial {self.serial_text()[-200:]!r})")
            time.sleep(0.2)

    def check_frozen(self):
        n = self.sweeps()
        time.sleep(1)
        if self.sweeps() != n:
            fail("the guest swept while paused")

    def dump(self, daemon, tag):
        start, end = self.params["start"], self.params["end"]
        return pmemsave(daemon, self.name, tag, start, end - start)

    def check_dump(self, path):
        p = self.params
        ok, report = ft.guest_check(path, p["ncpus"], p["start"], p["end"],
                                    seed=p["seed"], base=p["start"])
        if not ok:
            fail(f"{path}: guest-check: {report}")
        log(f"guest-check ok: {os.path.basename(path)}")


class RamGuest:
    """A RAM-only domain (ferry's machine x-ram): random data loaded on the
    first start only; every later copy (restore, migration destination) is
    defined without the loader, so the data can only come from the stream."""

    sweeps_on_its_own = False

    def __init__(self, name, daemon, emulator, virt_type):
        self.name = name
        self.pattern = os.path.join(_tmp, name + ".pattern")
        with open(self.pattern, "wb") as f:
            f.write(os.urandom(PATTERN_SIZE))
        uuid = "5e1f0a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
        loader = ["-device", f"loader,file={self.pattern},"
                  f"addr={PATTERN_ADDR:#x},force-raw=on"]
        xml = lv.domain_xml(name, emulator, MEM_MIB, virt_type, "x-ram",
                            uuid=uuid, extra_qemu_args=loader)
        self.dest_xml = os.path.join(_tmp, name + "-dest.xml")
        with open(self.dest_xml, "w") as f:
            f.write(lv.domain_xml(name, emulator, MEM_MIB, virt_type, "x-ram",
                                  uuid=uuid))
        define_and_start(daemon, name, xml)

    def wait_running(self):
        pass

    def check_frozen(self):
        pass

    def dump(self, daemon, tag):
        return pmemsave(daemon, self.name, tag, PATTERN_ADDR, PATTERN_SIZE)

    def check_dump(self, path):
        same_ram(path, self.pattern)


def define_and_start(daemon, name, xml):
    path = os.path.join(_tmp, name + ".xml")
    with open(path, "w") as f:
        f.write(xml)
    daemon.virsh("define", path)
    rc, _, err = daemon.virsh("start", name, timeout=120, check=False,
                              want_rc=True)
    if rc:
        fail(f"{daemon.name}: virsh start {name}: {err.strip()}"
             f"{daemon.domain_log(name)}")


def new_guest(name, daemon):
    if EMULATOR == "qemu":
        ft.require_qemu()
        return SweepGuest(name, daemon, ft.QEMU, "qemu")
    if ft.kvm_usable():
        return SweepGuest(name, daemon, ft.FERRY, "kvm")
    log("no usable /dev/kvm: the domain is ferry's RAM-only machine x-ram "
        "(type 'qemu'); the sweeping-guest variant needs KVM")
    return RamGuest(name, daemon, ft.FERRY, "qemu")


def remove(name, *daemons):
    for d in daemons:
        d.virsh("destroy", name, check=False, timeout=30)
        d.virsh("undefine", name, check=False, timeout=30)


def pmemsave(daemon, name, tag, addr, size):
    path = os.path.join(_tmp, f"{name}-{tag}.ram")
    daemon.qmp(name, "pmemsave", val=addr, size=size, filename=path)
    if os.path.getsize(path) != size:
        fail(f"{path}: {os.path.getsize(path)} bytes, not {size}")
    return path


def same_ram(a, b):
    if not filecmp.cmp(a, b, shallow=False):
        with open(a, "rb") as fa, open(b, "rb") as fb:
            da, db = fa.read(), fb.read()
        bad = [i for i in range(0, min(len(da), len(db)), 4096)
               if da[i:i + 4096] != db[i:i + 4096]]
        fail(f"RAM differs: {a} vs {b}: {len(bad)} pages, first at "
             f"+{bad[0] if bad else 0:#x}")
    log(f"RAM identical: {os.path.basename(a)} == {os.path.basename(b)}")


def migrate_args(g, dst, *flags):
    args = ["migrate", "--live", *flags, g.name, dst.uri, "--migrateuri",
            f"tcp://127.0.0.1:{ft.free_tcp_port()}"]
    return args + (["--xml", g.dest_xml] if g.dest_xml else [])


def migrate(src, dst, g, *flags, timeout=180):
    t = time.time()
    src.virsh(*migrate_args(g, dst, *flags), timeout=timeout)
    log(f"migrate {' '.join(flags)} {src.name} -> {dst.name}: "
        f"{time.time() - t:.1f}s")


def completed_job(daemon, name, operation):
    """domjobinfo --completed, checked for sanity; returns the dict."""
    out = daemon.virsh("domjobinfo", name, "--completed", timeout=30)
    info = lv.parse_jobinfo(out)
    log(f"{daemon.name} domjobinfo --completed {name}: " +
        "; ".join(f"{k}={v}" for k, v in info.items()))
    if info.get("Job type") != "Completed":
        fail(f"{daemon.name}: job type {info.get('Job type')!r}: {out}")
    if info.get("Operation") != operation:
        fail(f"{daemon.name}: operation {info.get('Operation')!r}, "
             f"not {operation!r}")
    elapsed = lv.jobinfo_number(info, "Time elapsed")
    if not 0 < elapsed < 600_000:
        fail(f"{daemon.name}: time elapsed {elapsed} ms")
    data = info.get("Memory processed") or info.get("Data processed")
    if data is None or float(data.split()[0]) <= 0:
        fail(f"{daemon.name}: nothing processed: {info}")
    # QEMU's total also counts its ROMs (128.375 MiB); ferry has none
    total = lv.jobinfo_number(info, "Memory total")
    if not MEM_MIB <= total < MEM_MIB + 1:
        fail(f"{daemon.name}: memory total {total} MiB for {MEM_MIB} MiB")
    if "Total downtime" in info:
        downtime = lv.jobinfo_number(info, "Total downtime")
        if not 0 <= downtime <= elapsed:
            fail(f"{daemon.name}: downtime {downtime} ms of {elapsed} ms")
    return info


def log_since(daemon, mark):
    with open(daemon.log_file, errors="replace") as f:
        f.seek(mark)
        return f.read()


def test_lifecycle():
    a, b = setup()
    g = new_guest("lifecycle", a)
    try:
        g.wait_running()
        a.virsh("suspend", g.name)
        a.wait_state(g.name, "paused")
        g.check_frozen()
        a.virsh("resume", g.name)
        a.wait_state(g.name, "running")
        g.wait_running()

        # save/restore of a paused domain: the same RAM before and after
        a.virsh("suspend", g.name)
        before = g.dump(a, "before-save")
        g.check_dump(before)
        image = os.path.join(_tmp, "lifecycle.save")
        a.virsh("save", g.name, image, timeout=120)
        a.wait_state(g.name, "shut off")
        if not os.path.getsize(image):
            fail("empty save image")
        # a save is a migration to a file: its statistics stay with the
        # (now inactive) domain; a restore records none of its own
        completed_job(a, g.name, "Save")
        restore = ["restore", image] + (["--xml", g.dest_xml]
                                        if g.dest_xml else [])
        a.virsh(*restore, timeout=120)
        a.wait_state(g.name, "paused")       # saved paused, restored paused
        after = g.dump(a, "after-restore")
        same_ram(before, after)
        g.check_dump(after)
        a.virsh("resume", g.name)
        a.wait_state(g.name, "running")
        g.wait_running()
    finally:
        remove(g.name, a, b)


def test_precopy_then_postcopy():
    a, b = setup()
    g = new_guest("pp", a)
    try:
        g.wait_running()
        # --persistent: B keeps the domain (and so its completed job's
        # statistics) after it migrates away again
        migrate(a, b, g, "--persistent")
        b.wait_state(g.name, "running")
        a.wait_state(g.name, "shut off")
        completed_job(a, g.name, "Outgoing migration")
        g.wait_running()
        b.virsh("suspend", g.name)
        g.check_dump(g.dump(b, "after-precopy"))
        b.virsh("resume", g.name)

        mark = os.path.getsize(b.log_file)
        if g.sweeps_on_its_own:
            # capped so that precopy cannot converge: libvirt switches to
            # postcopy once the first pass is over (MIGRATION_PASS 2)
            migrate(b, a, g, "--postcopy", "--postcopy-after-precopy",
                    "--bandwidth", "20")
        else:
            postcopy_touching_destination(b, a, g)
        a.wait_state(g.name, "running")
        qmp = log_since(b, mark)
        if "migrate-start-postcopy" not in qmp or \
                '"status": "postcopy-active"' not in qmp:
            fail("the migration did not go through postcopy-active")
        b.wait_state(g.name, "shut off")
        info = completed_job(b, g.name, "Outgoing migration")
        requests = lv.jobinfo_number(info, "Postcopy requests")
        if not g.sweeps_on_its_own and requests <= 0:
            fail("no page was requested by the destination in postcopy")
        log(f"postcopy requests: {requests:.0f}")
        g.wait_running()
        a.virsh("suspend", g.name)
        g.check_dump(g.dump(a, "after-postcopy"))
    finally:
        remove(g.name, a, b)


def postcopy_touching_destination(src, dst, g):
    """virsh migrate --postcopy in the background, virsh migrate-postcopy
    while it copies, and the destination's RAM read (pmemsave) during
    postcopy, so pages come through page requests."""
    cmd = [lv.VIRSH, "-c", src.uri] + migrate_args(
        g, dst, "--postcopy", "--bandwidth", "8", "--postcopy-bandwidth", "4")
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        src.migrate_postcopy(g.name, p)
        dst.wait_state(g.name, "running", timeout=60)
        # libvirt holds qemu-monitor-command back until its migration job
        # ends; ferry's monitor takes a second client on the same socket.
        touched = os.path.join(_tmp, f"{g.name}-during-postcopy.ram")
        q = ft.QMP(monitor_socket(dst, g.name))
        q.cmd("pmemsave", val=PATTERN_ADDR, size=PATTERN_SIZE,
              filename=touched)
        q.close()
        if p.poll() is not None:
            fail("the migration ended before the destination read its RAM")
        out, err = p.communicate(timeout=180)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if p.returncode:
        fail(f"virsh migrate --postcopy exited {p.returncode}: {err.strip()}")
    g.check_dump(touched)


def monitor_socket(daemon, name):
    """The QMP socket libvirt made for the running domain."""
    import glob
    found = glob.glob(os.path.join(daemon.dir, "var/lib/libvirt/qemu",
                                   f"domain-*-{name}", "monitor.sock"))
    if len(found) != 1:
        fail(f"{daemon.name}: monitor socket of {name}: {found}")
    return found[0]


def test_destination_dies():
    """The destination's emulator is killed mid-migration: virsh reports the
    failure and the source domain keeps running, its RAM intact."""
    a, b = setup()
    g = new_guest("dies", a)
    try:
        g.wait_running()
        cmd = [lv.VIRSH, "-c", a.uri] + migrate_args(g, b, "--bandwidth", "2")
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        pidfile = os.path.join(b.dir, "run/libvirt/qemu", g.name + ".pid")
        deadline = time.time() + 60
        while not os.path.exists(pidfile) or not open(pidfile).read().strip():
            if time.time() > deadline or p.poll() is not None:
                fail(f"destination never started: {p.communicate()}")
            time.sleep(0.1)
        time.sleep(1.5)
        pid = int(open(pidfile).read())
        log(f"killing the destination emulator {pid}")
        os.kill(pid, signal.SIGKILL)
        _, err = p.communicate(timeout=120)
        if p.returncode == 0:
            fail("virsh migrate succeeded though the destination died")
        log(f"virsh migrate failed as it should: {err.strip()}")
        a.wait_state(g.name, "running", timeout=30)
        if b.virsh("list", "--name").split():
            fail("a domain is left on the destination daemon")
        g.wait_running()
        a.virsh("suspend", g.name)
        g.check_dump(g.dump(a, "after-failed-migration"))
    finally:
        remove(g.name, a, b)


def test_stop_cleans_up():
    """stop(): no daemon, no emulator left behind."""
    setup()
    for d in list(_daemons.values()):
        d.stop()
    for n, d in _daemons.items():
        pids = d.emulator_pids()
        if pids or d.proc.poll() is None:
            fail(f"daemon {n}: processes left after stop(): {pids}")
    _daemons.clear()


if __name__ == "__main__":
    lv.require_libvirt()
    if EMULATOR not in ("ferry", "qemu"):
        fail(f"LIBVIRT_EMULATOR={EMULATOR}: use ferry or qemu")
    ft.main([test_lifecycle, test_precopy_then_postcopy,
             test_destination_dies, test_stop_cleans_up], timeout=360)

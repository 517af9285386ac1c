"""The libvirt harness against real QEMU 7.2 (TCG, <domain type='qemu'>, no
KVM needed): two private libvirt 9.0 daemons on this host, the test guest
as a diskless domain, driven with virsh only.

  lifecycle        define, start, suspend/resume, virsh save + restore of a
                   paused domain: RAM (pmemsave) identical across them
  paused_migrate   migrate --live --suspend A -> B of a paused domain: RAM
                   identical on both sides, then it runs on B
  precopy_postcopy migrate --live A -> B (precopy, tcp://127.0.0.1:PORT),
                   then B -> A with --postcopy --postcopy-after-precopy;
                   domjobinfo --completed sane, the guest sweeps on

This validates the harness itself (libvirtenv.py); the same steps against
ferry are the point of the other tests in this directory.
"""

import filecmp
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import libvirtenv as lv  # noqa: E402
import ferrytest as ft  # noqa: E402
from ferrytest import fail, log  # noqa: E402

MEM_MIB = 128
# One vCPU sweeping 16 MiB: TCG dirties it far faster than 20 MiB/s, so a
# migration capped at that never converges in precopy and must switch to
# postcopy; uncapped it converges at once.
REGION_END = 0x1400000

_tmp = None
_daemons = {}


def setup():
    lv.require_libvirt()
    ft.require_qemu()
    ft.require_file(ft.GUEST, "test guest")
    global _tmp
    if _tmp is None:
        _tmp = ft.make_tmpdir("ferry-libvirt-")
    for name in ("A", "B"):
        if name not in _daemons:
            _daemons[name] = lv.LibvirtDaemon(name, _tmp)
    return _daemons["A"], _daemons["B"]


class Guest:
    """The test guest as a libvirt domain (persistent on its first daemon)."""

    def __init__(self, name, daemon):
        self.name = name
        self.serial = os.path.join(_tmp, name + ".serial")
        xml = lv.domain_xml(name, ft.QEMU, MEM_MIB, "qemu", "pc",
                            kernel=ft.GUEST,
                            cmdline=f"ncpus=1 end={REGION_END:#x}",
                            serial_path=self.serial)
        self.xml_path = os.path.join(_tmp, name + ".xml")
        with open(self.xml_path, "w") as f:
            f.write(xml)
        daemon.virsh("define", self.xml_path)
        daemon.virsh("start", self.name, timeout=120)
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

    def wait_sweeping(self, more=3, timeout=60):
        """The guest runs: `more` sweeps complete from now."""
        base = self.sweeps()
        deadline = time.time() + timeout
        while self.sweeps() < base + more:
            if time.time() > deadline:
                fail(f"{self.name}: fewer than {more} sweeps in {timeout}s "
                     f"(serial {self.serial_text()[-200:]!r})")
            time.sleep(0.2)

    def dump(self, daemon, tag):
        """pmemsave the swept region through virsh qemu-monitor-command."""
        path = os.path.join(_tmp, f"{self.name}-{tag}.ram")
        start, end = self.params["start"], self.params["end"]
        daemon.qmp(self.name, "pmemsave", val=start, size=end - start,
                   filename=path)
        if os.path.getsize(path) != end - start:
            fail(f"{path}: {os.path.getsize(path)} bytes, not {end - start}")
        return path

    def check_dump(self, path):
        p = self.params
        ok, report = ft.guest_check(path, p["ncpus"], p["start"], p["end"],
                                    seed=p["seed"], base=p["start"])
        if not ok:
            fail(f"{path}: guest-check: {report}")

    def remove(self, *daemons):
        for d in daemons:
            d.virsh("destroy", self.name, check=False, timeout=30)
            d.virsh("undefine", self.name, check=False, timeout=30)


def same_ram(a, b):
    if not filecmp.cmp(a, b, shallow=False):
        fail(f"RAM differs: {a} vs {b}")
    log(f"RAM identical: {os.path.basename(a)} == {os.path.basename(b)}")


def migrate(src, dst, name, *flags, timeout=180):
    port = ft.free_tcp_port()
    t = time.time()
    src.virsh("migrate", "--live", *flags, name, dst.uri,
              "--migrateuri", f"tcp://127.0.0.1:{port}", timeout=timeout)
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
    if "Total downtime" in info:
        downtime = lv.jobinfo_number(info, "Total downtime")
        if not 0 <= downtime <= elapsed:
            fail(f"{daemon.name}: downtime {downtime} ms of {elapsed} ms")
    return info


def test_lifecycle():
    a, b = setup()
    g = None
    try:
        g = Guest("lifecycle", a)
        g.wait_sweeping()
        a.virsh("suspend", g.name)
        a.wait_state(g.name, "paused")
        n = g.sweeps()
        time.sleep(1)
        if g.sweeps() != n:
            fail("the guest swept while paused")
        a.virsh("resume", g.name)
        a.wait_state(g.name, "running")
        g.wait_sweeping()

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
        a.virsh("restore", image, timeout=120)
        a.wait_state(g.name, "paused")       # saved paused, restored paused
        same_ram(before, g.dump(a, "after-restore"))
        a.virsh("resume", g.name)
        g.wait_sweeping()
    finally:
        if g:
            g.remove(a, b)


def test_paused_migrate():
    a, b = setup()
    g = None
    try:
        g = Guest("paused", a)
        g.wait_sweeping()
        a.virsh("suspend", g.name)
        a.wait_state(g.name, "paused")
        before = g.dump(a, "source")
        g.check_dump(before)
        migrate(a, b, g.name, "--suspend")
        b.wait_state(g.name, "paused")
        a.wait_state(g.name, "shut off")
        same_ram(before, g.dump(b, "destination"))
        completed_job(a, g.name, "Outgoing migration")
        b.virsh("resume", g.name)
        g.wait_sweeping()
    finally:
        if g:
            g.remove(a, b)


def test_precopy_postcopy():
    a, b = setup()
    g = None
    try:
        g = Guest("pp", a)
        g.wait_sweeping()

        # --persistent: B keeps the domain (and so its completed job's
        # statistics) after it migrates away again
        migrate(a, b, g.name, "--persistent")
        b.wait_state(g.name, "running")
        a.wait_state(g.name, "shut off")
        completed_job(a, g.name, "Outgoing migration")
        g.wait_sweeping()

        # back, capped so that precopy cannot converge: libvirt switches to
        # postcopy when the first pass is over (MIGRATION_PASS 2)
        b_log_mark = os.path.getsize(b.log_file)
        migrate(b, a, g.name, "--postcopy", "--postcopy-after-precopy",
                "--bandwidth", "20")
        a.wait_state(g.name, "running")
        with open(b.log_file, errors="replace") as f:
            f.seek(b_log_mark)
            qmp = f.read()
        if "migrate-start-postcopy" not in qmp:
            fail("libvirt never sent migrate-start-postcopy to the source")
        log("B sent migrate-start-postcopy: the migration ended in postcopy")
        b.wait_state(g.name, "shut off")
        info = completed_job(b, g.name, "Outgoing migration")
        log(f"postcopy requests: {info.get('Postcopy requests', '(not shown)')}")
        g.wait_sweeping()
        a.virsh("suspend", g.name)
        g.check_dump(g.dump(a, "after-postcopy"))
    finally:
        if g:
            g.remove(a, b)


def teardown_check():
    """After stop(): no process of either daemon left."""
    left = {n: d.emulator_pids() + ([d.proc.pid] if d.proc.poll() is None else [])
            for n, d in _daemons.items()}
    for d in list(_daemons.values()):
        d.stop()
    for n, d in _daemons.items():
        pids = d.emulator_pids()
        if pids or d.proc.poll() is None:
            fail(f"daemon {n}: processes left after stop(): {pids}")
    log(f"before stop: {left}; after stop: none")
    _daemons.clear()


def test_stop_cleans_up():
    setup()
    teardown_check()


if __name__ == "__main__":
    lv.require_libvirt()
    ft.main([test_lifecycle, test_paused_migrate, test_precopy_postcopy,
             test_stop_cleans_up], timeout=360)

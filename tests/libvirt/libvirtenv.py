"""Private libvirt 9.0 daemons for tests: several on one host, each with its
own configuration, state, sockets and capability cache, driven with virsh.

A privileged libvirtd's paths are fixed (/etc/libvirt, /run/libvirt,
/var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt), so every daemon
runs in its own mount namespace where those five directories are bind
mounts of directories under DIR (docs: /work/shared/docs/libvirt.md §4).
The emulators it starts inherit that namespace, which is how stop() finds
every one of them, whatever happened to the daemon.  Nothing else is shared:
each daemon has its own host UUID (libvirt refuses to migrate to a peer
with the same one), its own migration port range, and it probes the
emulator itself (the cache lives in its /var/cache/libvirt).  With
stdio_handler = "file" no virtlogd is needed.

Standard library only; uses ../functional/ferrytest.py for log/skip/fail.
"""

import atexit
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from xml.sax.saxutils import escape, quoteattr

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "functional"))
import ferrytest  # noqa: E402
from ferrytest import fail, log, skip  # noqa: E402

LIBVIRTD = shutil.which("libvirtd") or shutil.which("libvirtd", path="/usr/sbin")
VIRSH = shutil.which("virsh")
UNSHARE = shutil.which("unshare") or shutil.which("unshare", path="/usr/bin")
QEMU_USER = "libvirt-qemu"      # Debian's compiled-in qemu_user/qemu_group
QEMU_DRIVER_GLOB = "/usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so"

# The directories a privileged libvirtd uses, each replaced by DIR/<same>.
SYSTEM_DIRS = ("/etc/libvirt", "/run/libvirt", "/var/lib/libvirt",
               "/var/cache/libvirt", "/var/log/libvirt")

_daemons = []
_port_block = [0]


def require_libvirt():
    """Exit 77 (SKIPPED, with the reason) unless two private daemons can
    be run here: root, libvirtd with its QEMU driver, virsh, unshare and
    the libvirt-qemu user."""
    import glob
    import pwd
    hint = "./configure --install-deps --with-libvirt"
    if not LIBVIRTD:
        skip(f"libvirtd is not installed (Debian package libvirt-daemon; {hint})")
    if not glob.glob(QEMU_DRIVER_GLOB):
        skip("libvirt's QEMU driver is not installed (Debian package "
             f"libvirt-daemon-driver-qemu; {hint})")
    if not VIRSH:
        skip(f"virsh is not installed (Debian package libvirt-clients; {hint})")
    if not UNSHARE:
        skip("unshare (util-linux) is missing: each libvirtd needs its own "
             "mount namespace")
    if os.geteuid() != 0:
        skip("the libvirt tests run privileged libvirtd daemons: run as root")
    try:
        pwd.getpwnam(QEMU_USER)
    except KeyError:
        skip(f"user {QEMU_USER} is missing: libvirtd's QEMU driver will not "
             f"start without it ({hint} creates it)")


def _mnt_ns(pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


class LibvirtDaemon:
    """One private libvirtd under DIR = tmpdir/name, started at once.

    uri        the qemu+unix URI of its socket (for virsh -c and migrate)
    virsh()    run virsh against it, bounded by a timeout
    stop()     destroy its domains, kill it and everything it started,
               remove DIR (kept with FERRYTEST_KEEP=1)
    """

    def __init__(self, name, tmpdir, migration_ports=None, timeout=60):
        self.name = name
        self.dir = os.path.join(os.path.abspath(tmpdir), name)
        self.proc = None
        self.ns = None
        self.host_uuid = str(uuid.uuid4())
        if migration_ports is None:
            # disjoint ranges, so that two daemons never pick the same port
            base = 49152 + 64 * (os.getpid() % 200) + 16 * (_port_block[0] % 4)
            _port_block[0] += 1
            migration_ports = (base, base + 15)
        self.migration_ports = migration_ports
        for d in SYSTEM_DIRS:
            os.makedirs(self.dir + d, exist_ok=True)
        self.log_file = os.path.join(self.dir, "var/log/libvirt/libvirtd.log")
        self.out_file = os.path.join(self.dir, "libvirtd.out")
        self._write_config()
        _daemons.append(self)
        self._start(timeout)

    # -- set-up -----------------------------------------------------------

    def _write_config(self):
        etc = self.dir + "/etc/libvirt"
        with open(os.path.join(etc, "libvirtd.conf"), "w") as f:
            f.write(f"""# written by tests/libvirt/libvirtenv.py
auth_unix_rw = "none"
auth_unix_ro = "none"
unix_sock_dir = "/run/libvirt"
host_uuid = "{self.host_uuid}"
log_filters = "1:qemu"
log_outputs = "1:file:{self.log_file}"
""")
        lo, hi = self.migration_ports
        with open(os.path.join(etc, "qemu.conf"), "w") as f:
            f.write(f"""# written by tests/libvirt/libvirtenv.py
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
dynamic_ownership = 0
remember_owner = 0
stdio_handler = "file"
save_image_format = "raw"
migration_port_min = {lo}
migration_port_max = {hi}
""")

    def _start(self, timeout):
        # The mount points must exist on the host (a bare libvirt-daemon
        # install creates only /etc/libvirt); they stay empty there.
        for d in SYSTEM_DIRS:
            os.makedirs(d, exist_ok=True)
        script = "set -e\n"
        for d in SYSTEM_DIRS:
            script += f"mount --bind {shlex.quote(self.dir + d)} {d}\n"
        script += ("exec " + shlex.quote(LIBVIRTD) +
                   " --config /etc/libvirt/libvirtd.conf"
                   " --pid-file /run/libvirt/libvirtd.pid\n")
        self.sock = self.dir + "/run/libvirt/libvirt-sock"
        # unshare and sh exec: self.proc.pid is libvirtd's pid.  Its own
        # session, so that a signal to the test's process group leaves it
        # to stop(); PDEATHSIG stops it (not its emulators) if we die.
        out = open(self.out_file, "w")
        self.proc = subprocess.Popen(
            [UNSHARE, "-m", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_pdeathsig)
        out.close()
        deadline = time.time() + timeout
        own_ns = _mnt_ns(os.getpid())
        while True:
            if self.proc.poll() is not None:
                fail(f"libvirtd {self.name} exited with status "
                     f"{self.proc.returncode}: {self._tail(self.out_file)}"
                     f"{self._tail(self.log_file)}")
            ns = _mnt_ns(self.proc.pid)
            if ns and ns != own_ns and _cmdline(self.proc.pid).startswith(LIBVIRTD):
                self.ns = ns
                if os.path.exists(self.sock):
                    break
            if time.time() > deadline:
                fail(f"libvirtd {self.name}: no socket {self.sock} after "
                     f"{timeout}s: {self._tail(self.out_file)}")
            time.sleep(0.1)
        # the socket exists before the drivers are ready; this waits for them
        self.virsh("uri", timeout=timeout)
        log(f"libvirtd {self.name}: pid {self.proc.pid}, {self.uri}")

    # -- use --------------------------------------------------------------

    @property
    def uri(self):
        return f"qemu+unix:///system?socket={self.sock}"

    def virsh(self, *args, check=True, timeout=60, want_rc=False):
        """Run `virsh -c URI ARGS`; returns stdout (or (rc, stdout, stderr)
        with want_rc).  check: a non-zero exit fails the test."""
        cmd = [VIRSH, "-c", self.uri] + [str(a) for a in args]
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            fail(f"{self.name}: virsh {' '.join(map(str, args))} took over "
                 f"{timeout}s{self._tail(self.log_file)}")
        if check and p.returncode != 0:
            fail(f"{self.name}: virsh {' '.join(map(str, args))} exited "
                 f"{p.returncode}: {p.stderr.strip()}")
        if want_rc:
            return p.returncode, p.stdout, p.stderr
        return p.stdout

    def domstate(self, dom, timeout=30):
        return self.virsh("domstate", dom, timeout=timeout).strip()

    def wait_state(self, dom, state, timeout=30):
        deadline = time.time() + timeout
        while True:
            rc, out, _ = self.virsh("domstate", dom, check=False, want_rc=True,
                                    timeout=timeout)
            got = out.strip() if rc == 0 else "(none)"
            if got == state:
                return
            if time.time() > deadline:
                fail(f"{self.name}: {dom} is '{got}', not '{state}', "
                     f"after {timeout}s")
            time.sleep(0.2)

    def qmp(self, dom, command, timeout=60, **arguments):
        """A QMP command through `virsh qemu-monitor-command --pretty`."""
        import json
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        out = self.virsh("qemu-monitor-command", dom, "--pretty",
                         json.dumps(msg), timeout=timeout)
        reply = json.loads(out)
        if "error" in reply:
            fail(f"{self.name}: QMP {command} on {dom}: {reply['error']}")
        return reply.get("return")

    def migrate_postcopy(self, dom, migration, timeout=30):
        """`virsh migrate-postcopy DOM` once libvirt has set the migration
        up (until then QEMU and ferry answer that postcopy-ram is not
        enabled yet); migration is the running `virsh migrate` process."""
        deadline = time.time() + timeout
        while True:
            rc, _, err = self.virsh("migrate-postcopy", dom, check=False,
                                    want_rc=True, timeout=timeout)
            if rc == 0:
                return
            if time.time() > deadline or migration.poll() is not None:
                fail(f"{self.name}: virsh migrate-postcopy {dom}: "
                     f"{err.strip()}")
            time.sleep(0.2)

    def domain_log(self, dom):
        """The emulator's stderr and libvirt's notes on it."""
        return self._tail(os.path.join(self.dir, "var/log/libvirt/qemu",
                                       dom + ".log"), 4000)

    def emulator_pids(self):
        """Every process this daemon started that still runs: those in its
        mount namespace, those named by its pidfiles, and any whose command
        line mentions DIR (in case the namespace is already gone)."""
        pids = set()
        qdir = self.dir + "/run/libvirt/qemu"
        try:
            for f in os.listdir(qdir):
                if f.endswith(".pid"):
                    try:
                        with open(os.path.join(qdir, f)) as pf:
                            pids.add(int(pf.read().strip()))
                    except (OSError, ValueError):
                        pass
        except OSError:
            pass
        own = os.getpid()
        for pid in _all_pids():
            if pid == own:
                continue
            if self.ns and _mnt_ns(pid) == self.ns:
                pids.add(pid)
            elif self.dir in _cmdline(pid):
                pids.add(pid)
        if self.proc:
            pids.discard(self.proc.pid)
        return sorted(p for p in pids if _alive(p))

    # -- tear-down --------------------------------------------------------

    def stop(self):
        if self in _daemons:
            _daemons.remove(self)
        if self.proc and self.proc.poll() is None:
            rc, out, _ = self.virsh("list", "--name", check=False,
                                    want_rc=True, timeout=20)
            for dom in out.split() if rc == 0 else ():
                self.virsh("destroy", dom, check=False, timeout=20)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log(f"libvirtd {self.name}: no exit on SIGTERM, killing it")
                self.proc.kill()
                self.proc.wait(timeout=10)
        left = self.emulator_pids()
        for pid in left:
            log(f"libvirtd {self.name}: killing leftover {pid}: "
                f"{_cmdline(pid)[:120]}")
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.time() + 15
        while any(_alive(p) for p in left) and time.time() < deadline:
            time.sleep(0.1)
        still = [p for p in left if _alive(p)]
        if still:
            log(f"libvirtd {self.name}: processes will not die: {still}")
        if not ferrytest.KEEP:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            log(f"libvirtd {self.name}: kept {self.dir}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    @staticmethod
    def _tail(path, n=2000):
        try:
            with open(path, errors="replace") as f:
                text = f.read()
        except OSError:
            return ""
        return f"\n--- {path} (tail) ---\n{text[-n:]}" if text else ""


def _pdeathsig():
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)       # PR_SET_PDEATHSIG
    except Exception:
        pass


def domain_xml(name, emulator, mem_mib, virt_type, machine, kernel=None,
               cmdline=None, serial_path=None, extra_qemu_args=(), vcpus=1,
               uuid=None):
    """A diskless x86_64 domain: no USB, no balloon, no graphics or video,
    destroyed on poweroff/reboot/crash.  serial_path: COM1 appended to that
    file (append, so that the destination of a migration on the same host
    does not truncate it).  extra_qemu_args: raw <qemu:commandline>.
    uuid: fixed, for a second XML of the same domain (migrate --xml)."""
    q = quoteattr
    os_parts = [f"    <type arch='x86_64' machine={q(machine)}>hvm</type>"]
    if kernel:
        os_parts.append(f"    <kernel>{escape(kernel)}</kernel>")
        if cmdline:
            os_parts.append(f"    <cmdline>{escape(cmdline)}</cmdline>")
    devices = [f"    <emulator>{escape(emulator)}</emulator>",
               "    <controller type='usb' model='none'/>"]
    if serial_path:
        devices += [
            "    <serial type='file'>",
            f"      <source path={q(serial_path)} append='on'/>",
            "      <target port='0'/>",
            "    </serial>"]
    devices.append("    <memballoon model='none'/>")
    extra = ""
    if extra_qemu_args:
        extra = ("  <qemu:commandline>\n" +
                 "".join(f"    <qemu:arg value={q(str(a))}/>\n"
                         for a in extra_qemu_args) +
                 "  </qemu:commandline>\n")
    nl = "\n"
    return f"""<domain type={q(virt_type)} xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{escape(name)}</name>
{f"  <uuid>{escape(uuid)}</uuid>{nl}" if uuid else ""}  <memory unit='MiB'>{int(mem_mib)}</memory>
  <vcpu>{int(vcpus)}</vcpu>
  <os>
{nl.join(os_parts)}
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
{nl.join(devices)}
  </devices>
{extra}</domain>
"""


def parse_jobinfo(text):
    """`virsh domjobinfo` output as {key: value string}, e.g.
    {'Job type': 'Completed', 'Total downtime': '12 ms', ...}."""
    info = {}
    for line in text.splitlines():
        m = re.match(r"^([^:]+):\s+(.*\S)\s*$", line)
        if m:
            info[m.group(1).strip()] = m.group(2)
    return info


def jobinfo_number(info, key):
    """The leading number of a domjobinfo value ('12 ms' -> 12.0)."""
    if key not in info:
        fail(f"domjobinfo has no '{key}': {info}")
    return float(info[key].split()[0])


def _cleanup():
    while _daemons:
        d = _daemons[-1]
        try:
            d.stop()
        except BaseException as e:      # keep cleaning the others
            log(f"libvirtd {d.name}: stop failed: {e}")
            if d in _daemons:
                _daemons.remove(d)


# Registered after ferrytest's handler, so it runs first: the daemons and
# their emulators go before ferrytest removes the temporary directories.
atexit.register(_cleanup)


def _on_sigterm(signum, frame):
    # meson's timeout sends SIGTERM: leave through atexit, which cleans up
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_sigterm)

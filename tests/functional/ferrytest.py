"""Helpers for end-to-end tests: start real ferry (or QEMU) processes, talk
QMP to them, watch the serial output of the test guest, dump and check guest
RAM.  Standard library only.

Every process and temporary directory a test creates is registered and torn
down at exit, whatever happens; a global alarm bounds each test's run time.
"""

import atexit
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("FERRY_BUILD") or os.path.join(HERE, "..", "..", "build")
FERRY = os.path.join(BUILD, "ferry")
FERRY_MIGRATE = os.path.join(BUILD, "tools", "ferry-migrate")
GUEST = os.path.join(BUILD, "tests", "guest", "guest.bin")
GUEST_CHECK = os.path.join(BUILD, "tests", "guest", "guest-check")
QEMU = shutil.which("qemu-system-x86_64")

SKIP_EXIT = 77          # meson's "skipped" exit status
KEEP = bool(os.environ.get("FERRYTEST_KEEP"))

_vms = []
_tmpdirs = []


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def skip(reason):
    """Skip loudly: meson counts exit status 77 as skipped."""
    banner = f"SKIPPED: {reason}"
    print(banner, flush=True)
    print(banner, file=sys.stderr, flush=True)
    sys.exit(SKIP_EXIT)


def fail(msg):
    raise AssertionError(msg)


def kvm_usable():
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def require_kvm():
    if not kvm_usable():
        skip("/dev/kvm is missing or not accessible: this test boots a KVM guest")


def require_qemu():
    if not QEMU:
        skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")


def require_file(path, what):
    if not os.path.exists(path):
        fail(f"{what} not built: {path} is missing")


@contextlib.contextmanager
def hugepages(extra):
    """Reserve `extra` more 2 MiB huge pages for the body; yields False
    (after logging SKIPPED and why) when the kernel will not, and always
    kills the body's VMs, then gives the pages back."""
    path = "/proc/sys/vm/nr_hugepages"
    try:
        with open(path) as f:
            old = int(f.read())
    except OSError as e:
        log(f"SKIPPED hugetlb: cannot read {path}: {e}")
        yield False
        return
    need = old + extra
    try:
        try:
            with open(path, "w") as f:
                f.write(str(need))
            with open(path) as f:
                got = int(f.read())
        except OSError as e:
            log(f"SKIPPED hugetlb: cannot reserve huge pages: {e}")
            got = old
        if got < need:
            log(f"SKIPPED hugetlb: the kernel gave {got} huge pages of {need}")
        yield got >= need
    finally:
        _cleanup_vms()
        with open(path, "w") as f:
            f.write(str(old))


def make_tmpdir(prefix="ferrytest-"):
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.append(d)
    return d


class QMPError(Exception):
    def __init__(self, cls, desc):
        super().__init__(f"{cls}: {desc}")
        self.cls = cls
        self.desc = desc


class QMP:
    """A QMP client over a unix socket path or a (host, port) tuple."""

    def __init__(self, address, timeout=20.0, negotiate=True):
        self.events = []
        self.buf = b""
        deadline = time.time() + timeout
        while True:
            try:
                if isinstance(address, tuple):
                    self.sock = socket.create_connection(address, timeout=2)
                else:
                    self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    self.sock.connect(address)
                break
            except OSError as e:
                if time.time() > deadline:
                    fail(f"cannot connect to QMP at {address}: {e}")
                time.sleep(0.05)
        self.greeting = self.recv(timeout=10)
        # QEMU 7.2 may put an event (MIGRATION "setup" of an -incoming
        # exec:) ahead of the greeting: keep it, as any other event.
        while "event" in self.greeting:
            self.events.append(self.greeting)
            self.greeting = self.recv(timeout=10)
        if "QMP" not in self.greeting:
            fail(f"bad QMP greeting: {self.greeting}")
        if negotiate:
            self.cmd("qmp_capabilities")

    def send_raw(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def recv(self, timeout=30.0):
        """Next message (reply or event) as a dict."""
        deadline = time.time() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.time()
            if left <= 0:
                fail("timed out waiting for a QMP message")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                fail("QMP connection closed by the VM")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def reply(self, timeout=60.0):
        """Next reply, queueing events that arrive first."""
        while True:
            msg = self.recv(timeout)
            if "event" in msg:
                self.events.append(msg)
                continue
            return msg

    def cmd_obj(self, obj, timeout=60.0):
        self.send_raw(json.dumps(obj) + "\n")
        return self.reply(timeout)

    def cmd(self, name, timeout=60.0, **args):
        obj = {"execute": name}
        if args:
            obj["arguments"] = {k.replace("_", "-") if k not in ("filename",) else k: v
                                for k, v in args.items()}
        r = self.cmd_obj(obj, timeout)
        if "error" in r:
            raise QMPError(r["error"].get("class"), r["error"].get("desc"))
        return r["return"]

    def cmd_args(self, name, args, timeout=60.0):
        """Like cmd, with the arguments given verbatim as a dict."""
        r = self.cmd_obj({"execute": name, "arguments": args}, timeout)
        if "error" in r:
            raise QMPError(r["error"].get("class"), r["error"].get("desc"))
        return r["return"]

    def wait_event(self, name, timeout=30.0, pred=None):
        deadline = time.time() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name and (pred is None or pred(ev)):
                    return self.events.pop(i)
            left = deadline - time.time()
            if left <= 0:
                fail(f"timed out waiting for event {name}")
            try:
                msg = self.recv(left)
            except AssertionError:
                fail(f"timed out waiting for event {name}")
            if "event" in msg:
                self.events.append(msg)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class VM:
    """A ferry (or QEMU) process with a QMP socket and a serial log."""

    def __init__(self, args, binary=None, name="vm", qmp=True, serial=True,
                 env=None):
        self.binary = binary or FERRY
        self.env = env          # extra environment variables, or None
        self.name = name
        self.dir = make_tmpdir(f"ferrytest-{name}-")
        self.qmp_path = os.path.join(self.dir, "qmp.sock")
        self.serial_path = os.path.join(self.dir, "serial.log")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.args = list(args)
        if qmp:
            self.args += ["-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        if serial:
            self.args += ["-serial", f"file:{self.serial_path}"]
        self.args += ["-display", "none"]
        self.proc = None
        self.qmp = None
        _vms.append(self)

    def launch(self, connect=True):
        log(f"{self.name}: {os.path.basename(self.binary)} {' '.join(self.args)}")
        self.proc = subprocess.Popen([self.binary] + self.args,
                                     stdin=subprocess.DEVNULL,
                                     stdout=open(self.stdout_path, "wb"),
                                     stderr=open(self.stderr_path, "wb"),
                                     env={**os.environ, **(self.env or {})})
        if connect:
            deadline = time.time() + 30
            while not os.path.exists(self.qmp_path):
                if self.proc.poll() is not None:
                    fail(f"{self.name} exited early with {self.proc.returncode}: "
                         f"{self.stderr()}")
                if time.time() > deadline:
                    fail(f"{self.name}: QMP socket never appeared")
                time.sleep(0.02)
            self.qmp = QMP(self.qmp_path)
        return self

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def serial(self):
        try:
            with open(self.serial_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_serial(self, text, timeout=60.0):
        deadline = time.time() + timeout
        while text not in self.serial():
            self.check_alive()
            if time.time() > deadline:
                fail(f"{self.name}: '{text}' not seen on serial; got {self.serial()[-300:]!r}")
            time.sleep(0.05)

    def sweeps(self, ncpus):
        """Sweeps completed per vCPU, counted from the guest's serial digits
        (everything after the guest's parameter line).  A log without any
        "guest:" text belongs to a migration destination, whose serial
        starts mid-run: there every digit counts."""
        out = self.serial()
        if "!" in out:
            # The guest's exception handler prints "!XX err=.. rip=..": a
            # broken VMM or migration, never a sweep to count.
            fail(f"{self.name}: guest exception on serial: {out[out.find('!'):][:120]!r}")
        i = out.find("guest: ncpus=")
        if i < 0:
            if "guest:" in out:
                return [0] * ncpus
            return [out.count(str(k % 10)) for k in range(ncpus)]
        j = out.find("\n", i)
        body = out[j + 1:] if j >= 0 else ""
        return [body.count(str(k % 10)) for k in range(ncpus)]

    def guest_params(self):
        return guest_params(self.serial())

    def check_guest_ram(self, size, min_sweeps=1, params=None):
        """stop must have been done: dump RAM and run the checker over it.
        params: the guest's parameters when this VM's serial lacks the
        banner (a migration destination: take them from the source)."""
        p = params or self.guest_params()
        dump = self.pmemsave(size)
        ok, report = guest_check(dump, p["ncpus"], p["start"], p["end"], p["seed"],
                                 min_sweeps=min_sweeps)
        return ok, report, dump

    def wait_sweeps(self, ncpus, count, timeout=120.0):
        """Wait until each vCPU completed count sweeps (an int, or a list with
        one target per vCPU)."""
        targets = count if isinstance(count, list) else [count] * ncpus
        deadline = time.time() + timeout
        while True:
            s = self.sweeps(ncpus)
            if all(c >= t for c, t in zip(s, targets)):
                return s
            self.check_alive()
            if time.time() > deadline:
                fail(f"{self.name}: sweeps per vCPU {s}, wanted {count} each; "
                     f"serial: {self.serial()[:200]!r}")
            time.sleep(0.05)

    def check_alive(self):
        if self.proc and self.proc.poll() is not None:
            fail(f"{self.name} exited with {self.proc.returncode}: {self.stderr()[-2000:]}")

    def pmemsave(self, size, path=None, addr=0):
        path = path or os.path.join(self.dir, "ram.dump")
        self.qmp.cmd("pmemsave", val=addr, size=size, filename=path, timeout=300)
        if os.path.getsize(path) != size:
            fail(f"pmemsave wrote {os.path.getsize(path)} bytes, expected {size}")
        return path

    def query_status(self):
        return self.qmp.cmd("query-status")["status"]

    def wait_status(self, status, timeout=30.0):
        """Wait for a run state (query-status), e.g. "running"."""
        deadline = time.time() + timeout
        while True:
            st = self.query_status()
            if st == status:
                return
            self.check_alive()
            if time.time() > deadline:
                fail(f"{self.name}: run state {st}, wanted {status}")
            time.sleep(0.05)

    def wait_migration(self, timeout=120.0, poll=0.1, want=("completed",)):
        """Poll query-migrate until its status is one of want (completed):
        returns its reply; fails on failed/cancelled (with the error) or
        timeout."""
        deadline = time.time() + timeout
        while True:
            info = self.qmp.cmd("query-migrate")
            st = info.get("status")
            if st in want:
                return info
            if st in ("failed", "cancelled"):
                fail(f"{self.name}: migration {st}: "
                     f"{info.get('error-desc', '(no error-desc)')}")
            self.check_alive()
            if time.time() > deadline:
                fail(f"{self.name}: migration {st} after {timeout}s, wanted "
                     f"{'/'.join(want)}: {info}")
            time.sleep(poll)

    def wait_multifd_bytes(self, nbytes, timeout=30.0, poll=0.02):
        """Poll query-migrate until the multifd channels carried nbytes
        (ram.multifd-bytes): returns its reply; fails if the migration
        leaves setup/active first, or on timeout."""
        deadline = time.time() + timeout
        while True:
            info = self.qmp.cmd("query-migrate")
            if info.get("status") not in ("setup", "active"):
                fail(f"{self.name}: migration {info.get('status')} before "
                     f"{nbytes} bytes on the multifd channels: "
                     f"{info.get('error-desc', '')}")
            mfd = info.get("ram", {}).get("multifd-bytes", 0)
            if mfd >= nbytes:
                return info
            if time.time() > deadline:
                fail(f"{self.name}: multifd-bytes {mfd} after {timeout}s")
            time.sleep(poll)

    def wait_exit(self, timeout=30.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            fail(f"{self.name} did not exit within {timeout}s")

    def shutdown(self, timeout=20.0):
        if not self.proc or self.proc.poll() is not None:
            return
        try:
            if self.qmp:
                self.qmp.cmd("quit")
            self.proc.wait(timeout)
        except Exception:
            self.kill()
        finally:
            if self.qmp:
                self.qmp.close()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()


def free_tcp_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ferry_guest_args(mem="512M", smp=1, append="", extra=()):
    require_file(GUEST, "test guest")
    cmd = f"ncpus={smp} {append}".strip()
    return ["-M", "pc", "-accel", "kvm", "-m", mem, "-smp", str(smp),
            "-kernel", GUEST, "-append", cmd] + list(extra)


def qemu_guest_args(mem="512M", smp=1, append="", extra=()):
    require_file(GUEST, "test guest")
    cmd = f"ncpus={smp} {append}".strip()
    return ["-M", "pc", "-accel", "kvm", "-nodefaults", "-m", mem, "-smp", str(smp),
            "-kernel", GUEST, "-append", cmd] + list(extra)


def guest_params(serial_text):
    """The parameters the guest announced on its first serial line:
    {'ncpus':..., 'start':..., 'end':..., 'seed':...} (tests/guest/README.md)."""
    for line in serial_text.splitlines():
        if line.startswith("guest: ncpus="):
            kv = dict(w.split("=", 1) for w in line.split()[1:] if "=" in w)
            return {k: int(v, 0) for k, v in kv.items()}
    fail(f"no guest parameter line on serial: {serial_text[:200]!r}")


def guest_check(dump, ncpus, start, end, seed=0, base=0, min_sweeps=1):
    """Run the guest RAM checker over a dump; returns (ok, report text)."""
    require_file(GUEST_CHECK, "guest RAM checker")
    p = subprocess.run([GUEST_CHECK, "--dump", dump, "--base", hex(base),
                        "--ncpus", str(ncpus), "--start", hex(start),
                        "--end", hex(end), "--seed", str(seed),
                        "--min-sweeps", str(min_sweeps)],
                       capture_output=True, text=True, timeout=300)
    if p.returncode == 2:
        fail(f"guest-check could not run: {p.stderr}")
    return p.returncode == 0, p.stdout + p.stderr


def parse_size(s):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * units[s[-1]] if s[-1] in units else int(s) << 20


def checked(fn):
    """A test whose any exception is that test's failure, not the end of
    the run (for main())."""
    @functools.wraps(fn)
    def wrapper():
        try:
            fn()
        except (AssertionError, SystemExit):
            raise
        except Exception as e:
            raise AssertionError(f"{type(e).__name__}: {e}") from e
    return wrapper


def wait_runstate(vm, want, timeout=10.0):
    """A migration's status shows a moment before the run state moves on
    (as in QEMU): poll briefly instead of reading it once."""
    deadline = time.time() + timeout
    while True:
        st = vm.query_status()
        if st == want:
            return
        if time.time() > deadline:
            fail(f"{vm.name}: run state {st}, expected {want}")
        time.sleep(0.05)


def compare_files(a, b, who, chunk=4 << 20):
    """Two RAM images (dumps, content files) must be equal byte for byte;
    else fail naming how many 4 KiB pages differ and the first ones."""
    size_a, size_b = os.path.getsize(a), os.path.getsize(b)
    if size_a != size_b:
        fail(f"{who}: dump is {size_a} bytes, expected {size_b}")
    bad = []
    nbad = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        off = 0
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if not x:
                break
            if x != y:
                for p in range(0, len(x), 4096):
                    if x[p:p + 4096] != y[p:p + 4096]:
                        nbad += 1
                        if len(bad) < 8:
                            bad.append(hex(off + p))
            off += len(x)
    if nbad:
        fail(f"{who}: {nbad} pages differ from the expected RAM, first at "
             f"{', '.join(bad)}")
    log(f"{who}: RAM equal to the expected content ({size_a >> 20} MiB)")


SANITIZER_MARKS = ("WARNING: ThreadSanitizer:", "ERROR: AddressSanitizer:",
                   "ERROR: LeakSanitizer:", "runtime error:")


def check_sanitizer_reports():
    """A sanitizer report in any process of the test fails it, even when
    the test itself never noticed (a reporting process exits non-zero, but
    a test that only kills or quits its VMs would not look)."""
    for vm in _vms:
        err = vm.stderr()
        for mark in SANITIZER_MARKS:
            i = err.find(mark)
            if i >= 0:
                fail(f"{vm.name}: sanitizer report: {err[max(0, i - 200):i + 3000]}")


def main(tests, timeout=600):
    """Run test functions in order; exit 0, 1 (failure) or 77 (skipped)."""
    def on_alarm(signum, frame):
        raise AssertionError(f"test run exceeded {timeout}s")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(timeout)
    failed = 0
    for t in tests:
        log(f"=== {t.__name__}")
        try:
            t()
            check_sanitizer_reports()
            log(f"PASS {t.__name__}")
        except AssertionError as e:
            failed += 1
            log(f"FAIL {t.__name__}: {e}")
            for vm in _vms:
                if vm.proc:
                    log(f"  {vm.name} stderr: {vm.stderr()[-1500:]}")
        finally:
            _cleanup_vms()
    signal.alarm(0)
    sys.exit(1 if failed else 0)


def _cleanup_vms():
    while _vms:
        vm = _vms.pop()
        vm.kill()
        if vm.qmp:
            vm.qmp.close()


@atexit.register
def _cleanup():
    _cleanup_vms()
    if not KEEP:
        for d in _tmpdirs:
            shutil.rmtree(d, ignore_errors=True)

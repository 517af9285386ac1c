"""Shared helpers for the interoperability tests against Debian's QEMU 7.2.

Both sides run the RAM-only machine `none` (`-M none -m SIZE -nodefaults`).
Guest RAM is filled from a file built here with pages of every kind the
stream encodes differently (zero, uniform non-zero, random, almost-zero),
loaded with `-device loader,file=...,addr=0,force-raw=on`, which QEMU and
ferry both accept; the file itself is then the oracle for every RAM dump.

Standard library only; processes and directories are cleaned up by
ferrytest (../functional/ferrytest.py).
"""

import hashlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "functional"))

import ferrytest  # noqa: E402
from ferrytest import (BUILD, FERRY, GUEST, QEMU, VM, QMPError, fail,  # noqa: E402,F401
                       log, make_tmpdir, require_file, require_qemu, skip,
                       compare_files, wait_runstate)

ANALYZE = os.path.join(BUILD, "tools", "ferry-analyze")
PAGE = 4096
MiB = 1 << 20
GiB = 1 << 30

# Page kinds of the content file, and the share of each in a dense region.
KINDS = ("zero", "uniform", "random", "almost-zero")
WEIGHTS = (35, 20, 30, 15)


# --------------------------------------------------------------------------
# Content: the RAM image both sides load, and the oracle for every dump

class Content:
    """A RAM image file of `size` bytes; `dense` is a list of (start, length)
    byte ranges filled with a mix of page kinds, everything else is zero.
    Pages at both ends of each dense range are non-zero on purpose (first
    and last page of RAM are the classic off-by-one victims)."""

    def __init__(self, directory, size, dense=None, seed=1):
        self.size = size
        self.path = os.path.join(directory, f"content-{size >> 20}M.bin")
        self.counts = dict.fromkeys(KINDS, 0)
        rng = random.Random(seed)
        dense = dense if dense is not None else [(0, size)]
        with open(self.path, "wb") as f:
            f.truncate(size)             # sparse: the zero pages cost nothing
            for start, length in dense:
                self._fill(f, rng, start, length)
        self.counts["zero"] = size // PAGE - sum(
            v for k, v in self.counts.items() if k != "zero")

    def _fill(self, f, rng, start, length):
        first, last = start // PAGE, (start + length) // PAGE - 1
        for pfn in range(first, last + 1):
            if pfn in (first, last):
                kind = "random"
            else:
                kind = rng.choices(KINDS, WEIGHTS)[0]
            if kind == "zero":
                continue
            if kind == "uniform":
                page = bytes([rng.randrange(1, 256)]) * PAGE
            elif kind == "random":
                page = rng.randbytes(PAGE)
            else:
                # one non-zero byte at a varying place: defeats a zero check
                # that looks only at the first or last word
                pos = rng.randrange(PAGE)
                page = bytes(pos) + bytes([rng.randrange(1, 256)]) + \
                    bytes(PAGE - pos - 1)
            self.counts[kind] += 1
            f.seek(pfn * PAGE)
            f.write(page)

    @property
    def nonzero_pages(self):
        return self.size // PAGE - self.counts["zero"]

    def loader_args(self):
        return ["-device", f"loader,file={self.path},addr=0,force-raw=on"]

    def check_dump(self, dump, who):
        """The dump must equal the content byte for byte."""
        compare_files(dump, self.path, who)


# --------------------------------------------------------------------------
# Processes

def start(kind, mem=None, name=None, content=None, incoming=None, machine="none",
          extra=()):
    """Start `kind` ('qemu' or 'ferry') with machine none and `mem` bytes."""
    args = ["-M", machine, "-m", f"{mem >> 20}M", "-nodefaults"]
    if content:
        args += content.loader_args()
    if incoming:
        args += ["-incoming", incoming]
    args += list(extra)
    binary = QEMU if kind == "qemu" else FERRY
    return VM(args, binary=binary, name=name, serial=False).launch()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_caps(vm, caps):
    vm.qmp.cmd("migrate-set-capabilities", capabilities=[
        {"capability": c, "state": True} for c in caps])


def status(vm):
    return vm.qmp.cmd("query-migrate")


def wait_status(vm, want, timeout=60.0, also_stop=("failed", "cancelled")):
    """Poll query-migrate until the status is in `want` (or a final one)."""
    deadline = time.time() + timeout
    while True:
        vm.check_alive()
        info = status(vm)
        if info.get("status") in want or info.get("status") in also_stop:
            return info
        if time.time() > deadline:
            fail(f"{vm.name}: status still {info.get('status')} after "
                 f"{timeout}s (wanted {'/'.join(want)})")
        time.sleep(0.05)


def expect_completed(vm, info, side):
    if info.get("status") != "completed":
        fail(f"{side} {vm.name}: migration {info.get('status')}: "
             f"{info.get('error-desc', '')} / stderr: {vm.stderr()[-600:]}")


def dump(vm, size, directory=None):
    path = os.path.join(directory or vm.dir, f"{vm.name}.dump")
    return vm.pmemsave(size, path=path)


def migrate(src, dst, uri, timeout=120.0, during=None):
    """Start the migration (dst waiting on -incoming defer); `during(src,
    dst)` runs right after `migrate` was accepted.  Returns both sides'
    final query-migrate."""
    dst.qmp.cmd("migrate-incoming", uri=uri)
    t0 = time.time()
    src.qmp.cmd("migrate", uri=uri)
    if during:
        during(src, dst)
    s = wait_status(src, ("completed",), timeout)
    d = wait_status(dst, ("completed",), 30)
    log(f"migrated {src.name} -> {dst.name} in {time.time() - t0:.1f}s: "
        f"src {s.get('status')}, dst {d.get('status')}")
    return s, d


def precopy(src_kind, dst_kind, mem, content, directory, check_src=True,
            timeout=120.0):
    """Migrate `content` over TCP with the return path on (the source then
    waits for the destination's SHUT(0)); both sides must complete, the
    page counters must match the content and the destination's RAM (and
    the source's, before and after) must equal it."""
    src = start(src_kind, mem, f"{src_kind}-src", content=content)
    dst = start(dst_kind, mem, f"{dst_kind}-dst", incoming="defer")
    for vm in (src, dst):
        set_caps(vm, ["return-path", "events"])
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=4 << 30)
    if check_src:
        content.check_dump(dump(src, mem, directory), f"source {src.name} before")
    s, t = migrate(src, dst, f"tcp:127.0.0.1:{free_port()}", timeout)
    expect_completed(src, s, "source")
    expect_completed(dst, t, "destination")
    ram = s["ram"]
    log(f"source stats: normal {ram['normal']} duplicate {ram['duplicate']} "
        f"transferred {ram['transferred']} total {ram['total']}")
    if (ram["normal"], ram["duplicate"], ram["total"]) != \
            (content.nonzero_pages, content.counts["zero"], mem):
        fail(f"source counted {ram['normal']} normal and {ram['duplicate']} "
             f"duplicate pages of {ram['total']} bytes; the content has "
             f"{content.nonzero_pages} non-zero and {content.counts['zero']} "
             f"zero pages of {mem}")
    content.check_dump(dump(dst, mem, directory), f"destination {dst.name}")
    if check_src:
        content.check_dump(dump(src, mem, directory), f"source {src.name} after")
    for vm in (src, dst):
        vm.shutdown()


def refused(src_kind, dst_kind, src_args, dst_args, timeout=15.0):
    """Start a migration the destination must refuse.  Returns (source's
    query-migrate, source stderr, destination stderr, seconds taken);
    fails if it does not end with 'failed' within `timeout` seconds or the
    destination neither exits nor reports 'failed'."""
    src = start(src_kind, name=f"{src_kind}-src", **src_args)
    dst = start(dst_kind, name=f"{dst_kind}-dst", incoming="defer", **dst_args)
    for vm in (src, dst):
        set_caps(vm, ["return-path"])
    port = free_port()
    dst.qmp.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
    t0 = time.time()
    src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
    s = wait_status(src, ("completed",), timeout)
    took = time.time() - t0
    if s.get("status") != "failed":
        fail(f"{src.name}: status {s.get('status')} after a migration the "
             f"destination should refuse (dst stderr: {dst.stderr()[-500:]})")
    deadline = time.time() + timeout
    while dst.proc.poll() is None:
        try:
            if status(dst).get("status") == "failed":
                break
        except (OSError, AssertionError):
            # A refusing destination exits (as QEMU's does) while we ask.
            dst.proc.wait(timeout)
            break
        if time.time() > deadline:
            fail(f"{dst.name}: neither exited nor failed")
        time.sleep(0.05)
    if dst.proc.returncode not in (None, 1):
        fail(f"{dst.name}: exit status {dst.proc.returncode} (a crash?)")
    log(f"refused in {took:.2f}s; source: {s.get('error-desc')!r}; "
        f"destination: {dst.stderr().strip()!r}")
    out = (s, src.stderr(), dst.stderr(), took)
    for vm in (src, dst):
        vm.kill()
    return out


# --------------------------------------------------------------------------
# A recording TCP proxy: the main stream one way, the return path the other

class Proxy:
    """Accepts one connection on `port`, connects to `target_port` and
    copies both directions, keeping every byte (main stream in
    self.main, return path in self.rp)."""

    def __init__(self, target_port):
        self.target = target_port
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.lsock.settimeout(60)
        self.port = self.lsock.getsockname()[1]
        self.main = bytearray()
        self.rp = bytearray()
        self.errors = []
        self.threads = [threading.Thread(target=self._run, daemon=True)]
        self.threads[0].start()

    def _run(self):
        try:
            a, _ = self.lsock.accept()
            b = socket.create_connection(("127.0.0.1", self.target), 10)
        except OSError as e:
            self.errors.append(f"proxy: {e}")
            return
        finally:
            self.lsock.close()
        pumps = [threading.Thread(target=self._pump, args=(a, b, self.main)),
                 threading.Thread(target=self._pump, args=(b, a, self.rp))]
        for t in pumps:
            t.start()
        for t in pumps:
            t.join()
        a.close()
        b.close()

    def _pump(self, src, dst, record):
        try:
            while True:
                chunk = src.recv(1 << 16)
                if not chunk:
                    break
                record += chunk
                dst.sendall(chunk)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def join(self, timeout=30):
        self.threads[0].join(timeout)
        if self.threads[0].is_alive():
            fail("proxy: the connection did not end")


RP_TYPES = {1: "SHUT", 2: "PONG", 3: "REQ_PAGES_ID", 4: "REQ_PAGES",
            5: "RECV_BITMAP", 6: "RESUME_ACK"}


def parse_rp(data):
    """Return-path messages as (name, payload); fails on a malformed one."""
    out = []
    off = 0
    while off < len(data):
        if off + 4 > len(data):
            fail(f"return path: truncated header at {off}")
        typ, n = struct.unpack_from(">HH", data, off)
        if typ not in RP_TYPES or off + 4 + n > len(data):
            fail(f"return path: bad message type {typ} len {n} at {off}")
        out.append((RP_TYPES[typ], bytes(data[off + 4:off + 4 + n])))
        off += 4 + n
    return out


# --------------------------------------------------------------------------
# Stream inspection

def analyze(path):
    require_file(ANALYZE, "ferry-analyze")
    p = subprocess.run([ANALYZE, "--json", path], capture_output=True,
                       text=True, timeout=120)
    if p.returncode != 0:
        fail(f"ferry-analyze {path}: exit {p.returncode}: {p.stderr[-500:]}")
    return json.loads(p.stdout)


def masked(data, report):
    """The file's bytes with section ids and the timer's payload zeroed."""
    data = bytearray(data)
    for r in report["records"]:
        if "section-id" not in r:
            continue
        off, size = r["offset"], r["size"]
        data[off + 1:off + 5] = bytes(4)               # header's section id
        data[off + size - 4:off + size] = bytes(4)     # footer's section id
        if r["idstr"] == "timer":
            hdr = 1 + 4 + 1 + len("timer") + 4 + 4
            data[off + hdr:off + hdr + 24] = bytes(24)
    return bytes(data)


RAM_ZERO, RAM_PAGE, RAM_EOS, RAM_CONTINUE = 0x02, 0x08, 0x10, 0x20


def ram_pages(data, off, end, who, block=None):
    """The page records of one RAM PART/END body as (offset, block, kind,
    payload) tuples, up to EOS: the framing-free content of the section.
    `block` is the last block named before (it survives sections)."""
    out = []
    while True:
        if off + 8 > end:
            fail(f"{who}: RAM body overruns its section at {off:#x}")
        word = int.from_bytes(data[off:off + 8], "big")
        off += 8
        flags, addr = word & 0xfff, word & ~0xfff
        if flags == RAM_EOS:
            return out, block
        if not flags & RAM_CONTINUE:
            n = data[off]
            block = bytes(data[off + 1:off + 1 + n]).decode()
            off += 1 + n
        kind = flags & ~RAM_CONTINUE
        if kind == RAM_ZERO:
            payload = bytes(data[off:off + 1])
            off += 1
        elif kind == RAM_PAGE:
            payload = hashlib.sha1(data[off:off + 4096]).digest()
            off += 4096
        else:
            fail(f"{who}: unexpected RAM flags {flags:#x} at {off - 8:#x}")
        out.append((addr, block, kind, payload))


def stream_content(data, report, who):
    """What a stream says, without what each sender may choose freely:
    section ids, clock values, and how the RAM pages are split into PART
    sections (rate-limit slices) or whether CONTINUE is used.  Returns
    (list of non-RAM-data records as masked bytes, list of RAM pages)."""
    mdata = masked(data, report)
    records, pages = [], []
    block = None
    for r in report["records"]:
        off = r["offset"]
        if r.get("idstr") == "ram" and r["type"] in ("SECTION_PART",
                                                      "SECTION_END"):
            got, block = ram_pages(data, off + 5, off + r["size"] - 5, who,
                                   block)
            pages += got
            records.append(("ram data",))
            continue
        size = r.get("size")
        if size is None:
            size = {"EOF": 1}.get(r["type"])
        if size is None and r["type"] == "VMDESCRIPTION":
            size = 5 + r["length"]
        if size is None and r["type"] == "COMMAND":
            size = 5 + r["length"]
        records.append((r["type"], mdata[off:off + size]))
    # consecutive RAM data sections are one run whatever their number
    folded = [x for i, x in enumerate(records)
              if not (x == ("ram data",) and i and records[i - 1] == x)]
    return folded, pages


def compare_streams(a, b, names):
    """Compare two (data, report) streams with stream_content()."""
    (ra, pa), (rb, pb) = (stream_content(d, r, n)
                          for (d, r), n in zip((a, b), names))
    if pa != pb:
        n = min(len(pa), len(pb))
        i = next((k for k in range(n) if pa[k] != pb[k]), n)
        fail(f"RAM pages differ at record {i} of {len(pa)}/{len(pb)}: "
             f"{names[0]} {pa[i] if i < len(pa) else None} "
             f"{names[1]} {pb[i] if i < len(pb) else None}")
    if ra != rb:
        ta, tb = [x[0] for x in ra], [x[0] for x in rb]
        if ta != tb:
            fail(f"record sequences differ: {names[0]} {ta} {names[1]} {tb}")
        for x, y in zip(ra, rb):
            if x != y:
                fail(f"{x[0]} records differ: {names[0]} {x[1][:64].hex()} "
                     f"{names[1]} {y[1][:64].hex()}")
    log(f"streams equal but for section ids, clocks and PART boundaries: "
        f"{len(ra)} records, {len(pa)} RAM page records")


def save_stream(vm, path, timeout=120.0):
    """migrate to "exec:cat > path" and wait for completion."""
    vm.qmp.cmd("migrate", uri=f"exec:cat > {path}")
    info = wait_status(vm, ("completed",), timeout)
    expect_completed(vm, info, "saving source")
    return path


# --------------------------------------------------------------------------
# Running

def main(tests, timeout):
    require_qemu()
    require_file(FERRY, "ferry")
    ferrytest.main([ferrytest.checked(t) for t in tests], timeout=timeout)

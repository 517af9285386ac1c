"""Page checker for ferry's x-dirtier workload device (hw/dirtier.c,
include/hw/dirtier.h).  Standard library only.

The device's region [addr, addr + size) holds a control page (page 0:
a little-endian u64 generation counter in its first 8 bytes) and data
pages, each either never written ("initial": all zero, as -M none RAM
starts) or written whole by the device: u64 MAGIC, u64 guest-physical
address, u64 generation, then 509 words of a PRNG seeded by (address,
generation).  So every page can be checked on its own.

Dumps are QMP pmemsave files of guest RAM from guest-physical 0 (paths,
or bytes-like objects).
"""

import mmap
import struct
import time

PAGE = 4096
WORDS = PAGE // 8
HEADER_WORDS = 3
MAGIC = 0x5452494459525246          # b"FRRYDIRT" as a little-endian u64
M64 = (1 << 64) - 1
LCG_MUL = 6364136223846793005
LCG_ADD = 1442695040888963407
ZERO_PAGE = bytes(PAGE)


class PageError(Exception):
    """A page that is neither initial nor a valid dirtier page."""


def fill_seed(gpa, gen):
    """The PRNG state a page starts from (dirtier_fill_seed in C)."""
    x = (gpa ^ (gen * 0x9E3779B97F4A7C15)) & M64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    x ^= x >> 31
    return x


def expected_page(gpa, gen):
    """The bytes the device writes at gpa with generation gen."""
    words = [MAGIC, gpa, gen] + [0] * (WORDS - HEADER_WORDS)
    s = fill_seed(gpa, gen)
    for i in range(HEADER_WORDS, WORDS):
        s = (s * LCG_MUL + LCG_ADD) & M64
        words[i] = s ^ (s >> 32)
    return struct.pack(f"<{WORDS}Q", *words)


def header(page):
    """(magic, address, generation) of a page, for reports."""
    return struct.unpack_from("<3Q", page)


def describe(page):
    if page == ZERO_PAGE:
        return "zero"
    m, a, g = header(page)
    return f"magic 0x{m:x} addr 0x{a:x} gen {g}"


def check_page(page, gpa):
    """("initial", 0) for a never-written (zero) page, ("dirtier", gen)
    for a valid device page at gpa; raises PageError saying why not."""
    page = bytes(page)
    if len(page) != PAGE:
        raise PageError(f"page 0x{gpa:x}: {len(page)} bytes, not {PAGE}")
    if page == ZERO_PAGE:
        return ("initial", 0)
    magic, addr, gen = header(page)
    if magic != MAGIC:
        raise PageError(f"page 0x{gpa:x}: neither zero nor a dirtier page "
                        f"(magic 0x{magic:x})")
    if addr != gpa:
        raise PageError(f"page 0x{gpa:x}: carries address 0x{addr:x} "
                        f"(misplaced)")
    if gen == 0:
        raise PageError(f"page 0x{gpa:x}: generation 0")
    want = expected_page(gpa, gen)
    if page != want:
        i = next(i for i in range(0, PAGE, 8) if page[i:i + 8] != want[i:i + 8])
        got = struct.unpack_from("<Q", page, i)[0]
        exp = struct.unpack_from("<Q", want, i)[0]
        raise PageError(f"page 0x{gpa:x} generation {gen}: word {i // 8} is "
                        f"0x{got:x}, expected 0x{exp:x} (torn or corrupted)")
    return ("dirtier", gen)


class _Dump:
    """A dump as a bytes-like object (a file is mapped, not read)."""

    def __init__(self, dump):
        self._f = None
        if isinstance(dump, (bytes, bytearray, memoryview)):
            self.data = memoryview(dump)
        else:
            self._f = open(dump, "rb")
            self.data = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)

    def page(self, off):
        return bytes(self.data[off:off + PAGE])

    def __len__(self):
        return len(self.data)

    def close(self):
        if self._f:
            self.data.close()
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def control_counter(dump, region):
    """The generation counter in the region's control page."""
    with _Dump(dump) as d:
        return struct.unpack_from("<Q", d.data, region[0])[0]


def _differing_pages(a, b, chunk=1 << 20):
    """Offsets of the pages that differ, compared a chunk at a time."""
    n = min(len(a), len(b))
    for base in range(0, n, chunk):
        end = min(base + chunk, n)
        if a.data[base:end] == b.data[base:end]:
            continue
        for off in range(base, end, PAGE):
            if a.data[off:off + PAGE] != b.data[off:off + PAGE]:
                yield off


def check_region(dump, region):
    """Check every data page of region = (addr, size) in dump; returns
    {"initial": n, "dirtier": n, "max-generation": g, "control": c}.
    The counter is never behind a page (it is written after each)."""
    addr, size = region
    stats = {"initial": 0, "dirtier": 0, "max-generation": 0}
    with _Dump(dump) as d:
        stats["control"] = struct.unpack_from("<Q", d.data, addr)[0]
        for gpa in range(addr + PAGE, addr + size, PAGE):
            kind, gen = check_page(d.page(gpa), gpa)
            stats[kind] += 1
            stats["max-generation"] = max(stats["max-generation"], gen)
    if stats["max-generation"] > stats["control"]:
        raise PageError(f"a page has generation {stats['max-generation']}, "
                        f"above the control counter {stats['control']}")
    return stats


def compare_precopy(src_dump, dst_dump, region=None):
    """After a completed precopy (both sides stopped before any new write
    on the destination) the two RAMs must be byte-identical.  Raises
    PageError with the first differing page and both headers; with
    region, also checks every page of it and returns check_region's
    figures (else the number of pages compared)."""
    with _Dump(src_dump) as a, _Dump(dst_dump) as b:
        if len(a) != len(b):
            raise PageError(f"dump sizes differ: {len(a)} and {len(b)}")
        bad = list(_differing_pages(a, b))
        if bad:
            off = bad[0]
            raise PageError(f"{len(bad)} pages differ, first at 0x{off:x}: "
                            f"source {describe(a.page(off))}, destination "
                            f"{describe(b.page(off))}")
        npages = len(a) // PAGE
    if region:
        return check_region(src_dump, region)
    return npages


def compare_postcopy(src_dump, dst_dump, region, any_initial=False):
    """After a postcopy whose destination ran the device after the
    switch: every page is identical on both sides, or it is a data page
    of region whose destination copy is a valid dirtier page newer than
    both the source's copy and the source's control counter (the
    counter at the switch: the source never runs again); the
    destination's counter must not be behind the source's.  With
    any_initial, a source page may also be any data the region held before
    the writer started (a loader's).  Raises
    PageError on the first violation; returns a dict of figures."""
    addr, size = region
    out = {"differ": 0, "rewritten": 0}
    with _Dump(src_dump) as a, _Dump(dst_dump) as b:
        if len(a) != len(b):
            raise PageError(f"dump sizes differ: {len(a)} and {len(b)}")
        src_ctl = struct.unpack_from("<Q", a.data, addr)[0]
        dst_ctl = struct.unpack_from("<Q", b.data, addr)[0]
        out["source-control"] = src_ctl
        out["destination-control"] = dst_ctl
        if dst_ctl < src_ctl:
            raise PageError(f"destination's counter {dst_ctl} is behind the "
                            f"source's {src_ctl}: the control page was lost")
        for off in _differing_pages(a, b):
            out["differ"] += 1
            sp, dp = a.page(off), b.page(off)
            if off == addr:
                # Only the counter may differ, and it is ahead (above).
                if sp[8:] != dp[8:]:
                    raise PageError(f"control page 0x{off:x} differs beyond "
                                    f"its counter")
                continue
            if not addr < off < addr + size:
                raise PageError(f"page 0x{off:x} outside the dirtier region "
                                f"differs: source {describe(sp)}, destination "
                                f"{describe(dp)}")
            try:
                kind, dgen = check_page(dp, off)
            except PageError as e:
                raise PageError(f"destination: {e} (source {describe(sp)})")
            if kind != "dirtier":
                raise PageError(f"page 0x{off:x}: destination has an initial "
                                f"page where the source has {describe(sp)}")
            try:
                _, sgen = check_page(sp, off)
            except PageError as e:
                # any_initial: the region started with other data (a
                # loader's), which the source may never have overwritten
                if not any_initial:
                    raise PageError(f"source: {e}")
                sgen = 0
            if dgen <= sgen or dgen <= src_ctl:
                raise PageError(f"page 0x{off:x}: destination generation "
                                f"{dgen} is not newer than the source's page "
                                f"({sgen}) and counter at the switch "
                                f"({src_ctl}): a stale or lost page")
            out["rewritten"] += 1
    return out


def wait_writes(vm, more=200, timeout=10.0):
    """Wait until the running VM's writer has written `more` further pages
    (QMP x-query-dirtier); AssertionError if it does not in time."""
    def written():
        return vm.qmp.cmd("x-query-dirtier")["pages-written"]

    start = written()
    deadline = time.time() + timeout
    while written() < start + more:
        vm.check_alive()
        if time.time() > deadline:
            raise AssertionError(
                f"{vm.name}: the writer did not write {more} pages in "
                f"{timeout}s: {vm.qmp.cmd('x-query-dirtier')}")
        time.sleep(0.05)

#!/usr/bin/env python3
"""Postcopy between QEMU 7.2 and ferry, both ways (machine none, 256 MiB of
known content, through a recording proxy): the switch is requested right
after `migrate`, so most pages arrive after RUN; while in postcopy the
destination dumps a range at the end of RAM that was not sent yet, which
makes it fault and request pages.  At the end both sides have completed,
the source counted postcopy requests, the destination's RAM equals the
content, and the wire shows QEMU 7.2's postcopy sequence (ADVISE before
the RAM setup, PACKAGED with LISTEN ... RUN, EOF without VMDESCRIPTION;
PONGs, page requests and SHUT(0) on the return path).

Each failure names the stage it happened in, so that a missing piece of
ferry's postcopy is obvious."""

import os
import subprocess
import threading
import time

from interop import (ANALYZE, HERE, RAM_ZERO, MiB, Content, Proxy, QMPError,
                     analyze, compare_files, dump, fail, free_port, log, main,
                     make_tmpdir, parse_rp, ram_pages, set_caps, start,
                     status, wait_status)

MEM = 256 * MiB
TOUCH = 4 * MiB                      # range dumped at the end of RAM
CAPS = ["postcopy-ram", "return-path", "events"]
POSTCOPY_SRC = os.path.join(HERE, "..", "..", "migration", "postcopy-ram.c")


class Stage:
    """Prefix any failure with the direction and the stage it happened in."""

    def __init__(self, direction):
        self.direction = direction
        self.name = "start"
        self.proxy = None
        self.dir = None

    def __call__(self, name):
        self.name = name
        log(f"{self.direction}: {name}")

    def wrap(self, fn):
        try:
            fn(self)
        except (AssertionError, QMPError) as e:
            hint = ""
            if not os.path.exists(POSTCOPY_SRC):
                hint = (" [migration/postcopy-ram.c does not exist: ferry's "
                        "postcopy has not landed yet]")
            fail(f"postcopy {self.direction}: stage '{self.name}': {e}{hint}"
                 f"{self.wire_so_far()}")

    def wire_so_far(self):
        """The main stream as far as it went, minus the RAM data: shows
        which command was missing or out of place."""
        if not self.proxy or not self.proxy.main:
            return ""
        path = os.path.join(self.dir, "failed.stream")
        with open(path, "wb") as f:
            f.write(self.proxy.main)
        p = subprocess.run([ANALYZE, path], capture_output=True, text=True,
                           timeout=60)
        lines = [ln for ln in (p.stdout + p.stderr).splitlines()
                 if "SECTION_PART" not in ln][:40]
        rp = ""
        try:
            rp = f"\n  return path: {[m[0] for m in parse_rp(self.proxy.rp)][:20]}"
        except AssertionError as e:
            rp = f"\n  return path: {e}"
        return "\n  main stream so far:\n    " + "\n    ".join(lines) + rp


def check_wire(main_bytes, rp_bytes, d, who):
    path = os.path.join(d, "postcopy.stream")
    with open(path, "wb") as f:
        f.write(main_bytes)
    recs = analyze(path)["records"]
    kinds = [(x["type"], x.get("command") or x.get("idstr")) for x in recs]
    adv = [i for i, x in enumerate(recs) if x.get("command") == "POSTCOPY_ADVISE"]
    start_ram = kinds.index(("SECTION_START", "ram"))
    if len(adv) != 1 or adv[0] > start_ram:
        fail(f"{who}: want one POSTCOPY_ADVISE before the RAM START: {kinds[:6]}")
    a = recs[adv[0]]
    if (a.get("page-size-summary"), a.get("target-page-size")) != (4096, 4096):
        fail(f"{who}: ADVISE {a}")
    pk = [x for x in recs if x.get("command") == "PACKAGED"]
    if len(pk) != 1:
        fail(f"{who}: {len(pk)} PACKAGED commands")
    inner = [(x["type"], x.get("command") or x.get("idstr"))
             for x in pk[0].get("records", [])]
    if not inner or inner[0] != ("COMMAND", "POSTCOPY_LISTEN") or \
            inner[-1] != ("COMMAND", "POSTCOPY_RUN"):
        fail(f"{who}: package {inner}, want LISTEN ... RUN")
    for dev in ("timer", "globalstate"):
        if ("SECTION_FULL", dev) not in inner:
            fail(f"{who}: {dev} not in the package {inner}")
    if kinds[-1] != ("EOF", None):
        fail(f"{who}: postcopy stream ends with {kinds[-3:]}, want EOF and no "
             "VMDESCRIPTION")
    for x in recs:
        if x.get("command") != "POSTCOPY_RAM_DISCARD":
            continue
        rng = x.get("ranges", [])
        if not 1 <= len(rng) <= 12 or any(s % 4096 or n % 4096 or n == 0
                                           for s, n in rng):
            fail(f"{who}: DISCARD ranges {rng}: 1..12 page-aligned ranges")
    if not any(x.get("command") == "POSTCOPY_RAM_DISCARD" for x in recs):
        # a 7.2 destination refuses RUN when LISTEN came without a DISCARD
        fail(f"{who}: no POSTCOPY_RAM_DISCARD before the package")
    # after LISTEN every page may be sent once only (7.2 pauses on EEXIST),
    # and ZERO pages carry fill 0 (8.2+ refuses anything else)
    pk_at = recs.index(pk[0])
    seen = set()
    block = None
    for x in recs:
        if x.get("idstr") != "ram" or x["type"] not in ("SECTION_PART",
                                                        "SECTION_END"):
            continue
        pages, block = ram_pages(main_bytes, x["offset"] + 5,
                                 x["offset"] + x["size"] - 5, who, block)
        for addr, blk, kind, payload in pages:
            if kind == RAM_ZERO and payload != b"\0":
                fail(f"{who}: ZERO page {addr:#x} with fill {payload.hex()}")
            if recs.index(x) > pk_at:
                if (blk, addr) in seen:
                    fail(f"{who}: page {addr:#x} sent twice after LISTEN")
                seen.add((blk, addr))
    msgs = parse_rp(rp_bytes)
    names = [m[0] for m in msgs]
    if not msgs or msgs[-1] != ("SHUT", bytes(4)):
        fail(f"{who}: return path does not end with SHUT(0): {names[-5:]}")
    if "REQ_PAGES_ID" not in names:
        fail(f"{who}: no page request on the return path")
    pings = sorted(x["value"] for x in recs if x.get("command") == "PING")
    pings += sorted(x["value"] for p in pk for x in p.get("records", [])
                    if x.get("command") == "PING")
    pongs = [int.from_bytes(m[1], "big") for m in msgs if m[0] == "PONG"]
    if sorted(pongs) != sorted(pings):
        fail(f"{who}: PINGs {sorted(pings)} answered by PONGs {pongs}")
    log(f"{who}: wire ok: {len(recs)} records, package {len(inner)} records, "
        f"{len(seen)} pages after LISTEN, each once, "
        f"RP {len(msgs)} messages ({names.count('REQ_PAGES_ID')} "
        f"REQ_PAGES_ID, {names.count('REQ_PAGES')} REQ_PAGES)")


def postcopy(src_kind, dst_kind):
    st = Stage(f"{src_kind} -> {dst_kind}")

    def body(stage):
        d = stage.dir = make_tmpdir("interop-postcopy-")
        content = Content(d, MEM, seed=5)
        src = start(src_kind, MEM, f"{src_kind}-src", content=content)
        dst = start(dst_kind, MEM, f"{dst_kind}-dst", incoming="defer")
        stage("set capabilities " + ", ".join(CAPS))
        for vm in (src, dst):
            set_caps(vm, CAPS)
        # slow precopy, bounded postcopy: most pages move after RUN, and
        # the end of RAM is still missing when the destination touches it
        src.qmp.cmd("migrate-set-parameters", max_bandwidth=32 * MiB,
                    max_postcopy_bandwidth=48 * MiB)
        port = free_port()
        dst.qmp.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        proxy = stage.proxy = Proxy(port)
        stage("migrate and switch to postcopy at once")
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{proxy.port}")
        src.qmp.cmd("migrate-start-postcopy")
        stage("destination reaches postcopy-active")
        info = wait_status(dst, ("postcopy-active", "completed"), 30)
        if info["status"] != "postcopy-active":
            fail(f"destination status {info['status']}: "
                 f"{info.get('error-desc', '')} {dst.stderr()[-400:]}")
        stage("destination touches not-yet-sent pages (pmemsave of the end)")
        part = os.path.join(d, "touched.dump")
        t0 = time.time()
        done = threading.Event()
        err = []

        def touch():
            try:
                dst.pmemsave(TOUCH, path=part, addr=MEM - TOUCH)
            except Exception as e:             # reported below
                err.append(e)
            done.set()
        threading.Thread(target=touch, daemon=True).start()
        if not done.wait(60):
            fail("pmemsave on the destination blocked for 60 s: faults not "
                 "served (page requests lost?)")
        if err:
            raise err[0]
        log(f"touched {TOUCH >> 20} MiB in {time.time() - t0:.2f}s "
            f"(source now {status(src).get('status')})")
        with open(content.path, "rb") as f:
            f.seek(MEM - TOUCH)
            want = f.read(TOUCH)
        with open(part, "rb") as f:
            if f.read() != want:
                fail("the range read during postcopy differs from the content")
        stage("both sides complete")
        s = wait_status(src, ("completed",), 90)
        t = wait_status(dst, ("completed",), 30)
        for vm, i, side in ((src, s, "source"), (dst, t, "destination")):
            if i.get("status") != "completed":
                fail(f"{side} {vm.name}: {i.get('status')} "
                     f"{i.get('error-desc', '')} {vm.stderr()[-400:]}")
        stage("source counted postcopy requests")
        reqs = s["ram"].get("postcopy-requests", 0)
        log(f"source: postcopy-requests {reqs}, postcopy-bytes "
            f"{s['ram'].get('postcopy-bytes')}, precopy-bytes "
            f"{s['ram'].get('precopy-bytes')}")
        if reqs <= 0:
            fail(f"source reports postcopy-requests {reqs}")
        stage("destination RAM equals the content")
        content.check_dump(dump(dst, MEM, d), f"destination {dst.name}")
        stage("source RAM still equals the content")
        compare_files(dump(src, MEM, d), content.path, f"source {src.name}")
        stage("wire: postcopy sequence")
        proxy.join()
        check_wire(proxy.main, proxy.rp, d, f"{src.name} -> {dst.name}")
        for vm in (src, dst):
            vm.shutdown()

    st.wrap(body)


def test_qemu_to_ferry():
    postcopy("qemu", "ferry")


def test_ferry_to_qemu():
    postcopy("ferry", "qemu")


if __name__ == "__main__":
    main([test_qemu_to_ferry, test_ferry_to_qemu], timeout=280)

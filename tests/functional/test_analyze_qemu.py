#!/usr/bin/env python3
"""ferry-analyze on a stream saved by QEMU 7.2 (-M none, 64M, random data
loaded at 1 MiB): the counts must match what was loaded, and damaged copies
must fail with exit 1 and an offset."""

import json
import os
import subprocess
import time

from ferrytest import (BUILD, QEMU, VM, fail, log, main, make_tmpdir,
                       require_file, require_qemu)

ANALYZE = os.path.join(BUILD, "tools", "ferry-analyze")
MEM = 64 << 20
DATA_PAGES = 10


def analyze(path, *extra):
    p = subprocess.run([ANALYZE, path] + list(extra), capture_output=True,
                       text=True, timeout=120)
    return p


def save_stream():
    require_qemu()
    require_file(ANALYZE, "ferry-analyze")
    d = make_tmpdir("ferrytest-analyze-")
    data = os.path.join(d, "data.bin")
    with open(data, "wb") as f:
        f.write(os.urandom(DATA_PAGES * 4096))
    out = os.path.join(d, "stream.bin")
    vm = VM(["-M", "none", "-m", "64M", "-nodefaults", "-device",
             f"loader,file={data},addr=0x100000,force-raw=on"],
            binary=QEMU, name="qemu-src", serial=False).launch()
    vm.qmp.cmd("migrate", uri=f"exec:cat > {out}")
    deadline = time.time() + 60
    while True:
        st = vm.qmp.cmd("query-migrate")["status"]
        if st == "completed":
            break
        if st in ("failed", "cancelled") or time.time() > deadline:
            fail(f"saving the stream: status {st}")
        time.sleep(0.1)
    vm.shutdown()
    return out


def test_counts():
    path = save_stream()
    p = analyze(path, "--json")
    if p.returncode != 0:
        fail(f"analyze exit {p.returncode}: {p.stderr}")
    r = json.loads(p.stdout)
    ram = r["ram"]
    blk = ram["blocks"][0]
    log(f"block {blk}")
    if blk["id"] != "ram" or blk["length"] != MEM:
        fail(f"unexpected block {blk}")
    if blk["page"] != DATA_PAGES:
        fail(f"PAGE records {blk['page']}, expected {DATA_PAGES}")
    if blk["zero"] + blk["page"] != MEM // 4096:
        fail(f"ZERO+PAGE = {blk['zero'] + blk['page']}, expected {MEM // 4096}")
    if r["configuration"]["machine"] != "none":
        fail("machine name")
    types = [x["type"] for x in r["records"]]
    for t in ("SECTION_START", "SECTION_PART", "SECTION_END", "EOF",
              "VMDESCRIPTION"):
        if t not in types:
            fail(f"no {t} record in {types}")
    ids = {x.get("idstr") for x in r["records"]}
    if not {"ram", "timer", "globalstate"} <= ids:
        fail(f"sections {ids}")
    gs = [x for x in r["records"] if x.get("idstr") == "globalstate"][0]
    if gs["runstate"] != "running":
        fail(f"globalstate {gs}")
    p = analyze(path)
    if p.returncode != 0 or f"PAGE {DATA_PAGES}" not in p.stdout:
        fail(f"text output: {p.stdout[-800:]}")


def test_damaged():
    path = save_stream()
    with open(path, "rb") as f:
        data = f.read()
    d = os.path.dirname(path)
    cut = os.path.join(d, "cut.bin")
    with open(cut, "wb") as f:
        f.write(data[:len(data) // 2])
    p = analyze(cut)
    if p.returncode != 1 or "offset 0x" not in p.stderr:
        fail(f"truncated: exit {p.returncode}, stderr {p.stderr}")
    log(f"truncated: {p.stderr.strip()}")
    bad = bytearray(data)
    bad[0x48] = 0x99             # a RAM record header in the first PART
    corrupt = os.path.join(d, "corrupt.bin")
    with open(corrupt, "wb") as f:
        f.write(bad)
    p = analyze(corrupt)
    if p.returncode != 1 or "offset 0x" not in p.stderr:
        fail(f"corrupted: exit {p.returncode}, stderr {p.stderr}")
    log(f"corrupted: {p.stderr.strip()}")
    p = analyze(os.path.join(d, "missing.bin"))
    if p.returncode != 2:
        fail(f"missing file: exit {p.returncode}")


if __name__ == "__main__":
    main([test_counts, test_damaged], timeout=280)

#!/usr/bin/env python3
"""ferry-migrate --report: a real ferry -> ferry postcopy migration (-M none,
random content), its link reset once in postcopy (the tool recovers), the
destination's RAM read in chunks through a second monitor so that pages
come through userfaultfd faults.  The HTML report must agree with the
--json "report" object and render in a real headless browser (Debian's
chromium): no console errors, the charts in the DOM, a screenshot that is
not blank.  Skipped (exit 77) without /usr/bin/chromium
(./configure --with-chromium installs it)."""

import json
import os
import re
import struct
import subprocess
import time
import zlib

import relay
from ferrytest import (FERRY_MIGRATE, QMP, VM, fail, free_tcp_port, log,
                       main, make_tmpdir, require_file, skip)

CHROMIUM = "/usr/bin/chromium"
MEM = 256 << 20
DATA = 32 << 20                 # random bytes at 1 MiB: ~8 s at 4 MiB/s
STRIDE = 64 << 10               # between two pages the test reads
CHARTS = ("chart-rates", "chart-remaining", "chart-histogram", "chart-cdf",
          "chart-heatmap")


def pair():
    """Source with random data; destination behind a relay, with a second
    monitor for the test (the tool holds the first)."""
    d = make_tmpdir("ferrytest-report-")
    data = os.path.join(d, "data.bin")
    with open(data, "wb") as f:
        f.write(os.urandom(DATA))
    mon = os.path.join(d, "dst-test.sock")
    port = free_tcp_port()
    src = VM(["-M", "none", "-m", str(MEM >> 20),
              "-device", f"loader,file={data},addr=0x100000,force-raw=on"],
             name="src", serial=False)
    dst = VM(["-M", "none", "-m", str(MEM >> 20),
              "-incoming", f"tcp:127.0.0.1:{port}",
              "-qmp", f"unix:{mon},server=on,wait=off"],
             name="dst", serial=False)
    for vm in (src, dst):
        vm.launch(connect=True)
        vm.qmp.close()
        vm.qmp = None
    return src, dst, QMP(mon), relay.Relay(port), d


def wait_dst(mon, want, timeout=60):
    deadline = time.time() + timeout
    while True:
        st = mon.cmd("query-migrate").get("status")
        if st in want:
            return st
        if time.time() > deadline:
            fail(f"destination {st}, wanted {want}")
        time.sleep(0.05)


def wait_recovered(mon, timeout=60):
    """After a reset: until the tool has recovered (ferry's destination
    counts its pauses: the pause may be over before we look).  The second
    sweep waits for this, so that its faults are requests, not reads
    stuck until the recovery (which, before pmemsave had its own thread,
    also blocked the monitor the tool recovers through)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = mon.cmd("query-migrate")
        if info.get("x-postcopy-pauses", 0) >= 1 and \
                info.get("status") in ("postcopy-active", "completed"):
            return
        time.sleep(0.05)
    fail(f"destination not recovered after {timeout}s")


def touch(mon, d, offsets):
    """pmemsave one page at each offset of the data: a fault on the dst
    unless the page came already.  A stride of 16 pages keeps ahead of the
    background stream, which goes on from the last page asked for."""
    out = os.path.join(d, "page.bin")
    for off in offsets:
        mon.cmd("pmemsave", val=0x100000 + off, size=4096, filename=out,
                timeout=120)


def migrate(src, dst, mon, rel, d):
    html = os.path.join(d, "report.html")
    cmd = [FERRY_MIGRATE, "--src", src.qmp_path, "--dst", dst.qmp_path,
           "--uri", rel.uri, "--postcopy", "--max-postcopy-bandwidth", "4M",
           "--json", "--report", html]
    log("start: " + " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_dst(mon, ("postcopy-active",))
    rel.wait_connections(1)
    # the heat map gets a shape: up the first half, down the second
    touch(mon, d, range(0, DATA // 2, STRIDE))
    rel.reset()
    wait_recovered(mon)
    touch(mon, d, range(DATA - STRIDE // 2, DATA // 2, -STRIDE))
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        fail(f"ferry-migrate still running: {err[-2000:]}")
    log(f"exit {proc.returncode}\nstderr:\n{err}")
    if proc.returncode != 0:
        fail(f"ferry-migrate exit {proc.returncode}")
    return json.loads(out)["report"], html


def check_json(rep):
    ser = rep["series"]
    n = len(ser["t-s"])
    for k, v in ser.items():
        if len(v) != n:
            fail(f"series {k}: {len(v)} points, t-s has {n}")
    if n < 10:
        fail(f"only {n} samples")
    f, hm = rep["faults"], rep["heatmap"]
    if not f["available"] or f["count"] <= 0:
        fail(f"no fault statistics: {f}")
    if sum(f["histogram"]) != f["count"]:
        fail(f"histogram sums to {sum(f['histogram'])}, faults {f['count']}")
    if not hm["available"] or hm["faults-seen"] <= 0:
        fail(f"no heat map: { {k: v for k, v in hm.items() if k != 'counts'} }")
    if sum(map(sum, hm["counts"])) != hm["faults-seen"]:
        fail("heat map bins do not add up to faults-seen")
    if hm["faults-seen"] + hm["faults-missed"] != f["count"]:
        fail(f"seen {hm['faults-seen']} + missed {hm['faults-missed']} "
             f"!= faults {f['count']}")
    if "postcopy-switch-s" not in rep or len(rep["pauses"]) != 1 or \
            not rep["pauses"][0]["recovered"]:
        fail(f"postcopy switch / pause missing: {rep.get('pauses')}")
    log(f"{n} samples, {f['count']} faults (p50 {f['p50-us']} us), "
        f"heat map {hm['time-bins']}x{hm['addr-bins']}, "
        f"{hm['faults-missed']} missed")


def check_html(rep, text):
    """The page's numbers against the JSON (the unit test does it in
    depth): point counts, bars, cells."""
    for name in ("throughput-MBps", "dirty-rate-MBps", "remaining-bytes"):
        m = re.search(rf'data-series="{name}" data-n="(\d+)" points="([^"]*)"',
                      text)
        if not m or int(m.group(1)) != len(rep["series"]["t-s"]) or \
                len(m.group(2).split()) != len(rep["series"]["t-s"]):
            fail(f"{name}: polyline does not match the series")
    counts = [int(c) for c in re.findall(r'class="bar" data-bucket="\d+" '
                                         r'data-count="(\d+)"', text)]
    if counts != rep["faults"]["histogram"]:
        fail(f"bars {counts} != histogram {rep['faults']['histogram']}")
    cells = sum(int(c) for c in re.findall(r'class="cell"[^>]*data-count="(\d+)"',
                                           text))
    if cells != rep["heatmap"]["faults-seen"]:
        fail(f"heat map cells hold {cells} faults")


def chromium(d, *args):
    """Run headless chromium; returns (stdout, stderr)."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--enable-logging=stderr", "--v=0", "--no-first-run",
           f"--user-data-dir={os.path.join(d, 'chromium')}"] + list(args)
    log("run: " + " ".join(cmd))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HOME": d})
    return p.stdout, p.stderr


def console_errors(err):
    return [l for l in err.splitlines()
            if "Uncaught" in l or "ERROR:CONSOLE" in l]


def png_pixels(path):
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB/RGBA PNG."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail(f"{path} is not a PNG")
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    if depth != 8 or ctype not in (2, 6):
        fail(f"unexpected PNG format: depth {depth} colour type {ctype}")
    bpp = 3 if ctype == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), w * bpp, [], None
    for y in range(h):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        prev = prev or bytearray(stride)
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 255
            elif ftype == 2:
                line[x] = (line[x] + b) & 255
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif ftype == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pr = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[x] = (line[x] + pr) & 255
        rows.append(line)
        prev = line
    return w, h, bpp, rows


def check_browser(d, html):
    url = "file://" + html
    dom, err = chromium(d, "--dump-dom", url)
    if console_errors(err):
        fail(f"console errors: {console_errors(err)}")
    for c in CHARTS:
        if f'id="{c}"' not in dom:
            fail(f"{c} missing from the rendered DOM")
    if dom.count("<polyline") < 4 or dom.count('class="bar"') != 24:
        fail("polylines or histogram bars missing from the DOM")
    shot = os.path.join(d, "report.png")
    _, err = chromium(d, f"--screenshot={shot}", "--window-size=1000,2600",
                      "--hide-scrollbars", url)
    if console_errors(err):
        fail(f"console errors: {console_errors(err)}")
    if not os.path.exists(shot):
        fail(f"no screenshot: {err[-1500:]}")
    w, h, bpp, rows = png_pixels(shot)
    colours, ink = set(), 0
    for line in rows[::4]:
        for x in range(0, w * bpp, bpp * 4):
            px = bytes(line[x:x + 3])
            colours.add(px)
            ink += px != b"\xff\xff\xff"
    log(f"screenshot {w}x{h}: {len(colours)} colours, {ink} sampled "
        f"non-white pixels")
    if len(colours) < 8 or ink < 2000:
        fail("the screenshot looks blank")
    if os.environ.get("FERRYTEST_KEEP"):
        log(f"kept: {html} {shot}")


def test_report():
    if not os.access(CHROMIUM, os.X_OK):
        skip(f"{CHROMIUM} is missing (apt-get install chromium, or "
             "./configure --with-chromium): the report is rendered in it")
    require_file(FERRY_MIGRATE, "ferry-migrate")
    src, dst, mon, rel, d = pair()
    try:
        rep, html = migrate(src, dst, mon, rel, d)
    finally:
        relay.stop_all()
    check_json(rep)
    with open(html, encoding="utf-8") as f:
        check_html(rep, f.read())
    check_browser(d, html)


if __name__ == "__main__":
    main([test_report], timeout=280)

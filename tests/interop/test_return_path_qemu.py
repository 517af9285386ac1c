#!/usr/bin/env python3
"""Precopy with the return path, through a recording TCP proxy, both ways
between QEMU 7.2 and ferry (machine none, 64 MiB of known content):

- the source opens the return path and pings (OPEN_RETURN_PATH, PING 1)
  before the RAM setup, and ends with EOF then VMDESCRIPTION;
- the destination answers exactly PONG(1) then SHUT(0), and only then
  does the source report completion;
- ferry's main stream is QEMU's byte for byte once section ids and clock
  values are masked."""

import os

from interop import (MiB, Content, Proxy, analyze, compare_streams, dump,
                     expect_completed, fail, free_port, log, main,
                     make_tmpdir, parse_rp, set_caps, start, wait_status)

MEM = 64 * MiB
_captured = {}


def run(src_kind, dst_kind):
    d = make_tmpdir("interop-rp-")
    content = Content(d, MEM, seed=11)
    src = start(src_kind, MEM, f"{src_kind}-src", content=content)
    dst = start(dst_kind, MEM, f"{dst_kind}-dst", incoming="defer")
    for vm in (src, dst):
        set_caps(vm, ["return-path"])
    port = free_port()
    dst.qmp.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
    proxy = Proxy(port)
    src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{proxy.port}")
    s = wait_status(src, ("completed",), 60)
    t = wait_status(dst, ("completed",), 30)
    expect_completed(src, s, "source")
    expect_completed(dst, t, "destination")
    proxy.join()
    if proxy.errors:
        fail("; ".join(proxy.errors))
    content.check_dump(dump(dst, MEM, d), f"destination {dst.name}")

    path = os.path.join(d, "main.stream")
    with open(path, "wb") as f:
        f.write(proxy.main)
    r = analyze(path)
    recs = r["records"]
    head = [(x["type"], x.get("command"), x.get("value")) for x in recs[:2]]
    if head != [("COMMAND", "OPEN_RETURN_PATH", None),
                ("COMMAND", "PING", 1)]:
        fail(f"{src.name}: stream starts with {head}, expected "
             "OPEN_RETURN_PATH, PING 1")
    if recs[2].get("idstr") != "ram" or recs[2]["type"] != "SECTION_START":
        fail(f"{src.name}: third record {recs[2]}")
    if [x["type"] for x in recs[-2:]] != ["EOF", "VMDESCRIPTION"]:
        fail(f"{src.name}: stream ends with {recs[-2:]}")
    msgs = parse_rp(proxy.rp)
    want = [("PONG", bytes.fromhex("00000001")),
            ("SHUT", bytes.fromhex("00000000"))]
    if msgs != want:
        fail(f"{dst.name}: return path {msgs}, expected {want}")
    log(f"{src.name} -> {dst.name}: OPEN_RETURN_PATH, PING 1 ... EOF, "
        f"VMDESCRIPTION; return path PONG 1, SHUT 0 "
        f"({len(proxy.main)} bytes main)")
    _captured[src_kind] = (bytes(proxy.main), r)
    for vm in (src, dst):
        vm.shutdown()


def test_qemu_to_ferry():
    run("qemu", "ferry")


def test_ferry_to_qemu():
    run("ferry", "qemu")


def test_same_main_stream():
    if set(_captured) != {"qemu", "ferry"}:
        fail("needs both directions to have passed")
    compare_streams(_captured["qemu"], _captured["ferry"], ("QEMU", "ferry"))


if __name__ == "__main__":
    main([test_qemu_to_ferry, test_ferry_to_qemu, test_same_main_stream],
         timeout=200)

#!/usr/bin/env python3
"""Saved streams (`migrate "exec:cat > FILE"`), machine none, 64 MiB of known
content:

- the wire structure of ferry's stream is QEMU 7.2's, item by item
  (configuration "none", RAMBlock "ram" and its length, timer v2 with 24
  bytes, globalstate v1 with 104 bytes, EOF then VMDESCRIPTION, the same
  JSON), and the two files say the same thing once the section ids
  (chosen freely by each sender), the clock values and the split of the
  RAM pages into PART sections (rate-limit slices) are set aside;
- ferry-analyze reads both and its counts match the content loaded;
- QEMU loads ferry's file (`-incoming "exec:cat FILE"`) and ferry loads
  QEMU's, and the RAM then equals the content."""

from interop import (MiB, Content, analyze, compare_streams, dump,
                     expect_completed, fail, log, main, make_tmpdir, masked,
                     save_stream, start, wait_status)

MEM = 64 * MiB

_saved = {}


def saved_streams():
    """Both streams of the same content, saved once for all the tests."""
    if not _saved:
        d = make_tmpdir("interop-streams-")
        content = Content(d, MEM, seed=3)
        log(f"content: {content.counts}")
        _saved["dir"] = d
        _saved["content"] = content
        for kind in ("qemu", "ferry"):
            vm = start(kind, MEM, f"{kind}-save", content=content)
            _saved[kind] = save_stream(vm, f"{d}/{kind}.stream")
            vm.shutdown()
    return _saved


def check_structure(who, r, content):
    if r["magic"] != "QEVM" or r["version"] != 3:
        fail(f"{who}: header {r['magic']} v{r['version']}")
    conf = r["configuration"]
    if conf["machine"] != "none" or conf["subsections"]:
        fail(f"{who}: configuration {conf}")
    blocks = r["ram"]["blocks"]
    if [(b["id"], b["length"]) for b in blocks] != [("ram", MEM)]:
        fail(f"{who}: RAMBlocks {blocks}")
    b = blocks[0]
    if b["zero"] != content.counts["zero"] or b["page"] != content.nonzero_pages:
        fail(f"{who}: ZERO {b['zero']} PAGE {b['page']}, the content has "
             f"{content.counts['zero']} zero and {content.nonzero_pages} "
             "non-zero pages")
    if b["xbzrle"] or b["compress"]:
        fail(f"{who}: unexpected XBZRLE/COMPRESS records {b}")
    recs = r["records"]
    shape = [(x["type"], x.get("idstr")) for x in recs]
    want = [("SECTION_START", "ram"), ("SECTION_PART", "ram"),
            ("SECTION_END", "ram"), ("SECTION_FULL", "timer"),
            ("SECTION_FULL", "globalstate"), ("EOF", None),
            ("VMDESCRIPTION", None)]
    # the RAM data may be split into more PARTs: fold repeated PARTs
    folded = [s for i, s in enumerate(shape) if i == 0 or s != shape[i - 1]]
    if folded != want:
        fail(f"{who}: record sequence {folded}, expected {want}")
    for x in recs:
        if "section-id" in x and x["instance"] != 0:
            fail(f"{who}: {x['idstr']} instance {x['instance']}")
        if x.get("idstr") == "ram" and x["version"] != 4:
            fail(f"{who}: ram version {x['version']}")
        if x.get("idstr") == "timer" and (x["version"], x["size"]) != (2, 48):
            fail(f"{who}: timer v{x['version']} {x['size']} bytes, want v2 48")
        if x.get("idstr") == "globalstate":
            if (x["version"], x["size"]) != (1, 134):
                fail(f"{who}: globalstate v{x['version']} {x['size']} bytes")
            if x["runstate"] != "running":
                fail(f"{who}: globalstate runstate {x['runstate']}")
    ids = {}
    for x in recs:
        if "section-id" in x:
            if ids.setdefault(x["section-id"], x["idstr"]) != x["idstr"]:
                fail(f"{who}: section id {x['section-id']} reused")
    if r["parsed-bytes"] != r["size"]:
        fail(f"{who}: {r['size'] - r['parsed-bytes']} trailing bytes")
    log(f"{who}: structure as expected; sections "
        f"{ {v: k for k, v in ids.items()} }, ZERO {b['zero']}, PAGE {b['page']}")
    return recs[-1]["json"]


def test_wire_structure():
    s = saved_streams()
    rq, rf = analyze(s["qemu"]), analyze(s["ferry"])
    dq = check_structure("QEMU stream", rq, s["content"])
    df = check_structure("ferry stream", rf, s["content"])
    if dq != df:
        fail(f"VMDESCRIPTION differs:\nQEMU  {dq}\nferry {df}")
    qemu = (open(s["qemu"], "rb").read(), rq)
    ferry = (open(s["ferry"], "rb").read(), rf)
    compare_streams(qemu, ferry, ("QEMU", "ferry"))
    if rq["size"] == rf["size"] and masked(*qemu) == masked(*ferry):
        log(f"(even byte for byte, {rq['size']} bytes, but for section ids "
            "and clock values)")


def load_file(kind, stream, who):
    s = saved_streams()
    vm = start(kind, MEM, who, incoming=f"exec:cat {stream}")
    info = wait_status(vm, ("completed",), 60)
    expect_completed(vm, info, "destination")
    st = vm.qmp.cmd("query-status")
    if not st.get("running"):
        fail(f"{who}: not running after the load: {st}")
    s["content"].check_dump(dump(vm, MEM, s["dir"]), who)
    vm.shutdown()


def test_qemu_loads_ferry_file():
    load_file("qemu", saved_streams()["ferry"], "qemu-load-ferry-file")


def test_ferry_loads_qemu_file():
    load_file("ferry", saved_streams()["qemu"], "ferry-load-qemu-file")


if __name__ == "__main__":
    main([test_wire_structure, test_qemu_loads_ferry_file,
          test_ferry_loads_qemu_file], timeout=200)

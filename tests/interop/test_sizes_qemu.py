#!/usr/bin/env python3
"""RAM sizes between QEMU 7.2 and ferry (machine none, precopy over TCP with
the return path): 64 MiB and 1 GiB both ways with known content, and a RAM
size mismatch in both directions (smaller and larger source), which the
destination refuses naming both sizes, and the source then fails quickly
instead of completing or hanging."""

from interop import GiB, MiB, Content, fail, log, main, make_tmpdir, precopy, refused


def sized(src_kind, dst_kind, mem):
    d = make_tmpdir("interop-size-")
    # dense content at both ends and in the middle; the rest is zero
    chunk = 8 * MiB if mem > 256 * MiB else mem // 4
    dense = [(0, chunk), (mem // 2 - chunk // 2, chunk), (mem - chunk, chunk)]
    content = Content(d, mem, dense=dense, seed=mem >> 20)
    log(f"{mem >> 20} MiB content: {content.counts}")
    # the source's own dumps are covered by test_precopy_qemu; skip them here
    precopy(src_kind, dst_kind, mem, content, d, check_src=mem <= 256 * MiB)


def test_64m_qemu_to_ferry():
    sized("qemu", "ferry", 64 * MiB)


def test_64m_ferry_to_qemu():
    sized("ferry", "qemu", 64 * MiB)


def test_1g_qemu_to_ferry():
    sized("qemu", "ferry", 1 * GiB)


def test_1g_ferry_to_qemu():
    sized("ferry", "qemu", 1 * GiB)


def mismatch(src_kind, dst_kind, src_mem, dst_mem):
    s, src_err, dst_err, took = refused(
        src_kind, dst_kind, {"mem": src_mem}, {"mem": dst_mem})
    if took > 10:
        fail(f"refusal took {took:.1f}s")
    if dst_kind == "ferry":
        want = (f"RAM size mismatch: the stream carries {src_mem} bytes of "
                f"RAM, this VM has {dst_mem}")
        if want not in dst_err:
            fail(f"ferry destination: no '{want}' in {dst_err!r}")
        # ferry must tell the QEMU source through SHUT(1), not just hang up
        if "RP: Sibling indicated error 1" not in src_err:
            fail(f"QEMU source did not get SHUT(1): {src_err!r}")
    else:
        want = f"Size mismatch: ram: {src_mem:#x} != {dst_mem:#x}"
        if want not in dst_err:
            fail(f"QEMU destination: no '{want}' in {dst_err!r}")
        desc = s.get("error-desc", "")
        if "return path" not in desc.lower():
            fail(f"ferry source: error-desc {desc!r} does not say the "
                 "destination went away on the return path")


def test_mismatch_qemu_to_ferry():
    mismatch("qemu", "ferry", 64 * MiB, 256 * MiB)
    mismatch("qemu", "ferry", 256 * MiB, 64 * MiB)


def test_mismatch_ferry_to_qemu():
    mismatch("ferry", "qemu", 64 * MiB, 256 * MiB)
    mismatch("ferry", "qemu", 256 * MiB, 64 * MiB)


if __name__ == "__main__":
    main([test_64m_qemu_to_ferry, test_64m_ferry_to_qemu,
          test_1g_qemu_to_ferry, test_1g_ferry_to_qemu,
          test_mismatch_qemu_to_ferry, test_mismatch_ferry_to_qemu],
         timeout=280)

#!/usr/bin/env python3
"""Precopy over TCP between QEMU 7.2 and ferry, both ways, machine none with
256 MiB of known content (zero, uniform, random and almost-zero pages):
the destination's RAM must equal the content byte for byte, and so must
the source's (QEMU's own pmemsave is a second witness of the loader)."""

from interop import MiB, Content, log, main, make_tmpdir, precopy

MEM = 256 * MiB


def run(src_kind, dst_kind):
    d = make_tmpdir("interop-precopy-")
    content = Content(d, MEM, seed=7)
    log(f"content: {content.counts}")
    precopy(src_kind, dst_kind, MEM, content, d)


def test_qemu_to_ferry():
    run("qemu", "ferry")


def test_ferry_to_qemu():
    run("ferry", "qemu")


if __name__ == "__main__":
    main([test_qemu_to_ferry, test_ferry_to_qemu], timeout=280)

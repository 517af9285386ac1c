#!/usr/bin/env python3
"""Build migration streams in QEMU 7.2's wire format (see
docs: qemu-wire-format.md), for tests that feed a ferry destination valid
and deliberately broken streams.  Standard library only.

A Stream collects bytes and named marks (byte offsets of the parts a
corruption test wants to hit: the header, a section header, a page record
header, a block name...).  Typical use:

    s = Stream()
    s.header("none")
    s.ram_start(SID_RAM, [("ram", 64 << 20)])
    s.ram_part(SID_RAM, [("ram", 0x1000, page_bytes), ("ram", 0x2000, 0)])
    s.ram_end(SID_RAM)
    s.timer(SID_TIMER)
    s.globalstate(SID_GLOBAL, "running")
    s.eof_vmdesc()
    open(path, "wb").write(s.bytes())

Run as a script it writes a valid stream for a `-M none -m SIZE` ferry:
    streamgen.py OUT [--mem 64M] [--pages N]
"""

import argparse
import struct
import sys

PAGE = 4096
MAGIC = 0x5145564D
VERSION = 3

EOF_ = 0x00
START, PART, END, FULL = 0x01, 0x02, 0x03, 0x04
SUBSECTION, VMDESC, CONFIG, COMMAND, FOOTER = 0x05, 0x06, 0x07, 0x08, 0x7E

RAM_ZERO, RAM_MEM_SIZE, RAM_PAGE, RAM_EOS = 0x02, 0x04, 0x08, 0x10
RAM_CONTINUE = 0x20

CMD_OPEN_RP, CMD_PING, CMD_ADVISE, CMD_LISTEN, CMD_RUN = 1, 2, 3, 4, 5
CMD_DISCARD, CMD_PACKAGED = 6, 7

SID_TIMER, SID_RAM, SID_GLOBAL = 0, 2, 4


def be16(v):
    return struct.pack(">H", v & 0xFFFF)


def be32(v):
    return struct.pack(">I", v & 0xFFFFFFFF)


def be64(v):
    return struct.pack(">Q", v & 0xFFFFFFFFFFFFFFFF)


def counted(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    if not 0 < len(b) < 256:
        raise ValueError(f"counted string of {len(b)} bytes")
    return bytes([len(b)]) + b


def page_pattern(offset, tag=0x5A):
    """4 KiB that identify their own offset: be64 offset + tag, repeated."""
    return (be64(offset) + bytes([tag] * 8)) * (PAGE // 16)


class Stream:
    def __init__(self):
        self.buf = bytearray()
        self.marks = {}

    def mark(self, name):
        """Remember the current offset under name (first one wins)."""
        self.marks.setdefault(name, len(self.buf))

    def put(self, *parts):
        for p in parts:
            self.buf += p
        return self

    def bytes(self):
        return bytes(self.buf)

    # ---- framing -------------------------------------------------------
    def header(self, machine="none", version=VERSION):
        self.mark("header")
        self.put(be32(MAGIC), be32(version))
        self.mark("configuration")
        m = machine.encode()
        return self.put(bytes([CONFIG]), be32(len(m)), m)

    def section_header(self, kind, sid, idstr=None, instance=0, version=0):
        self.mark(f"section:{idstr or sid}:{kind}")
        self.put(bytes([kind]), be32(sid))
        if kind in (START, FULL):
            self.mark(f"idstr:{idstr}")
            self.put(counted(idstr), be32(instance), be32(version))
        return self

    def footer(self, sid):
        return self.put(bytes([FOOTER]), be32(sid))

    def command(self, cmd, payload=b"", length=None):
        self.mark(f"command:{cmd}")
        n = len(payload) if length is None else length
        return self.put(bytes([COMMAND]), be16(cmd), be16(n), payload)

    def eof_vmdesc(self, json_text=b'{"page_size": 4096, "devices": []}'):
        self.mark("eof")
        return self.put(bytes([EOF_]), bytes([VMDESC]), be32(len(json_text)),
                        json_text)

    # ---- RAM ("ram", instance 0, version 4) ------------------------------
    def ram_start(self, sid, blocks, total=None):
        """blocks: [(name, used_length)]."""
        self.section_header(START, sid, "ram", 0, 4)
        total = sum(n for _, n in blocks) if total is None else total
        self.mark("ram:mem_size")
        self.put(be64(total | RAM_MEM_SIZE))
        for name, length in blocks:
            self.mark(f"ram:block:{name}")
            self.put(counted(name), be64(length))
        return self.put(be64(RAM_EOS)).footer(sid)

    def ram_record(self, block, offset, data, cont=False, flags=None):
        """data: 4096 bytes (PAGE) or an int fill byte (ZERO)."""
        self.mark(f"page:{offset:#x}")
        if flags is None:
            flags = RAM_ZERO if isinstance(data, int) else RAM_PAGE
        if cont:
            flags |= RAM_CONTINUE
        self.put(be64(offset | flags))
        if not cont:
            self.mark(f"blockname:{offset:#x}")
            self.put(counted(block))
        self.mark(f"payload:{offset:#x}")
        if isinstance(data, int):
            return self.put(bytes([data]))
        return self.put(bytes(data))

    def ram_part(self, sid, pages, kind=PART):
        """pages: [(block, offset, data)]; consecutive records of one block
        use CONTINUE, as a QEMU source does."""
        self.section_header(kind, sid)
        last = None
        for block, offset, data in pages:
            self.ram_record(block, offset, data, cont=(block == last))
            last = block
        self.mark(f"ram:eos:{kind}")
        return self.put(be64(RAM_EOS)).footer(sid)

    def ram_end(self, sid, pages=()):
        return self.ram_part(sid, pages, kind=END)

    # ---- device state ----------------------------------------------------
    def timer(self, sid, ticks=0, clock=0):
        self.section_header(FULL, sid, "timer", 0, 2)
        return self.put(be64(ticks), be64(0), be64(clock)).footer(sid)

    def globalstate(self, sid, state="running"):
        self.section_header(FULL, sid, "globalstate", 0, 1)
        s = state.encode() + b"\0"
        return self.put(be32(len(s)), s.ljust(100, b"\0")).footer(sid)


def precopy_stream(mem_bytes, pages, machine="none"):
    """A complete precopy stream: pages is [(offset, data)] in block "ram",
    sent in one PART; everything else is left zero."""
    s = Stream()
    s.header(machine)
    s.ram_start(SID_RAM, [("ram", mem_bytes)])
    s.ram_part(SID_RAM, [("ram", off, data) for off, data in pages])
    s.ram_end(SID_RAM)
    s.timer(SID_TIMER)
    s.globalstate(SID_GLOBAL, "running")
    s.eof_vmdesc()
    return s


def sample_pages(n, stride=0x11000):
    """n pattern pages spread over the first n * stride bytes, with a zero
    page with a non-zero fill among them."""
    pages = [(0x100000 + i * stride, page_pattern(0x100000 + i * stride, i & 0xFF))
             for i in range(n)]
    pages.append((0x80000, 0))
    return pages


def parse_size(s):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * units[s[-1].upper()] if s[-1].upper() in units else int(s)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--mem", default="64M")
    ap.add_argument("--pages", type=int, default=4)
    a = ap.parse_args()
    s = precopy_stream(parse_size(a.mem), sample_pages(a.pages))
    with open(a.out, "wb") as f:
        f.write(s.bytes())
    for k, v in sorted(s.marks.items(), key=lambda kv: kv[1]):
        print(f"{v:#8x} {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

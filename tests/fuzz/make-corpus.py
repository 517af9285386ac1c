#!/usr/bin/env python3
"""Write the small seed corpus of every fuzz target into corpus/<target>/.

The files are committed; run this again only to regenerate them after a
format change:  tests/fuzz/make-corpus.py
(fuzz-loadvm's own seeds come from `fuzz-loadvm-standalone --seed DIR`,
plus the streams written here.)
"""

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "functional"))
import streamgen as sg  # noqa: E402

RAM = 1 << 20           # the RAMBlock of fuzz-ram-load


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def streams():
    """Small valid (and a few nearly valid) streams for a 1 MiB "ram"."""
    out = {}
    pages = [(0x1000, sg.page_pattern(0x1000)), (0x2000, 0),
             (0x3000, sg.page_pattern(0x3000, 0x11))]
    out["precopy"] = sg.precopy_stream(RAM, pages).bytes()
    s = sg.Stream()
    s.header("none")
    s.ram_start(sg.SID_RAM, [("ram", RAM)])
    s.ram_part(sg.SID_RAM, [("ram", 0, 0), ("ram", 0x1000, 0)])
    s.ram_end(sg.SID_RAM, [("ram", 0xff000, sg.page_pattern(0xff000))])
    s.globalstate(sg.SID_GLOBAL, "paused")
    s.eof_vmdesc()
    out["commands"] = s.bytes()
    s = sg.Stream()
    s.header("none")
    s.command(sg.CMD_ADVISE, sg.be64(4096) + sg.be64(4096))
    s.command(sg.CMD_DISCARD, b"\0" + sg.counted("ram") + b"\0" +
              sg.be64(0x1000) + sg.be64(0x2000))
    s.ram_start(sg.SID_RAM, [("ram", RAM)])
    blob = sg.Stream()
    blob.command(sg.CMD_LISTEN)
    blob.timer(sg.SID_TIMER)
    blob.command(sg.CMD_RUN)
    s.command(sg.CMD_PACKAGED, sg.be32(len(blob.buf)))
    s.put(blob.bytes())
    out["postcopy"] = s.bytes()
    return out


def postcopy_streams():
    """For fuzz-postcopy (its return path is given, so no OPEN_RETURN_PATH):
    precopy pages, discards, the package, postcopy pages to EOF."""
    def build(after_run):
        s = sg.Stream()
        s.header("none")
        s.command(sg.CMD_ADVISE, sg.be64(4096) + sg.be64(4096))
        s.ram_start(sg.SID_RAM, [("ram", RAM)])
        s.ram_part(sg.SID_RAM, [("ram", 0x1000, sg.page_pattern(0x1000)),
                                ("ram", 0x2000, 0),
                                ("ram", 0x3000, sg.page_pattern(0x3000))])
        s.command(sg.CMD_PING, sg.be32(2))
        s.command(sg.CMD_DISCARD, b"\0" + sg.counted("ram") + b"\0" +
                  sg.be64(0x3000) + sg.be64(0x1000) +
                  sg.be64(0x10000) + sg.be64(0x4000))
        blob = sg.Stream()
        blob.command(sg.CMD_LISTEN)
        blob.timer(sg.SID_TIMER)
        blob.globalstate(sg.SID_GLOBAL)
        blob.command(sg.CMD_PING, sg.be32(3))
        blob.command(sg.CMD_RUN)
        s.command(sg.CMD_PACKAGED, sg.be32(len(blob.buf)))
        s.put(blob.bytes())
        after_run(s)
        s.ram_end(sg.SID_RAM)
        s.put(bytes([sg.EOF_]))
        return s.bytes()

    def pages(s):
        s.ram_part(sg.SID_RAM, [("ram", 0x3000, sg.page_pattern(0x3000, 7)),
                                ("ram", 0x10000, 0),
                                ("ram", 0x11000, sg.page_pattern(0x11000))])

    def twice(s):
        s.ram_part(sg.SID_RAM, [("ram", 0x4000, 0), ("ram", 0x4000, 0)])

    def recovery_cmds(s):
        s.command(10, sg.counted("ram"))            # RECV_BITMAP
        s.command(9)                                # POSTCOPY_RESUME

    return {"postcopy-complete": build(pages),
            "postcopy-eexist": build(twice),
            "postcopy-recovery-cmds": build(recovery_cmds)}


def deep_streams(levels=30000, brackets=100000):
    """Inputs that overflowed the analyzer's 8 MiB stack before it had
    limits: PACKAGED inside PACKAGED levels deep (each blob length differs,
    so this one does not compress: keep it near the smallest that crashed),
    and a VMDESCRIPTION of that many '['."""
    s = sg.Stream()
    s.header("none")
    for k in range(levels, 0, -1):
        s.command(sg.CMD_PACKAGED, sg.be32(5 + 9 * (k - 1)))
    s.command(sg.CMD_RUN)
    s.put(b"\0")
    nested = s.bytes()
    s = sg.Stream()
    s.header("none")
    s.eof_vmdesc(b"[" * brackets)
    return {"nested-packaged": nested, "deep-vmdesc": s.bytes()}


def main():
    for name, data in streams().items():
        write("fuzz-ram-load", name, data)
        write("fuzz-loadvm", name, data)
        write("fuzz-stream-analyze", name, data)
    for name, data in deep_streams().items():
        write("fuzz-stream-analyze", name, data)
    for name, data in postcopy_streams().items():
        write("fuzz-postcopy", name, data)
    for name, data in streams().items():
        write("fuzz-postcopy", name, data)

    be16 = lambda v: struct.pack(">H", v)
    be32 = lambda v: struct.pack(">I", v)
    be64 = lambda v: struct.pack(">Q", v)
    rp = lambda t, p: be16(t) + be16(len(p)) + p
    write("fuzz-return-path", "shut", rp(1, be32(0)))
    write("fuzz-return-path", "pong-reqs",
          rp(2, be32(1)) + rp(3, be64(0x2345000) + be32(4096) + b"\x03ram") +
          rp(4, be64(0x8000000) + be32(4096)) + rp(1, be32(0)))
    write("fuzz-return-path", "bitmap-ack",
          rp(5, b"\x03ram") + rp(6, be32(1)))
    # 1 MiB "ram": 256 pages, 32 bytes of bitmap, then the end marker
    write("fuzz-return-path", "recv-bitmap",
          rp(5, b"\x03ram") + be64(32) + b"\xff" * 16 + b"\x0f" +
          b"\0" * 15 + be64(0x0123456789ABCDEF) + rp(6, be32(1)) +
          rp(4, be64(0x8000) + be32(4096)))

    write("fuzz-qmp", "negotiate",
          '{"execute": "qmp_capabilities"}\n{"execute": "query-version"}\n')
    write("fuzz-qmp", "commands",
          '{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}'
          '{"execute":"query-commands","id":1}'
          '{"exec-oob":"x-fuzz-args","arguments":{"s":"a\\u00e9","i":-3,'
          '"u":18446744073709551615,"b":true},"id":[1,{"x":null}]}'
          '{"execute":"x-fuzz-event","arguments":{"k":[1.5e3,"\\""]}}\n')
    write("fuzz-qmp", "errors",
          '{"execute":"query-version"}\n{"execute":"qmp_capabilities"}'
          '{"execute":"nope"}{"execute":"x-fuzz-args","arguments":{"s":1}}'
          '[1,2]\n"str" 12 {"a": }\x00\xff{"execute":"x-fuzz-args",'
          '"arguments":{"s":"x","zz":0}}\n')

    nul = "\0"
    write("fuzz-cmdline", "pc", nul.join([
        "-M", "pc", "-accel", "kvm", "-m", "512M", "-smp", "2",
        "-kernel", "guest.bin", "-append", "ncpus=2", "-qmp",
        "unix:/tmp/q.sock,server=on,wait=off", "-serial", "file:out.txt",
        "-display", "none", "-incoming", "defer", "-S", "-name", "a,b"]))
    write("fuzz-cmdline", "backend", nul.join([
        "-machine", "none,memory-backend=mem0", "-object",
        "memory-backend-memfd,id=mem0,size=64M,share=on", "-device",
        "loader,file=blob,addr=0x100000,force-raw=on", "-nodefaults"]))
    write("fuzz-cmdline", "errors", "-m\n-smp\n4,sockets=0\n-bogus")
    # what libvirt 9.0 puts on a diskless domain's command line
    write("fuzz-cmdline", "libvirt", nul.join([
        "-name", "guest=g,debug-threads=on", "-S", "-object",
        "secret,id=masterKey0,format=raw,data=abc", "-machine",
        "x-ram,usb=off,dump-guest-core=off,memory-backend=ram", "-accel",
        "tcg", "-m", "64", "-object", "memory-backend-ram,id=ram,size=64M",
        "-overcommit", "mem-lock=off", "-uuid",
        "0f0e0d0c-0b0a-4908-8706-050403020100", "-no-user-config",
        "-nodefaults", "-chardev", "socket,id=charmonitor,fd=2,server=on,"
        "wait=off", "-mon", "chardev=charmonitor,id=monitor,mode=control",
        "-rtc", "base=utc", "-no-shutdown", "-no-reboot", "-no-acpi",
        "-boot", "strict=on", "-chardev", "file,id=s0,path=s.log,append=on",
        "-device", "isa-serial,chardev=s0,id=serial0", "-audiodev",
        '{"id":"audio1","driver":"none"}', "-msg", "timestamp=on",
        "-sandbox", "off"]))

    for i, arg in enumerate(["memory-backend-ram,id=m,size=1G",
                             "memory-backend-file,id=m,size=2M,mem-path=/dev/hugepages,share=on,prealloc=off",
                             "memory-backend-memfd,id=m,size=8M,hugetlb=on,hugetlbsize=2M"]):
        write("fuzz-opts", f"object{i}", b"\x00" + arg.encode())
    write("fuzz-opts", "machine", b"\x81" + b"pc,accel=kvm,memory-backend=m,,x")
    write("fuzz-opts", "device", b"\x02" + b"loader,file=a,,b,addr=0x1000,force-raw=on")
    write("fuzz-opts", "smp", b"\x03" + b"4,sockets=1,cores=2,threads=2,maxcpus=4")
    write("fuzz-opts", "mem", b"\x04" + b"size=1G,slots=2,maxmem=2G")
    write("fuzz-opts", "accel", b"\x05" + b"kvm:tcg")
    write("fuzz-opts", "qmp", b"\x06" + b"tcp:127.0.0.1:4444,server=on,wait=off")

    # first byte: socket_address_parse flags (1 options, 2 ignore, 4 bare)
    for name, flags, addr in [
            ("tcp", 0, "tcp:127.0.0.1:4444"),
            ("tcp-any-port0", 0, "tcp::0"),
            ("tcp-v6", 0, "tcp:[::1]:4444"),
            ("tcp-v6-bare", 0, "tcp:::1:4444"),
            ("tcp-options", 1, "tcp:localhost:4444,server,nowait,ipv4=on"),
            ("unix", 0, "unix:/tmp/mig,with,commas"),
            ("unix-options", 1, "unix:/tmp/q.sock,server=on,wait=off"),
            ("bare-path", 6, "/tmp/q.sock,server=on,wait=off"),
            ("bad-port", 0, "tcp:h:65536x"),
            ("bad-bracket", 0, "tcp:[::1:4444"),
            ("long-path", 0, "unix:/" + "p" * 120)]:
        write("fuzz-sockets", name, bytes([flags]) + addr.encode())

    write("fuzz-multiboot", "flat", b"\x00" + multiboot_flat())
    write("fuzz-multiboot", "elf", b"\x03" + multiboot_elf())
    guest = os.path.join(HERE, "..", "..", "build", "tests", "guest", "guest.bin")
    if os.path.exists(guest) and os.path.getsize(guest) < 128 << 10:
        with open(guest, "rb") as f:
            write("fuzz-multiboot", "guest.bin", b"\x01" + f.read())
    return 0


def multiboot_flat():
    """Address-field header at 0: load 0x100000, 0x800 bytes, bss to 0x101000."""
    magic, flags = 0x1BADB002, 0x00010003
    hdr = struct.pack("<IIIIIIII", magic, flags, (-(magic + flags)) & 0xFFFFFFFF,
                      0x100000, 0x100000, 0x100800, 0x101000, 0x100020)
    return hdr.ljust(0x800, b"\x90")


def multiboot_elf():
    """ELF32 with one PT_LOAD of 0x200 bytes at 0x200000 (file offset 0x100)."""
    magic, flags = 0x1BADB002, 0x00000003
    eh = (b"\x7fELF\x01\x01\x01" + bytes(9) +
          struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, 0x200010, 52, 0, 0, 52, 32, 1,
                      0, 0, 0))
    ph = struct.pack("<IIIIIIII", 1, 0x100, 0x200000, 0x200000, 0x200, 0x400, 7,
                     0x1000)
    body = struct.pack("<III", magic, flags, (-(magic + flags)) & 0xFFFFFFFF)
    img = (eh + ph).ljust(0x100, b"\0") + body.ljust(0x200, b"\xf4")
    return img


if __name__ == "__main__":
    sys.exit(main())

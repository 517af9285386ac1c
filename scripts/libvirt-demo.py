#!/usr/bin/env python3
"""make libvirt-demo: libvirt 9.0 migrates a ferry domain with postcopy.

Two private libvirt daemons on this host (tests/libvirt/libvirtenv.py:
each in its own mount namespace, nothing of the system's libvirt touched),
a domain whose <emulator> is ferry, and the virsh commands an operator
types, each printed before it runs: define, start, migrate --live
--postcopy A -> B, domjobinfo. With KVM the domain is the sweeping test
guest (--postcopy-after-precopy); without, ferry's RAM-only machine x-ram
holding random data (migrate-postcopy switches during the copy). The RAM
is compared at the end; everything is removed on exit.

usage: scripts/libvirt-demo.py BUILD_DIR
"""

import filecmp
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "libvirt"))
if len(sys.argv) == 2:
    os.environ["FERRY_BUILD"] = os.path.abspath(sys.argv[1])
import libvirtenv as lv  # noqa: E402
import ferrytest as ft  # noqa: E402

NAME = "ferry-demo"
MEM_MIB = 256


def virsh(daemon, *args, timeout=300):
    print(f"\n$ virsh -c {daemon.name} {' '.join(map(str, args))}", flush=True)
    out = daemon.virsh(*args, timeout=timeout)
    if out.strip():
        print(out.rstrip(), flush=True)
    return out


def domain(tmp):
    """(XML for the first start, XML for the destination or None, check)."""
    if ft.kvm_usable():
        ft.require_file(ft.GUEST, "test guest")
        xml = lv.domain_xml(NAME, ft.FERRY, MEM_MIB, "kvm", "pc",
                            kernel=ft.GUEST, cmdline="ncpus=1",
                            serial_path=os.path.join(tmp, "serial.log"))
        return xml, None, None
    print("no usable /dev/kvm: the domain is ferry's RAM-only machine x-ram")
    pattern = os.path.join(tmp, "pattern.bin")
    with open(pattern, "wb") as f:
        f.write(os.urandom(64 << 20))
    uuid = "0d3e2f1a-9b8c-4d7e-a6f5-443322110099"
    loader = ["-device", f"loader,file={pattern},addr=0x100000,force-raw=on"]
    first = lv.domain_xml(NAME, ft.FERRY, MEM_MIB, "qemu", "x-ram", uuid=uuid,
                          extra_qemu_args=loader)
    dest = os.path.join(tmp, "dest.xml")
    with open(dest, "w") as f:
        f.write(lv.domain_xml(NAME, ft.FERRY, MEM_MIB, "qemu", "x-ram",
                              uuid=uuid))
    return first, dest, pattern


def main():
    lv.require_libvirt()
    tmp = ft.make_tmpdir("ferry-libvirt-demo-")
    a = lv.LibvirtDaemon("A", tmp)
    b = lv.LibvirtDaemon("B", tmp)
    try:
        xml, dest, pattern = domain(tmp)
        path = os.path.join(tmp, NAME + ".xml")
        with open(path, "w") as f:
            f.write(xml)
        virsh(a, "define", path)
        virsh(a, "start", NAME)
        virsh(a, "list")
        args = ["migrate", "--live", "--postcopy", "--persistent", NAME, b.uri,
                "--migrateuri", f"tcp://127.0.0.1:{ft.free_tcp_port()}"]
        if dest:
            args += ["--xml", dest, "--bandwidth", "16"]
            print(f"\n$ virsh -c A {' '.join(args)} &", flush=True)
            p = subprocess.Popen([lv.VIRSH, "-c", a.uri] + args,
                                 stdin=subprocess.DEVNULL)
            print(f"\n$ virsh -c A migrate-postcopy {NAME}", flush=True)
            a.migrate_postcopy(NAME, p)
            if p.wait(timeout=300):
                ft.fail("virsh migrate failed")
        else:
            args += ["--postcopy-after-precopy", "--bandwidth", "100"]
            virsh(a, *args)
        virsh(b, "list")
        virsh(a, "domjobinfo", NAME, "--completed")
        if pattern:
            dump = os.path.join(tmp, "dest.ram")
            b.qmp(NAME, "pmemsave", val=0x100000, size=64 << 20,
                  filename=dump)
            same = filecmp.cmp(dump, pattern, shallow=False)
            print(f"\nRAM on B equals what A was started with: {same}")
            if not same:
                return 1
        virsh(b, "destroy", NAME)
        return 0
    finally:
        b.stop()
        a.stop()


if __name__ == "__main__":
    sys.exit(main())

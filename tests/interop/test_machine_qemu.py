#!/usr/bin/env python3
"""ferry's pc machine against QEMU 7.2: a migration between different
machine types must be refused at the configuration record, clearly and at
once, on whichever side is the destination; the source must fail (not
complete, not hang), and nothing may crash.  Every case is bounded by a
timeout."""

import re

from interop import GUEST, MiB, fail, ferrytest, log, main, refused, require_file

MEM = 64 * MiB
MSG = re.compile(r"Machine type received is '([^']*)' and local is '([^']*)'")


def machine_args(kind, machine):
    args = {"mem": MEM, "machine": machine}
    if kind == "ferry" and machine == "pc":
        require_file(GUEST, "test guest")
        # ferry's pc wants a kernel and KVM (it is the one with vCPUs)
        args["extra"] = ["-accel", "kvm", "-kernel", GUEST]
    elif machine == "pc":
        args["extra"] = ["-S"]      # QEMU's pc: stay in the firmware, stopped
    return args


def case(src_kind, src_machine, dst_kind, dst_machine):
    log(f"--- {src_kind} -M {src_machine} -> {dst_kind} -M {dst_machine}")
    s, src_err, dst_err, took = refused(
        src_kind, dst_kind, machine_args(src_kind, src_machine),
        machine_args(dst_kind, dst_machine), timeout=15)
    if took > 10:
        fail(f"refusal took {took:.1f}s, not immediate")
    m = MSG.search(dst_err)
    if not m:
        fail(f"{dst_kind} destination did not name the machine mismatch: "
             f"{dst_err!r}")
    received, local = m.groups()
    if received == local:
        fail(f"mismatch reported between equal names: {m.group(0)}")
    for kind, machine, name in ((src_kind, src_machine, received),
                                (dst_kind, dst_machine, local)):
        if machine == "none" and name != "none":
            fail(f"{kind} -M none is called {name!r} on the wire, not 'none'")
        if kind == "qemu" and machine == "pc" and \
                not name.startswith("pc-i440fx-"):
            fail(f"unexpected QEMU pc name {name!r}")
    if src_kind == "ferry" and not s.get("error-desc"):
        fail(f"ferry source failed without an error-desc: {s}")


def test_ferry_pc_to_qemu_none():
    case("ferry", "pc", "qemu", "none")


def test_qemu_none_to_ferry_pc():
    case("qemu", "none", "ferry", "pc")


def test_ferry_pc_to_qemu_pc():
    case("ferry", "pc", "qemu", "pc")


def test_qemu_pc_to_ferry_pc():
    case("qemu", "pc", "ferry", "pc")


if __name__ == "__main__":
    # every case runs ferry's pc machine, which has vCPUs and needs KVM
    ferrytest.require_kvm()
    main([test_ferry_pc_to_qemu_none, test_qemu_none_to_ferry_pc,
          test_ferry_pc_to_qemu_pc, test_qemu_pc_to_ferry_pc], timeout=200)

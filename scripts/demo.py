#!/usr/bin/env python3
"""The main job: a real live migration between two local VMs.

Boots the test guest (2 vCPUs, 1 GiB, writing all of its RAM as fast as it
can) on KVM under ferry, then migrates it to a second ferry process on
loopback with build/tools/ferry-migrate, exactly as a user would:
precopy first at a bandwidth cap the guest out-dirties, then postcopy once
the first pass is over (--postcopy-after-precopy, as `virsh migrate
--postcopy --postcopy-after-precopy`).  ferry-migrate shows the progress
and prints the summary.  Afterwards the destination's RAM is checked page by
page and the guest is shown sweeping on the destination.

Without a usable /dev/kvm the same migration runs between two machine
`none` VMs, where an x-dirtier device (docs/usage.md) writes the RAM as the
guest would, and the source takes the switch to postcopy itself
(x-auto-postcopy, ferry-migrate --switch-policy=auto); the RAM check is
tests/functional/dirtier.py's compare_postcopy.

Environment: DEMO_MODE=precopy for a plain precopy migration instead.
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "functional"))
import ferrytest as ft  # noqa: E402
import dirtier  # noqa: E402

MEM = "1G"
MEM_BYTES = 1 << 30
SMP = 2


def say(msg):
    print(f"demo: {msg}", flush=True)


# Without KVM: RAM and writer rate (above the 200M cap: it out-dirties it).
NOKVM_MEM = 512 << 20
NOKVM_WRITER = f"x-dirtier,rate=300M,size={NOKVM_MEM},pattern=random"


def migration_tool(src, vm_args, mode, switch_flag, dst_dir, dst_extra=()):
    """The destination's QMP socket (in dst_dir) and the ferry-migrate
    command line that starts it with vm_args and migrates src there:
    precopy at 2G, else at 200M with switch_flag for the switch."""
    dst_qmp = os.path.join(dst_dir, "qmp.sock")
    dst_cmd = " ".join([ft.FERRY] + vm_args + [
        "-incoming", "defer", "-display", "none"] + list(dst_extra) + [
        "-qmp", f"unix:{dst_qmp},server=on,wait=off"])
    tool = [ft.FERRY_MIGRATE, "--src", src.qmp_path, "--dst-cmd", dst_cmd,
            "--max-bandwidth", "2G" if mode == "precopy" else "200M",
            "--downtime-limit", "50", "--cap", "postcopy-blocktime=on",
            "--timeout", "300"]
    if mode != "precopy":
        tool.append(switch_flag)
    return dst_qmp, tool


def main_without_kvm(mode):
    say("/dev/kvm is not usable on this machine: machine none with an "
        "x-dirtier writing its RAM stands in for the guest")
    vm_args = ["-M", "none", "-m", f"{NOKVM_MEM >> 20}M", "-nodefaults",
               "-device", NOKVM_WRITER]
    src = ft.VM(vm_args, name="demo-src", serial=False).launch()
    dirtier.wait_writes(src, 100000, timeout=60)
    say(f"writer running on the source: {src.qmp.cmd('x-query-dirtier')}")
    dst_dir = ft.make_tmpdir("ferrytest-demo-dst-")
    dst_qmp, tool = migration_tool(src, vm_args, mode, "--switch-policy=auto",
                                   dst_dir)
    say("migrating with: ferry-migrate " + " ".join(tool[5:]))
    rc = subprocess.call(tool)
    if rc != 0:
        say(f"ferry-migrate failed with exit status {rc}")
        src.shutdown()
        return 1
    dst = ft.QMP(dst_qmp)
    say(f"destination VM is {dst.cmd('query-status')['status']}, its writer "
        f"{dst.cmd('x-query-dirtier')}; the source is "
        f"{src.qmp.cmd('query-status')['status']}")
    dst.cmd("stop")
    dumps = []
    for qmp, name in ((src.qmp, "src"), (dst, "dst")):
        dumps.append(os.path.join(dst_dir, f"{name}.dump"))
        qmp.cmd("pmemsave", val=0, size=NOKVM_MEM, filename=dumps[-1],
                timeout=300)
    try:
        out = dirtier.compare_postcopy(dumps[0], dumps[1], (0, NOKVM_MEM))
        ok = True
        say(f"RAM checked page by page: {NOKVM_MEM >> 12} pages, "
            f"{out['rewritten']} rewritten on the destination since, the "
            f"rest identical")
    except dirtier.PageError as e:
        ok = False
        say(f"RAM check: {e}")
    for d in dumps:
        os.unlink(d)
    say(f"destination RAM check: {'PASSED' if ok else 'FAILED'}")
    dst.cmd("quit")
    src.shutdown()
    return 0 if ok else 1


def main():
    mode = os.environ.get("DEMO_MODE", "postcopy")
    if not ft.kvm_usable():
        return main_without_kvm(mode)
    src = ft.VM(ft.ferry_guest_args(MEM, SMP), name="demo-src").launch()
    src.wait_serial("guest:", timeout=120)
    params = src.guest_params()
    say(f"source booted: {src.serial().splitlines()[0]}")
    src.wait_sweeps(SMP, 2, timeout=120)
    say(f"guest sweeping its RAM on the source (sweeps per vCPU: {src.sweeps(SMP)})")

    dst_dir = ft.make_tmpdir("ferrytest-demo-dst-")
    dst_serial = os.path.join(dst_dir, "serial.log")
    dst_qmp, tool = migration_tool(
        src, ft.ferry_guest_args(MEM, SMP), mode, "--postcopy-after-precopy",
        dst_dir, ["-serial", f"file:{dst_serial}"])
    say("migrating with: " + " ".join(os.path.basename(a) if a == ft.FERRY_MIGRATE else a
                                      for a in tool[:1] + tool[5:]))
    rc = subprocess.call(tool)
    if rc != 0:
        say(f"ferry-migrate failed with exit status {rc}")
        src.shutdown()
        return 1

    dst = ft.QMP(dst_qmp)
    status = dst.cmd("query-status")["status"]
    say(f"destination VM is {status}; the source is "
        f"{src.qmp.cmd('query-status')['status']}")
    time.sleep(2)
    with open(dst_serial) as f:
        digits = f.read()
    say(f"guest kept sweeping on the destination: {[digits.count(str(i)) for i in range(SMP)]} "
        "sweeps per vCPU since the switch")
    dst.cmd("stop")
    dump = os.path.join(dst_dir, "ram.dump")
    dst.cmd("pmemsave", val=0, size=MEM_BYTES, filename=dump, timeout=300)
    ok, report = ft.guest_check(dump, params["ncpus"], params["start"], params["end"],
                                params["seed"])
    os.unlink(dump)
    print(report.strip())
    say(f"destination RAM check: {'PASSED' if ok else 'FAILED'} "
        f"({(params['end'] - params['start']) >> 12} guest pages checked)")
    dst.cmd("quit")
    src.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

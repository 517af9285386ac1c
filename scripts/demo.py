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

Environment: DEMO_MODE=precopy for a plain precopy migration instead.
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "functional"))
import ferrytest as ft  # noqa: E402

MEM = "1G"
MEM_BYTES = 1 << 30
SMP = 2


def say(msg):
    print(f"demo: {msg}", flush=True)


def main():
    if not ft.kvm_usable():
        say("/dev/kvm is not usable on this machine; cannot boot a guest")
        return 1
    mode = os.environ.get("DEMO_MODE", "postcopy")
    src = ft.VM(ft.ferry_guest_args(MEM, SMP), name="demo-src").launch()
    src.wait_serial("guest:", timeout=120)
    params = src.guest_params()
    say(f"source booted: {src.serial().splitlines()[0]}")
    src.wait_sweeps(SMP, 2, timeout=120)
    say(f"guest sweeping its RAM on the source (sweeps per vCPU: {src.sweeps(SMP)})")

    dst_dir = ft.make_tmpdir("ferrytest-demo-dst-")
    dst_qmp = os.path.join(dst_dir, "qmp.sock")
    dst_serial = os.path.join(dst_dir, "serial.log")
    dst_cmd = " ".join([ft.FERRY] + ft.ferry_guest_args(MEM, SMP) + [
        "-incoming", "defer", "-display", "none",
        "-serial", f"file:{dst_serial}",
        "-qmp", f"unix:{dst_qmp},server=on,wait=off"])
    tool = [ft.FERRY_MIGRATE, "--src", src.qmp_path, "--dst-cmd", dst_cmd,
            "--max-bandwidth", "200M", "--downtime-limit", "50",
            "--cap", "postcopy-blocktime=on", "--timeout", "300"]
    if mode != "precopy":
        tool.append("--postcopy-after-precopy")
    else:
        tool[tool.index("200M")] = "2G"
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

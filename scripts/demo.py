#!/usr/bin/env python3
"""Demo: boot the test guest (2 vCPUs, 1 GiB) on KVM under ferry, show its
sweeps live, then stop it and verify every page of its RAM."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "functional"))
import ferrytest as ft  # noqa: E402

MEM = 1 << 30
SMP = 2


def main():
    if not ft.kvm_usable():
        print("demo: /dev/kvm is not usable on this machine; cannot boot a guest")
        return 1
    vm = ft.VM(ft.ferry_guest_args("1G", SMP), name="demo").launch()
    vm.wait_serial("guest:", timeout=120)
    print(vm.serial().splitlines()[0])
    t0 = time.time()
    while time.time() - t0 < 8:
        s = vm.sweeps(SMP)
        print(f"\r  running {time.time() - t0:4.1f}s  sweeps per vCPU: {s}  "
              f"(~{sum(s) * (MEM - 0x400000) / SMP / (time.time() - t0) / 1e9:.1f} GB/s written)",
              end="", flush=True)
        time.sleep(0.5)
    print()
    vm.qmp.cmd("stop")
    t = time.time()
    ok, report, dump = vm.check_guest_ram(MEM)
    os.unlink(dump)
    print(report.strip())
    print(f"summary: status={vm.qmp.cmd('query-status')['status']} RAM check "
          f"{'PASSED' if ok else 'FAILED'} ({(end - start) >> 12} pages, "
          f"dump+check {time.time() - t:.1f}s)")
    vm.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Shared body of the guest boot tests under ferry and under QEMU."""

import time

import ferrytest as ft

MEM = "512M"
MEM_BYTES = 512 << 20


def ferry_vm(smp, append=""):
    return ft.VM(ft.ferry_guest_args(MEM, smp, append), name=f"ferry-smp{smp}")


def qemu_vm(smp, append=""):
    return ft.VM(ft.qemu_guest_args(MEM, smp, append), binary=ft.QEMU,
                 name=f"qemu-smp{smp}")


def boot_stop_check(make_vm, smp, seed):
    vm = make_vm(smp, f"seed={seed}").launch()
    vm.wait_serial("guest:", timeout=120)
    ft.log(f"guest banner: {vm.serial().splitlines()[0]}")
    sweeps = vm.wait_sweeps(smp, 3, timeout=120)
    ft.log(f"sweeps per vCPU: {sweeps}")
    vm.qmp.cmd("stop")
    vm.qmp.wait_event("STOP")
    if vm.qmp.cmd("query-status")["status"] != "paused":
        ft.fail("not paused after stop")
    before = vm.sweeps(smp)
    params = vm.guest_params()
    if params["ncpus"] != smp or params["seed"] != seed:
        ft.fail(f"guest did not take its command line: {params}")
    start, end = params["start"], params["end"]
    ok, report, dump = vm.check_guest_ram(MEM_BYTES, min_sweeps=3)
    ft.log(report.strip().splitlines()[-1] if report.strip() else "(no report)")
    if not ok:
        ft.fail(f"guest RAM check failed:\n{report}")
    # A corrupted copy of the same dump must be caught (the oracle can fail).
    with open(dump, "r+b") as f:
        f.seek(start + 77 * 4096 + 8)
        f.write(b"\xde\xad\xbe\xef")
    ok, _ = ft.guest_check(dump, smp, start, end, seed, min_sweeps=3)
    if ok:
        ft.fail("checker accepted a corrupted page")
    if vm.sweeps(smp) != before:
        ft.fail("guest kept sweeping while paused")
    vm.qmp.cmd("cont")
    vm.qmp.wait_event("RESUME")
    vm.wait_sweeps(smp, [b + 2 for b in before], timeout=60)
    # system_reset reboots the guest from its image: a second banner, then
    # sweeps again (a reset that kept the old TSS or registers faults: '!').
    vm.qmp.cmd("system_reset")
    vm.qmp.wait_event("RESET")
    deadline = time.time() + 120
    while vm.serial().count("guest: ncpus=") < 2:
        if time.time() > deadline:
            ft.fail(f"no second boot after system_reset: {vm.serial()[-200:]!r}")
        time.sleep(0.1)
    after = vm.serial().rsplit("guest: ncpus=", 1)[1].split("\n", 1)
    deadline = time.time() + 60
    while len(after) < 2 or not all(str(i) in after[1] for i in range(smp)):
        if "!" in vm.serial() or time.time() > deadline:
            ft.fail(f"guest did not sweep after system_reset: {vm.serial()[-200:]!r}")
        time.sleep(0.1)
        after = vm.serial().rsplit("guest: ncpus=", 1)[1].split("\n", 1)
    vm.shutdown()


def main_for(make_vm):
    ft.require_kvm()

    def test_smp1():
        boot_stop_check(make_vm, 1, 0)

    def test_smp2():
        boot_stop_check(make_vm, 2, 0x1234)

    ft.main([test_smp1, test_smp2], timeout=500)

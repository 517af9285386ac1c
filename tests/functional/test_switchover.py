#!/usr/bin/env python3
"""pause-before-switchover, driven as libvirt drives it.

libvirt sets pause-before-switchover on every migration: the source stops
the VM, waits in pre-switchover for migrate-continue, and only then sends
the device state (precopy) or switches to postcopy.  For postcopy libvirt
answers MIGRATION_PASS 2 with migrate-start-postcopy, then pre-switchover
with migrate-continue.  A cancel in pre-switchover must leave the source
running.  RAM-only guests (-M none) with random content; the destination's
RAM is compared with the source's byte for byte."""

import time

import ferrytest as ft
from ferrytest import fail, log
from test_postcopy import MEM, pair, set_caps, wait_status


def compare_ram(src, dst, mem=MEM):
    a = open(src.pmemsave(mem), "rb").read()
    b = open(dst.pmemsave(mem), "rb").read()
    if a != b:
        bad = [i for i in range(0, mem, 4096) if a[i:i + 4096] != b[i:i + 4096]]
        fail(f"{len(bad)} pages differ, first at 0x{bad[0]:x}")


def hold_in_pre_switchover(src, dst, dst_state):
    """At pre-switchover: the source VM is stopped and stays so until told;
    the destination has not moved on; a continue for another state is
    refused."""
    wait_status(src, ("pre-switchover",), timeout=60)
    src.qmp.wait_event("MIGRATION", timeout=10,
                       pred=lambda e: e["data"]["status"] == "pre-switchover")
    if src.query_status() != "finish-migrate":
        fail(f"source run state {src.query_status()} in pre-switchover")
    time.sleep(0.5)
    if src.qmp.cmd("query-migrate")["status"] != "pre-switchover":
        fail("pre-switchover left without migrate-continue")
    if dst.qmp.cmd("query-migrate")["status"] != dst_state:
        fail(f"destination moved on while the source waits: "
             f"{dst.qmp.cmd('query-migrate')}")
    try:
        src.qmp.cmd("migrate-continue", state="active")
        fail("migrate-continue accepted for the wrong state")
    except ft.QMPError as e:
        if "pre-switchover" not in e.desc:
            fail(f"unexpected error: {e.desc}")


def test_precopy_pause():
    src, dst, uri = pair(bandwidth=0)
    set_caps(src, pause_before_switchover=True, postcopy_ram=False)
    src.qmp.cmd("migrate", uri=uri)
    hold_in_pre_switchover(src, dst, "active")
    src.qmp.cmd("migrate-continue", state="pre-switchover")
    src.wait_migration(timeout=60)
    dst.wait_status("running")
    compare_ram(src, dst)
    src.shutdown()
    dst.shutdown()


def test_postcopy_as_libvirt():
    src, dst, uri = pair(bandwidth=40 << 20)
    set_caps(src, pause_before_switchover=True)
    src.qmp.cmd("migrate", uri=uri)
    # libvirt's --postcopy-after-precopy waits for MIGRATION_PASS 2, by
    # when a RAM-only guest (nothing dirties it) has sent everything and
    # completes in precopy: switch during pass 1 instead.
    src.qmp.cmd("migrate-start-postcopy")
    hold_in_pre_switchover(src, dst, "active")
    src.qmp.cmd("migrate-continue", state="pre-switchover")
    # pre-switchover is left for postcopy-active, not device (precopy's)
    src.qmp.wait_event("MIGRATION", timeout=30,
                       pred=lambda e: e["data"]["status"] == "postcopy-active")
    wait_status(dst, ("postcopy-active", "completed"))
    dst_dump = dst.pmemsave(MEM)
    sst = wait_status(src, ("completed",), timeout=120)
    wait_status(dst, ("completed",), timeout=60)
    if open(dst_dump, "rb").read() != open(src.pmemsave(MEM), "rb").read():
        fail("destination RAM differs from the source's")
    if dst.query_status() != "running":
        fail(f"destination run state {dst.query_status()}")
    if sst["ram"]["postcopy-requests"] <= 0:
        fail("no page was requested in postcopy")
    log(f"postcopy after pre-switchover: {sst['ram']['postcopy-requests']} "
        "requests")
    src.shutdown()
    dst.shutdown()


def test_cancel_in_pre_switchover():
    """Before the switch nothing ran on the destination: a cancel gives the
    source its running VM back, in postcopy's pause as in precopy's."""
    src, dst, uri = pair(bandwidth=40 << 20)
    set_caps(src, pause_before_switchover=True)
    src.qmp.cmd("migrate", uri=uri)
    src.qmp.cmd("migrate-start-postcopy")
    wait_status(src, ("pre-switchover",), timeout=60)
    if src.qmp.cmd("query-migrate")["ram"]["remaining"] == 0:
        fail("nothing left to send: this pause is not the postcopy switch")
    src.qmp.cmd("migrate_cancel")
    wait_status(src, ("cancelled",), bad=("failed",), timeout=30)
    src.wait_status("running", timeout=10)
    dst.wait_exit(timeout=30)
    src.shutdown()


if __name__ == "__main__":
    ft.main([test_precopy_pause, test_postcopy_as_libvirt,
             test_cancel_in_pre_switchover], timeout=300)

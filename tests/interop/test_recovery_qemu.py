#!/usr/bin/env python3
"""Postcopy recovery between QEMU 7.2 and ferry, both ways (machine none,
256 MiB with 64 MiB of mixed content, through the link-breaking relay of
../functional/relay.py): postcopy starts right after `migrate` with a
low bandwidth, the relay resets the link in postcopy-active, both sides
must reach postcopy-paused, the destination listens again with
migrate-recover on a new port (the relay is retargeted to it) and the
source resumes with migrate resume:true; then the destination reads the
end of the content (page requests on the new return path), both sides
complete, the destination's RAM equals the content and the source's
MIGRATION events are postcopy-paused, postcopy-recover, postcopy-active,
completed after the first postcopy-active.

Each direction runs twice: plain, and with postcopy-preempt (QEMU 7.2's
two-connection form; a recovery re-creates both, and the read after it
must bring pages over the new preempt channel).

RECOVERY_PAIRS=qemu:qemu (a comma-separated list of src:dst) runs those
pairs instead, e.g. to check the flow itself on QEMU 7.2 alone."""

import os
import threading
import time

from interop import (MiB, Content, QMPError, dump, fail, free_port, log,
                     main, make_tmpdir, set_caps, start, status)
import relay as rl

MEM = 256 * MiB
DENSE = 64 * MiB                # content in [0, DENSE), zero above
TOUCH = 4 * MiB                 # read at the end of DENSE after recovery
BW = 8_000_000
CAPS = ["postcopy-ram", "return-path", "events"]


def want(vm, states, timeout):
    states = (states,) if isinstance(states, str) else states
    deadline = time.time() + timeout
    while True:
        vm.check_alive()
        try:
            info = status(vm)
        except (OSError, AssertionError) as e:
            try:
                vm.proc.wait(2)
            except Exception:
                pass
            vm.check_alive()
            fail(f"{vm.name}: query-migrate: {e}")
        st = info.get("status")
        if st in states:
            return info
        if st in ("failed", "cancelled"):
            fail(f"{vm.name}: migration {st} "
                 f"({info.get('error-desc', 'no error-desc')}), wanted "
                 f"{'/'.join(states)}; stderr: {vm.stderr()[-800:]}")
        if time.time() > deadline:
            fail(f"{vm.name}: status {st} after {timeout}s, wanted "
                 f"{'/'.join(states)}; stderr: {vm.stderr()[-400:]}")
        time.sleep(0.05)


def events(vm, timeout=10.0):
    deadline = time.time() + timeout
    while True:
        seq = [e["data"]["status"] for e in vm.qmp.events
               if e["event"] == "MIGRATION"]
        if (seq and seq[-1] == "completed") or time.time() > deadline:
            return seq
        try:
            msg = vm.qmp.recv(0.5)
        except AssertionError:
            continue
        if "event" in msg:
            vm.qmp.events.append(msg)


def recovery(src_kind, dst_kind, preempt=False):
    who = f"{src_kind} -> {dst_kind}{' (preempt)' if preempt else ''}"
    caps = CAPS + (["postcopy-preempt"] if preempt else [])
    per = 2 if preempt else 1           # relay connections per connect
    stage = ["start"]

    def step(name):
        stage[0] = name
        log(f"{who}: {name}")

    try:
        d = make_tmpdir("interop-recovery-")
        content = Content(d, MEM, dense=[(0, DENSE)], seed=7)
        src = start(src_kind, MEM, f"{src_kind}-src", content=content)
        dst = start(dst_kind, MEM, f"{dst_kind}-dst", incoming="defer")
        step("set capabilities " + ", ".join(caps))
        for vm in (src, dst):
            set_caps(vm, caps)
        src.qmp.cmd("migrate-set-parameters", max_bandwidth=BW,
                    max_postcopy_bandwidth=BW)
        port = free_port()
        dst.qmp.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        relay = rl.Relay(port)
        step("migrate through the relay and switch to postcopy at once")
        t0 = time.time()
        src.qmp.cmd("migrate", uri=relay.uri)
        src.qmp.cmd("migrate-start-postcopy")
        relay.wait_connections(per)
        step("both sides reach postcopy-active")
        for vm in (src, dst):
            want(vm, "postcopy-active", 60)
        time.sleep(0.5)
        step("relay reset in postcopy-active: both sides pause")
        if relay.reset() != per:
            fail(f"relay: not {per} connection(s) to reset")
        t = time.time()
        for vm in (dst, src):
            want(vm, "postcopy-paused", 30)
        log(f"both paused {time.time() - t:.2f}s after the reset")
        time.sleep(0.3)
        step("destination migrate-recover on a new port")
        new = free_port()
        dst.qmp.cmd("migrate-recover", uri=f"tcp:127.0.0.1:{new}")
        relay.retarget(new)
        step("source migrate resume:true to the relay")
        src.qmp.cmd("migrate", uri=relay.uri, resume=True)
        relay.wait_connections(2 * per)
        step("both sides back in postcopy-active")
        t = time.time()
        for vm in (dst, src):
            want(vm, ("postcopy-active", "completed"), 30)
        log(f"recovered in {time.time() - t:.2f}s")
        step("destination reads the end of the content (page requests on "
             "the new return path)")
        part = os.path.join(d, "touched.dump")
        done = threading.Event()
        err = []

        def touch():
            try:
                dst.pmemsave(TOUCH, path=part, addr=DENSE - TOUCH)
            except Exception as e:             # reported below
                err.append(e)
            done.set()
        threading.Thread(target=touch, daemon=True).start()
        if not done.wait(60):
            fail("pmemsave on the destination blocked for 60 s after the "
                 "recovery: faults not served")
        if err:
            raise err[0]
        with open(content.path, "rb") as f:
            f.seek(DENSE - TOUCH)
            if open(part, "rb").read() != f.read(TOUCH):
                fail("the range read after the recovery differs from the "
                     "content")
        if preempt:
            pre = relay.conns[-1]
            log(f"{who}: new preempt channel carried {pre.main} bytes")
            if pre.main < 4096:
                fail(f"the new preempt channel carried {pre.main} bytes: "
                     "urgent pages did not use it")
        step("both sides complete")
        s = want(src, "completed", 90)
        want(dst, "completed", 30)
        log(f"{who}: completed in {time.time() - t0:.1f}s; source ram: "
            f"postcopy-requests {s['ram'].get('postcopy-requests')}, "
            f"postcopy-bytes {s['ram'].get('postcopy-bytes')}, "
            f"transferred {s['ram'].get('transferred')}")
        step("destination RAM equals the content")
        content.check_dump(dump(dst, MEM, d), f"destination {dst.name}")
        step("source MIGRATION events")
        seq = events(src)
        log(f"source events: {seq}; destination events: {events(dst)}")
        if "postcopy-active" not in seq:
            fail(f"no postcopy-active event on the source: {seq}")
        tail = seq[seq.index("postcopy-active") + 1:]
        exp = ["postcopy-paused", "postcopy-recover", "postcopy-active",
               "completed"]
        if tail != exp:
            fail(f"source events after postcopy-active {tail}, expected "
                 f"{exp}")
        if relay.errors:
            fail(f"relay errors: {relay.errors}")
        for vm in (src, dst):
            vm.shutdown()
    except (AssertionError, QMPError) as e:
        fail(f"recovery {who}: stage '{stage[0]}': {e}")
    finally:
        rl.stop_all()


def test_qemu_to_ferry():
    recovery("qemu", "ferry")


def test_ferry_to_qemu():
    recovery("ferry", "qemu")


def test_qemu_to_ferry_preempt():
    recovery("qemu", "ferry", preempt=True)


def test_ferry_to_qemu_preempt():
    recovery("ferry", "qemu", preempt=True)


def pair_tests(spec):
    out = []
    for p in spec.split(","):
        s, d = p.split(":")

        def t(s=s, d=d):
            recovery(s, d)
        t.__name__ = f"test_{s}_to_{d}"
        out.append(t)
    return out


if __name__ == "__main__":
    pairs = os.environ.get("RECOVERY_PAIRS")
    main(pair_tests(pairs) if pairs else [
        test_qemu_to_ferry, test_ferry_to_qemu, test_qemu_to_ferry_preempt,
        test_ferry_to_qemu_preempt], timeout=280)

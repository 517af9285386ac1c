#!/usr/bin/env python3
"""QMP against a real ferry process (machine 'none', no KVM needed):
negotiation, replies, error classes, events, several clients, bad input,
and hostile clients: a flood of large partial requests, every client slot
taken."""

import json
import os
import socket
import time

import ferrytest as ft


def expect_error(q, obj, cls, words=()):
    r = q.cmd_obj(obj) if not isinstance(obj, (str, bytes)) else None
    if r is None:
        q.send_raw(obj)
        r = q.reply()
    if "error" not in r or r["error"]["class"] != cls:
        ft.fail(f"{obj!r}: expected {cls}, got {r}")
    for w in words:
        if w not in r["error"]["desc"]:
            ft.fail(f"{obj!r}: desc {r['error']['desc']!r} lacks {w!r}")
    return r


def test_negotiation_and_queries():
    vm = ft.VM(["-M", "none", "-m", "32M", "-name", "qmp-test"], name="qmp")
    vm.launch(connect=False)
    while not os.path.exists(vm.qmp_path):
        vm.check_alive()
    q = ft.QMP(vm.qmp_path, negotiate=False)
    v = q.greeting["QMP"]["version"]["qemu"]
    if not {"major", "minor", "micro"} <= set(v):
        ft.fail(f"greeting version {v}")
    expect_error(q, {"execute": "query-status"}, "CommandNotFound",
                 ["qmp_capabilities"])
    r = q.cmd_obj({"execute": "qmp_capabilities", "id": "neg"})
    if r.get("return") != {} or r.get("id") != "neg":
        ft.fail(f"negotiation reply {r}")
    expect_error(q, {"execute": "qmp_capabilities"}, "CommandNotFound")
    for ident in (1, "two", {"three": [3]}):
        r = q.cmd_obj({"execute": "query-status", "id": ident})
        if r.get("id") != ident:
            ft.fail(f"id {ident!r} not echoed: {r}")
    st = q.cmd("query-status")
    if st["status"] != "running" or st["running"] is not True:
        ft.fail(f"query-status {st}")
    if q.cmd("query-name") != {"name": "qmp-test"}:
        ft.fail("query-name")
    if q.cmd("query-cpus-fast") != []:
        ft.fail("machine none has no vCPUs")
    names = {c["name"] for c in q.cmd("query-commands")}
    for n in ("qmp_capabilities", "query-status", "stop", "cont", "system_reset",
              "quit", "query-version", "query-commands", "query-name",
              "query-cpus-fast", "pmemsave"):
        if n not in names:
            ft.fail(f"query-commands lacks {n}")
    if "qemu" not in q.cmd("query-version"):
        ft.fail("query-version")

    # stop/cont with events
    q.cmd("stop")
    q.wait_event("STOP")
    if q.cmd("query-status")["status"] != "paused":
        ft.fail("not paused after stop")
    q.cmd("cont")
    ev = q.wait_event("RESUME")
    if "seconds" not in ev["timestamp"] or "microseconds" not in ev["timestamp"]:
        ft.fail(f"event timestamp {ev}")

    # errors keep the session up
    expect_error(q, {"execute": "no-such-command"}, "CommandNotFound",
                 ["no-such-command"])
    expect_error(q, '{"execute": "query-status" ,,, }\n', "GenericError")
    expect_error(q, '[1, 2, 3]\n', "GenericError")
    expect_error(q, {"arguments": {}}, "GenericError", ["execute"])
    expect_error(q, {"execute": "query-status", "bogus": 1}, "GenericError", ["bogus"])
    expect_error(q, {"execute": "pmemsave", "arguments": {"val": "x", "size": 1,
                                                          "filename": "/tmp/x"}},
                 "GenericError", ["val"])
    expect_error(q, {"execute": "pmemsave", "arguments": {"size": 1,
                                                          "filename": "/tmp/x"}},
                 "GenericError", ["val"])
    expect_error(q, {"execute": "pmemsave", "arguments": {"val": 0, "size": 4096,
                                                          "filename": "/nonexistent/dir/f"}},
                 "GenericError", ["/nonexistent/dir/f"])
    # split and batched input
    q.send_raw('{"execute": "query-')
    q.send_raw('status", "id"')
    q.send_raw(': 7}')
    if q.reply().get("id") != 7:
        ft.fail("split message not reassembled")
    q.send_raw('{"execute": "query-status", "id": 8}{"execute": "query-name", "id": 9}')
    a, b = q.reply(), q.reply()
    if (a.get("id"), b.get("id")) != (8, 9):
        ft.fail(f"batched messages: {a} {b}")
    if q.cmd("query-status")["status"] != "running":
        ft.fail("session broken after bad input")
    vm.shutdown()


def test_clients_and_shutdown():
    vm = ft.VM(["-M", "none", "-m", "32M"], name="qmp2").launch()
    other = ft.QMP(vm.qmp_path)
    lurker = ft.QMP(vm.qmp_path, negotiate=False)
    # a client that disconnects mid-message, and one that sends garbage
    s = socket.socket(socket.AF_UNIX)
    s.connect(vm.qmp_path)
    s.sendall(b'{"execute": "qu')
    s.close()
    g = socket.socket(socket.AF_UNIX)
    g.connect(vm.qmp_path)
    g.sendall(os.urandom(256 * 1024))
    g.close()
    vm.qmp.cmd("stop")
    other.wait_event("STOP")
    vm.qmp.cmd("cont")
    other.wait_event("RESUME")
    if lurker.events or b"STOP" in lurker.buf:
        ft.fail("un-negotiated client received events")
    if other.cmd("query-status")["status"] != "running":
        ft.fail("second client")
    vm.qmp.cmd("quit")
    ev = other.wait_event("SHUTDOWN")
    if ev["data"].get("reason") != "host-qmp-quit" or ev["data"].get("guest") is not False:
        ft.fail(f"SHUTDOWN data {ev['data']}")
    rc = vm.wait_exit()
    if rc != 0:
        ft.fail(f"exit status after quit: {rc}")


def test_tcp_monitor():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    vm = ft.VM(["-M", "none", "-m", "16M", "-qmp",
                f"tcp:127.0.0.1:{port},server=on,wait=off"], name="qmptcp", qmp=False)
    vm.launch(connect=False)
    q = ft.QMP(("127.0.0.1", port))
    if q.cmd("query-status")["status"] != "running":
        ft.fail("tcp monitor")
    q.cmd("quit")
    vm.wait_exit()


# QEMU 7.2's answers on a fresh process (qemu-system-x86_64 -M none).
QEMU72_CAPABILITIES = [
    "xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress",
    "events", "postcopy-ram", "x-colo", "release-ram", "block",
    "return-path", "pause-before-switchover", "multifd", "dirty-bitmaps",
    "postcopy-blocktime", "late-block-activate", "x-ignore-shared",
    "validate-uuid", "background-snapshot", "zero-copy-send",
    "postcopy-preempt",
]
# postcopy-preempt needs postcopy-ram, which comes first in the list.
SUPPORTED_CAPABILITIES = {"events", "return-path", "pause-before-switchover",
                          "postcopy-ram", "postcopy-blocktime",
                          "late-block-activate", "postcopy-preempt"}
QEMU72_PARAMETERS = {
    "announce-initial": 50, "announce-max": 550, "announce-rounds": 5,
    "announce-step": 100, "compress-level": 1, "compress-threads": 8,
    "compress-wait-thread": True, "decompress-threads": 2,
    "throttle-trigger-threshold": 50, "cpu-throttle-initial": 20,
    "cpu-throttle-increment": 10, "cpu-throttle-tailslow": False,
    "tls-creds": "", "tls-hostname": "", "tls-authz": "",
    "max-bandwidth": 134217728, "downtime-limit": 300,
    "x-checkpoint-delay": 20000, "block-incremental": False,
    "multifd-channels": 2, "xbzrle-cache-size": 67108864,
    "max-postcopy-bandwidth": 0, "max-cpu-throttle": 99,
    "multifd-compression": "none", "multifd-zlib-level": 1,
    "multifd-zstd-level": 1,
}
# QEMU 7.2's members plus ferry's own (x- prefix).
FERRY_PARAMETERS = dict(QEMU72_PARAMETERS, **{"x-net-timeout": 60000})
# (arguments, QEMU 7.2's error text)
PARAMETER_ERRORS = [
    ({"downtime-limit": 2000001}, "Parameter 'downtime_limit' expects an "
     "integer in the range of 0 to (2000 * 1000) ms"),
    ({"announce-step": 0}, "Parameter 'announce_step' expects a value "
     "between 0 and 10000"),
    ({"compress-threads": 256}, "Parameter 'compress-threads' expects uint8_t"),
    ({"cpu-throttle-initial": 0}, "Parameter 'cpu_throttle_initial' expects "
     "an integer in the range of 1 to 99"),
    ({"max-cpu-throttle": 10}, "Parameter 'max_cpu_throttle' expects an "
     "integer in the range of cpu_throttle_initial to 99"),
    ({"xbzrle-cache-size": 4097}, "Parameter 'xbzrle_cache_size' expects a "
     "power of two no less than the target page size"),
    ({"multifd-compression": "lz4"}, "Parameter 'multifd-compression' does "
     "not accept value 'lz4'"),
    ({"max-bandwidth": "fast"}, "Parameter 'max-bandwidth' expects uint64"),
    ({"compress-wait-thread": 1}, "Invalid parameter type for "
     "'compress-wait-thread', expected: boolean"),
    ({"bogus": 1}, "Parameter 'bogus' is unexpected"),
    ({"x-net-timeout": 86400001}, "Parameter 'x_net_timeout' expects a "
     "value between 0 and 86400000"),
    # One bad member: the good one does not apply either.
    ({"max-bandwidth": 5, "downtime-limit": 2000001}, "Parameter "
     "'downtime_limit' expects an integer in the range of 0 to "
     "(2000 * 1000) ms"),
]


def expect_desc(q, cmd, args, desc):
    r = q.cmd_obj({"execute": cmd, "arguments": args})
    if r.get("error", {}).get("desc") != desc:
        ft.fail(f"{cmd} {args}: expected error {desc!r}, got {r}")


def test_migration_options():
    vm = ft.VM(["-M", "none", "-m", "16M"], name="qmpopts").launch()
    q = vm.qmp
    caps = q.cmd("query-migrate-capabilities")
    if [c["capability"] for c in caps] != QEMU72_CAPABILITIES:
        ft.fail(f"capability list {caps}")
    if any(c["state"] for c in caps):
        ft.fail(f"capabilities on by default: {caps}")
    for name in QEMU72_CAPABILITIES:
        arg = {"capabilities": [{"capability": name, "state": True}]}
        if name in SUPPORTED_CAPABILITIES:
            q.cmd_args("migrate-set-capabilities", arg)
        else:
            expect_desc(q, "migrate-set-capabilities", arg,
                        f"Capability '{name}' is not supported by this VMM")
    on = {c["capability"] for c in q.cmd("query-migrate-capabilities")
          if c["state"]}
    if on != SUPPORTED_CAPABILITIES:
        ft.fail(f"capabilities on: {on}")

    params = q.cmd("query-migrate-parameters")
    if params != FERRY_PARAMETERS:
        ft.fail(f"query-migrate-parameters differs from QEMU 7.2 "
                f"(+ x-net-timeout): {params}")
    for args, desc in PARAMETER_ERRORS:
        expect_desc(q, "migrate-set-parameters", args, desc)
    expect_desc(q, "migrate-set-parameters", {"block-bitmap-mapping": []},
                "Parameter 'block-bitmap-mapping' is not supported by this VMM")
    if q.cmd("query-migrate-parameters") != FERRY_PARAMETERS:
        ft.fail("a refused migrate-set-parameters changed something")

    q.cmd_args("migrate-set-parameters", {
        "max-bandwidth": 1 << 20, "downtime-limit": 2000000,
        "cpu-throttle-initial": 30, "multifd-compression": "zlib",
        "tls-hostname": "dst", "block-incremental": True})
    q.cmd_args("migrate-set-parameters", {"tls-hostname": None})
    want = dict(FERRY_PARAMETERS, **{
        "max-bandwidth": 1 << 20, "downtime-limit": 2000000,
        "cpu-throttle-initial": 30, "multifd-compression": "zlib",
        "block-incremental": True})
    got = q.cmd("query-migrate-parameters")
    if got != want:
        ft.fail(f"after set: {got}")
    vm.shutdown()


MAX_CLIENTS = 64
INPUT_BUDGET = 32 << 20


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    ft.fail(f"no {field} in /proc/{pid}/status")


def connect_raw(path):
    """A client that reads the greeting and stops there."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    buf = b""
    while b"\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            ft.fail(f"connection refused without a greeting (have {buf!r})")
        buf += chunk
    return s


def closed_by_peer(s, timeout=5.0):
    """True if s reaches EOF (replies before it are skipped)."""
    s.settimeout(timeout)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return True
    except socket.timeout:
        return False
    except OSError:
        return True


def sanitized(binary):
    """ASan's quarantine and the sanitizers' shadow memory make RSS say
    nothing about what ferry keeps."""
    with open(binary, "rb") as f:
        image = f.read()
    return b"__asan_init" in image or b"__tsan_init" in image


def test_partial_request_flood():
    """63 clients each holding 3 MiB of an unfinished request: before the
    input budget, ferry kept all of it (~250 MB; 64 x 10 MiB was 660 MB).
    Now peak RSS stays within the budget plus slack, and management still
    gets in."""
    vm = ft.VM(["-M", "none", "-m", "16M"], name="qmp-flood").launch()
    pid = vm.proc.pid
    base = status_kb(pid, "VmHWM")
    partial = (b'{"execute": "query-status", "arguments": {"pad": "' +
               b"a" * (3 << 20))
    socks, dropped = [], 0
    t0 = time.time()
    try:
        for _ in range(MAX_CLIENTS - 1):    # vm.qmp holds the last slot
            s = connect_raw(vm.qmp_path)
            socks.append(s)
            try:
                s.sendall(partial)
            except OSError:
                dropped += 1                # dropped while sending
        vm.qmp.cmd("query-status")          # everything sent is read
        peak = status_kb(pid, "VmHWM")
        ft.log(f"VmHWM {base} -> {peak} KiB, {dropped} dropped while "
               f"sending, {time.time() - t0:.1f}s")
        limit = base + (INPUT_BUDGET >> 10) + (32 << 10)
        if sanitized(vm.binary):
            ft.log("sanitizer build: peak RSS not checked")
        elif peak > limit:
            ft.fail(f"peak RSS {peak} KiB with partial requests, more than "
                    f"{limit} KiB")
        q = ft.QMP(vm.qmp_path)
        if q.cmd("query-status")["status"] != "running":
            ft.fail("a fresh client after the flood")
        q.close()
    finally:
        for s in socks:
            s.close()
    vm.shutdown()


def test_client_slots():
    """With every slot taken by clients that never negotiate, a newcomer
    still gets in: the oldest un-negotiated client makes room.  With every
    slot negotiated, a newcomer is refused as before."""
    vm = ft.VM(["-M", "none", "-m", "16M"], name="qmp-slots").launch()
    lurkers = []
    try:
        for _ in range(MAX_CLIENTS - 1):    # vm.qmp holds the last slot
            s = connect_raw(vm.qmp_path)
            s.sendall(b'{"execute": "qmp_capa')
            lurkers.append(s)
        q = ft.QMP(vm.qmp_path)
        if q.cmd("query-status")["status"] != "running":
            ft.fail("the newcomer cannot run query-status")
        if not closed_by_peer(lurkers[0]):
            ft.fail("the oldest un-negotiated client was not dropped")
        if closed_by_peer(lurkers[1], timeout=0.2):
            ft.fail("more than one client dropped for one newcomer")
        q2 = ft.QMP(vm.qmp_path)        # room made again, lurkers[1] goes
        if not closed_by_peer(lurkers[1]):
            ft.fail("the second newcomer did not evict the next lurker")
        for s in lurkers:
            s.close()
        lurkers = []
        time.sleep(0.2)

        # all slots negotiated: nothing to evict, the newcomer is refused
        full = [ft.QMP(vm.qmp_path) for _ in range(MAX_CLIENTS - 3)]
        s = socket.socket(socket.AF_UNIX)
        s.connect(vm.qmp_path)
        if not closed_by_peer(s):
            ft.fail("a 65th client was accepted with all slots negotiated")
        s.close()
        for c in full + [q, q2]:
            if c.cmd("query-status")["status"] != "running":
                ft.fail("a negotiated client lost its session")
            c.close()
    finally:
        for s in lurkers:
            s.close()
    vm.shutdown()


def test_deferred_and_oob():
    """pmemsave answers later (its copy may wait on a missing postcopy
    page): in-band requests sent behind it are answered after it, in
    order; exec-oob works for migrate-pause and migrate-recover only, and
    overtakes the queue."""
    vm = ft.VM(["-M", "none", "-m", "256M"], name="qmpoob").launch()
    vm.qmp.close()
    q = ft.QMP(vm.qmp_path, negotiate=False)
    q.cmd("qmp_capabilities", enable=["oob"])
    dump = os.path.join(vm.dir, "ram.dump")
    q.send_raw(json.dumps({"execute": "pmemsave", "id": 1, "arguments": {
        "val": 0, "size": 256 << 20, "filename": dump}}) +
        json.dumps({"execute": "query-status", "id": 2}) +
        json.dumps({"exec-oob": "migrate-pause", "id": 3}) +
        json.dumps({"exec-oob": "query-status", "id": 4}))
    replies = []
    while len(replies) < 4:
        m = q.recv(30)
        if "event" not in m:
            replies.append(m)
    ids = [r.get("id") for r in replies]
    ft.log(f"reply order: {ids}")
    by_id = {r["id"]: r for r in replies}
    if ids.index(1) > ids.index(2):
        ft.fail(f"in-band replies out of order: {ids}")
    if by_id[1].get("return") != {} or os.path.getsize(dump) != 256 << 20:
        ft.fail(f"pmemsave: {by_id[1]}")
    if by_id[2].get("return", {}).get("status") != "running":
        ft.fail(f"query-status after pmemsave: {by_id[2]}")
    if "only supported during postcopy-active" not in \
            by_id[3].get("error", {}).get("desc", ""):
        ft.fail(f"exec-oob migrate-pause: {by_id[3]}")
    if "does not support OOB" not in by_id[4].get("error", {}).get("desc", ""):
        ft.fail(f"exec-oob query-status: {by_id[4]}")
    q.close()
    vm.qmp = None
    vm.kill()


if __name__ == "__main__":
    ft.main([test_negotiation_and_queries, test_clients_and_shutdown,
             test_tcp_monitor, test_migration_options,
             test_partial_request_flood, test_client_slots,
             test_deferred_and_oob], timeout=280)

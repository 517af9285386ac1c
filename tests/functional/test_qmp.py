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
                          "multifd", "postcopy-ram", "postcopy-blocktime",
                          "late-block-activate", "postcopy-preempt",
                          "x-auto-postcopy"}
# QEMU 7.2's list, then ferry's own
FERRY_CAPABILITIES = QEMU72_CAPABILITIES + ["x-auto-postcopy"]
# Supported, but refused next to multifd (which the loop below has on).
MULTIFD_CONFLICTS = {"postcopy-preempt": "multifd together with "
                     "postcopy-preempt is not supported: both add "
                     "connections after the main one, which the destination "
                     "cannot tell apart (as QEMU 7.2)"}
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
    if [c["capability"] for c in caps] != FERRY_CAPABILITIES:
        ft.fail(f"capability list {caps}")
    if any(c["state"] for c in caps):
        ft.fail(f"capabilities on by default: {caps}")
    for name in FERRY_CAPABILITIES:
        arg = {"capabilities": [{"capability": name, "state": True}]}
        if name in MULTIFD_CONFLICTS:
            expect_desc(q, "migrate-set-capabilities", arg,
                        MULTIFD_CONFLICTS[name])
        elif name in SUPPORTED_CAPABILITIES:
            q.cmd_args("migrate-set-capabilities", arg)
        else:
            expect_desc(q, "migrate-set-capabilities", arg,
                        f"Capability '{name}' is not supported by this VMM")
    on = {c["capability"] for c in q.cmd("query-migrate-capabilities")
          if c["state"]}
    if on != SUPPORTED_CAPABILITIES - set(MULTIFD_CONFLICTS):
        ft.fail(f"capabilities on: {on}")
    # Without multifd, postcopy-preempt goes on.
    q.cmd("migrate-set-capabilities", capabilities=[
        {"capability": "multifd", "state": False},
        {"capability": "postcopy-preempt", "state": True}])
    on = {c["capability"] for c in q.cmd("query-migrate-capabilities")
          if c["state"]}
    if on != SUPPORTED_CAPABILITIES - {"multifd"}:
        ft.fail(f"capabilities on with postcopy-preempt: {on}")

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


INTROSPECTION_COMMANDS = (
    "query-target", "query-kvm", "query-qmp-schema", "qom-list-types",
    "query-machines", "query-command-line-options", "device-list-properties",
    "qom-list-properties", "qom-list", "query-block",
    "query-named-block-nodes")


def check_kvm_answer(q, enabled):
    kvm = q.cmd("query-kvm")
    if set(kvm) != {"enabled", "present"}:
        ft.fail(f"query-kvm members {kvm}")
    if kvm["present"] is not ft.kvm_usable():
        ft.fail(f"query-kvm present {kvm['present']}, but /dev/kvm "
                f"usable is {ft.kvm_usable()}")
    if kvm["enabled"] is not enabled:
        ft.fail(f"query-kvm enabled {kvm['enabled']}, expected {enabled}")


def test_libvirt_probe():
    """What libvirt 9.0 sends when it probes a binary (with -S and
    -machine none; -no-user-config and -nodefaults come later), then
    during a domain's start: every answer must describe ferry."""
    d = ft.make_tmpdir()
    blob = os.path.join(d, "blob.bin")
    with open(blob, "wb") as f:
        f.write(b"\x90" * 16)
    vm = ft.VM(["-S", "-M", "none", "-m", "16",
                "-object", "memory-backend-memfd,id=mem0,size=2M",
                "-device", f"loader,file={blob},addr=0x1000"],
               name="probe").launch()
    q = vm.qmp
    names = {c["name"] for c in q.cmd("query-commands")}
    for n in INTROSPECTION_COMMANDS:
        if n not in names:
            ft.fail(f"query-commands lacks {n}")
    if q.cmd("query-target").get("arch") != "x86_64":
        ft.fail("query-target arch")
    if q.cmd("query-qmp-schema") != []:
        ft.fail("query-qmp-schema must stay empty (classic command line)")
    check_kvm_answer(q, enabled=False)
    if q.cmd("query-command-line-options") != []:
        ft.fail("query-command-line-options")
    if q.cmd_args("query-command-line-options", {"option": "machine"}) != []:
        ft.fail("query-command-line-options option=machine")

    # query-machines: every machine class, pc the default
    machines = {m["name"]: m for m in q.cmd("query-machines")}
    if not {"pc", "none"} <= set(machines):
        ft.fail(f"query-machines lacks pc or none: {sorted(machines)}")
    pc, none = machines["pc"], machines["none"]
    if pc.get("is-default") is not True or pc.get("default-ram-id") != "pc.ram":
        ft.fail(f"query-machines pc {pc}")
    if pc.get("cpu-max") != 255 or none.get("cpu-max") != 1:
        ft.fail(f"cpu-max: pc {pc}, none {none}")
    if none.get("default-ram-id") != "ram":
        ft.fail(f"query-machines none {none}")
    defaults = [m for m in machines.values() if m.get("is-default")]
    if len(defaults) != 1:
        ft.fail(f"{len(defaults)} default machines")
    for m in machines.values():
        for k, v in (("hotpluggable-cpus", False), ("deprecated", False),
                     ("numa-mem-supported", False), ("acpi", False)):
            if m.get(k) is not v:
                ft.fail(f"query-machines {m['name']} {k}: {m}")

    # qom-list-types: ferry's types only
    types = {t["name"]: t for t in q.cmd("qom-list-types")}
    for name, parent in (("kvm-accel", "accel"), ("tcg-accel", "accel"),
                         ("loader", "device"),
                         ("memory-backend-ram", "memory-backend"),
                         ("memory-backend-file", "memory-backend"),
                         ("memory-backend-memfd", "memory-backend"),
                         ("pc-machine", "machine"),
                         ("none-machine", "machine")):
        if types.get(name, {}).get("parent") != parent:
            ft.fail(f"qom-list-types {name}: {types.get(name)}")
    for absent in ("virtio-blk-pci", "e1000", "machine", "device"):
        if absent in types:
            ft.fail(f"qom-list-types lists {absent}")
    m_types = {t["name"] for t in
               q.cmd_args("qom-list-types", {"implements": "machine"})}
    if m_types != {f"{n}-machine" for n in machines}:
        ft.fail(f"qom-list-types implements=machine: {m_types}")
    m_abs = {t["name"]: t for t in q.cmd_args(
        "qom-list-types", {"implements": "machine", "abstract": True})}
    if m_abs.get("machine", {}).get("abstract") is not True:
        ft.fail(f"abstract machine type missing: {m_abs}")
    if q.cmd_args("qom-list-types", {"implements": "no-such-type"}) != []:
        ft.fail("qom-list-types of an unknown interface")
    expect_error(q, {"execute": "qom-list-types",
                     "arguments": {"implements": 1}},
                 "GenericError", ["implements", "string"])
    expect_error(q, {"execute": "qom-list-types",
                     "arguments": {"abstract": "yes"}},
                 "GenericError", ["abstract", "boolean"])

    # device-list-properties / qom-list-properties
    expect_error(q, {"execute": "device-list-properties",
                     "arguments": {"typename": "virtio-balloon-pci"}},
                 "DeviceNotFound", ["Device 'virtio-balloon-pci' not found"])
    expect_error(q, {"execute": "device-list-properties",
                     "arguments": {"typename": "memory-backend-ram"}},
                 "GenericError", ["device"])
    expect_error(q, {"execute": "device-list-properties", "arguments": {}},
                 "GenericError", ["typename"])
    props = {p["name"]: p["type"] for p in q.cmd_args(
        "device-list-properties", {"typename": "loader"})}
    if props != {"file": "str", "addr": "uint64", "force-raw": "bool"}:
        ft.fail(f"loader properties {props}")
    for t in ("no-such-type", "virtio-blk-pci", "machine", "kvm-accel"):
        r = q.cmd_args("qom-list-properties", {"typename": t})
        if r != []:
            ft.fail(f"qom-list-properties {t}: {r}")
    file_props = {p["name"]: p["type"] for p in q.cmd_args(
        "qom-list-properties", {"typename": "memory-backend-file"})}
    for k, v in (("size", "int"), ("mem-path", "string"), ("share", "bool"),
                 ("prealloc", "bool")):
        if file_props.get(k) != v:
            ft.fail(f"memory-backend-file properties {file_props}")
    memfd_props = {p["name"] for p in q.cmd_args(
        "qom-list-properties", {"typename": "memory-backend-memfd"})}
    if "hugetlb" not in memfd_props or "mem-path" in memfd_props:
        ft.fail(f"memory-backend-memfd properties {memfd_props}")
    if "memory-backend" not in {p["name"] for p in q.cmd_args(
            "qom-list-properties", {"typename": "none-machine"})}:
        ft.fail("none-machine lacks the memory-backend property")

    # qom-list: the tree, consistent with query-cpus-fast
    def children(path):
        return {e["name"]: e["type"]
                for e in q.cmd_args("qom-list", {"path": path})
                if e["type"].startswith("child<")}
    if children("/") != {"machine": "child<none-machine>",
                         "objects": "child<container>"}:
        ft.fail(f"qom-list / {children('/')}")
    if set(children("/machine")) != {"peripheral", "peripheral-anon",
                                     "unattached"}:
        ft.fail(f"qom-list /machine {children('/machine')}")
    if children("/machine/peripheral") != {}:
        ft.fail("qom-list /machine/peripheral")
    if children("/machine/peripheral-anon") != {"device[0]": "child<loader>"}:
        ft.fail(f"peripheral-anon {children('/machine/peripheral-anon')}")
    cpus = q.cmd("query-cpus-fast")
    want = {c["qom-path"].rsplit("/", 1)[1] for c in cpus}
    if set(children("/machine/unattached")) != want or want:
        ft.fail(f"qom-list /machine/unattached on machine none "
                f"{children('/machine/unattached')}")
    if children("/objects") != {"mem0": "child<memory-backend-memfd>"}:
        ft.fail(f"qom-list /objects {children('/objects')}")
    if {"name": "type", "type": "string"} not in q.cmd_args(
            "qom-list", {"path": "/objects/mem0"}):
        ft.fail("qom-list /objects/mem0")
    for bad in ("/nope", "/machine/unattached/device[0]", "/objects/mem1",
                "machine", ""):
        expect_error(q, {"execute": "qom-list", "arguments": {"path": bad}},
                     "DeviceNotFound", [f"Device '{bad}' not found"])
    expect_error(q, {"execute": "qom-list", "arguments": {"path": ["/"]}},
                 "GenericError", ["path", "string"])
    expect_error(q, {"execute": "qom-list", "arguments": {"path": "/",
                                                          "depth": 1}},
                 "GenericError", ["depth"])

    # no block devices
    if q.cmd("query-block") != []:
        ft.fail("query-block")
    if q.cmd_args("query-named-block-nodes", {"flat": True}) != []:
        ft.fail("query-named-block-nodes")
    expect_error(q, {"execute": "query-named-block-nodes",
                     "arguments": {"flat": "true"}},
                 "GenericError", ["flat", "boolean"])
    expect_error(q, {"execute": "query-target", "arguments": {"x": 1}},
                 "GenericError", ["'x'"])
    if q.cmd("query-status")["status"] != "prelaunch":
        ft.fail("the probe changed the run state")
    vm.shutdown()

    if ft.kvm_usable():
        # -M none creates a KVM VM when asked to: enabled must say so.
        vm = ft.VM(["-S", "-M", "none", "-m", "16", "-accel", "kvm"],
                   name="probe-kvm").launch()
        check_kvm_answer(vm.qmp, enabled=True)
        vm.shutdown()
    else:
        ft.log("SKIPPED query-kvm enabled=true: /dev/kvm is not usable")


if __name__ == "__main__":
    ft.main([test_negotiation_and_queries, test_clients_and_shutdown,
             test_tcp_monitor, test_migration_options,
             test_partial_request_flood, test_client_slots,
             test_deferred_and_oob, test_libvirt_probe], timeout=280)

#!/usr/bin/env python3
"""QMP against a real ferry process (machine 'none', no KVM needed):
negotiation, replies, error classes, events, several clients, bad input."""

import os
import socket

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


if __name__ == "__main__":
    ft.main([test_negotiation_and_queries, test_clients_and_shutdown,
             test_tcp_monitor], timeout=120)

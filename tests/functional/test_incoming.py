#!/usr/bin/env python3
"""A listening destination: -incoming and migrate-incoming with port 0 report
the bound address in query-migrate's socket-address, as QEMU does, so that
tools can connect to it."""

import os
import socket
import time

import ferrytest as ft


def socket_address(vm):
    info = vm.qmp.cmd("query-migrate")
    if info.get("status") != "setup":
        ft.fail(f"listening destination status {info}")
    sa = info.get("socket-address")
    if not sa or len(sa) != 1:
        ft.fail(f"no socket-address in {info}")
    return sa[0]


def test_tcp_port_zero():
    vm = ft.VM(["-M", "none", "-m", "16M", "-incoming", "tcp:127.0.0.1:0"],
               name="incoming-tcp").launch()
    sa = socket_address(vm)
    if sa["type"] != "inet" or sa["host"] != "127.0.0.1" or int(sa["port"]) == 0:
        ft.fail(f"socket-address {sa}")
    # the port really is ours: a connection is accepted there
    socket.create_connection(("127.0.0.1", int(sa["port"])), 5).close()
    vm.kill()


def test_deferred_unix():
    vm = ft.VM(["-M", "none", "-m", "16M", "-incoming", "defer"],
               name="incoming-unix").launch()
    if "socket-address" in vm.qmp.cmd("query-migrate"):
        ft.fail("socket-address before migrate-incoming")
    path = os.path.join(vm.dir, "mig.sock")
    vm.qmp.cmd("migrate-incoming", uri=f"unix:{path}")
    sa = socket_address(vm)
    if sa != {"type": "unix", "path": path}:
        ft.fail(f"socket-address {sa}")
    try:
        vm.qmp.cmd("migrate-incoming", uri=f"unix:{path}.2")
        ft.fail("a second migrate-incoming was accepted")
    except ft.QMPError as e:
        ft.log(f"second migrate-incoming refused: {e}")
    # Once the source is in, nobody else may connect: the file goes (as
    # QEMU does), also when the load then fails.
    c = socket.socket(socket.AF_UNIX)
    c.connect(path)
    deadline = time.time() + 10
    while os.path.exists(path):
        if time.time() > deadline:
            ft.fail(f"{path} still exists after the accept")
        time.sleep(0.05)
    c.close()
    vm.wait_exit(10)
    if os.path.exists(path):
        ft.fail(f"{path} came back")
    vm.kill()


if __name__ == "__main__":
    ft.main([test_tcp_port_zero, test_deferred_unix], timeout=60)

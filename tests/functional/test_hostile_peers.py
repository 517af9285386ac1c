#!/usr/bin/env python3
"""Hostile or dead migration peers must not cost unbounded memory or hang.

- A fake destination (Python, unix socket) takes a postcopy source's
  stream and, once it has seen POSTCOPY_RUN, floods the return path with
  REQ_PAGES for distinct pages while no longer reading: the source must
  fail with "destination sent more than 4096 outstanding page requests"
  and its RSS must stay bounded.
- x-net-timeout puts TCP keepalive on migration sockets of both sides
  (seen in `ss -o` as a keepalive timer), and 0 turns it off.
- A source that vanishes (its link black-holed inside a network
  namespace) fails the destination's load with an error naming
  x-net-timeout, instead of leaving it in "active" for ever; likewise a
  source whose destination vanished while it waited for SHUT (needs root
  and `ip netns`; skipped otherwise).
- migrate_cancel on a destination whose source connected, sent the header
  and went quiet (alive, so keepalive cannot help) ends the incoming
  migration: status "cancelled", error-desc "cancelled by migrate_cancel",
  the process keeps answering QMP with the guest never started.  Also
  while still listening.
- migrate_cancel in postcopy-active is refused on both sides.
- A postcopy whose link goes dead (the destination in a network
  namespace, its interface taken down) pauses on both sides by
  x-net-timeout alone, and recovers once the link is back.

All -M none: runs without /dev/kvm.
"""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import ferrytest as ft
import streamgen as sg
from ferrytest import VM, log, fail

MIG_RP_MSG_REQ_PAGES = 4
MIG_RP_MSG_REQ_PAGES_ID = 3
# The POSTCOPY_RUN command as it appears in the stream (inside PACKAGED).
RUN_BYTES = bytes([sg.COMMAND]) + sg.be16(sg.CMD_RUN) + sg.be16(0)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def query(vm):
    return vm.qmp.cmd("query-migrate")


def wait_status(vm, wanted, timeout=30.0):
    deadline = time.time() + timeout
    while True:
        st = query(vm)
        if st.get("status") in wanted:
            return st
        vm.check_alive()
        if time.time() > deadline:
            fail(f"{vm.name}: status {st.get('status')}, wanted {wanted}: {st}")
        time.sleep(0.05)


def rp_msg(mtype, payload):
    return sg.be16(mtype) + sg.be16(len(payload)) + payload


def read_until(conn, needle, limit_s):
    """Read the source's stream until needle was seen; False on timeout."""
    conn.settimeout(1.0)
    tail = b""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        try:
            data = conn.recv(1 << 20)
        except socket.timeout:
            continue
        if not data:
            return False
        # Search before trimming: one recv may carry the needle far from
        # its end, and the kept tail only covers a needle split by recvs.
        if needle in tail + data:
            return True
        tail = data[-len(needle):]
    return False


def test_req_pages_flood():
    """A destination asking for distinct pages without end: the source's
    request queue is capped, the migration fails with a clear error, RSS
    stays bounded and the source keeps answering QMP."""
    mem = 128 << 20
    d = ft.make_tmpdir("ferrytest-flood-")
    path = os.path.join(d, "mig.sock")
    pattern = os.path.join(d, "pattern.bin")
    with open(pattern, "wb") as f:
        f.write(os.urandom(32 << 20))
    lsock = socket.socket(socket.AF_UNIX)
    lsock.bind(path)
    lsock.listen(1)
    src = VM(["-M", "none", "-m", str(mem >> 20), "-device",
              f"loader,file={pattern},addr=0x100000,force-raw=on"],
             name="src", serial=False).launch()
    src.qmp.cmd("migrate-set-capabilities", capabilities=[
        {"capability": "postcopy-ram", "state": True}])
    # Slow, so that most pages are still unsent when the flood starts.
    src.qmp.cmd("migrate-set-parameters", **{
        "max-bandwidth": 1 << 20, "max-postcopy-bandwidth": 1 << 20})
    src.qmp.cmd("migrate", uri=f"unix:{path}")
    lsock.settimeout(10)
    conn, _ = lsock.accept()
    src.qmp.cmd("migrate-start-postcopy")
    if not read_until(conn, RUN_BYTES, 30):
        fail(f"no POSTCOPY_RUN from the source: {query(src)}")
    wait_status(src, ("postcopy-active",))
    rss_before = rss_kib(src.proc.pid)

    # Every other page from the top down: no two requests touch, so none
    # merge, and we stop reading so the source cannot serve them fast.
    npages = mem // sg.PAGE
    first = rp_msg(MIG_RP_MSG_REQ_PAGES_ID,
                   sg.be64((npages - 1) * sg.PAGE) + sg.be32(sg.PAGE) +
                   sg.counted("ram"))
    cycle = b"".join(rp_msg(MIG_RP_MSG_REQ_PAGES,
                            sg.be64(p * sg.PAGE) + sg.be32(sg.PAGE))
                     for p in range(npages - 3, 0, -2))
    result = {"sent": 0}

    def flood():
        try:
            conn.sendall(first)
            # Up to 2M requests (what a queue per request would need
            # ~100 MB for); the source hangs up long before with the fix.
            for _ in range((2 << 20) // (npages // 2)):
                conn.sendall(cycle)
                result["sent"] += npages // 2 - 1
        except OSError as e:
            result["error"] = e

    t = threading.Thread(target=flood, daemon=True)
    t0 = time.time()
    t.start()
    t.join(30)
    st = wait_status(src, ("failed",), timeout=30)
    elapsed = time.time() - t0
    rss_after = rss_kib(src.proc.pid)
    log(f"flood: {result}, source {st} after {elapsed:.1f}s, "
        f"RSS {rss_before} -> {rss_after} KiB")
    desc = st.get("error-desc", "")
    if "destination sent more than 4096 outstanding page requests" not in desc:
        fail(f"unclear error: {st}")
    if rss_after - rss_before > 32 << 10:
        fail(f"source RSS grew by {rss_after - rss_before} KiB")
    # The destination ran the guest after RUN: this copy is stale now.
    rs = src.qmp.cmd("query-status")["status"]
    if rs != "postmigrate":
        fail(f"source runstate {rs} after a failed postcopy, want "
             "postmigrate")
    try:
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{free_port()}")
        fail("a source whose postcopy failed accepted a new migrate")
    except ft.QMPError as e:
        if "stale" not in e.desc or "'cont'" not in e.desc:
            fail(f"unclear refusal of a new migrate: {e.desc!r}")
        log(f"new migrate refused: {e.desc}")
    # cont: the operator declares this copy the live one; migrate is
    # allowed again (to nobody here: it fails, the source keeps running).
    src.qmp.cmd("cont")
    src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{free_port()}")
    wait_status(src, ("failed",), timeout=30)
    if src.qmp.cmd("query-status")["status"] != "running":
        fail("the source stopped after a failed precopy following cont")
    conn.close()
    lsock.close()


# ---- dead or silent sources ------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def header_bytes():
    return sg.Stream().header("none").bytes()


def listening_destination(timeout_ms=None, host="127.0.0.1", name="dst"):
    port = free_port() if host == "127.0.0.1" else 4444
    dst = VM(["-M", "none", "-m", "16", "-incoming", "defer"], name=name,
             serial=False).launch()
    if timeout_ms is not None:
        dst.qmp.cmd("migrate-set-parameters", **{"x-net-timeout": timeout_ms})
    dst.qmp.cmd("migrate-incoming", uri=f"tcp:{host}:{port}")
    return dst, port


def ss_timers(filt):
    out = subprocess.run(["ss", "-tnoH", "state", "established", filt],
                         capture_output=True, text=True, timeout=10).stdout
    return out




def test_keepalive_options():
    """x-net-timeout sets keepalive on the destination's accepted socket
    and the source's connected one; 0 leaves it off."""
    if not shutil.which("ss"):
        ft.skip("ss (iproute2) not installed")
    for timeout_ms, want in ((8000, True), (0, False)):
        dst, port = listening_destination(timeout_ms)
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(header_bytes())
        wait_status(dst, ("active",))
        line = ss_timers(f"( sport = :{port} )")
        log(f"x-net-timeout {timeout_ms}: destination socket: {line.strip()}")
        if ("timer:(keepalive" in line) != want:
            fail(f"destination keepalive {'missing' if want else 'set'}: {line}")
        c.close()
        dst.kill()

        # The source: migrate to a plain listener, look at its socket.
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lport = lsock.getsockname()[1]
        src = VM(["-M", "none", "-m", "16"], name="src", serial=False).launch()
        src.qmp.cmd("migrate-set-parameters", **{"x-net-timeout": timeout_ms})
        # With a return path the source waits for our SHUT: it stays up.
        src.qmp.cmd("migrate-set-capabilities", capabilities=[
            {"capability": "return-path", "state": True}])
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{lport}")
        lsock.settimeout(10)
        conn, _ = lsock.accept()
        time.sleep(0.2)
        line = ss_timers(f"( dport = :{lport} )")
        log(f"x-net-timeout {timeout_ms}: source socket: {line.strip()}")
        if ("timer:(keepalive" in line) != want:
            fail(f"source keepalive {'missing' if want else 'set'}: {line}")
        src.qmp.cmd("migrate_cancel")
        conn.close()
        lsock.close()
        src.kill()


NETNS = "ferrytest-mb"
VETH_HOST, VETH_NS = "fmbh0", "fmbn0"
HOST_IP, NS_IP = "10.213.47.1", "10.213.47.2"


def sh(*args, check=True):
    return subprocess.run(list(args), capture_output=True, text=True,
                          check=check, timeout=20)


def netns_setup():
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False
    netns_teardown()
    try:
        sh("ip", "netns", "add", NETNS)
        sh("ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name",
           VETH_NS)
        sh("ip", "link", "set", VETH_NS, "netns", NETNS)
        sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", VETH_HOST)
        sh("ip", "link", "set", VETH_HOST, "up")
        sh("ip", "netns", "exec", NETNS, "ip", "addr", "add", f"{NS_IP}/24",
           "dev", VETH_NS)
        sh("ip", "netns", "exec", NETNS, "ip", "link", "set", VETH_NS, "up")
        sh("ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, OSError) as e:
        log(f"network namespace unavailable: {e}")
        netns_teardown()
        return False
    return True


def netns_teardown():
    sh("ip", "link", "del", VETH_HOST, check=False)
    sh("ip", "netns", "del", NETNS, check=False)


# A "source" in the namespace: connect, send the header, then hold the
# socket open without a word until killed.
SILENT_SOURCE = """
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
c.sendall(bytes.fromhex(sys.argv[3]))
print("connected", flush=True)
time.sleep(120)
"""


def test_dead_source_times_out():
    """The source's link goes dead (black-holed): keepalive finds out and
    the destination fails with an error naming x-net-timeout."""
    if not netns_setup():
        ft.skip("needs root and ip netns")
    client = None
    try:
        dst, port = listening_destination(2000, host=HOST_IP)
        client = subprocess.Popen(
            ["ip", "netns", "exec", NETNS, sys.executable, "-c", SILENT_SOURCE,
             HOST_IP, str(port), header_bytes().hex()],
            stdout=subprocess.PIPE, text=True)
        if "connected" not in client.stdout.readline():
            fail("the namespaced source could not connect")
        wait_status(dst, ("active",))
        t0 = time.time()
        # Black-hole the source: its side of the link goes away silently.
        sh("ip", "netns", "exec", NETNS, "ip", "link", "set", VETH_NS, "down")
        rc = dst.wait_exit(30)
        took = time.time() - t0
        err = dst.stderr()
        log(f"destination exited {rc} after {took:.1f}s: {err.strip()[-300:]}")
        if rc != 1 or "x-net-timeout (2000 ms)" not in err:
            fail(f"expected a timeout naming x-net-timeout: rc {rc}, {err}")
        if took > 20:
            fail(f"timeout took {took:.1f}s for x-net-timeout 2000 ms")
    finally:
        if client:
            client.kill()
            client.wait()
        netns_teardown()


# A "destination" in the namespace: accept, then hold the connection open
# without reading or answering until killed.
SILENT_DESTINATION = """
import socket, sys, time
l = socket.socket()
l.bind((sys.argv[1], int(sys.argv[2])))
l.listen(1)
print("listening", flush=True)
c, _ = l.accept()
print("accepted", flush=True)
time.sleep(120)
"""


def test_dead_destination_times_out():
    """The destination's link goes dead while the source waits for its
    verdict: the source fails with an error naming x-net-timeout and
    keeps running."""
    if not netns_setup():
        ft.skip("needs root and ip netns")
    peer = None
    try:
        port = 4445
        peer = subprocess.Popen(
            ["ip", "netns", "exec", NETNS, sys.executable, "-c",
             SILENT_DESTINATION, NS_IP, str(port)],
            stdout=subprocess.PIPE, text=True)
        if "listening" not in peer.stdout.readline():
            fail("the namespaced destination could not listen")
        src = VM(["-M", "none", "-m", "16"], name="src", serial=False).launch()
        src.qmp.cmd("migrate-set-parameters", **{"x-net-timeout": 2000})
        # A return path: the source then waits for SHUT after the stream.
        src.qmp.cmd("migrate-set-capabilities", capabilities=[
            {"capability": "return-path", "state": True}])
        src.qmp.cmd("migrate", uri=f"tcp:{NS_IP}:{port}")
        if "accepted" not in peer.stdout.readline():
            fail("the source never connected")
        time.sleep(0.5)
        t0 = time.time()
        sh("ip", "netns", "exec", NETNS, "ip", "link", "set", VETH_NS, "down")
        st = wait_status(src, ("failed",), timeout=30)
        took = time.time() - t0
        log(f"source after {took:.1f}s: {st}")
        if "x-net-timeout (2000 ms)" not in st.get("error-desc", ""):
            fail(f"error does not name x-net-timeout: {st}")
        if src.query_status() != "running":
            fail(f"source runstate {src.query_status()}, expected running")
    finally:
        if peer:
            peer.kill()
            peer.wait()
        netns_teardown()


def test_cancel_silent_source():
    """A live source that sent the header and nothing more: migrate_cancel
    on the destination ends the load; the process stays up."""
    dst, port = listening_destination()
    dst.qmp.cmd("migrate-set-capabilities", capabilities=[
        {"capability": "events", "state": True}])
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(header_bytes())
    wait_status(dst, ("active",))
    time.sleep(0.3)
    dst.qmp.cmd("migrate_cancel", timeout=10)
    st = wait_status(dst, ("cancelled",), timeout=10)
    log(f"destination after cancel: {st}")
    if st.get("error-desc") != "cancelled by migrate_cancel":
        fail(f"error-desc: {st}")
    # The source's side sees the stream end.
    c.settimeout(5)
    try:
        if c.recv(1) != b"":
            fail("data from the destination after cancel")
    except ConnectionResetError:
        pass
    c.close()
    if dst.query_status() != "inmigrate":
        fail(f"runstate {dst.query_status()}, expected inmigrate")
    # Cancelling again is a no-op; the guest never starts.
    dst.qmp.cmd("migrate_cancel")
    dst.check_alive()
    if "cancelled by migrate_cancel" not in dst.stderr():
        fail(f"no message on stderr: {dst.stderr()}")
    dst.shutdown()

    # Still listening, nobody connected: cancelled too, port closed.
    dst, port = listening_destination()
    dst.qmp.cmd("migrate_cancel")
    st = wait_status(dst, ("cancelled",))
    if st.get("error-desc") != "cancelled by migrate_cancel":
        fail(f"error-desc: {st}")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        fail("the destination still accepts connections after cancel")
    except OSError:
        pass
    dst.shutdown()


def test_cancel_refused_in_postcopy():
    """In postcopy-active migrate_cancel would leave the guest nowhere:
    both sides refuse it, and the migration still completes."""
    mem = 64 << 20
    port = free_port()
    src = VM(["-M", "none", "-m", str(mem >> 20)], name="src",
             serial=False).launch()
    dst = VM(["-M", "none", "-m", str(mem >> 20), "-incoming",
              f"tcp:127.0.0.1:{port}"], name="dst", serial=False).launch()
    for vm in (src, dst):
        vm.qmp.cmd("migrate-set-capabilities", capabilities=[
            {"capability": "postcopy-ram", "state": True}])
    # Slow postcopy, so that it is still running when we try.
    src.qmp.cmd("migrate-set-parameters", **{
        "max-bandwidth": 1 << 20, "max-postcopy-bandwidth": 64 << 10})
    src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
    src.qmp.cmd("migrate-start-postcopy")
    wait_status(src, ("postcopy-active",))
    wait_status(dst, ("postcopy-active",), timeout=30)
    for vm in (src, dst):
        r = vm.qmp.cmd_obj({"execute": "migrate_cancel"})
        desc = r.get("error", {}).get("desc", "")
        log(f"{vm.name}: migrate_cancel -> {r}")
        if "refused in postcopy-active" not in desc:
            fail(f"{vm.name}: migrate_cancel not refused in postcopy: {r}")
    src.qmp.cmd("migrate-set-parameters", **{"max-postcopy-bandwidth": 0})
    wait_status(src, ("completed",), timeout=60)
    wait_status(dst, ("completed",), timeout=30)
    src.shutdown()
    dst.shutdown()


def test_dead_link_pauses_postcopy():
    """Nobody resets anything: the link simply stops carrying packets.
    x-net-timeout (2 s) is what makes both sides notice and pause; with
    the link back, migrate-recover and resume finish the migration with
    the destination's RAM equal to the source's."""
    if not netns_setup():
        ft.skip("needs root and ip netns")
    ip = shutil.which("ip")
    d = ft.make_tmpdir("ferrytest-deadlink-")
    pattern = os.path.join(d, "pattern.bin")
    with open(pattern, "wb") as f:
        f.write(os.urandom(32 << 20))
    try:
        src = VM(["-M", "none", "-m", "64", "-device",
                  f"loader,file={pattern},addr=0,force-raw=on"],
                 name="src", serial=False).launch()
        dst = VM(["netns", "exec", NETNS, ft.FERRY, "-M", "none", "-m", "64",
                  "-incoming", "defer"], binary=ip, name="dst",
                 serial=False).launch()
        for vm in (src, dst):
            vm.qmp.cmd("migrate-set-capabilities", capabilities=[
                {"capability": "postcopy-ram", "state": True}])
            vm.qmp.cmd("migrate-set-parameters", **{"x-net-timeout": 2000})
        src.qmp.cmd("migrate-set-parameters",
                    **{"max-postcopy-bandwidth": 2 << 20})
        dst.qmp.cmd("migrate-incoming", uri=f"tcp:{NS_IP}:4446")
        src.qmp.cmd("migrate", uri=f"tcp:{NS_IP}:4446")
        src.qmp.cmd("migrate-start-postcopy")
        for vm in (src, dst):
            wait_status(vm, ("postcopy-active",))
        time.sleep(0.5)
        t0 = time.time()
        sh("ip", "netns", "exec", NETNS, "ip", "link", "set", VETH_NS, "down")
        for vm in (src, dst):
            wait_status(vm, ("postcopy-paused",), timeout=30)
            log(f"{vm.name} paused {time.time() - t0:.1f}s after the link "
                "died")
        if "x-net-timeout (2000 ms)" not in src.stderr() + dst.stderr():
            fail("no pause names x-net-timeout: "
                 f"{src.stderr()[-400:]} {dst.stderr()[-400:]}")
        sh("ip", "netns", "exec", NETNS, "ip", "link", "set", VETH_NS, "up")
        dst.qmp.cmd("migrate-recover", uri=f"tcp:{NS_IP}:4447")
        src.qmp.cmd("migrate-set-parameters",
                    **{"max-postcopy-bandwidth": 0})
        # The host may still hold the neighbour as unreachable for a
        # moment: a resume that cannot connect pauses again; retry.
        for attempt in range(10):
            src.qmp.cmd("migrate", uri=f"tcp:{NS_IP}:4447", resume=True)
            time.sleep(0.2)
            st = wait_status(src, ("postcopy-paused", "postcopy-active",
                                   "completed"), timeout=30)["status"]
            if st != "postcopy-paused":
                break
            log(f"resume attempt {attempt + 1} failed, source paused again")
            time.sleep(0.5)
        wait_status(src, ("completed",), timeout=60)
        wait_status(dst, ("completed",), timeout=30)
        a = src.pmemsave(64 << 20, path=os.path.join(d, "src.bin"))
        b = dst.pmemsave(64 << 20, path=os.path.join(d, "dst.bin"))
        with open(a, "rb") as fa, open(b, "rb") as fb:
            if fa.read() != fb.read():
                fail("destination RAM differs from the source's")
        log("recovered; destination RAM equals the source's")
    finally:
        ft._cleanup_vms()
        netns_teardown()


if __name__ == "__main__":
    ft.main([test_req_pages_flood, test_keepalive_options,
             test_dead_source_times_out, test_dead_destination_times_out,
             test_cancel_silent_source,
             test_cancel_refused_in_postcopy,
             test_dead_link_pauses_postcopy], timeout=300)

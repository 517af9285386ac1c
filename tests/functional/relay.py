"""A TCP relay for breaking a migration's link on purpose.

The source connects to the relay; the relay connects on to the
destination and copies both directions (main stream one way, return path
the other).  A test can then, at the moment it chooses:

- reset(): tear every current connection down with an RST on both sides
  (SO_LINGER 0), as a router that dropped its state would;
- blackhole(): stop delivering on every current connection without
  closing it: bytes are read and thrown away, EOFs are not passed on, so
  neither peer learns anything until its own timeout or a migrate-pause;
- reset_when(pred): reset the next connection(s) as soon as pred(conn)
  holds after some bytes went through (conn.main / conn.rp count the bytes
  of each direction), e.g. in the middle of a recovery handshake;
- retarget(port): forward connections accepted from now on to another
  destination port (migrate-recover listens on a new address).

A peer's own reset (or death) is passed on as a reset of the other side,
as the network would; a peer's clean EOF is passed on as an EOF.
Connections accepted after a reset or a black hole are relayed normally.
Standard library only; stop() (or the test's exit) closes everything.
"""

import socket
import struct
import threading

import ferrytest as ft


class Conn:
    """One relayed connection: a = the source's side, b = the destination's."""

    def __init__(self, a, b, index):
        self.a = a
        self.b = b
        self.index = index
        self.main = 0               # bytes source -> destination
        self.rp = 0                 # bytes destination -> source
        self.blackholed = False
        self.closed = False
        self.lock = threading.Lock()

    def reset(self):
        """RST both sides.  The sockets are only shut for reading here: a
        pump blocked in recv() wakes up and closes the socket it reads
        (with SO_LINGER 0 that sends the RST).  Closing them under a
        blocked recv() would delay the RST until the recv() returned, and
        free the descriptor number for reuse by a later connection while
        the old pump still reads it."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            for s in (self.a, self.b):
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 struct.pack("ii", 1, 0))
                    s.shutdown(socket.SHUT_RD)
                except OSError:
                    pass

    def close(self):
        with self.lock:
            if self.closed:
                return
            self.closed = True
            for s in (self.a, self.b):
                try:
                    s.close()
                except OSError:
                    pass


class Relay:
    def __init__(self, target_port, host="127.0.0.1"):
        self.host = host
        self.target = target_port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((host, 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.uri = f"tcp:{host}:{self.port}"
        self.conns = []
        self.errors = []
        self.lock = threading.Lock()
        self._pred = None
        self._pred_count = 0
        self._stopped = False
        self._accepted = threading.Condition(self.lock)
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        _relays.append(self)

    # ---- control -------------------------------------------------------

    def retarget(self, port):
        with self.lock:
            self.target = port

    def reset(self):
        """RST every current connection; returns how many there were."""
        with self.lock:
            live = [c for c in self.conns if not c.closed]
        for c in live:
            c.reset()
        ft.log(f"relay: reset {len(live)} connection(s)")
        return len(live)

    def blackhole(self):
        with self.lock:
            live = [c for c in self.conns if not c.closed]
            for c in live:
                c.blackholed = True
        ft.log(f"relay: black-holed {len(live)} connection(s)")
        return len(live)

    def reset_when(self, pred, count=1):
        """Reset each of the next `count` connections once pred(conn)."""
        with self.lock:
            self._pred = pred
            self._pred_count = count

    def wait_connections(self, n, timeout=30.0):
        """Wait until n connections in all have been accepted."""
        with self._accepted:
            if not self._accepted.wait_for(lambda: len(self.conns) >= n,
                                           timeout):
                ft.fail(f"relay: {len(self.conns)} connection(s) after "
                        f"{timeout}s, wanted {n}")

    def stop(self):
        self._stopped = True
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            c.close()

    # ---- internals -------------------------------------------------------

    def _accept_loop(self):
        while not self._stopped:
            try:
                a, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                target = self.target
            try:
                b = socket.create_connection((self.host, target), 10)
            except OSError as e:
                self.errors.append(f"relay: connect to {target}: {e}")
                a.close()
                continue
            # blocking for good: a timed-out recv() would end the relay
            b.settimeout(None)
            for s in (a, b):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._accepted:
                c = Conn(a, b, len(self.conns))
                self.conns.append(c)
                self._accepted.notify_all()
            ft.log(f"relay: connection {c.index} -> port {target}")
            for args in ((c, a, b, "main"), (c, b, a, "rp")):
                threading.Thread(target=self._pump, args=args,
                                 daemon=True).start()

    def _check_pred(self, c):
        with self.lock:
            pred = self._pred
            if not pred or self._pred_count <= 0 or not pred(c):
                return False
            self._pred_count -= 1
            if self._pred_count == 0:
                self._pred = None
        ft.log(f"relay: resetting connection {c.index} as asked "
               f"(main {c.main} B, rp {c.rp} B)")
        c.reset()
        return True

    def _pump(self, c, src, dst, direction):
        broken = False
        while not c.closed:
            try:
                chunk = src.recv(1 << 16)
            except OSError:
                broken = True
                break
            if not chunk:
                break
            setattr(c, direction, getattr(c, direction) + len(chunk))
            if c.blackholed:
                continue
            if self._check_pred(c):
                break
            try:
                dst.sendall(chunk)
            except OSError:
                broken = True
                break
        if broken and not c.closed and not c.blackholed:
            # A peer reset its side, or died (its kernel answers data
            # with an RST).  Without a relay the other peer would get
            # that RST; a half-close would instead leave it writing into
            # a socket nobody reads any more.  Pass the reset on.
            ft.log(f"relay: connection {c.index}: {direction} side broken, "
                   "resetting the other side too")
            c.reset()
        if c.closed:
            src.close()     # this pump is src's only reader: RST now
            return
        if c.blackholed:
            return          # say nothing: the peer must find out itself
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


_relays = []


def stop_all():
    while _relays:
        _relays.pop().stop()

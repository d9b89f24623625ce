"""Faults for the chaos tests: a TCP proxy between the operator and the API server whose connections
(watch streams included) can be cut at once, and restarting control-plane processes in place."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.request

from tests.support.controlplane import ControlPlane
from tests.support.ports import allocate_port


class TcpProxy:
    """127.0.0.1:<port> -> 127.0.0.1:<upstream>, byte for byte (TLS passes through untouched)."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = allocate_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self.accepted = 0
        threading.Thread(target=self._accept, name="chaos-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()  # the API server is down: the client sees a refused/reset connection
                continue
            with self._lock:
                self._open |= {client, upstream}
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(src, dst)

    def _drop(self, *socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with self._lock:
                self._open.discard(sock)

    def cut(self) -> int:
        """Reset every open connection (each watch stream ends mid-stream); returns how many."""
        with self._lock:
            socks = list(self._open)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self._drop(*socks)
        return len(socks) // 2

    def close(self) -> None:
        self._closed = True
        self._server.close()
        self.cut()


def restart(cluster: ControlPlane, *names: str, down: float = 1.0, timeout: float = 60) -> float:
    """Stop the named processes (SIGTERM, in reverse order), wait `down` seconds, start them again
    with the same arguments (and ports, and etcd's data) in order; returns when the API server is
    ready again, with the seconds it was unavailable."""
    procs = [next(p for p in cluster.procs if p.name.split("#")[0] == name) for name in names]
    stopped = time.monotonic()
    for proc in reversed(procs):
        proc.stop()
        cluster.procs.remove(proc)
    time.sleep(down)
    for proc in procs:
        base = proc.name.split("#")[0]
        generation = sum(1 for p in cluster.procs if p.name.split("#")[0] == base) + int(time.monotonic())
        cluster._spawn(f"{base}#{generation}", list(proc.popen.args))  # type: ignore[arg-type]
    deadline = time.monotonic() + timeout
    while not _ready(cluster):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"kube-apiserver not ready {timeout}s after its restart:\n{cluster.logs(procs[-1].name)}"
            )
        time.sleep(0.2)
    return time.monotonic() - stopped


def _ready(cluster: ControlPlane) -> bool:
    """/readyz with a short timeout (a starting API server may accept and not answer for a while)."""
    request = urllib.request.Request(f"https://127.0.0.1:{cluster.port}/readyz")
    try:
        with urllib.request.urlopen(request, context=cluster._ssl, timeout=2) as resp:
            return bool(resp.read() == b"ok")
    except OSError:
        return False

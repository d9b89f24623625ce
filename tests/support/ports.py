"""TCP ports for the processes the test harness starts (etcd, kube-apiserver, the operator's liveness and
metrics servers, otelcol, Prometheus): handed out without a race, machine-wide.

The old way (bind port 0, close, hand the number to a child that binds it a moment later) raced with
two things:

* the kernel: port 0 is drawn from the ephemeral range (net.ipv4.ip_local_port_range), the range every
  outgoing connection's local port also comes from; the control plane opens hundreds of loopback
  connections (kube-apiserver -> etcd, kubectl, the operator's watches), and any one of them could get
  the number between the close and the child's bind: "address already in use".
* another test run on the same machine (a second checkout's `make test`) drawing the same number.

So ports come from a range *outside* the ephemeral range (the kernel never picks those on its own), and
each port handed out is held with an flock on /tmp/scriptrun-ports/<port>.lock for the life of the test
process, so no other run (nor another thread here) takes it; a trial bind skips ports some unrelated
program listens on (or a previous run left in TIME_WAIT). This removes the failure instead of papering
over it with start-up retries, which would need to recognise each program's "address in use" message and
could not keep the operator's metrics port fixed across restarts (scrape configs point at it).

The range is SCRIPTRUN_TEST_PORTS ("low-high") if set, else up to 10,000 ports just below the
ephemeral range (20000-29999 with Linux's default 32768-60999; ports that some other program binds
explicitly in there are skipped by the trial bind).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import threading
from pathlib import Path

LOCK_DIR = Path("/tmp/scriptrun-ports")
EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def default_range() -> tuple[int, int]:
    """SCRIPTRUN_TEST_PORTS, else a range the kernel never hands out by itself."""
    if spec := os.environ.get("SCRIPTRUN_TEST_PORTS"):
        low, high = (int(part) for part in spec.split("-", 1))
        return low, high
    try:
        eph_low, eph_high = (int(part) for part in EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        eph_low, eph_high = 32768, 60999
    if eph_low - 1024 >= 1000:  # below the ephemeral range (the usual case), above the privileged ports
        high = min(29999, eph_low - 1)
        return max(1024, high - 9999), high
    if 65535 - eph_high >= 1000:  # above it
        return eph_high + 1, min(65535, eph_high + 10000)
    return 1024, 65535  # no room outside it: the locks still keep two test runs apart


class PortAllocator:
    """Hands out ports in [low, high], each at most once machine-wide while its holder lives.

    A port is given out only if (1) no other allocator (any process, any thread) holds its lock file and
    (2) it can be bound right now on every address. The lock stays held until `release` or process exit
    (the kernel drops flocks with the process, so a killed run leaves nothing held).
    """

    def __init__(self, low: int, high: int, lock_dir: Path = LOCK_DIR) -> None:
        if not 0 < low <= high <= 65535:
            raise ValueError(f"bad port range {low}-{high}")
        self.low, self.high = low, high
        self.lock_dir = lock_dir
        self._held: dict[int, int] = {}  # port -> fd of its lock file
        self._mutex = threading.Lock()

    def allocate(self) -> int:
        with self._mutex:
            self._ensure_dir()
            for port in range(self.low, self.high + 1):
                if port in self._held:
                    continue
                fd = self._lock(port)
                if fd is None:
                    continue
                if not bindable(port):
                    os.close(fd)  # someone else's listener (or TIME_WAIT): leave the port alone
                    continue
                self._held[port] = fd
                return port
        raise RuntimeError(f"no free port in {self.low}-{self.high} (locks in {self.lock_dir})")

    def release(self, port: int) -> None:
        with self._mutex:
            fd = self._held.pop(port, None)
        if fd is not None:
            os.close(fd)

    def held(self) -> list[int]:
        with self._mutex:
            return sorted(self._held)

    def _ensure_dir(self) -> None:
        if not self.lock_dir.is_dir():
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # root and other users share it, as they share /tmp
                self.lock_dir.chmod(0o1777)

    def _lock(self, port: int) -> int | None:
        """The fd of port's lock file, flocked; None if another holder has it (or it cannot be opened)."""
        try:
            fd = os.open(self.lock_dir / f"{port}.lock", os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError:
            return None  # e.g. another user's file we may not open: theirs, then
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        return fd


def bindable(port: int) -> bool:
    """Whether a listener could bind `port` on all IPv4 addresses now (without SO_REUSEADDR: stricter than
    the children, which set it, so a port still in TIME_WAIT is skipped too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


_ALLOCATOR: PortAllocator | None = None
_ALLOCATOR_MUTEX = threading.Lock()


def allocator() -> PortAllocator:
    """The process-wide allocator (created on first use, so SCRIPTRUN_TEST_PORTS may be set before)."""
    global _ALLOCATOR
    with _ALLOCATOR_MUTEX:
        if _ALLOCATOR is None:
            _ALLOCATOR = PortAllocator(*default_range())
        return _ALLOCATOR


def allocate_port() -> int:
    """A port no other test run or thread on this machine holds, that nothing listens on, outside the
    kernel's ephemeral range; held until this process exits."""
    return allocator().allocate()

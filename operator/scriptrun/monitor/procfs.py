"""Reading one process: a fast path straight from /proc (Linux), and psutil everywhere else.

Why not psutil alone on Linux: at 10 samples a second over 20 processes, psutil's per-call layers
cost the sidecar ~3.4% of a core; one read of /proc/PID/stat gives CPU, children CPU, faults, threads,
RSS, state and parent in one go (the monitor issue's budget is 1%). The slower reads (io, status for
context switches, the fd directory, every thread's children list) happen on "full" ticks only,
about once a second; their counters keep their last-seen values in between. Children are looked
for only when /proc/loadavg says a process was born since the last look (in a pod's own PID
namespace that is rare), so a quiet tick costs one read per process plus one.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import psutil

CLOCK_TICKS = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
HAS_PROC = os.path.exists("/proc/self/stat")


@dataclass(slots=True)
class ProcRead:
    pid: int
    ctime: float  # start time: with the PID, the identity of a process
    ppid: int
    zombie: bool
    user: float
    system: float
    c_user: float
    c_system: float
    faults: int
    c_faults: int
    threads: int
    rss: int
    ctx: int | None = None
    read_bytes: int | None = None
    write_bytes: int | None = None
    fds: int | None = None
    children: list[int] | None = None


def _read(path: str) -> bytes | None:
    """One small /proc file in three system calls (a buffered open() makes twice as many)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 8192):
            chunks.append(chunk)
            if len(chunk) < 8192:
                break
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _children_linux(pid: int, all_threads: bool) -> list[int]:
    tids = [str(pid)]
    if all_threads:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return []
    kids: list[int] = []
    for tid in tids:
        raw = _read(f"/proc/{pid}/task/{tid}/children")
        if raw:
            kids.extend(int(x) for x in raw.split())
    return kids


def last_pid() -> int | None:
    """The newest PID in this PID namespace (/proc/loadavg): unchanged means no process was born."""
    raw = _read("/proc/loadavg")
    try:
        return int(raw.split()[4]) if raw else None
    except (IndexError, ValueError):
        return None


class LinuxReader:
    """Keeps /proc/PID/stat open per process and re-reads it with one pread() a tick. The open file
    is bound to that very process: once it has gone, the read fails, so a reused PID is never
    mistaken for the old process."""

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}

    def _stat(self, pid: int) -> bytes | None:
        fd = self._fds.get(pid)
        if fd is None:
            try:
                fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
            except OSError:
                return None
            self._fds[pid] = fd
        try:
            raw = os.pread(fd, 4096, 0)
        except OSError:
            raw = b""
        if not raw:
            self.forget(pid)
            return None
        return raw

    def forget(self, pid: int) -> None:
        fd = self._fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for pid in list(self._fds):
            self.forget(pid)

    def read(self, pid: int, *, full: bool, children: bool = True) -> ProcRead | None:
        raw = self._stat(pid)
        if raw is None:
            return None
        f = raw[raw.rindex(b")") + 2 :].split()  # f[0] is field 3 (state) of proc(5)
        proc = ProcRead(
            pid=pid,
            ctime=int(f[19]) / CLOCK_TICKS,
            ppid=int(f[1]),
            zombie=f[0] in (b"Z", b"X"),
            user=int(f[11]) / CLOCK_TICKS,
            system=int(f[12]) / CLOCK_TICKS,
            c_user=int(f[13]) / CLOCK_TICKS,
            c_system=int(f[14]) / CLOCK_TICKS,
            faults=int(f[7]) + int(f[9]),
            c_faults=int(f[8]) + int(f[10]),
            threads=int(f[17]),
            rss=int(f[21]) * PAGE_SIZE,
        )
        if proc.zombie:
            self.forget(pid)  # nothing more will change; the next tick sees it reaped or re-reads
        if children:
            proc.children = _children_linux(pid, all_threads=full)
        if full and not proc.zombie:
            _read_slow(proc)
        return proc


def _read_slow(proc: ProcRead) -> None:
    """Context switches, I/O bytes and open fds: the once-a-second reads."""
    pid = proc.pid
    status = _read(f"/proc/{pid}/status")
    if status:
        at = status.find(b"\nvoluntary_ctxt_switches:")
        if at >= 0:  # the last two lines of the file: voluntary, then nonvoluntary
            proc.ctx = sum(int(line.split()[1]) for line in status[at + 1 :].splitlines()[:2])
    io = _read(f"/proc/{pid}/io")  # unreadable for another user's process: left out
    if io:
        for line in io.splitlines():
            if line.startswith(b"read_bytes:"):
                proc.read_bytes = int(line.split()[1])
            elif line.startswith(b"write_bytes:"):
                proc.write_bytes = int(line.split()[1])
    with contextlib.suppress(OSError):
        proc.fds = len(os.listdir(f"/proc/{pid}/fd"))


class PsutilReader:
    """Portable path (macOS and others, for `scriptrun run` on a laptop)."""

    def close(self) -> None:
        pass

    def read(self, pid: int, *, full: bool, children: bool = True) -> ProcRead | None:
        return read_psutil(pid, full=full, children=children)


def read_psutil(pid: int, *, full: bool, children: bool = True) -> ProcRead | None:
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            cpu = p.cpu_times()
            proc = ProcRead(
                pid=pid,
                ctime=p.create_time(),
                ppid=p.ppid(),
                zombie=p.status() == psutil.STATUS_ZOMBIE,
                user=cpu.user,
                system=cpu.system,
                c_user=getattr(cpu, "children_user", 0.0),
                c_system=getattr(cpu, "children_system", 0.0),
                faults=0,
                c_faults=0,
                threads=p.num_threads(),
                rss=p.memory_info().rss,
            )
            if children:
                proc.children = [c.pid for c in p.children()]
            if full and not proc.zombie:
                try:
                    ctx = p.num_ctx_switches()
                    proc.ctx = ctx.voluntary + ctx.involuntary
                    proc.fds = p.num_fds() if hasattr(p, "num_fds") else None
                    if hasattr(p, "io_counters"):
                        io = p.io_counters()
                        proc.read_bytes, proc.write_bytes = io.read_bytes, io.write_bytes
                except (psutil.AccessDenied, psutil.ZombieProcess):
                    pass
            return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def memory_detail(pid: int) -> tuple[int, int]:
    """USS and PSS (psutil reads smaps_rollup); (0, 0) when not allowed."""
    try:
        full = psutil.Process(pid).memory_full_info()
        return int(getattr(full, "uss", 0)), int(getattr(full, "pss", 0))
    except psutil.Error:
        return 0, 0


def reader() -> LinuxReader | PsutilReader:
    return LinuxReader() if HAS_PROC else PsutilReader()

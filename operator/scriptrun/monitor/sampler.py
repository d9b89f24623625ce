"""Samples a process tree (children included, processes that come and go included) with psutil.

Accounting rules, so that nothing is lost or counted twice:
- Every process ever seen in the tree is tracked by (pid, create time) and keeps its last-seen
  counters; a process that left the tree (e.g. re-parented to PID 1) is still followed.
- CPU time and page faults of a child that its parent has reaped show up in the parent's
  "children" fields (cutime/cstime, cminflt/cmajflt). So a gone child's own last-seen CPU/faults are
  dropped once its tracked parent has been read after the child was gone (that read includes it),
  and kept when the parent went first. Children that lived and died between two samples are
  counted the same way, through the parent's fields.
- I/O bytes and context switches have no "children" fields: a gone process keeps its last-seen values.
- When the launcher's wait4() rusage is known (it covers every descendant it waited for), the final
  CPU seconds and peak RSS are the larger of the two sources.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from scriptrun.monitor.procfs import children_of, read_stat

MIB = 1024.0 * 1024.0


@dataclass
class ProcRecord:
    pid: int
    ctime: float
    ppid: int = 0
    alive: bool = True
    user: float = 0.0
    system: float = 0.0
    c_user: float = 0.0
    c_system: float = 0.0
    minflt: int = 0
    majflt: int = 0
    c_faults: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    ctx: int = 0
    last_tick: int = 0
    gone_tick: int = 0


@dataclass
class Totals:
    user: float = 0.0
    system: float = 0.0
    faults: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    ctx: int = 0


@dataclass
class Snapshot:
    """One sample: what is alive now, plus cumulative totals."""

    at: float
    processes: int
    rss: int
    threads: int
    fds: int
    uss: int | None
    pss: int | None
    totals: Totals


@dataclass
class TreeSampler:
    root_pid: int
    memory_detail: bool = False
    clock: Callable[[], float] = time.monotonic
    exclude: frozenset[int] = frozenset()
    records: dict[tuple[int, float], ProcRecord] = field(default_factory=dict)
    samples: int = 0
    started: float = 0.0
    last: Snapshot | None = None
    rss_max: int = 0
    rss_sum: float = 0.0
    uss_max: int = 0
    pss_max: int = 0
    threads_max: int = 0
    fds_max: int = 0
    cpu_max_percent: float = 0.0
    io_available: bool = True

    def __post_init__(self) -> None:
        self.started = self.clock()
        self._handles: dict[int, psutil.Process] = {}
        self._tick = 0

    # -- discovery -----------------------------------------------------------------------------
    def _pids(self) -> list[int]:
        live = {r.pid for r in self.records.values() if r.alive}
        frontier = [self.root_pid, *live]
        seen: set[int] = set()
        while frontier:
            pid = frontier.pop()
            if pid in seen or pid in self.exclude:
                continue
            seen.add(pid)
            frontier.extend(children_of(pid))
        return sorted(seen)

    def _handle(self, pid: int) -> psutil.Process | None:
        proc = self._handles.get(pid)
        try:
            if proc is None or not proc.is_running():
                proc = psutil.Process(pid)
                self._handles[pid] = proc
            return proc
        except psutil.Error:
            self._handles.pop(pid, None)
            return None

    # -- one tick ------------------------------------------------------------------------------
    def sample(self) -> Snapshot:
        now = self.clock()
        self._tick += 1
        rss = threads = fds = running = 0
        uss = pss = 0
        alive_keys: set[tuple[int, float]] = set()
        for pid in self._pids():
            proc = self._handle(pid)
            if proc is None:
                continue
            try:
                with proc.oneshot():
                    key = (pid, proc.create_time())
                    zombie = proc.status() == psutil.STATUS_ZOMBIE
                    rec = self.records.get(key) or ProcRecord(pid, key[1])
                    cpu = proc.cpu_times()
                    mem = proc.memory_info()
                    n_threads = proc.num_threads()
                    ctx = _maybe(proc.num_ctx_switches)
                    n_fds = _maybe(proc.num_fds)
                    io = _maybe(proc.io_counters)
                    full = _maybe(proc.memory_full_info) if self.memory_detail else None
            except psutil.NoSuchProcess:
                continue
            except psutil.AccessDenied:
                continue
            stat = read_stat(pid)
            rec.alive = True
            rec.last_tick = self._tick
            rec.user, rec.system = cpu.user, cpu.system
            if ctx is not None:
                rec.ctx = ctx.voluntary + ctx.involuntary
            if stat is not None:
                rec.ppid = stat.ppid
                rec.c_user, rec.c_system = stat.cutime, stat.cstime
                rec.minflt, rec.majflt = stat.minflt, stat.majflt
                rec.c_faults = stat.cminflt + stat.cmajflt
            if io is not None:
                rec.read_bytes, rec.write_bytes = io.read_bytes, io.write_bytes
            else:
                self.io_available = False
            self.records[key] = rec
            alive_keys.add(key)
            if zombie:  # exited, not yet reaped: final CPU counts, but it holds no memory
                continue
            running += 1
            rss += mem.rss
            threads += n_threads
            fds += n_fds or 0
            if full is not None:
                uss += getattr(full, "uss", 0)
                pss += getattr(full, "pss", 0)
        for key, rec in self.records.items():
            if key not in alive_keys and rec.alive:
                rec.alive = False
                rec.gone_tick = self._tick
        totals = self._totals()
        snap = Snapshot(
            now,
            len(alive_keys),
            rss,
            threads,
            fds,
            uss if self.memory_detail else None,
            pss if self.memory_detail else None,
            totals,
        )
        if self.last is not None and now - self.last.at >= 0.05:
            # the busiest interval; the first sample has no baseline. Reaping races can move CPU time
            # between a child and its parent within one interval, so clamp to what the machine has.
            cpu_delta = (totals.user + totals.system) - (self.last.totals.user + self.last.totals.system)
            percent = min(100.0 * cpu_delta / (now - self.last.at), 100.0 * (os.cpu_count() or 1))
            self.cpu_max_percent = max(self.cpu_max_percent, percent)
        if running == 0:  # nothing alive to measure: not a sample
            self.last = snap
            return snap
        self.samples += 1
        self.rss_max = max(self.rss_max, rss)
        self.rss_sum += rss
        self.uss_max = max(self.uss_max, uss)
        self.pss_max = max(self.pss_max, pss)
        self.threads_max = max(self.threads_max, threads)
        self.fds_max = max(self.fds_max, fds)
        self.last = snap
        return snap

    def _parent(self, rec: ProcRecord) -> ProcRecord | None:
        """The tracked process that was `rec`'s parent (same PID, born before it)."""
        best: ProcRecord | None = None
        for other in self.records.values():
            if other.pid == rec.ppid and other.ctime <= rec.ctime and (best is None or other.ctime > best.ctime):
                best = other
        return best

    def _totals(self) -> Totals:
        out = Totals()
        for rec in self.records.values():
            parent = None if rec.alive else self._parent(rec)
            inside_parent = parent is not None and parent.last_tick >= rec.gone_tick
            if not inside_parent:
                out.user += rec.user + rec.c_user
                out.system += rec.system + rec.c_system
                out.faults += rec.minflt + rec.majflt + rec.c_faults
            out.read_bytes += rec.read_bytes
            out.write_bytes += rec.write_bytes
            out.ctx += rec.ctx
        return out

    @property
    def any_alive(self) -> bool:
        return any(r.alive for r in self.records.values())

    # -- the result ----------------------------------------------------------------------------
    def summary(
        self,
        *,
        exit_code: int | None,
        rusage: dict[str, float] | None = None,
        elapsed: float | None = None,
    ) -> dict[str, Any]:
        totals = self.last.totals if self.last else Totals()
        user, system = totals.user, totals.system
        rss_max = float(self.rss_max)
        faults = totals.faults
        ctx = totals.ctx
        if rusage:
            user = max(user, rusage.get("userTimeSeconds", 0.0))
            system = max(system, rusage.get("systemTimeSeconds", 0.0))
            rss_max = max(rss_max, rusage.get("maxRssBytes", 0.0))
            faults = max(faults, int(rusage.get("minorFaults", 0) + rusage.get("majorFaults", 0)))
            ctx = max(ctx, int(rusage.get("voluntarySwitches", 0) + rusage.get("involuntarySwitches", 0)))
        wall = elapsed if elapsed is not None else max(0.0, self.clock() - self.started)
        cpu_avg = 100.0 * (user + system) / wall if wall > 0 else 0.0
        out: dict[str, Any] = {
            "executionTimeSeconds": round(wall, 3),
            # the busiest interval is at least as busy as the whole run on average
            "cpuMaxPercent": round(max(self.cpu_max_percent, cpu_avg), 1),
            "cpuAvgPercent": round(cpu_avg, 1),
            "userTimeSeconds": round(user, 3),
            "systemTimeSeconds": round(system, 3),
            "memoryMaxMb": round(rss_max / MIB, 2),
            "memoryAvgMb": round(self.rss_sum / self.samples / MIB, 2) if self.samples else 0.0,
            "numThreadsMax": self.threads_max,
            "numFdsMax": self.fds_max,
            "contextSwitches": ctx,
            "pageFaults": faults,
            "processes": len(self.records),
            "samples": self.samples,
        }
        if self.io_available:
            out["readBytes"] = totals.read_bytes
            out["writeBytes"] = totals.write_bytes
        if self.memory_detail:
            out["memoryUssMaxMb"] = round(self.uss_max / MIB, 2)
            out["memoryPssMaxMb"] = round(self.pss_max / MIB, 2)
        if exit_code is not None:
            out["exitCode"] = exit_code
            out["success"] = exit_code == 0
        if self.samples == 0:
            out["note"] = "the script exited before the first sample; CPU and memory come from rusage only"
        return out


def _maybe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except (psutil.AccessDenied, psutil.ZombieProcess, NotImplementedError, OSError):
        return None


def own_pids() -> frozenset[int]:
    """This process and its ancestors: never part of a sampled tree."""
    pids = {os.getpid()}
    with contextlib.suppress(psutil.Error):
        pids.update(p.pid for p in psutil.Process().parents())
    return frozenset(pids)

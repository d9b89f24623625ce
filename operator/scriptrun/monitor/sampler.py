"""Samples a process tree (children included, processes that come and go included) with psutil.

Accounting rules, so that nothing is lost or counted twice:
- Every process seen in the tree is tracked by (pid, start time) and keeps its last-seen counters
  while it lives; a process that left the tree (e.g. re-parented to PID 1) is still followed. Once
  gone, its contribution is fixed into running totals and the record is dropped.
- CPU time and page faults of a child that its parent has reaped show up in the parent's
  "children" fields (cutime/cstime, cminflt/cmajflt). So a gone child's own last-seen CPU/faults are
  dropped once its tracked parent has been read after the child was gone (that read includes it),
  and kept when the parent went first. Children that lived and died between two samples are
  counted the same way, through the parent's fields.
- I/O bytes and context switches have no "children" fields: a gone process keeps its last-seen values.
- When the launcher's wait4() rusage is known (it covers every descendant it waited for), the final
  CPU seconds are the larger of the two sources; its peak RSS stands in when sampling saw no memory.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from scriptrun.monitor import procfs

MIB = 1024.0 * 1024.0


@dataclass(slots=True)
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
    parent_key: tuple[int, float] | None = None


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
    full_every: int = 1  # slow reads (io, ctx, fds, all threads' children) every N-th sample
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
        self._tick = 0
        self._last_pid: int | None = None
        self._reader = procfs.reader()
        self.seen = 0
        self._settled = Totals()  # fixed contributions of processes that are gone
        self._settled_ticks: dict[tuple[int, float], int] = {}  # their last ticks, briefly, for children

    def next_wait(self, interval: float) -> float:
        """Seconds to the next sample: quick at first (short scripts get measured too), then `interval`."""
        return min(interval, 0.05) if self.clock() - self.started < 0.5 else interval

    @classmethod
    def for_interval(cls, root_pid: int, interval: float, **kwargs: Any) -> TreeSampler:
        """Full reads about once a second, whatever the sampling interval."""
        return cls(root_pid, full_every=max(1, round(1.0 / interval)), **kwargs)

    # -- one tick ------------------------------------------------------------------------------
    def sample(self) -> Snapshot:
        now = self.clock()
        self._tick += 1
        full = self._tick == 1 or self._tick % self.full_every == 0
        newest = procfs.last_pid() if procfs.HAS_PROC else None
        discover = full or newest is None or newest != self._last_pid
        self._last_pid = newest
        rss = threads = fds = running = 0
        uss = pss = 0
        alive_keys: set[tuple[int, float]] = set()
        tick_keys: dict[int, tuple[int, float]] = {}
        live = {r.pid for r in self.records.values() if r.alive}
        frontier = [self.root_pid, *live]
        visited: set[int] = set()
        while frontier:
            pid = frontier.pop()
            if pid in visited or pid in self.exclude:
                continue
            visited.add(pid)
            read = self._reader.read(pid, full=full, children=discover)
            if read is None:
                continue
            frontier.extend(read.children or [])
            key = (pid, read.ctime)
            tick_keys[pid] = key
            rec = self.records.get(key)
            if rec is None:
                rec = ProcRecord(pid, read.ctime)
                self.seen += 1
            rec.alive, rec.last_tick, rec.ppid = True, self._tick, read.ppid
            rec.parent_key = tick_keys.get(read.ppid, rec.parent_key if rec.ppid == read.ppid else None)
            rec.user, rec.system, rec.c_user, rec.c_system = read.user, read.system, read.c_user, read.c_system
            rec.minflt, rec.majflt, rec.c_faults = read.faults, 0, read.c_faults
            if read.ctx is not None:
                rec.ctx = read.ctx
            if read.read_bytes is not None and read.write_bytes is not None:
                rec.read_bytes, rec.write_bytes = read.read_bytes, read.write_bytes
            elif full and not read.zombie:
                self.io_available = False
            self.records[key] = rec
            alive_keys.add(key)
            if read.zombie:  # exited, not yet reaped: final CPU counts, but it holds no memory
                continue
            running += 1
            rss += read.rss
            threads += read.threads
            fds += read.fds or 0
            if self.memory_detail and full:
                u, p = procfs.memory_detail(pid)
                uss, pss = uss + u, pss + p
        for key, rec in self.records.items():
            if key not in alive_keys and rec.alive:
                rec.alive = False
                rec.gone_tick = self._tick
        self._settle()
        totals = self._totals()
        snap = Snapshot(
            now,
            running,
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
        self.last = snap
        if running == 0:  # nothing alive to measure: not a sample
            return snap
        self.samples += 1
        self.rss_max = max(self.rss_max, rss)
        self.rss_sum += rss
        self.uss_max = max(self.uss_max, uss)
        self.pss_max = max(self.pss_max, pss)
        self.threads_max = max(self.threads_max, threads)
        if full:
            self.fds_max = max(self.fds_max, fds)
        return snap

    def _last_tick_of(self, key: tuple[int, float] | None) -> int | None:
        if key is None:
            return None
        rec = self.records.get(key)
        return rec.last_tick if rec is not None else self._settled_ticks.get(key)

    def _settle(self) -> None:
        """Fix the contribution of every gone process, then forget it."""
        gone = [(k, r) for k, r in self.records.items() if not r.alive]
        for _key, rec in gone:
            parent_last = self._last_tick_of(rec.parent_key)
            inside_parent = parent_last is not None and parent_last >= rec.gone_tick
            if not inside_parent:
                self._settled.user += rec.user + rec.c_user
                self._settled.system += rec.system + rec.c_system
                self._settled.faults += rec.minflt + rec.majflt + rec.c_faults
            self._settled.read_bytes += rec.read_bytes
            self._settled.write_bytes += rec.write_bytes
            self._settled.ctx += rec.ctx
        for key, rec in gone:
            del self.records[key]
            self._settled_ticks[key] = rec.last_tick
        if len(self._settled_ticks) > 256:
            horizon = self._tick - 3
            self._settled_ticks = {k: t for k, t in self._settled_ticks.items() if t >= horizon}

    def _totals(self) -> Totals:
        s = self._settled
        out = Totals(s.user, s.system, s.faults, s.read_bytes, s.write_bytes, s.ctx)
        for rec in self.records.values():
            out.user += rec.user + rec.c_user
            out.system += rec.system + rec.c_system
            out.faults += rec.minflt + rec.majflt + rec.c_faults
            out.read_bytes += rec.read_bytes
            out.write_bytes += rec.write_bytes
            out.ctx += rec.ctx
        return out

    def close(self) -> None:
        self._reader.close()

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
        rusage_memory = False
        if rusage:
            user = max(user, rusage.get("userTimeSeconds", 0.0))
            system = max(system, rusage.get("systemTimeSeconds", 0.0))
            if rss_max == 0 and rusage.get("maxRssBytes"):
                # ru_maxrss also counts the pages a forked child shares with its parent before exec,
                # so it is only a stand-in when sampling saw no memory (no sample, or only a process
                # already tearing its memory down), and the summary says so
                rss_max = rusage["maxRssBytes"]
                rusage_memory = True
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
            "processes": self.seen,
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
        if rusage_memory:
            out["memorySource"] = "rusage"
        return out


def own_pids() -> frozenset[int]:
    """This process and its ancestors: never part of a sampled tree."""
    pids = {os.getpid()}
    with contextlib.suppress(psutil.Error):
        pids.update(p.pid for p in psutil.Process().parents())
    return frozenset(pids)

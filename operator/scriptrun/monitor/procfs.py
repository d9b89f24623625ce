"""Cheap per-process reads. psutil does the portable work; /proc gives what psutil does not expose
(page faults, reaped-children CPU and faults) and a fast child list (/proc/PID/task/TID/children)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class StatLine:
    ppid: int
    state: str
    minflt: int
    cminflt: int
    majflt: int
    cmajflt: int
    cutime: float
    cstime: float


def read_stat(pid: int) -> StatLine | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5)
    return StatLine(
        ppid=int(fields[1]),
        state=fields[0].decode(),
        minflt=int(fields[7]),
        cminflt=int(fields[8]),
        majflt=int(fields[9]),
        cmajflt=int(fields[10]),
        cutime=int(fields[13]) / CLOCK_TICKS,
        cstime=int(fields[14]) / CLOCK_TICKS,
    )


_HAS_CHILDREN_FILE: bool | None = None


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (all its threads'), fast where the kernel has the children file."""
    global _HAS_CHILDREN_FILE
    if _HAS_CHILDREN_FILE is not False:
        try:
            kids: list[int] = []
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as handle:
                    kids.extend(int(x) for x in handle.read().split())
            _HAS_CHILDREN_FILE = True
            return kids
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}"):
                return []
            _HAS_CHILDREN_FILE = False
        except (OSError, ValueError):
            return []
    try:
        return [p.pid for p in psutil.Process(pid).children()]
    except psutil.Error:
        return []

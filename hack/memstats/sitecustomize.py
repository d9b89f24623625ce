"""What the operator's memory holds, for hack/bench_load.py: with SCRIPTRUN_MEMSTATS set to a file and
this directory on PYTHONPATH, each SIGUSR2 appends one JSON line to that file:

- rss_mib: the resident set (VmRSS);
- pymalloc_live_mib: bytes in pymalloc's allocated blocks (Python objects of up to 512 bytes), and
  pymalloc_arenas: its 1 MiB arenas held (an arena goes back to the system only once all empty);
- malloc_live_mib: bytes glibc's malloc has handed out and not had back (larger objects, buffers,
  C extensions' memory), and malloc_free_mib: free bytes inside its heap;
- gc_objects: objects the garbage collector tracks.

The live figures against the idle ones tell data still held from memory the allocators keep: RSS
above idle with live figures back at idle is fragmentation, not a leak. Not part of the operator:
a bench tool only (sys._debugmallocstats is CPython's debugging output, parsed here).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import sys
import tempfile
import time
from types import FrameType


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


def _pymalloc() -> dict[str, float]:
    """pymalloc's totals from sys._debugmallocstats (it writes to the C stderr: caught in a file)."""
    with tempfile.TemporaryFile() as out:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, sep, value = line.rpartition("=")
        if sep and name.startswith("# "):
            values[name[2:].strip()] = float(value.strip().replace(",", ""))
    return {
        "pymalloc_live_mib": round(values.get("bytes in allocated blocks", 0) / 2**20, 1),
        "pymalloc_arenas": values.get("arenas allocated current", 0),
    }


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _record(_signum: int, _frame: FrameType | None) -> None:
    info = _LIBC.mallinfo2()
    record = {
        "time": time.time(),
        "rss_mib": _rss_mib(),
        **_pymalloc(),
        "malloc_live_mib": round(info.uordblks / 2**20, 1),
        "malloc_free_mib": round(info.fordblks / 2**20, 1),
        "gc_objects": len(gc.get_objects()),
    }
    with open(os.environ["SCRIPTRUN_MEMSTATS"], "a") as out:
        out.write(json.dumps(record) + "\n")


if os.environ.get("SCRIPTRUN_MEMSTATS"):
    _LIBC = ctypes.CDLL("libc.so.6")
    _LIBC.mallinfo2.restype = _MallInfo2
    signal.signal(signal.SIGUSR2, _record)

"""Give freed memory back to the system (glibc only; elsewhere every call here is a no-op).

Measured (hack/bench_load.py, see the README): with thousands of runs the operator's RSS was far
above what its live Python objects took. Watch events and list pages of a few KB to a few MB are
parsed and dropped all the time among long-lived small objects, and glibc keeps the freed pages:
a list page larger than the mmap threshold is mmapped and unmapped once, after which glibc raises
its threshold so the next such page lands in the heap, and a free page in the middle of the heap is
only returned by malloc_trim(). One malloc_trim(0) on a loaded operator (under a memory profiler) gave
back a fifth of its RSS. So: fix the mmap threshold (big buffers stay mmapped and are unmapped when freed), keep at
most two arenas (our few threads' allocations are not worth an arena of up to 64 MiB each), and
trim every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024  # glibc's default, but fixed: a buffer this big is mmapped and unmapped again
TRIM_THRESHOLD = 1024 * 1024
ARENA_MAX = 2


def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def tune() -> bool:
    """Set the allocator's limits for this process; call it first thing. False if not glibc."""
    if _LIBC is None:
        return False
    limits = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, ARENA_MAX))
    return all([bool(_LIBC.mallopt(param, value)) for param, value in limits])


def trim() -> bool:
    """Return the free pages of every arena to the system; True if any were."""
    return bool(_LIBC.malloc_trim(0)) if _LIBC is not None else False


class Trimmer:
    """A task calling trim() every `interval` seconds (0: never)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0 and _LIBC is not None:
            self._task = asyncio.create_task(self._loop(), name="scriptrun-malloc-trim")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            trim()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

"""One reconcile task per object key, woken by events or by its own next deadline.

This is a daemon without Kopf's daemon machinery (and so without a finalizer on every object):
each key gets at most one running task; a kick while it runs makes it go round once more; when the
reconcile asks for no wake-up and nothing kicked it, the task ends. Errors back off (1 s .. 60 s)
instead of looping hot, and never reach Kopf.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime

from scriptrun.engine import clock
from scriptrun.k8s.errors import Unavailable

log = logging.getLogger(__name__)

ReconcileFn = Callable[[Hashable], Awaitable[datetime | None]]
ObserveFn = Callable[[float, bool], None]  # (seconds, ok) of one reconcile: the metrics


class KeyedLoop:
    def __init__(
        self,
        reconcile: ReconcileFn,
        *,
        resync_seconds: float = 60.0,
        observe: ObserveFn | None = None,
        workers: int = 0,
    ) -> None:
        """`workers` > 0: at most that many reconciles at once; the others wait their turn in order
        (asyncio.Semaphore is first come, first served), so none starves."""
        self._reconcile = reconcile
        self._slots = asyncio.Semaphore(workers) if workers > 0 else None
        self._observe = observe
        self._resync = resync_seconds
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}
        self._wake: dict[Hashable, asyncio.Event] = {}

    def kick(self, key: Hashable) -> None:
        event = self._wake.setdefault(key, asyncio.Event())
        event.set()
        task = self._tasks.get(key)
        if task is None or task.done():
            self._tasks[key] = asyncio.create_task(self._run(key, event), name=f"reconcile {key}")

    def forget(self, key: Hashable) -> None:
        task = self._tasks.pop(key, None)
        self._wake.pop(key, None)
        if task is not None:
            task.cancel()

    @property
    def active(self) -> int:
        return sum(1 for t in self._tasks.values() if not t.done())

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _run(self, key: Hashable, event: asyncio.Event) -> None:
        failures = 0
        while True:
            event.clear()
            start = time.perf_counter()
            try:
                if self._slots is None:
                    wake_at = await self._reconcile(key)
                else:
                    async with self._slots:
                        start = time.perf_counter()  # the reconcile's own time, not the wait for a slot
                        wake_at = await self._reconcile(key)
                failures = 0
                if self._observe is not None:
                    self._observe(time.perf_counter() - start, True)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if self._observe is not None:
                    self._observe(time.perf_counter() - start, False)
                failures += 1
                delay = min(60.0, 2.0 ** (failures - 1))
                if isinstance(err, Unavailable):  # the API server down or overloaded: expected, one line
                    log.warning("reconcile of %s failed (retry in %.0fs): %s", key, delay, err)
                else:
                    log.exception("reconcile of %s failed (retry in %.0fs)", key, delay)
                wake_at = None
                timeout: float | None = delay
            else:
                if wake_at is None and not event.is_set():
                    if self._tasks.get(key) is asyncio.current_task():
                        del self._tasks[key]
                        if self._wake.get(key) is event:
                            del self._wake[key]  # the next kick makes a new one: none kept per idle key
                    return
                timeout = None if wake_at is None else max(0.0, (wake_at - clock.utcnow()).total_seconds())
                if timeout is not None:
                    timeout = min(timeout, self._resync)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)

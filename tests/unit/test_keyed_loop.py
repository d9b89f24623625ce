"""The per-object reconcile loop: coalesces kicks, wakes on deadlines, backs off on errors."""

import asyncio
import logging
from collections.abc import Hashable
from datetime import datetime, timedelta

import pytest

from scriptrun.controllers.loop import KeyedLoop
from scriptrun.engine import clock
from scriptrun.k8s.errors import Unavailable


def test_kicks_coalesce_and_the_task_ends_when_idle() -> None:
    calls: list[Hashable] = []

    async def reconcile(key: Hashable) -> datetime | None:
        calls.append(key)
        await asyncio.sleep(0.05)
        return None

    async def main() -> None:
        loop = KeyedLoop(reconcile)
        for _ in range(10):
            loop.kick("a")
        await asyncio.sleep(0.01)
        for _ in range(10):
            loop.kick("a")  # while running: one more round, not ten
        await asyncio.sleep(0.3)
        assert loop.active == 0
        assert not loop._tasks and not loop._wake  # an idle key keeps nothing (10,000 finished runs)
        loop.kick("a")  # and wakes again as before
        await asyncio.sleep(0.1)
        await loop.close()

    asyncio.run(main())
    assert calls == ["a", "a", "a"]


def test_wakes_itself_at_the_requested_time() -> None:
    calls: list[float] = []

    async def main() -> None:
        start = asyncio.get_running_loop().time()

        async def reconcile(key: Hashable) -> datetime | None:
            calls.append(asyncio.get_running_loop().time() - start)
            return clock.utcnow() + timedelta(seconds=0.2) if len(calls) < 2 else None

        loop = KeyedLoop(reconcile)
        loop.kick("a")
        await asyncio.sleep(0.5)
        await loop.close()

    asyncio.run(main())
    assert len(calls) == 2 and calls[1] >= 0.19


def test_errors_back_off_instead_of_looping_hot() -> None:
    calls = 0

    async def reconcile(key: Hashable) -> datetime | None:
        nonlocal calls
        calls += 1
        raise RuntimeError("API down")

    async def main() -> None:
        loop = KeyedLoop(reconcile)
        loop.kick("a")
        await asyncio.sleep(1.6)  # backoff 1 s, then 2 s: at most two calls in 1.6 s
        await loop.close()

    asyncio.run(main())
    assert calls == 2


def test_an_unreachable_api_server_is_one_line_a_bug_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    failures = [Unavailable(0, "Unreachable", "cannot reach the API server"), KeyError("bug")]

    async def reconcile(key: Hashable) -> datetime | None:
        if failures:
            raise failures.pop(0)
        return None

    async def main() -> None:
        loop = KeyedLoop(reconcile)
        loop.kick("a")
        await asyncio.sleep(3.3)  # backs off 1 s, then 2 s
        await loop.close()

    with caplog.at_level(logging.WARNING, logger="scriptrun.controllers.loop"):
        asyncio.run(main())
    records = [(r.levelname, r.exc_info is not None) for r in caplog.records]
    assert records == [("WARNING", False), ("ERROR", True)]
    assert "0 Unreachable: cannot reach the API server" in caplog.records[0].getMessage()

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
        # an idle key keeps nothing (10,000 finished runs)
        assert not (loop._running or loop._queued or loop._ready or loop._timers or loop._again or loop._failures)
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


def test_keys_waiting_for_a_slot_or_a_deadline_hold_no_task() -> None:
    """10,000 runs in flight must not mean 10,000 parked tasks: a waiting key is a queue entry or a
    timer, and tasks exist only for the reconciles running now."""
    gate = asyncio.Event()

    async def reconcile(key: Hashable) -> datetime | None:
        await gate.wait()
        return clock.utcnow() + timedelta(seconds=30)

    async def main() -> None:
        loop = KeyedLoop(reconcile, workers=4)
        for i in range(200):
            loop.kick(i)
        await asyncio.sleep(0.05)
        assert len(asyncio.all_tasks()) == 1 + 4 and loop.active == 200  # main, four reconciles
        gate.set()
        await asyncio.sleep(0.2)
        assert len(asyncio.all_tasks()) == 1 and loop.active == 200  # every key waits for its deadline
        assert len(loop._timers) == 200
        await loop.close()

    asyncio.run(main())


def test_forget_drops_a_waiting_key_and_frees_a_running_ones_slot() -> None:
    started: list[Hashable] = []
    cancelled: list[Hashable] = []

    async def reconcile(key: Hashable) -> datetime | None:
        started.append(key)
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            cancelled.append(key)
            raise
        return None

    async def main() -> None:
        loop = KeyedLoop(reconcile, workers=1)
        for key in "abc":
            loop.kick(key)
        await asyncio.sleep(0.05)
        loop.forget("b")  # waiting: never reconciled
        loop.forget("a")  # running: cancelled, and "c" gets the slot at once
        await asyncio.sleep(0.05)
        assert started == ["a", "c"] and cancelled == ["a"]
        await asyncio.sleep(0.3)
        assert loop.active == 0
        await loop.close()

    asyncio.run(main())


def test_a_kick_during_a_deadline_wait_reconciles_now_and_replaces_the_deadline() -> None:
    calls: list[float] = []

    async def main() -> None:
        start = asyncio.get_running_loop().time()

        async def reconcile(key: Hashable) -> datetime | None:
            calls.append(asyncio.get_running_loop().time() - start)
            return clock.utcnow() + timedelta(seconds=10) if len(calls) == 1 else None

        loop = KeyedLoop(reconcile)
        loop.kick("a")
        await asyncio.sleep(0.1)
        assert loop.active == 1  # its deadline, 10 s away
        loop.kick("a")
        await asyncio.sleep(0.1)
        assert loop.active == 0  # the second reconcile asked for no wake-up: the old deadline is gone
        await loop.close()

    asyncio.run(main())
    assert len(calls) == 2 and calls[1] < 0.2

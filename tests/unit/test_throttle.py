"""The operator's bounds on itself: its API requests (QPS/burst, every attempt counted) and its
reconciles at once (workers, served in order)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable
from datetime import datetime

import pytest
from kubernetes_asyncio import client

from scriptrun.controllers.loop import KeyedLoop
from scriptrun.k8s.api import Kube
from scriptrun.k8s.errors import Retry


def test_requests_keep_to_qps_after_the_burst() -> None:
    sent: list[float] = []

    async def request() -> None:
        sent.append(time.monotonic())

    async def main() -> float:
        kube = Kube(client.ApiClient(), Retry(), qps=20, burst=5)
        start = time.monotonic()
        await asyncio.gather(*(kube._call(request) for _ in range(25)))
        await kube.api_client.close()
        return start

    start = asyncio.run(main())
    offsets = sorted(t - start for t in sent)
    assert len(offsets) == 25
    assert offsets[4] < 0.1  # the burst at once
    assert 0.9 < offsets[-1] < 1.6  # then 20 more at 20 a second


def test_no_limit_by_default() -> None:
    async def main() -> None:
        kube = Kube(client.ApiClient())
        assert kube.limiter is None
        await kube.api_client.close()

    asyncio.run(main())


def test_workers_bound_the_reconciles_at_once_and_serve_in_order() -> None:
    running, peak, order = 0, 0, []

    async def reconcile(key: Hashable) -> datetime | None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        order.append(key)
        await asyncio.sleep(0.02)
        running -= 1
        return None

    async def main() -> None:
        loop = KeyedLoop(reconcile, workers=3)
        for i in range(30):
            loop.kick(i)
        await asyncio.sleep(0.5)  # 10 rounds of 3 take 0.2 s
        assert loop.active == 0
        await loop.close()

    asyncio.run(main())
    assert peak == 3 and order == list(range(30))


def test_watch_streaming_on_from_kubernetes_1_34_unless_set() -> None:
    from scriptrun.controllers.config import use_watch_streaming

    assert use_watch_streaming("auto", (1, 34)) and use_watch_streaming("auto", (2, 0))
    assert not use_watch_streaming("auto", (1, 33)) and not use_watch_streaming("auto", None)
    assert use_watch_streaming("true", (1, 29)) and not use_watch_streaming("false", (1, 35))


def test_a_bad_watch_streaming_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from scriptrun.controllers.config import OperatorConfig

    monkeypatch.setenv("SCRIPTRUN_WATCH_STREAMING", "sometimes")
    with pytest.raises(ValueError, match="SCRIPTRUN_WATCH_STREAMING='sometimes': expected one of auto, true, false"):
        OperatorConfig.from_env()

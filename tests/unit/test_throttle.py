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


def test_api_connections_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from scriptrun.controllers.config import OperatorConfig

    assert OperatorConfig.from_env().api_connections == 32
    monkeypatch.setenv("SCRIPTRUN_API_CONNECTIONS", "8")
    config = OperatorConfig.from_env()
    assert config.api_connections == 8
    assert config.connection_pool(0) == 9  # the whole cluster: one pods watch
    assert config.connection_pool(3) == 11  # a watch per namespace
    for bad in ("0", "-2", "many"):
        monkeypatch.setenv("SCRIPTRUN_API_CONNECTIONS", bad)
        with pytest.raises(ValueError, match=f"SCRIPTRUN_API_CONNECTIONS=.*{bad}.*at least 1"):
            OperatorConfig.from_env()


def test_the_connection_pool_bounds_requests_in_flight() -> None:
    """Wire level: 12 GETs at once through a pool of 3 reach the server at most 3 at a time."""
    from aiohttp import web
    from kubernetes_asyncio import client

    from scriptrun.k8s.api import Kube
    from tests.support.http_server import local_server

    in_flight, peak = 0, 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        name = request.match_info["name"]
        return web.json_response({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})

    async def main() -> None:
        async with local_server(("GET", "/api/v1/namespaces/ns/configmaps/{name}", handle)) as url:
            configuration = client.Configuration(host=url)
            configuration.connection_pool_maxsize = 3
            kube = Kube(client.ApiClient(configuration))
            try:
                got = await asyncio.gather(*(kube.get_configmap("ns", f"c{i}") for i in range(12)))
                assert [(g or {})["metadata"]["name"] for g in got] == [f"c{i}" for i in range(12)]
            finally:
                await kube.close()

    asyncio.run(main())
    assert peak == 3

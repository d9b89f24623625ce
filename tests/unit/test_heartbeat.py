"""The hung-watch check: the probe fails once the operator's own heartbeat has not come back through
the watch for the window (before the first one: counted from the start), and recovers with the next."""

from __future__ import annotations

from typing import Any

import pytest

from scriptrun.controllers.config import OperatorConfig
from scriptrun.controllers.heartbeat import Heartbeat, HeartbeatConfig, WatchStale


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lease(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ops"}}


def test_the_probe_follows_the_heartbeats_coming_back() -> None:
    clock = Clock()
    beat = Heartbeat(None, HeartbeatConfig("ops", "scriptrun-heartbeat-a", "a", 1, 30), clock)  # type: ignore[arg-type]
    clock.now += 29
    assert beat.health()["lastHeartbeatSecondsAgo"] == 29  # still starting
    clock.now += 2
    with pytest.raises(WatchStale, match="no heartbeat came back through the watch for 31s"):
        beat.health()
    beat.seen(lease("scriptrun-heartbeat-a"))
    assert beat.health() == {"lastHeartbeatSecondsAgo": 0, "lease": "ops/scriptrun-heartbeat-a"}
    clock.now += 20
    beat.seen(lease("scriptrun-heartbeat-b"))  # another replica's heartbeat says nothing of ours
    clock.now += 11
    with pytest.raises(WatchStale, match="the last heartbeat came back through the watch for 31s"):
        beat.health()


def test_a_window_of_zero_never_fails() -> None:
    clock = Clock()
    beat = Heartbeat(None, HeartbeatConfig("ops", "l", "a", 1, 0), clock)  # type: ignore[arg-type]
    clock.now += 10_000
    assert beat.health()["lastHeartbeatSecondsAgo"] == 10_000


def test_the_heartbeat_needs_a_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SCRIPTRUN_HEARTBEAT_NAMESPACE", "POD_NAMESPACE", "POD_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert OperatorConfig.from_env().heartbeat is None  # not in a pod: nothing probes it
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    monkeypatch.setenv("POD_NAME", "Scriptrun-7d9f")
    monkeypatch.setenv("SCRIPTRUN_WATCH_TIMEOUT_SECONDS", "45")
    config = OperatorConfig.from_env().heartbeat
    assert config == HeartbeatConfig("ops", "scriptrun-heartbeat-scriptrun-7d9f", "Scriptrun-7d9f", 10.0, 45.0)

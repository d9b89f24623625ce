"""Two replicas (controllers/peering.py): priorities by start time, the standby decision as Kopf
makes it, and a standby's probe that does not mistake its paused watches for hung ones."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scriptrun.controllers.heartbeat import Heartbeat, HeartbeatConfig
from scriptrun.controllers.peering import PeeringConfig, standby_to, start_priority

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
ME = PeeringConfig(name="scriptrun", identity="op-b", priority=500, lifetime=15)


def peer(priority: int, seen_ago: float, lifetime: int = 15) -> dict[str, Any]:
    return {"priority": priority, "lifetime": lifetime, "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat()}


def test_an_earlier_start_outranks_a_later_one() -> None:
    first, later = start_priority(now=1_800_000_000.0, salt=999), start_priority(now=1_800_000_000.001, salt=0)
    assert first > later > 0
    assert start_priority(now=1_800_000_000.0, salt=1) != start_priority(now=1_800_000_000.0, salt=2)
    assert start_priority(now=4_102_444_800.0, salt=0) < 2**63  # int64 in the peering object, year 2100


@pytest.mark.parametrize(
    ("peers", "expected"),
    [
        ({}, None),
        ({"op-b": peer(500, 0)}, None),  # myself
        ({"op-a": peer(900, 3)}, "op-a"),  # an earlier replica, alive
        ({"op-a": peer(900, 16)}, None),  # its keep-alive ran out: a crash, I take over
        ({"op-a": peer(900, 3, lifetime=0)}, None),  # its goodbye (a clean stop)
        ({"op-a": peer(500, 3)}, "op-a"),  # equal priority: Kopf pauses both
        ({"op-c": peer(100, 3)}, None),  # a later replica yields to me
        ({"op-a": peer(700, 3), "op-z": peer(900, 1)}, "op-z"),
        ({"op-a": {"priority": "x"}, "op-y": "junk", "op-z": {"priority": 900}}, None),  # unreadable: ignored
    ],
)
def test_standby_decision(peers: dict[str, Any], expected: str | None) -> None:
    assert standby_to({"status": peers}, ME, NOW) == expected


def test_settings_from_the_environment() -> None:
    assert PeeringConfig.from_env({}, []) is None
    env = {"SCRIPTRUN_PEERING": "sr", "POD_NAME": "op-1", "SCRIPTRUN_PEERING_PRIORITY": "42"}
    config = PeeringConfig.from_env(env, ["team-a", "team-b"])
    assert config == PeeringConfig(name="sr", identity="op-1", priority=42, lifetime=15, namespace="team-a")
    assert config.exported() == {"SCRIPTRUN_PEERING_PRIORITY": "42", "POD_NAME": "op-1"}
    with pytest.raises(ValueError, match="SCRIPTRUN_PEERING_LIFETIME_SECONDS=1: must be at least 2"):
        PeeringConfig.from_env({**env, "SCRIPTRUN_PEERING_LIFETIME_SECONDS": "1"}, [])


class Kube:
    def __init__(self, peering: dict[str, Any] | None) -> None:
        self.peering = peering
        self.asked: list[tuple[Any, ...]] = []

    async def get_peering(self, *args: Any) -> dict[str, Any] | None:
        self.asked.append(args)
        return self.peering


def test_a_standby_stays_live_and_the_window_restarts_on_takeover() -> None:
    now = [1000.0]
    live_peer = {"status": {"op-a": {"priority": 900, "lifetime": 15, "lastseen": datetime.now(UTC).isoformat()}}}
    kube = Kube(live_peer)
    config = HeartbeatConfig("ops", "scriptrun-heartbeat-op-b", "op-b", 1, 30, peering=ME)
    beat = Heartbeat(kube, config, lambda: now[0])  # type: ignore[arg-type]
    asyncio.run(beat.look_at_peers())
    assert kube.asked == [("kopf.dev", "v1", "clusterkopfpeerings", "scriptrun", None)]
    now[0] += 300  # no heartbeat through the (paused) watch for minutes
    assert beat.health() == {"standby": True, "active": "op-a"}
    kube.peering = None  # the active replica is gone (its object entry with it)
    asyncio.run(beat.look_at_peers())
    assert beat.health()["lastHeartbeatSecondsAgo"] == 0  # the window starts again with the resumed watches
    now[0] += 31
    with pytest.raises(Exception, match="no heartbeat came back"):
        beat.health()

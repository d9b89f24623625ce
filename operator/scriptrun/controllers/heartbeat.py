"""Hung-watch detection: the operator renews a Lease of its own every `interval` and expects to see
the renewal come back through its watch. When nothing has come back for `window` seconds, the
liveness endpoint fails (Kopf's `@on.probe`), and the kubelet restarts the operator.

Why a heartbeat: a watch stream that hangs silently (Kopf's known hazard) looks exactly like a quiet
cluster, so "no events for a while" cannot tell them apart; a write the operator makes itself always
produces an event. The Lease is watched with a server-side label selector, so the extra stream
carries only the operators' own heartbeats. It shares the API server and the client session with the
other watches: a frozen API server or a dead connection shows here; a hang of only one other
resource's stream does not (README, Operations).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scriptrun.controllers import peering
from scriptrun.controllers.peering import PeeringConfig
from scriptrun.engine import clock
from scriptrun.k8s.api import Kube

log = logging.getLogger(__name__)
LABEL = "scriptrun.dev/heartbeat"  # on the heartbeat Leases; the watch selects on it
RESOURCE = ("coordination.k8s.io", "leases")  # a (group, plural) key: Kopf misreads "a.b/c" strings


class WatchStale(RuntimeError):
    """No heartbeat came back through the watch within the window."""


@dataclass(frozen=True)
class HeartbeatConfig:
    namespace: str
    name: str  # the Lease: scriptrun-heartbeat-<pod name>
    holder: str  # the pod (or host) name
    interval: float = 10.0
    window: float = 120.0  # 0: never fail the probe
    peering: PeeringConfig | None = None  # several replicas: a paused standby's watches are closed on purpose


class Heartbeat:
    def __init__(self, kube: Kube, config: HeartbeatConfig, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.config = config
        self._now = monotonic
        self._started = monotonic()
        self._seen: float | None = None  # when our renewal last came back through the watch
        self._written: str | None = None  # the renewTime we last wrote
        self._task: asyncio.Task[None] | None = None
        self.standby_to: str | None = None  # the active peer this replica yields to (peering.py)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="scriptrun-heartbeat")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await self.beat()
            await self.look_at_peers()
            await asyncio.sleep(self.config.interval)

    async def beat(self) -> None:
        """Renew the Lease (bounded by the interval: a frozen API server must not hold the loop)."""
        stamp = clock.utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # a Lease's MicroTime
        try:
            await asyncio.wait_for(
                self.kube.renew_lease(
                    self.config.namespace, self.config.name, self.config.holder, stamp, {LABEL: "true"}
                ),
                timeout=max(self.config.interval, 1.0),
            )
            self._written = stamp
        except Exception as err:  # the API server down or frozen: the probe will say so in time
            log.warning("heartbeat lease not renewed: %s: %s", type(err).__name__, err)

    async def look_at_peers(self) -> None:
        """With peering: am I the standby? Kopf has then closed my watches, heartbeat's included."""
        me = self.config.peering
        if me is None:
            return
        plural = peering.NAMESPACED_PLURAL if me.namespace else peering.CLUSTER_PLURAL
        try:
            found = await asyncio.wait_for(
                self.kube.get_peering(peering.GROUP, peering.VERSION, plural, me.name, me.namespace),
                timeout=max(self.config.interval, 1.0),
            )
        except Exception as err:  # unknown: keep the last answer; a frozen API server shows in the heartbeat
            log.warning("peering %s not read: %s: %s", me.name, type(err).__name__, err)
            return
        was, self.standby_to = self.standby_to, peering.standby_to(found, me, clock.utcnow())
        if self.standby_to is not None and was is None:
            log.info("standby: %s is the active replica (its watches paused mine)", self.standby_to)
            self._seen = None
        elif self.standby_to is None and was is not None:
            log.info("active: %s is gone, this replica takes over", was)
            self._started = self._now()  # the watch window starts again with the resumed watches

    def seen(self, body: dict[str, Any]) -> None:
        """A watch event for a heartbeat Lease: ours counts (another replica's does not)."""
        if (body.get("metadata") or {}).get("name") == self.config.name:
            self._seen = self._now()

    def health(self) -> dict[str, Any]:
        """The probe's answer; raises WatchStale when the watch has shown nothing for the window."""
        now = self._now()
        if self.standby_to is not None:
            return {"standby": True, "active": self.standby_to}
        since = now - (self._seen if self._seen is not None else self._started)
        if self.config.window and since > self.config.window:
            what = "no heartbeat came back" if self._seen is None else "the last heartbeat came back"
            raise WatchStale(
                f"{what} through the watch for {since:.0f}s (window {self.config.window:g}s): "
                "the API server's watch streams look hung"
            )
        return {"lastHeartbeatSecondsAgo": round(since, 1), "lease": f"{self.config.namespace}/{self.config.name}"}

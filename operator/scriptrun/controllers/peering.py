"""Two or more replicas: Kopf peering keeps one active and the others paused (standby).

Every replica writes a keep-alive (identity, priority, lifetime, lastseen) into one peering object
(a ClusterKopfPeering, or a KopfPeering in the first watched namespace); Kopf pauses every watch of
a replica that sees a live peer of higher or equal priority. A replica's priority comes from its
start time: the one started first outranks the others, so a restarted replica comes back as the
standby and the active one keeps its place (no second hand-over). When the active replica dies
without a goodbye (SIGKILL, a lost node) its keep-alive runs out after `lifetime` seconds, which
bounds the takeover; a clean stop (SIGTERM) says goodbye at once.

Kopf does not tell handlers whether the operator is paused, so the heartbeat reads the peering
object (one GET per beat) and this module decides the same way Kopf does: a paused standby's
watches are closed on purpose, which the liveness probe must not mistake for a hung watch.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

GROUP, VERSION = "kopf.dev", "v1"
CLUSTER_PLURAL, NAMESPACED_PLURAL = "clusterkopfpeerings", "kopfpeerings"
PRIORITY_BASE = 10**17  # start-time priorities stay positive 64-bit integers (until the year 5138)


@dataclass(frozen=True)
class PeeringConfig:
    name: str  # the peering object's name (the chart: the release's full name)
    identity: str  # this replica (the pod's name)
    priority: int
    lifetime: int  # seconds a keep-alive stays valid: bounds the takeover after a crash
    namespace: str | None = None  # None: a ClusterKopfPeering (the operator watches every namespace)

    @classmethod
    def from_env(cls, env: Mapping[str, str], namespaces: list[str]) -> PeeringConfig | None:
        """None unless SCRIPTRUN_PEERING names the peering object. `namespaces`: the watched ones
        (SCRIPTRUN_WATCH_NAMESPACES when read inside the operator), none for the whole cluster."""
        name = (env.get("SCRIPTRUN_PEERING") or "").strip()
        if not name:
            return None
        lifetime = int(env.get("SCRIPTRUN_PEERING_LIFETIME_SECONDS") or 15)
        if lifetime < 2:
            raise ValueError(f"SCRIPTRUN_PEERING_LIFETIME_SECONDS={lifetime}: must be at least 2")
        priority = env.get("SCRIPTRUN_PEERING_PRIORITY")  # set by `scriptrun operator` for the process
        return cls(
            name=name,
            identity=env.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
            priority=int(priority) if priority else start_priority(),
            lifetime=lifetime,
            namespace=namespaces[0] if namespaces else None,
        )

    def exported(self) -> dict[str, str]:
        """What the process's environment must say so that every reader sees this same peer."""
        return {"SCRIPTRUN_PEERING_PRIORITY": str(self.priority), "POD_NAME": self.identity}


def start_priority(now: float | None = None, salt: int | None = None) -> int:
    """Earlier start, higher priority; the salt (0..999, from the pid) separates two replicas
    started in the same millisecond."""
    millis = int((time.time() if now is None else now) * 1000)
    return PRIORITY_BASE - millis * 1000 + ((os.getpid() if salt is None else salt) % 1000)


def _lastseen(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def standby_to(peering: Mapping[str, Any] | None, me: PeeringConfig, now: datetime) -> str | None:
    """The live peer this replica yields to (Kopf pauses it then), or None when it is active.
    Kopf's rule: a live peer of higher priority pauses us; one of equal priority pauses both."""
    peers = (peering or {}).get("status") or {}
    best: tuple[int, str] | None = None
    for identity, info in peers.items():
        if identity == me.identity or not isinstance(info, Mapping):
            continue
        seen = _lastseen(info.get("lastseen"))
        try:
            priority, lifetime = int(info.get("priority", 0)), int(info.get("lifetime", 60))
        except (TypeError, ValueError):
            continue
        if seen is None or seen + timedelta(seconds=lifetime) <= now or priority < me.priority:
            continue
        if best is None or priority > best[0]:
            best = (priority, identity)
    return None if best is None else best[1]

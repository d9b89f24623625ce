"""The operator's in-memory state: latest bodies, pod index handle, expectations, the loops."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from scriptrun import DEFAULT_IMAGE, DEFAULT_MONITOR_IMAGE
from scriptrun.handlers.loop import KeyedLoop
from scriptrun.k8s.api import Kube

Key = tuple[str, str]


@dataclass
class OperatorConfig:
    default_image: str = DEFAULT_IMAGE
    monitor_image: str = DEFAULT_MONITOR_IMAGE
    monitor_pull_policy: str | None = None
    deadline_grace_seconds: float = 5.0
    resync_seconds: float = 60.0

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(
            default_image=os.environ.get("SCRIPTRUN_DEFAULT_IMAGE") or DEFAULT_IMAGE,
            monitor_image=os.environ.get("SCRIPTRUN_MONITOR_IMAGE") or DEFAULT_MONITOR_IMAGE,
            monitor_pull_policy=os.environ.get("SCRIPTRUN_MONITOR_IMAGE_PULL_POLICY") or None,
            deadline_grace_seconds=float(os.environ.get("SCRIPTRUN_DEADLINE_GRACE_SECONDS", "5")),
            resync_seconds=float(os.environ.get("SCRIPTRUN_RESYNC_SECONDS", "60")),
        )


@dataclass
class RunState:
    kube: Kube
    config: OperatorConfig
    loop: KeyedLoop
    bodies: dict[Key, dict[str, Any]] = field(default_factory=dict)
    expected: dict[Key, set[int]] = field(default_factory=dict)
    pods_index: Any = None
    pod_signatures: dict[Key, tuple[Any, ...]] = field(default_factory=dict)
    child_phases: dict[Key, Any] = field(default_factory=dict)

    def pods_of(self, key: Key) -> list[dict[str, Any]]:
        if self.pods_index is None or key not in self.pods_index:
            return []
        return list(self.pods_index[key])


@dataclass
class WorkflowState:
    loop: KeyedLoop
    writer: KeyedLoop  # stores decided statuses in the background
    bodies: dict[Key, dict[str, Any]] = field(default_factory=dict)
    expected: dict[Key, set[str]] = field(default_factory=dict)
    children_index: Any = None
    retired: set[str] = field(default_factory=set)  # uids of children a retry deleted
    desired: dict[Key, tuple[str | None, Any]] = field(default_factory=dict)  # (uid, latest decided status)
    written: dict[Key, dict[str, Any]] = field(default_factory=dict)  # the status as last stored

    def children_of(self, key: Key) -> list[dict[str, Any]]:
        if self.children_index is None or key not in self.children_index:
            return []
        return list(self.children_index[key])


def store_body(bodies: dict[Key, dict[str, Any]], key: Key, incoming: dict[str, Any]) -> bool:
    """Keep the newest body known for `key` (a late watch event never replaces our own, newer patch
    response). Returns True when the event is only the echo of that patch: nothing new to do."""
    known = bodies.get(key)
    if known is None:
        bodies[key] = incoming
        return False
    try:
        old_rv, new_rv = int(known["metadata"]["resourceVersion"]), int(incoming["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        bodies[key] = incoming
        return False
    if new_rv > old_rv:
        bodies[key] = incoming
    return new_rv == old_rv


class Holder:
    """Set at start-up; handlers read it."""

    runs: RunState | None = None
    workflows: WorkflowState | None = None


STATE = Holder()

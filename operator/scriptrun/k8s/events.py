"""core/v1 Events (what `kubectl describe` shows): their body, and the bounded background queue that
posts them off the reconcile's critical path."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

from scriptrun.engine import clock

log = logging.getLogger(__name__)
COMPONENT = "scriptrun-operator"


def instance() -> str:
    """Which operator replica reports (the pod's name): with several replicas or shards, Events say
    which one acted."""
    return os.environ.get("POD_NAME") or socket.gethostname()


class Background:
    """A bounded set of fire-and-forget coroutines (Events); dropped, with a log line, when full."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.tasks: set[asyncio.Task[None]] = set()

    def put(self, coro: Coroutine[Any, Any, None]) -> None:
        if len(self.tasks) >= self.limit:
            coro.close()
            log.warning("event queue full: an Event was dropped")
            return
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=5)
        for task in list(self.tasks):
            task.cancel()


def event_body(obj: dict[str, Any], etype: str, reason: str, message: str, now: datetime | None) -> dict[str, Any]:
    """An Event on `obj`, named after it (generateName), its message cut to 1024 characters."""
    meta = obj.get("metadata", {})
    stamp = clock.fmt(now or clock.utcnow())
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'scriptrun')}.", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": etype,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance(),
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }

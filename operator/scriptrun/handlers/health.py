"""Liveness: the heartbeat Lease coming back through the watch (controllers/heartbeat.py), reported
by Kopf's `--liveness` endpoint; a stale watch fails the probe."""

from __future__ import annotations

from typing import Any

import kopf

from scriptrun.controllers.heartbeat import LABEL, WatchStale


@kopf.on.event("coordination.k8s.io", "v1", "leases", labels={LABEL: "true"})
async def heartbeat_seen(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    heartbeat = memo.get("heartbeat")
    if heartbeat is not None:
        heartbeat.seen(dict(body))


@kopf.on.probe(id="watch")
async def watch_alive(memo: kopf.Memo, **_: Any) -> dict[str, Any] | None:
    heartbeat = memo.get("heartbeat")
    if heartbeat is None:
        return None
    try:
        result: dict[str, Any] = heartbeat.health()
    except WatchStale as err:
        raise kopf.PermanentError(str(err)) from err  # the probe answers 500: the kubelet restarts us
    return result

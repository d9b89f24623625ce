"""Kopf registrations for ScriptRuns and their pods: each feeds the ScriptRun controller."""

from __future__ import annotations

from typing import Any

import kopf

from scriptrun import API_GROUP, API_VERSION
from scriptrun.build import names
from scriptrun.controllers.bodies import Key, pack
from scriptrun.controllers.scriptrun import ScriptRunController, pod_snapshot

MANAGED = {names.LABEL_MANAGED_BY: names.MANAGED_BY}


@kopf.index("pods", labels=MANAGED)
async def pods_by_run(body: kopf.Body, **_: Any) -> dict[Key, bytes] | None:
    """Pods of each ScriptRun, as small snapshots packed into JSON bytes (10,000 pods)."""
    found = pod_snapshot(dict(body))
    return None if found is None else {found[0]: pack(found[1])}


@kopf.on.event("pods", labels=MANAGED)
async def pod_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    controller: ScriptRunController | None = memo.get("runs")
    if controller is not None:
        controller.pod_event(event.get("type"), dict(body), kwargs["pods_by_run"])


@kopf.on.event(API_GROUP, API_VERSION, "scriptruns")
async def scriptrun_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    controller: ScriptRunController | None = memo.get("runs")
    if controller is not None and body.get("metadata", {}).get("namespace"):
        controller.run_event(event.get("type"), dict(body), kwargs["pods_by_run"])

"""Kopf registration for ScriptRuns: each event feeds the ScriptRun controller. Their pods are not
watched through Kopf but by controllers/pods.py (started in setup.py), which feeds the same
controller."""

from __future__ import annotations

from typing import Any

import kopf

from scriptrun import API_GROUP, API_VERSION
from scriptrun.controllers.scriptrun import ScriptRunController


@kopf.on.event(API_GROUP, API_VERSION, "scriptruns")
async def scriptrun_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    controller: ScriptRunController | None = memo.get("runs")
    if controller is not None and body.get("metadata", {}).get("namespace"):
        controller.run_event(event.get("type"), dict(body))

"""Kopf registrations for Workflows and the index of their children: each feeds the Workflow
controller."""

from __future__ import annotations

from typing import Any

import kopf

from scriptrun import API_GROUP, API_VERSION
from scriptrun.build import names
from scriptrun.controllers.bodies import Key
from scriptrun.controllers.workflow import ChildRecord, WorkflowController, child_record


@kopf.index(API_GROUP, API_VERSION, "scriptruns", labels={names.LABEL_WORKFLOW: kopf.PRESENT})
async def children_by_workflow(body: kopf.Body, **_: Any) -> dict[Key, ChildRecord] | None:
    """Each workflow's children, as small records (who, and what the workflow reads of them)."""
    found = child_record(dict(body))
    return None if found is None else {found[0]: found[1]}


@kopf.on.event(API_GROUP, API_VERSION, "workflows")
async def workflow_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    controller: WorkflowController | None = memo.get("workflows")
    if controller is not None and body.get("metadata", {}).get("namespace"):
        controller.workflow_event(event.get("type"), dict(body), kwargs["children_by_workflow"])

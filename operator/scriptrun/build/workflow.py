"""Workflow -> child ScriptRun, as a plain dict. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scriptrun import API_GROUP, API_VERSION
from scriptrun.build import names
from scriptrun.model.scriptrun import RunTemplate


class WorkflowRef(names.OwnerRef):
    """The owning Workflow."""

    KIND = "Workflow"


def child_labels(wf: WorkflowRef, task: str, node: str) -> dict[str, str]:
    return {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_WORKFLOW: names.label_value(wf.name),
        names.LABEL_TASK: names.label_value(task),
        names.LABEL_NODE: names.label_value(node),
    }


def build_child(
    wf: WorkflowRef,
    *,
    task: str,
    node: str,
    template: RunTemplate,
    traceparent: str | None = None,
    inherited_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`traceparent`: tracing on, the Workflow's span (the child's span is a child of it).
    `inherited_labels`: the Workflow's labels its shard selects on (build/shard.py)."""
    spec = template.dump()
    child: dict[str, Any] = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "ScriptRun",
        "metadata": {
            "name": names.child_name(wf.name, node),
            "namespace": wf.namespace,
            "labels": {**(inherited_labels or {}), **child_labels(wf, task, node)},
            "ownerReferences": [wf.owner_reference()],
        },
        "spec": spec,
    }
    if traceparent:
        child["metadata"]["annotations"] = {names.ANNOTATION_TRACEPARENT: traceparent}
    return child

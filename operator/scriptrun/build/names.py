"""Deterministic, length-safe names and label values."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

from scriptrun import API_GROUP, API_VERSION

LABEL_SCRIPTRUN = f"{API_GROUP}/scriptrun"
LABEL_ATTEMPT = f"{API_GROUP}/attempt"
LABEL_WORKFLOW = f"{API_GROUP}/workflow"
LABEL_TASK = f"{API_GROUP}/task"
LABEL_HISTORY = f"{API_GROUP}/history"  # a regression history ConfigMap's key
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "scriptrun"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def fit(name: str, limit: int) -> str:
    """`name` if it fits, else a prefix plus a hash of the whole (still deterministic)."""
    if len(name) <= limit:
        return name
    return f"{name[: limit - 9].rstrip('-.')}-{_short_hash(name)}"


def label_value(value: str) -> str:
    return fit(value, 63)


def pod_name(run: str, attempt: int) -> str:
    return fit(f"{run}-a{attempt}", 253)


def script_configmap_name(run: str) -> str:
    return fit(f"{run}-script", 253)


def history_name(key: str) -> str:
    """The ConfigMap with a regression key's history of runs (spec.regression)."""
    return fit(f"scriptrun-history-{key}", 253)


def gate_report_name(run: str) -> str:
    """The owned ConfigMap with the before-gates' SARIF and SBOM."""
    return fit(f"{run}-gates", 253)


LABEL_NODE = f"{API_GROUP}/node"
ANNOTATION_RETRY = f"{API_GROUP}/retry"
ANNOTATION_SCRIPT = f"{API_GROUP}/script"  # an inline script, for the pod's downward-API volume
ANNOTATION_TRACEPARENT = f"{API_GROUP}/traceparent"  # the parent span of a Workflow's or ScriptRun's (W3C)


def child_name(workflow: str, node: str) -> str:
    return fit(f"{workflow}-{node}", 253)


@dataclass(frozen=True)
class OwnerRef:
    """One of our objects that owns what a builder makes (KIND set by the subclass)."""

    KIND: ClassVar[str] = ""
    name: str
    namespace: str
    uid: str

    def owner_reference(self) -> dict[str, Any]:
        """A controller owner reference: garbage collection deletes the child with its owner."""
        return {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": self.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

"""Pure: typed API models for Workflow and ScriptRun, the single source of the CRDs.

Exports resolve lazily (PEP 562): `scriptrun.model.usage` (the usage table the monitor sidecar
needs) must not drag pydantic into the sidecar's memory.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Condition": "common",
    "ObjectMeta": "common",
    "Attempt": "scriptrun",
    "Backoff": "scriptrun",
    "ExitCodeRule": "scriptrun",
    "MonitorSpec": "scriptrun",
    "RetryStrategy": "scriptrun",
    "RunPhase": "scriptrun",
    "RunTemplate": "scriptrun",
    "ScriptRun": "scriptrun",
    "ScriptRunSpec": "scriptrun",
    "ScriptRunStatus": "scriptrun",
    "ScriptSource": "scriptrun",
    "NodePhase": "workflow",
    "Workflow": "workflow",
    "WorkflowPhase": "workflow",
    "WorkflowSpec": "workflow",
    "WorkflowStatus": "workflow",
    "WorkflowTask": "workflow",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"scriptrun.model.{_EXPORTS[name]}"), name)
    raise AttributeError(name)

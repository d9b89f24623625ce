"""Pure: typed API models for Workflow and ScriptRun, the single source of the CRDs."""

from scriptrun.model.common import Condition, ObjectMeta
from scriptrun.model.scriptrun import (
    Attempt,
    Backoff,
    ExitCodeRule,
    MonitorSpec,
    RetryStrategy,
    RunPhase,
    RunTemplate,
    ScriptRun,
    ScriptRunSpec,
    ScriptRunStatus,
    ScriptSource,
)
from scriptrun.model.workflow import Workflow, WorkflowSpec, WorkflowStatus, WorkflowTask

__all__ = [
    "Attempt",
    "Backoff",
    "Condition",
    "ExitCodeRule",
    "MonitorSpec",
    "ObjectMeta",
    "RetryStrategy",
    "RunPhase",
    "RunTemplate",
    "ScriptRun",
    "ScriptRunSpec",
    "ScriptRunStatus",
    "ScriptSource",
    "Workflow",
    "WorkflowSpec",
    "WorkflowStatus",
    "WorkflowTask",
]

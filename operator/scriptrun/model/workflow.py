"""The Workflow kind: a DAG of scripts (tasks), each run as a child ScriptRun.

The schema is complete here; the engine that runs it lives in `scriptrun.engine`.
Spelled like Argo Workflows' DAG template where that helps users feel at home.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, PlainSerializer, WithJsonSchema

from scriptrun import API_GROUP, API_VERSION
from scriptrun.model.common import MAX_SECONDS, ApiModel, Condition, ObjectMeta, cel
from scriptrun.model.scriptrun import Budget, RunTemplate

TASK_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
PARAM_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
MAX_TASKS = 2000
MAX_MATRIX = 256


# No docstring on WorkflowPhase (nor on RunPhase): pydantic would copy it into the CRD as the
# description of status.phase.
class WorkflowPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ERROR = "Error"

    @property
    def terminal(self) -> bool:
        return self in (WorkflowPhase.SUCCEEDED, WorkflowPhase.FAILED, WorkflowPhase.ERROR)


class NodePhase(StrEnum):
    """A task node's phase (one matrix combination, or the task itself)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    OMITTED = "Omitted"

    @property
    def terminal(self) -> bool:
        return self in (NodePhase.SUCCEEDED, NodePhase.FAILED, NodePhase.SKIPPED, NodePhase.OMITTED)


# On the wire a phase is its plain string value, also when code assigned a plain string to the field
# (assignment is not validated): no "expected enum" serializer warning, the same JSON either way.
_AS_STRING = PlainSerializer(str, return_type=str)


class Parameter(ApiModel):
    name: str = Field(min_length=1, max_length=63, pattern=PARAM_NAME_PATTERN)
    value: str | None = Field(default=None, max_length=65536)
    description: str | None = None


class Arguments(ApiModel):
    parameters: list[Parameter] | None = Field(default=None, max_length=100)


class MatrixParam(ApiModel):
    name: str = Field(min_length=1, max_length=63, pattern=PARAM_NAME_PATTERN)
    values: list[str] = Field(min_length=1, max_length=MAX_MATRIX)


class Matrix(ApiModel):
    """Fan a task out over the cartesian product of these parameter lists (like Tekton's matrix)."""

    params: list[MatrixParam] = Field(min_length=1, max_length=8)
    max_combinations: int = Field(default=MAX_MATRIX, ge=1, le=MAX_MATRIX, description="Cap on the product.")


class OutputParameter(ApiModel):
    name: str = Field(min_length=1, max_length=63, pattern=PARAM_NAME_PATTERN)
    path: str | None = Field(default=None, description="File the script writes; default $SCRIPTRUN_OUTPUTS/<name>.")


class Outputs(ApiModel):
    parameters: list[OutputParameter] | None = Field(default=None, max_length=32)


class WorkflowTask(RunTemplate):
    """One node of the DAG."""

    model_config = RunTemplate.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.dependencies) && has(self.depends))",
                    "use either dependencies or depends, not both",
                ),
            ]
        }
    }

    name: str = Field(min_length=1, max_length=50, pattern=TASK_NAME_PATTERN, description="DNS label.")
    dependencies: list[str] | None = Field(
        default=None, max_length=100, description="Tasks that must succeed first (Argo's dependencies)."
    )
    depends: str | None = Field(
        default=None,
        max_length=4096,
        description="Expression over task results, e.g. 'a.Succeeded || a.Skipped' (Argo's depends).",
    )
    when: str | None = Field(default=None, max_length=4096, description="Run only if this is true.")
    matrix: Matrix | None = None
    outputs: Outputs | None = None
    parameters: list[Parameter] | None = Field(default=None, max_length=100)


class TtlStrategy(ApiModel):
    seconds_after_completion: int | None = Field(default=None, le=MAX_SECONDS, ge=0)
    seconds_after_success: int | None = Field(default=None, le=MAX_SECONDS, ge=0)
    seconds_after_failure: int | None = Field(default=None, le=MAX_SECONDS, ge=0)


class PodGC(ApiModel):
    strategy: Literal["OnPodCompletion", "OnPodSuccess", "OnWorkflowCompletion", "OnWorkflowSuccess"] = (
        "OnWorkflowSuccess"
    )


class WorkflowSpec(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!has(self.onExit) || self.onExit.all(e, !self.tasks.exists(t, t.name == e.name))",
                    "onExit task names must differ from task names",
                    ".onExit",
                )
            ]
        }
    }

    arguments: Arguments | None = None
    tasks: list[WorkflowTask] = Field(
        min_length=1,
        max_length=MAX_TASKS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    on_exit: list[WorkflowTask] | None = Field(
        default=None,
        max_length=20,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Exit handlers: run after the DAG finishes, whatever its result.",
    )
    parallelism: int | None = Field(default=None, ge=1, le=10000, description="Most tasks running at once.")
    fail_fast: bool = Field(default=True, description="Start no new task once one has failed.")
    active_deadline_seconds: int | None = Field(default=None, le=MAX_SECONDS, ge=1)
    suspend: bool | None = Field(default=None, description="While true, no new task starts.")
    shutdown: Literal["Stop", "Terminate"] | None = Field(
        default=None, description="Stop: let running tasks finish, then exit handlers. Terminate: stop now."
    )
    ttl_strategy: TtlStrategy | None = None
    pod_gc: PodGC | None = Field(default=None, alias="podGC", description="Delete pods as runs finish (Argo's podGC).")
    budget: Budget | None = Field(default=None, description="A limit on what the workflow's tasks cost together.")


class TaskSummary(ApiModel):
    model_config = ApiModel.model_config | {"extra": "allow"}

    # typed in Python; in the CRD still a plain string, as it has always been (no enum there)
    phase: Annotated[NodePhase, _AS_STRING, WithJsonSchema({"type": "string"})]
    attempts: int | None = None
    duration: str | None = None
    exit_code: int | None = None
    reason: str | None = Field(
        default=None, description="While the task's pod waits: why (ErrImagePull, Unschedulable...)."
    )
    message: str | None = None
    outputs: dict[str, str] | None = None
    usage: dict[str, Any] | None = Field(default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    cost: str | None = Field(default=None, description='What the task\'s run cost, e.g. "0.001234 USD".')


class WorkflowCost(ApiModel):
    """What the workflow's finished tasks cost together (each task's status.cost)."""

    amount: str | None = Field(default=None, description="The sum, when all tasks share a currency.")
    currency: str | None = None
    display: str | None = Field(default=None, description="The sum rounded for display, e.g. 0.0310 USD.")
    tasks: int = Field(default=0, description="Tasks priced so far.")
    projected: str | None = Field(
        default=None, description="While tasks remain: the sum so far plus their average cost for each one left."
    )
    by_currency: dict[str, str] | None = Field(
        default=None, description="Sums per currency, when tasks were priced in more than one."
    )


class WorkflowStatus(ApiModel):
    model_config = ApiModel.model_config | {"extra": "allow"}

    phase: Annotated[WorkflowPhase, _AS_STRING] = WorkflowPhase.PENDING
    progress: str | None = Field(default=None, description="done/total tasks.")
    observed_generation: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration: str | None = None
    message: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    tasks: dict[str, TaskSummary] = Field(default_factory=dict, description="Compact per-task summary.")
    retry_round: int | None = Field(default=None, description="The last retry (scriptrun retry) carried out.")
    cost: WorkflowCost | None = Field(default=None, description="What the finished tasks cost so far.")
    trace_id: str | None = Field(
        default=None, alias="traceID", description="The OpenTelemetry trace of this workflow (when traced and sampled)."
    )


class Workflow(ApiModel):
    model_config = ApiModel.model_config | {"extra": "ignore"}

    api_version: str = f"{API_GROUP}/{API_VERSION}"
    kind: str = "Workflow"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: WorkflowSpec
    status: WorkflowStatus = Field(default_factory=WorkflowStatus)

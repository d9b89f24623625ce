"""The ScriptRun kind: one Python script, run as one pod per attempt."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from scriptrun import API_GROUP, API_VERSION
from scriptrun.model.alerts import MAX_ALERTS, AlertRule, FiredAlert
from scriptrun.model.common import (
    MAX_SECONDS,
    ApiModel,
    Condition,
    ConfigMapKeyRef,
    EnvVar,
    Object,
    ObjectMeta,
    PodMetadata,
    ProcessString,
    Resources,
    cel,
)
from scriptrun.model.gates import GateResult, Gates
from scriptrun.model.regression import Regression, RegressionCheck


class RunPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (RunPhase.SUCCEEDED, RunPhase.FAILED)


class ScriptSource(ApiModel):
    """Where the script comes from: exactly one of source, configMapRef or command."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "[has(self.source), has(self.configMapRef), has(self.command)].filter(x, x).size() == 1",
                    "exactly one of script.source, script.configMapRef or script.command must be set",
                )
            ]
        }
    }

    source: str | None = Field(
        default=None,
        max_length=262144,
        description="Inline Python source, delivered in the pod (up to 32 KiB) or via an owned ConfigMap.",
    )
    config_map_ref: ConfigMapKeyRef | None = Field(
        default=None, description="A ConfigMap key that holds the Python source."
    )
    command: list[ProcessString] | None = Field(
        default=None, min_length=1, description="A command already in the image (no script file)."
    )


class Backoff(ApiModel):
    """Wait between attempts. Argo's backoff, in seconds."""

    strategy: Literal["exponential", "linear", "fibonacci", "fixed"] = Field(
        default="exponential",
        description="exponential: d*factor^(n-1); linear: d*n; fibonacci: d*fib(n); fixed: d.",
    )
    duration_seconds: float = Field(default=1.0, ge=0, le=86400, description="Base wait d.")
    factor: float = Field(default=2.0, ge=1, le=100, description="Growth factor for exponential.")
    cap_seconds: float | None = Field(default=None, le=MAX_SECONDS, ge=0, description="Longest single wait.")
    max_duration_seconds: float | None = Field(
        default=None,
        le=MAX_SECONDS,
        ge=0,
        description="No new attempt starts later than this many seconds after the run started.",
    )


class ExitCodeRule(ApiModel):
    """Decide on an attempt's exit code, in the spirit of a Job's podFailurePolicy.onExitCodes."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.operator != 'In' || !self.values.exists(v, v == 0)",
                    "exit code 0 is success and cannot be listed with operator In",
                    ".values",
                )
            ]
        }
    }

    action: Literal["Fail", "Ignore", "Count"] = Field(
        description="Fail: fail the run now, no retry. Ignore: retry without counting the attempt "
        "against retryStrategy.limit. Count: the default, the attempt counts."
    )
    operator: Literal["In", "NotIn"] = "In"
    values: list[int] = Field(min_length=1, max_length=64, description="Exit codes.")


class RetryStrategy(ApiModel):
    """How often and when to run another attempt (Argo's retryStrategy)."""

    limit: int = Field(default=0, ge=0, le=1000, description="Retries after the first attempt.")
    retry_policy: Literal["Always", "OnFailure", "OnError"] = Field(
        default="OnFailure",
        description="OnFailure: the script exited non-zero, was OOM-killed or timed out. OnError: the "
        "pod was lost (evicted, deleted, could not start). Always: both.",
    )
    backoff: Backoff = Field(default_factory=Backoff)
    on_exit_codes: list[ExitCodeRule] | None = Field(
        default=None, max_length=8, description="Rules tried in order; the first match decides."
    )


class MonitorSpec(ApiModel):
    """The usage monitor sidecar."""

    enabled: bool = True
    interval_seconds: float = Field(default=1.0, ge=0.1, le=60, description="Sampling interval.")
    port: int = Field(default=9090, ge=1, le=65535, description="Prometheus metrics port.")


class RunTemplate(ApiModel):
    """Everything needed to run one script; shared by ScriptRun and Workflow tasks."""

    script: ScriptSource
    image: str | None = Field(default=None, description="Container image; default the scriptrun runner.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    args: list[ProcessString] | None = Field(default=None, description="Arguments passed to the script.")
    env: list[EnvVar] | None = None
    env_from: list[Object] | None = None
    resources: Resources | None = None
    timeout_seconds: int | None = Field(
        default=None, le=MAX_SECONDS, ge=1, description="Deadline of each attempt (the pod's activeDeadlineSeconds)."
    )
    pending_timeout_seconds: int | None = Field(
        default=None,
        le=MAX_SECONDS,
        ge=1,
        description="Fail an attempt whose pod is not running this many seconds after the attempt was created "
        "(image that cannot be pulled, unschedulable, ...), with the reason it waited for. Such a failure is an "
        "error in retryPolicy terms (retried by OnError and Always).",
    )
    retry_strategy: RetryStrategy | None = None
    disruption_retries: int = Field(
        default=5,
        ge=0,
        le=100,
        description="Pods lost to a disruption (a spot/preemptible reclaim, a node drain, preemption: the pod's "
        "DisruptionTarget condition) are retried this many times without counting against retryStrategy.limit, "
        "like a Job's podFailurePolicy rule Ignore on DisruptionTarget.",
    )
    monitor: MonitorSpec | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[Object] | None = None
    affinity: Object | None = None
    service_account_name: str | None = None
    automount_service_account_token: bool | None = Field(
        default=None, description="Run pods get no API token unless this is true."
    )
    security_context: Object | None = Field(default=None, description="Pod securityContext.")
    container_security_context: Object | None = Field(
        default=None,
        description="The script container's securityContext. Default: no privilege escalation, every capability "
        "dropped, the RuntimeDefault seccomp profile (what Pod Security Standards 'restricted' asks of a "
        "container); set it to relax or extend that.",
    )
    priority_class_name: str | None = None
    pod_metadata: PodMetadata | None = None
    gates: Gates | None = Field(default=None, description="Policy gates: checks the run must pass (docs/gates.md).")
    regression: RegressionCheck | None = Field(
        default=None, description="Compare each successful run's duration and memory with its history (docs/gates.md)."
    )
    alerts: list[AlertRule] | None = Field(
        default=None,
        max_length=MAX_ALERTS,
        description="Alert rules over the finished run's usage: an Event, and webhooks (docs/gates.md).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


class Budget(ApiModel):
    """A spending limit on what the runs cost (status.cost). Past it, Warn sets the BudgetExceeded
    condition, emits a Warning Event and counts scriptrun_budget_exceeded_total; Stop also starts
    nothing new (a Workflow's tasks, like shutdown: Stop; a ScriptRun's retries)."""

    amount: str = Field(
        pattern=r"^[0-9]{1,12}(\.[0-9]{1,6})?$", description='The limit, a decimal number such as "2.50".'
    )
    currency: str = Field(
        pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. USD: costs in another currency are not converted."
    )
    action: Literal["Warn", "Stop"] = Field(default="Warn", description="Warn, or Stop starting new work.")


class ScriptRunSpec(RunTemplate):
    budget: Budget | None = Field(default=None, description="A limit on what the run's attempts cost together.")
    terminate: bool | None = Field(
        default=None, description="Stop now: the running attempt is stopped and no retry starts (phase Failed)."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        le=MAX_SECONDS,
        ge=0,
        description="Delete the ScriptRun (and its pods) this long after it finished.",
    )


class Attempt(ApiModel):
    """One pod of the run."""

    attempt: int = Field(ge=1)
    pod_name: str
    phase: RunPhase = RunPhase.PENDING
    created_time: str | None = Field(
        default=None, description="When the attempt was created; pendingTimeoutSeconds counts from here."
    )
    start_time: str | None = Field(default=None, description="The pod's startTime: when a node accepted it.")
    finish_time: str | None = None
    node_name: str | None = Field(default=None, description="The node the pod was scheduled to.")
    exit_code: int | None = None
    reason: str | None = Field(
        default=None,
        description="Completed, Error, OOMKilled, DeadlineExceeded, Evicted, PodDeleted...; while pending, why the "
        "pod waits (ErrImagePull, Unschedulable...).",
    )
    message: str | None = None
    counted: bool = Field(
        default=True, description="False when an exit-code rule said Ignore, or the pod was lost to a disruption."
    )
    disruption: str | None = Field(
        default=None,
        description="Why the pod was disrupted (its DisruptionTarget condition's reason, or SpotReclaim: evicted "
        "from a spot node): retried without counting against the retry limit.",
    )


class CostNode(ApiModel):
    """The node the run's last attempt was priced on."""

    name: str | None = None
    provider: str | None = None
    region: str | None = None
    instance_type: str | None = None
    capacity_type: str | None = None


class RunActualCost(ApiModel):
    """What the cloud provider billed for the capacity the run ran on (opt-in billing reconciliation,
    docs/cost.md): the spend of the resources tagged with the run's `scriptrun.dev/billing-tag` value
    over whole UTC days, asked for at least the billing lag after the run finished."""

    amount: str = Field(description="What was billed, a decimal string; 0 when nothing tagged so was billed.")
    currency: str
    source: str = Field(description="aws-cost-explorer or azure-cost-management.")
    at: str = Field(description="When the provider was asked.")
    tag: str = Field(description="The cloud tag the spend was filtered by, key=value.")
    period_start: str = Field(description="The first UTC day of the billing period (YYYY-MM-DD).")
    period_end: str = Field(description="The UTC day after its last (exclusive).")
    runs_sharing: int = Field(
        ge=1, description="Runs with this tag value over the period: the amount is the capacity's, not split."
    )
    note: str | None = None


class RunCost(ApiModel):
    """What the run cost: each attempt's pod, max(request, measured average) x runtime x the node's
    rates. Amounts are decimal strings (to a millionth of the currency unit)."""

    amount: str | None = Field(default=None, description="The total, when all attempts share a currency.")
    currency: str
    display: str | None = Field(default=None, description="The total rounded for display, e.g. 0.0310 USD.")
    breakdown: dict[str, str] | None = Field(default=None, description="cpu, memory and gpu shares of the amount.")
    basis: dict[str, str] | None = Field(
        default=None, description="Per resource: usage (the measured average was larger) or request."
    )
    source: str = Field(description="Where the price came from: aws, azure, gcp, static or default.")
    price_time: str | None = None
    price_detail: str | None = Field(
        default=None, description="What the price was read from: the provider's SKU or meter, or the table entry."
    )
    note: str | None = Field(default=None, description="Why this price source (a fallback's reason).")
    attempts: int = 0
    seconds: str | None = Field(default=None, description="The attempts' runtime, summed.")
    node: CostNode | None = None
    by_currency: dict[str, str] | None = Field(
        default=None, description="Amounts per currency, when attempts were priced in more than one."
    )
    actual: RunActualCost | None = Field(
        default=None, description="What the provider billed, recorded a day or two later (billing reconciliation)."
    )


class ScriptRunStatus(ApiModel):
    model_config = ApiModel.model_config | {"extra": "allow"}

    phase: RunPhase = RunPhase.PENDING
    observed_generation: int | None = None
    start_time: str | None = None
    completion_time: str | None = None
    duration: str | None = Field(default=None, description="Wall time of the run, e.g. 1m3s.")
    attempt_count: int = 0
    attempts: list[Attempt] = Field(default_factory=list)
    next_attempt_time: str | None = Field(default=None, description="When the next attempt starts (backoff).")
    message: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    usage: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="What the script really used, from the monitor.",
    )
    outputs: dict[str, str] | None = Field(default=None, description="Output parameters the script wrote.")
    outputs_error: str | None = Field(default=None, description="Why the outputs could not be collected.")
    trace_id: str | None = Field(
        default=None, alias="traceID", description="The OpenTelemetry trace of this run (when traced and sampled)."
    )
    cost: RunCost | None = Field(default=None, description="What the run cost, once it has finished.")
    gates: list[GateResult] | None = Field(default=None, description="Each gate's verdict (spec.gates).")
    alerts: list[FiredAlert] | None = Field(default=None, description="The alerts that fired on this run.")
    regressions: list[Regression] | None = Field(
        default=None, description="The run compared with its history (spec.regression), one entry per field."
    )
    gates_report: str | None = Field(
        default=None, description="The owned ConfigMap with the before-gates' findings (SARIF) and SBOM."
    )


class ScriptRun(ApiModel):
    model_config = ApiModel.model_config | {"extra": "ignore"}

    api_version: str = f"{API_GROUP}/{API_VERSION}"
    kind: str = "ScriptRun"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ScriptRunSpec
    status: ScriptRunStatus = Field(default_factory=ScriptRunStatus)

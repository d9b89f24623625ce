"""The operator's metric catalogue: every metric declared once (name, type, unit, help, labels).

`docs/metrics.md` lists the same table; a test keeps the two equal. Labels are bounded: kinds,
outcomes, action types, phases, reasons and namespaces, never a per-run name. The `workflow` and
`task` labels are empty unless the operator is told to fill them (`TASK_LABELS`), and then for at
most that many (workflow, task) pairs; later pairs read "other".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
POD_START_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
MEMORY_BUCKETS = tuple(float(2**n) * 1024 * 1024 for n in range(2, 16))  # 4 MiB .. 32 GiB


@dataclass(frozen=True)
class MetricSpec:
    name: str  # as exposed (a counter's name ends in _total)
    kind: Kind
    unit: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


RECONCILES = MetricSpec(
    "scriptrun_reconciles_total",
    "counter",
    "",
    "Reconciles run, by object kind and outcome (ok, error).",
    ("kind", "outcome"),
)
RECONCILE_SECONDS = MetricSpec(
    "scriptrun_reconcile_duration_seconds",
    "histogram",
    "seconds",
    "Time one reconcile took (observe, decide, apply), by object kind.",
    ("kind",),
    LATENCY_BUCKETS,
)
ACTIONS = MetricSpec(
    "scriptrun_actions_total",
    "counter",
    "",
    "API operations the apply step carried out, by operation, object kind and result (ok, exists, refused, error).",
    ("operation", "object", "result"),
)
ACTION_SECONDS = MetricSpec(
    "scriptrun_action_duration_seconds",
    "histogram",
    "seconds",
    "Time one API operation took, by operation and object kind.",
    ("operation", "object"),
    LATENCY_BUCKETS,
)
OBJECTS = MetricSpec(
    "scriptrun_objects",
    "gauge",
    "",
    "ScriptRuns and Workflows the operator knows, by kind and phase.",
    ("kind", "phase"),
)
FINISHED = MetricSpec(
    "scriptrun_finished_total",
    "counter",
    "",
    "Runs and Workflows that reached a final phase, by kind, namespace, phase and reason.",
    ("kind", "namespace", "phase", "reason"),
)
DURATION = MetricSpec(
    "scriptrun_duration_seconds",
    "histogram",
    "seconds",
    "From start to finish of a run or workflow, by kind and namespace (workflow and task: see TASK_LABELS).",
    ("kind", "namespace", "workflow", "task"),
    DURATION_BUCKETS,
)
ATTEMPTS = MetricSpec(
    "scriptrun_attempts_total",
    "counter",
    "",
    "Attempts (pods) that ended, by namespace and how (Completed, Error, OOMKilled, DeadlineExceeded...).",
    ("namespace", "reason"),
)
POD_START = MetricSpec(
    "scriptrun_pod_start_seconds",
    "histogram",
    "seconds",
    "From an attempt's creation to its pod's startTime (scheduled and accepted by a kubelet), by namespace.",
    ("namespace",),
    POD_START_BUCKETS,
)
RETRIES = MetricSpec(
    "scriptrun_retries_total",
    "counter",
    "",
    "Attempts started again after a failed one, by namespace and the failed attempt's reason.",
    ("namespace", "reason"),
)
USED_CPU = MetricSpec(
    "scriptrun_used_cpu_seconds_total",
    "counter",
    "seconds",
    "CPU seconds finished runs used (the monitor's summary), by namespace: counted even if no scrape saw the pod.",
    ("namespace", "workflow", "task"),
)
PEAK_MEMORY = MetricSpec(
    "scriptrun_peak_memory_bytes",
    "histogram",
    "bytes",
    "Peak resident memory of finished runs (the monitor's summary), by namespace.",
    ("namespace", "workflow", "task"),
    MEMORY_BUCKETS,
)

COST = MetricSpec(
    "scriptrun_cost_total",
    "counter",
    "currency units",
    "What finished runs cost (status.cost), by namespace, currency and price source (static, default, a cloud).",
    ("namespace", "currency", "source", "workflow", "task"),
)
BUDGET_EXCEEDED = MetricSpec(
    "scriptrun_budget_exceeded_total",
    "counter",
    "",
    "ScriptRuns and Workflows whose cost went past spec.budget, by kind, namespace and the budget's action.",
    ("kind", "namespace", "action"),
)
GATES = MetricSpec(
    "scriptrun_gates_total",
    "counter",
    "",
    "Gate verdicts on finished runs (spec.gates), by namespace, stage (before, after) and result "
    "(Passed, Failed, Warned, Error).",
    ("namespace", "stage", "result", "workflow", "task"),
)
ALERT_NOTIFICATIONS = MetricSpec(
    "scriptrun_alert_notifications_total",
    "counter",
    "",
    "Webhook messages for fired alerts (spec.alerts), by namespace, channel and outcome (sent, suppressed: "
    "within the de-duplication window, failed, unknown-channel).",
    ("namespace", "channel", "outcome"),
)
REGRESSIONS = MetricSpec(
    "scriptrun_regressions_total",
    "counter",
    "",
    "Successful runs that regressed against their history (spec.regression), by namespace and field "
    "(executionTimeSeconds, memoryMaxMb...).",
    ("namespace", "field"),
)

CATALOGUE: tuple[MetricSpec, ...] = (
    RECONCILES,
    RECONCILE_SECONDS,
    ACTIONS,
    ACTION_SECONDS,
    OBJECTS,
    FINISHED,
    DURATION,
    ATTEMPTS,
    RETRIES,
    POD_START,
    USED_CPU,
    PEAK_MEMORY,
    COST,
    BUDGET_EXCEEDED,
    GATES,
    ALERT_NOTIFICATIONS,
    REGRESSIONS,
)

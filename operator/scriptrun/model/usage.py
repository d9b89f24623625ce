"""What the monitor measures: one table maps each seed-product name onto our status field and metric.

Status fields (`ScriptRun.status.usage.<status>`) are camelCase like every Kubernetes field; the
monitor's termination-message summary uses the same names, so the operator copies it as is.
Metrics follow Prometheus conventions (base units: seconds, bytes; cores rather than percent).
`docs/monitor.md` shows this table; a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricKind = Literal["counter", "gauge", ""]


@dataclass(frozen=True)
class UsageField:
    seed: str  # the seed product's standard name
    status: str  # key in status.usage and in the monitor summary
    metric: str  # Prometheus metric the sidecar serves while the run lives ("" = summary only)
    kind: MetricKind
    scale: float  # metric value = status value * scale
    description: str


FIELDS: tuple[UsageField, ...] = (
    UsageField(
        "execution_time_seconds",
        "executionTimeSeconds",
        "scriptrun_run_execution_seconds",
        "gauge",
        1,
        "Wall time from the script's start to its exit.",
    ),
    UsageField(
        "cpu_max",
        "cpuMaxPercent",
        "scriptrun_run_cpu_max_cores",
        "gauge",
        0.01,
        "Highest CPU use over one sampling interval, percent of one core (metric: cores).",
    ),
    UsageField(
        "cpu_avg",
        "cpuAvgPercent",
        "scriptrun_run_cpu_avg_cores",
        "gauge",
        0.01,
        "CPU seconds / wall seconds, percent of one core (metric: cores).",
    ),
    UsageField(
        "user_time",
        "userTimeSeconds",
        "scriptrun_run_cpu_user_seconds_total",
        "counter",
        1,
        "CPU seconds in user mode, whole process tree.",
    ),
    UsageField(
        "system_time",
        "systemTimeSeconds",
        "scriptrun_run_cpu_system_seconds_total",
        "counter",
        1,
        "CPU seconds in kernel mode, whole process tree.",
    ),
    UsageField(
        "memory_max_mb",
        "memoryMaxMb",
        "scriptrun_run_memory_rss_max_bytes",
        "gauge",
        1024 * 1024,
        "Highest resident set size of the tree (sum over its processes), MiB.",
    ),
    UsageField(
        "memory_avg_mb",
        "memoryAvgMb",
        "scriptrun_run_memory_rss_avg_bytes",
        "gauge",
        1024 * 1024,
        "Mean resident set size of the tree over the samples, MiB.",
    ),
    UsageField(
        "memory_uss_max_mb",
        "memoryUssMaxMb",
        "",
        "",
        1024 * 1024,
        "Highest unique set size of the tree, MiB (only with --memory-detail).",
    ),
    UsageField(
        "memory_pss_max_mb",
        "memoryPssMaxMb",
        "",
        "",
        1024 * 1024,
        "Highest proportional set size of the tree, MiB (only with --memory-detail).",
    ),
    UsageField(
        "num_threads",
        "numThreadsMax",
        "scriptrun_run_threads_max",
        "gauge",
        1,
        "Most threads alive at once in the tree.",
    ),
    UsageField(
        "num_fds",
        "numFdsMax",
        "scriptrun_run_open_fds_max",
        "gauge",
        1,
        "Most open file descriptors at once in the tree.",
    ),
    UsageField(
        "read_bytes",
        "readBytes",
        "scriptrun_run_read_bytes_total",
        "counter",
        1,
        "Bytes read from storage by the tree.",
    ),
    UsageField(
        "write_bytes",
        "writeBytes",
        "scriptrun_run_write_bytes_total",
        "counter",
        1,
        "Bytes written to storage by the tree.",
    ),
    UsageField(
        "context_switches",
        "contextSwitches",
        "scriptrun_run_context_switches_total",
        "counter",
        1,
        "Voluntary plus involuntary context switches.",
    ),
    UsageField(
        "page_faults", "pageFaults", "scriptrun_run_page_faults_total", "counter", 1, "Minor plus major page faults."
    ),
    UsageField(
        "processes",
        "processes",
        "scriptrun_run_processes_seen_total",
        "counter",
        1,
        "Distinct processes seen in the tree.",
    ),
    UsageField(
        "exit_code",
        "exitCode",
        "scriptrun_run_exit_code",
        "gauge",
        1,
        "The script's exit code (128+N when killed by signal N).",
    ),
    UsageField("success", "success", "scriptrun_run_success", "gauge", 1, "1 if the script exited 0."),
    UsageField("samples", "samples", "scriptrun_run_samples_total", "counter", 1, "Samples taken."),
)

BY_STATUS = {f.status: f for f in FIELDS}
SUMMARY_LIMIT_BYTES = 4096

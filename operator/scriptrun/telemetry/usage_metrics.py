"""Prometheus metrics served by the monitor sidecar while a run lives.

Every metric here comes from the one usage table (scriptrun.model.usage.FIELDS) plus four live
gauges. Labels are bounded: namespace, scriptrun, workflow, task (one series set per run pod).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scriptrun.model.usage import FIELDS

LABELS = ("namespace", "scriptrun", "workflow", "task")
LIVE = (
    ("scriptrun_run_memory_rss_bytes", "Resident set size of the tree now.", "rss"),
    ("scriptrun_run_cpu_cores", "CPU in use over the last interval, in cores.", "cpu_cores"),
    ("scriptrun_run_threads", "Threads alive in the tree now.", "threads"),
    ("scriptrun_run_processes", "Processes alive in the tree now.", "processes"),
)


class UsageCollector(Collector):
    """Reads the sampler's latest state on each scrape (nothing is pushed; nothing to keep in step)."""

    def __init__(self, labels: dict[str, str], state: Callable[[], tuple[dict[str, Any], dict[str, float]]]) -> None:
        self.label_values = [labels.get(k, "") for k in LABELS]
        self.state = state

    def collect(self) -> Iterator[Metric]:
        summary, live = self.state()
        for field in FIELDS:
            if not field.metric or field.status not in summary:
                continue
            value = float(summary[field.status]) * field.scale
            family: GaugeMetricFamily | CounterMetricFamily
            if field.kind == "counter":
                name = field.metric.removesuffix("_total")
                family = CounterMetricFamily(name, field.description, labels=LABELS)
            else:
                family = GaugeMetricFamily(field.metric, field.description, labels=LABELS)
            family.add_metric(self.label_values, value)
            yield family
        for name, help_text, key in LIVE:
            if key in live:
                gauge = GaugeMetricFamily(name, help_text, labels=LABELS)
                gauge.add_metric(self.label_values, float(live[key]))
                yield gauge


def metric_names() -> list[str]:
    """Every metric the sidecar can serve (for the docs test)."""
    return [f.metric for f in FIELDS if f.metric] + [name for name, _, _ in LIVE]

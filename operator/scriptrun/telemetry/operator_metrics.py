"""The operator's Prometheus metrics, built from the catalogue (`telemetry.catalogue`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scriptrun.telemetry import catalogue as c

ObjectCounts = Callable[[], Mapping[tuple[str, str], int]]  # (kind, phase) -> how many


def _counter(spec: c.MetricSpec, registry: CollectorRegistry) -> Counter:
    return Counter(spec.name.removesuffix("_total"), spec.help, spec.labels, registry=registry)


def _histogram(spec: c.MetricSpec, registry: CollectorRegistry) -> Histogram:
    return Histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets)


class _Objects(Collector):
    """scriptrun_objects, read from the controllers at scrape time (nothing to keep in step)."""

    def __init__(self) -> None:
        self.sources: list[ObjectCounts] = []

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(c.OBJECTS.name, c.OBJECTS.help, labels=c.OBJECTS.labels)
        for source in self.sources:
            for (kind, phase), count in sorted(source().items()):
                family.add_metric([kind, phase], count)
        yield family


class OperatorMetrics:
    """`task_labels`: how many (workflow, task) pairs get their own `workflow`/`task` label values
    (0: none, the labels stay empty); the pairs after that read "other"."""

    def __init__(self, task_labels: int = 0) -> None:
        self.task_labels = task_labels
        self._pairs: set[tuple[str, str]] = set()
        self.registry = CollectorRegistry()
        r = self.registry
        self._reconciles = _counter(c.RECONCILES, r)
        self._reconcile_seconds = _histogram(c.RECONCILE_SECONDS, r)
        self._actions = _counter(c.ACTIONS, r)
        self._action_seconds = _histogram(c.ACTION_SECONDS, r)
        self._finished = _counter(c.FINISHED, r)
        self._duration = _histogram(c.DURATION, r)
        self._attempts = _counter(c.ATTEMPTS, r)
        self._retries = _counter(c.RETRIES, r)
        self._pod_start = _histogram(c.POD_START, r)
        self._used_cpu = _counter(c.USED_CPU, r)
        self._peak_memory = _histogram(c.PEAK_MEMORY, r)
        self._cost = _counter(c.COST, r)
        self._budget_exceeded = _counter(c.BUDGET_EXCEEDED, r)
        self._gates = _counter(c.GATES, r)
        self._alert_notifications = _counter(c.ALERT_NOTIFICATIONS, r)
        self._regressions = _counter(c.REGRESSIONS, r)
        self._objects = _Objects()
        r.register(self._objects)

    def count_objects(self, source: ObjectCounts) -> None:
        self._objects.sources.append(source)

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        start_http_server(port, addr=address, registry=self.registry)

    # --- what the controllers and the apply step record ----------------------------------------

    def reconciled(self, kind: str, seconds: float, ok: bool) -> None:
        self._reconciles.labels(kind, "ok" if ok else "error").inc()
        self._reconcile_seconds.labels(kind).observe(seconds)

    def applied(self, operation: str, obj: str, result: str, seconds: float) -> None:
        self._actions.labels(operation, obj, result).inc()
        self._action_seconds.labels(operation, obj).observe(seconds)

    def retried(self, namespace: str, reason: str) -> None:
        self._retries.labels(namespace, reason).inc()

    def attempt_ended(self, namespace: str, reason: str) -> None:
        self._attempts.labels(namespace, reason).inc()

    def pod_started(self, namespace: str, seconds: float) -> None:
        self._pod_start.labels(namespace).observe(max(0.0, seconds))

    def _pair(self, workflow: str, task: str) -> tuple[str, str]:
        """The `workflow`/`task` label values: bounded by `task_labels`."""
        if not self.task_labels or not (workflow or task):
            return "", ""
        pair = (workflow, task)
        if pair in self._pairs:
            return pair
        if len(self._pairs) < self.task_labels:
            self._pairs.add(pair)
            return pair
        return "other", "other"

    def finished(
        self,
        kind: str,
        namespace: str,
        phase: str,
        reason: str,
        seconds: float | None,
        workflow: str = "",
        task: str = "",
    ) -> None:
        """A run or workflow reached a final phase."""
        self._finished.labels(kind, namespace, phase, reason).inc()
        if seconds is not None:
            self._duration.labels(kind, namespace, *self._pair(workflow, task)).observe(max(0.0, seconds))

    def used(self, namespace: str, usage: Mapping[str, Any], workflow: str = "", task: str = "") -> None:
        """A finished run's usage summary (the monitor's), once it is in its status."""
        if not usage.get("available", True):
            return
        pair = self._pair(workflow, task)
        cpu = float(usage.get("userTimeSeconds") or 0) + float(usage.get("systemTimeSeconds") or 0)
        if cpu > 0:
            self._used_cpu.labels(namespace, *pair).inc(cpu)
        peak = usage.get("memoryMaxMb")
        if isinstance(peak, int | float) and peak > 0:
            self._peak_memory.labels(namespace, *pair).observe(float(peak) * 1024 * 1024)

    def cost(self, namespace: str, cost: Mapping[str, Any], workflow: str = "", task: str = "") -> None:
        """A finished run's status.cost (nothing when its attempts were priced in several currencies)."""
        amount = cost.get("amount")
        if amount is None:
            return
        labels = (namespace, str(cost.get("currency")), str(cost.get("source")), *self._pair(workflow, task))
        self._cost.labels(*labels).inc(float(amount))

    def budget_exceeded(self, kind: str, namespace: str, action: str) -> None:
        self._budget_exceeded.labels(kind, namespace, action).inc()

    def regressed(self, namespace: str, field: str) -> None:
        self._regressions.labels(namespace, field).inc()

    def alert_notification(self, namespace: str, channel: str, outcome: str) -> None:
        self._alert_notifications.labels(namespace, channel, outcome).inc()

    def gate(self, namespace: str, stage: str, result: str, workflow: str = "", task: str = "") -> None:
        """One gate's verdict, once it is in the run's status."""
        self._gates.labels(namespace, stage, result, *self._pair(workflow, task)).inc()

"""The operator's alerting rules, declared once: the chart's PrometheusRule and the rule file that
`promtool check rules` and a real Prometheus load in the tests are generated from here
(`python -m scriptrun.telemetry.alerts > charts/scriptrun/files/alerts.yaml`, run by `make crds`).

Each rule names the series it reads (`data`): the tests check that a real Prometheus scraping a real
operator has data for it, or list why it cannot (`expected_empty`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import yaml

OPERATOR_JOB = "scriptrun-operator"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    data: str  # the series the rule reads: must have data once the operator has run a workflow
    expected_empty: str | None = None  # why `data` may have no series in the tests, if it may not


ALERTS: tuple[Alert, ...] = (
    Alert(
        "ScriptrunOperatorDown",
        f'up{{job="{OPERATOR_JOB}"}} == 0 or absent(up{{job="{OPERATOR_JOB}"}})',
        "5m",
        "critical",
        "The scriptrun operator is not being scraped: no run or workflow makes progress.",
        f'up{{job="{OPERATOR_JOB}"}}',
    ),
    Alert(
        "ScriptrunReconcileErrors",
        'sum by (kind) (rate(scriptrun_reconciles_total{outcome="error"}[5m])) > 0',
        "10m",
        "warning",
        "{{ $labels.kind }} reconciles keep failing (see the operator's log).",
        "scriptrun_reconciles_total",
    ),
    Alert(
        "ScriptrunHighFailureRatio",
        'sum by (namespace) (rate(scriptrun_finished_total{kind="ScriptRun",phase="Failed"}[30m]))'
        ' / sum by (namespace) (rate(scriptrun_finished_total{kind="ScriptRun"}[30m])) > 0.5',
        "15m",
        "warning",
        "More than half the runs in {{ $labels.namespace }} fail.",
        'scriptrun_finished_total{kind="ScriptRun"}',
    ),
    Alert(
        "ScriptrunRunsStuckPending",
        'scriptrun_objects{kind="ScriptRun",phase="Pending"} > 0',
        "30m",
        "warning",
        "ScriptRuns have been Pending for 30 minutes (images, scheduling: see their Waiting condition).",
        'scriptrun_objects{kind="ScriptRun"}',
    ),
    Alert(
        "ScriptrunRunNearMemoryLimit",
        "max by (namespace, scriptrun) (scriptrun_run_memory_rss_bytes)"
        " / on (namespace, scriptrun) group_left max by (namespace, scriptrun)"
        ' (label_replace(kube_pod_container_resource_limits{resource="memory",container="main"},'
        ' "scriptrun", "$1", "pod", "(.*)-a[0-9]+")) > 0.9',
        "5m",
        "warning",
        "{{ $labels.scriptrun }} uses over 90% of its memory limit.",
        "scriptrun_run_memory_rss_bytes",
        expected_empty="live monitor sidecars exist only on a real node, not on kwok; the rule's limits side "
        "(kube-state-metrics) runs in neither test tier",
    ),
)


def rules_document() -> dict[str, object]:
    """A Prometheus rule file (also the `spec` of the chart's PrometheusRule)."""
    rules = [
        {
            "alert": a.name,
            "expr": a.expr,
            "for": a.for_,
            "labels": {"severity": a.severity},
            "annotations": {"summary": a.summary},
        }
        for a in ALERTS
    ]
    return {"groups": [{"name": "scriptrun", "rules": rules}]}


def render() -> str:
    header = "# Generated from scriptrun.telemetry.alerts (make crds); a test fails on drift.\n"
    return header + yaml.safe_dump(rules_document(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render())

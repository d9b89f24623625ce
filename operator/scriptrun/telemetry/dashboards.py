"""The Grafana dashboards, declared once and built with Grafana's Foundation SDK: the chart ships them
as ConfigMaps for the Grafana sidecar (`python -m scriptrun.telemetry.dashboards
charts/scriptrun/files/dashboards`, run by `make crds`; a test fails on drift).

A generator, like alerts.py: the SDK is a dev dependency and the operator never imports this module.
Every panel query is a `Query` in `DASHBOARDS`, with the series it reads (`data`): the tests run each
query (`runnable`) against a real Prometheus scraping a real operator, and check that `data` has
series, or list why it cannot (`expected_empty`)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from scriptrun.telemetry.alerts import OPERATOR_JOB

NO_SIDECARS = "live monitor sidecars exist only on a real node, not on kwok"
NS = 'namespace=~"$namespace"'
RUN = f'{NS}, scriptrun=~"$scriptrun"'
# what Grafana puts in place of its own variables, for running an expression outside Grafana
BUILTINS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")  # the `datasource` variable


PanelKind = Literal["timeseries", "stat", "bars", "buckets"]  # bars: one a series; buckets: a histogram's


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str
    data: str  # the series the query reads: must have data once the operator has run a workflow
    expected_empty: str | None = None  # why `data` may have no series in the tests, if it may not


@dataclass(frozen=True)
class Panel:
    title: str
    kind: PanelKind
    unit: str
    queries: tuple[Query, ...]
    description: str
    width: int = 12


@dataclass(frozen=True)
class Variable:
    name: str
    selector: str  # a series selector: the variable offers the values `label` has in it
    label: str


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    variables: tuple[Variable, ...]
    rows: tuple[tuple[str, tuple[Panel, ...]], ...]  # (row title, its panels)

    def panels(self) -> Iterator[Panel]:
        for _, panels in self.rows:
            yield from panels


def _quantiles(metric: str, by: str, selector: str, *quantiles: float) -> tuple[Query, ...]:
    matchers = f"{{{selector}}}" if selector else ""
    rate = f"rate({metric}_bucket{matchers}[$__rate_interval])"
    labels = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(","))
    return tuple(
        Query(f"histogram_quantile({q:g}, sum by (le, {by}) ({rate}))", f"p{q * 100:g} {labels}", f"{metric}_bucket")
        for q in quantiles
    )


OPERATOR = Dashboard(
    "scriptrun-operator",
    "scriptrun / operator",
    "The operator's own work: reconciles, the API operations they carry out, and the objects it knows.",
    (),
    (
        (
            "Reconciles",
            (
                Panel(
                    "Operator up",
                    "stat",
                    "none",
                    (Query(f'up{{job="{OPERATOR_JOB}"}}', "{{instance}}", f'up{{job="{OPERATOR_JOB}"}}'),),
                    f"1 while Prometheus scrapes the operator (scrape job {OPERATOR_JOB}).",
                    width=6,
                ),
                Panel(
                    "Objects by kind and phase",
                    "stat",
                    "none",
                    (Query("sum by (kind, phase) (scriptrun_objects)", "{{kind}} {{phase}}", "scriptrun_objects"),),
                    "ScriptRuns and Workflows the operator knows now.",
                    width=18,
                ),
                Panel(
                    "Reconciles by kind and outcome",
                    "timeseries",
                    "ops",
                    (
                        Query(
                            "sum by (kind, outcome) (rate(scriptrun_reconciles_total[$__rate_interval]))",
                            "{{kind}} {{outcome}}",
                            "scriptrun_reconciles_total",
                        ),
                    ),
                    "Reconciles per second; outcome error: see the operator's log.",
                ),
                Panel(
                    "Reconcile latency",
                    "timeseries",
                    "s",
                    _quantiles("scriptrun_reconcile_duration_seconds", "kind", "", 0.5, 0.99),
                    "One reconcile: observe, decide, apply.",
                ),
            ),
        ),
        (
            "API operations",
            (
                Panel(
                    "API operations by operation and result",
                    "timeseries",
                    "ops",
                    (
                        Query(
                            "sum by (operation, result) (rate(scriptrun_actions_total[$__rate_interval]))",
                            "{{operation}} {{result}}",
                            "scriptrun_actions_total",
                        ),
                    ),
                    "What the apply step carried out (creates, patches, deletes, events), per second.",
                    width=8,
                ),
                Panel(
                    "API operation errors",
                    "timeseries",
                    "ops",
                    (
                        Query(
                            "sum by (operation, object, result)"
                            ' (rate(scriptrun_actions_total{result=~"error|refused"}[$__rate_interval]))',
                            "{{operation}} {{object}} {{result}}",
                            "scriptrun_actions_total",
                        ),
                    ),
                    "Operations that failed or that the API server refused (empty while all is well).",
                    width=8,
                ),
                Panel(
                    "API operation latency p99",
                    "timeseries",
                    "s",
                    _quantiles("scriptrun_action_duration_seconds", "operation, object", "", 0.99),
                    "One API operation, as the operator waited for it.",
                    width=8,
                ),
            ),
        ),
    ),
)

RUNS = Dashboard(
    "scriptrun-workflows-runs",
    "scriptrun / workflows and runs",
    "What finished, how often it failed, how long it took, and what waits.",
    (Variable("namespace", "scriptrun_finished_total", "namespace"),),
    (
        (
            "Throughput",
            (
                Panel(
                    "Finished per minute by kind and phase",
                    "timeseries",
                    "short",
                    (
                        Query(
                            f"sum by (kind, phase) (rate(scriptrun_finished_total{{{NS}}}[$__rate_interval])) * 60",
                            "{{kind}} {{phase}}",
                            "scriptrun_finished_total",
                        ),
                    ),
                    "ScriptRuns and Workflows that reached a final phase.",
                ),
                Panel(
                    "Failure ratio",
                    "timeseries",
                    "percentunit",
                    (
                        Query(
                            f'sum by (kind) (rate(scriptrun_finished_total{{{NS}, phase="Failed"}}[$__rate_interval]))'
                            f" / sum by (kind) (rate(scriptrun_finished_total{{{NS}}}[$__rate_interval]))",
                            "{{kind}}",
                            'scriptrun_finished_total{phase="Failed"}',
                        ),
                    ),
                    "Failed of all that finished.",
                ),
                Panel(
                    "Duration",
                    "timeseries",
                    "s",
                    _quantiles("scriptrun_duration_seconds", "kind", NS, 0.5, 0.95),
                    "From start to finish.",
                ),
                Panel(
                    "Failures by reason",
                    "bars",
                    "none",
                    (
                        Query(
                            "sum by (kind, reason)"
                            f' (increase(scriptrun_finished_total{{{NS}, phase="Failed"}}[$__range]))',
                            "{{kind}} {{reason}}",
                            'scriptrun_finished_total{phase="Failed"}',
                        ),
                    ),
                    "Over the dashboard's time range.",
                ),
            ),
        ),
        (
            "Retries and waiting",
            (
                Panel(
                    "Retries per minute by reason",
                    "timeseries",
                    "short",
                    (
                        Query(
                            f"sum by (reason) (rate(scriptrun_retries_total{{{NS}}}[$__rate_interval])) * 60",
                            "{{reason}}",
                            "scriptrun_retries_total",
                        ),
                    ),
                    "Attempts started again, by the failed attempt's reason.",
                ),
                Panel(
                    "Pending runs",
                    "stat",
                    "none",
                    (
                        Query(
                            'sum(scriptrun_objects{kind="ScriptRun", phase="Pending"}) or vector(0)',
                            "Pending",
                            'scriptrun_objects{kind="ScriptRun"}',
                        ),
                    ),
                    "ScriptRuns waiting for their pod, all namespaces (see their Waiting condition).",
                ),
                Panel(
                    "Attempts ended per minute by reason",
                    "timeseries",
                    "short",
                    (
                        Query(
                            f"sum by (reason) (rate(scriptrun_attempts_total{{{NS}}}[$__rate_interval])) * 60",
                            "{{reason}}",
                            "scriptrun_attempts_total",
                        ),
                    ),
                    "Pods that ended, by how: Completed, Error, OOMKilled, DeadlineExceeded, Evicted...",
                ),
                Panel(
                    "Pod start latency",
                    "timeseries",
                    "s",
                    _quantiles("scriptrun_pod_start_seconds", "namespace", NS, 0.5, 0.95),
                    "From an attempt's creation to its pod's startTime (scheduled, accepted by a kubelet).",
                ),
            ),
        ),
    ),
)

RESOURCES = Dashboard(
    "scriptrun-run-resources",
    "scriptrun / run resources",
    "What runs used: finished runs from the operator's summary metrics, live runs from their monitor sidecars.",
    (
        Variable("namespace", '{__name__=~"scriptrun_used_cpu_seconds_total|scriptrun_run_cpu_cores"}', "namespace"),
        Variable("scriptrun", f"scriptrun_run_cpu_cores{{{NS}}}", "scriptrun"),
    ),
    (
        (
            "Finished runs",
            (
                Panel(
                    "CPU used by finished runs",
                    "timeseries",
                    "short",
                    (
                        Query(
                            f"sum by (namespace) (rate(scriptrun_used_cpu_seconds_total{{{NS}}}[$__rate_interval]))",
                            "{{namespace}}",
                            "scriptrun_used_cpu_seconds_total",
                        ),
                    ),
                    "CPU seconds per second (cores), counted when a run finishes.",
                ),
                Panel(
                    "Peak memory of finished runs",
                    "buckets",
                    "none",
                    (
                        Query(
                            f"sum by (le) (increase(scriptrun_peak_memory_bytes_bucket{{{NS}}}[$__range]))",
                            "{{le}}",
                            "scriptrun_peak_memory_bytes_bucket",
                        ),
                    ),
                    "Runs finished in the time range, by peak resident memory (bucket upper bound, bytes).",
                ),
            ),
        ),
        (
            "Live runs (monitor sidecar)",
            (
                Panel(
                    "Memory (RSS) by run",
                    "timeseries",
                    "bytes",
                    (
                        Query(
                            f"max by (namespace, scriptrun) (scriptrun_run_memory_rss_bytes{{{RUN}}})",
                            "{{namespace}}/{{scriptrun}}",
                            "scriptrun_run_memory_rss_bytes",
                            NO_SIDECARS,
                        ),
                    ),
                    "Resident memory of each run's process tree now.",
                ),
                Panel(
                    "CPU by run",
                    "timeseries",
                    "short",
                    (
                        Query(
                            f"sum by (namespace, scriptrun) (scriptrun_run_cpu_cores{{{RUN}}})",
                            "{{namespace}}/{{scriptrun}}",
                            "scriptrun_run_cpu_cores",
                            NO_SIDECARS,
                        ),
                    ),
                    "Cores in use over the monitor's last interval.",
                ),
            ),
        ),
    ),
)

COST = Dashboard(
    "scriptrun-cost",
    "scriptrun / cost",
    "What finished runs cost (status.cost): by namespace, by price source; docs/cost.md.",
    (Variable("namespace", "scriptrun_cost_total", "namespace"),),
    (
        (
            "Cost",
            (
                Panel(
                    "Cost by namespace",
                    "bars",
                    "none",
                    (
                        Query(
                            f"sum by (namespace, currency) (increase(scriptrun_cost_total{{{NS}}}[$__range]))",
                            "{{namespace}} ({{currency}})",
                            "scriptrun_cost_total",
                        ),
                    ),
                    "What runs that finished in the time range cost, per namespace and currency.",
                ),
                Panel(
                    "Cost per hour",
                    "timeseries",
                    "none",
                    (
                        Query(
                            "sum by (namespace, currency) "
                            f"(rate(scriptrun_cost_total{{{NS}}}[$__rate_interval])) * 3600",
                            "{{namespace}} ({{currency}})",
                            "scriptrun_cost_total",
                        ),
                    ),
                    "The rate at which finishing runs add cost, per hour.",
                ),
                Panel(
                    "Cost by price source",
                    "bars",
                    "none",
                    (
                        Query(
                            f"sum by (source, currency) (increase(scriptrun_cost_total{{{NS}}}[$__range]))",
                            "{{source}} ({{currency}})",
                            "scriptrun_cost_total",
                        ),
                    ),
                    "How much was priced from the table, a cloud's prices, or OpenCost's defaults (see each "
                    "run's status.cost.note).",
                ),
            ),
        ),
    ),
)
DASHBOARDS: tuple[Dashboard, ...] = (OPERATOR, RUNS, RESOURCES, COST)


def queries() -> Iterator[tuple[Dashboard, Panel, Query]]:
    for board in DASHBOARDS:
        for panel in board.panels():
            for query in panel.queries:
                yield board, panel, query


def runnable(expr: str) -> str:
    """`expr` as Prometheus runs it with every variable set to all its values (`$namespace` → `.*`)."""
    for name, value in BUILTINS.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?([A-Za-z_]\w*)\}?", ".*", expr)


VISUALISATIONS: dict[PanelKind, type[timeseries.Panel | stat.Panel | bargauge.Panel]] = {
    "timeseries": timeseries.Panel,
    "stat": stat.Panel,
    "bars": bargauge.Panel,
    "buckets": bargauge.Panel,
}


def _panel(panel: Panel, panel_id: int) -> timeseries.Panel | stat.Panel | bargauge.Panel:
    built = VISUALISATIONS[panel.kind]()
    built = built.id(panel_id).title(panel.title).description(panel.description).datasource(DATASOURCE)
    built = built.unit(panel.unit).span(panel.width).height(5 if panel.kind == "stat" else 8)
    for n, query in enumerate(panel.queries):
        target = prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(chr(ord("A") + n))
        if panel.kind != "timeseries":
            target = target.instant()
        if panel.kind == "buckets":
            target = target.format(PromQueryFormat.HEATMAP)
        built = built.with_target(target)
    return built


def _variable(variable: Variable) -> builder.QueryVariable:
    return (
        builder.QueryVariable(variable.name)
        .label(variable.name)
        .datasource(DATASOURCE)
        .query(f"label_values({variable.selector}, {variable.label})")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def build(board: Dashboard) -> dict[str, object]:
    """The dashboard's JSON model, as Grafana loads it."""
    dash = (
        builder.Dashboard(board.title)
        .uid(board.uid)
        .description(f"{board.description} Generated from scriptrun.telemetry.dashboards.")
        .tags(["scriptrun"])
        .time("now-6h", "now")
        .refresh("1m")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .annotation(
            builder.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .built_in(1)
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
        )
        .with_variable(builder.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )
    for variable in board.variables:
        dash = dash.with_variable(_variable(variable))
    panel_id = 0
    for title, panels in board.rows:
        panel_id += 1
        dash = dash.with_row(builder.Row(title).id(panel_id))
        for panel in panels:
            panel_id += 1
            dash = dash.with_panel(_panel(panel, panel_id))
    encoded: dict[str, object] = json.loads(json.dumps(dash.build(), cls=JSONEncoder))
    return encoded


def render() -> dict[str, str]:
    """File name -> contents, one JSON file per dashboard."""
    return {f"{b.uid}.json": json.dumps(build(b), indent=2, sort_keys=True) + "\n" for b in DASHBOARDS}


def main(argv: list[str]) -> None:
    outdir = Path(argv[0])
    outdir.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (outdir / name).write_text(text)


if __name__ == "__main__":
    main(sys.argv[1:])

"""The Grafana dashboards (scriptrun.telemetry.dashboards): the chart's files are a fresh render, every
panel query is declared once, and every query reads metrics and labels that exist. Running each query
against a real Prometheus is the Prometheus test's part (`runnable`, `data`, `expected_empty`)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from scriptrun.telemetry import usage_metrics
from scriptrun.telemetry.alerts import OPERATOR_JOB
from scriptrun.telemetry.catalogue import CATALOGUE
from scriptrun.telemetry.dashboards import BUILTINS, DASHBOARDS, queries, render, runnable

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "charts" / "scriptrun" / "files" / "dashboards"
PACKAGE = ROOT / "operator" / "scriptrun"


def _labels() -> dict[str, set[str]]:
    """Every metric name a query may read -> the labels its series carry."""
    known: dict[str, set[str]] = {"up": {"job", "instance"}}
    for m in CATALOGUE:
        names = [f"{m.name}_bucket", f"{m.name}_sum", f"{m.name}_count"] if m.kind == "histogram" else [m.name]
        for name in names:
            known[name] = set(m.labels) | ({"le"} if name.endswith("_bucket") else set())
    for name in usage_metrics.metric_names():
        known[name] = set(usage_metrics.LABELS)
    return known


KNOWN = _labels()


def _metrics(expr: str) -> set[str]:
    return set(re.findall(r"\bscriptrun_\w+|\bup(?=\{)", expr))


def _used_labels(expr: str) -> set[str]:
    grouped = {label.strip() for group in re.findall(r"\bby \(([^)]*)\)", expr) for label in group.split(",")}
    matched = set(re.findall(r"[{,]\s*(\w+)\s*(?:=~|!~|!=|=)", expr))
    return (grouped | matched) - {"__name__"}


def _balanced(expr: str) -> bool:
    """Brackets nest and close, outside quoted strings (the Prometheus test parses for real)."""
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack and expr.count('"') % 2 == 0


def test_the_chart_files_are_a_fresh_render() -> None:
    rendered = render()
    on_disk = {p.name: p.read_text() for p in FILES.glob("*.json")}
    assert set(on_disk) == set(rendered), "charts/scriptrun/files/dashboards is stale: run make crds"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"{name} is stale: run make crds"


def test_dashboards_are_stable_and_pick_their_prometheus() -> None:
    uids = ["scriptrun-operator", "scriptrun-workflows-runs", "scriptrun-run-resources", "scriptrun-cost"]
    assert [b.uid for b in DASHBOARDS] == uids
    for board in DASHBOARDS:
        model = json.loads((FILES / f"{board.uid}.json").read_text())
        assert model["uid"] == board.uid and model["title"] == board.title
        variables = {v["name"]: v for v in model["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        panels = [p for p in model["panels"] if p["type"] != "row"]
        ids = [p["id"] for p in model["panels"]]
        assert len(ids) == len(set(ids))
        for panel in panels:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_every_panel_query_is_declared_once() -> None:
    declared = {(b.uid, p.title, q.expr) for b, p, q in queries()}
    assert len(declared) == len(list(queries()))
    found = set()
    for board in DASHBOARDS:
        model = json.loads((FILES / f"{board.uid}.json").read_text())
        for panel in model["panels"]:
            refs = [t["refId"] for t in panel.get("targets", [])]
            assert len(refs) == len(set(refs)) and all(refs), panel["title"]
            found |= {(board.uid, panel["title"], t["expr"]) for t in panel.get("targets", [])}
    assert found == declared


def test_every_query_reads_metrics_and_labels_that_exist() -> None:
    exprs = [(q.expr, q.data) for _, _, q in queries()]
    exprs += [(v.selector, v.selector) for b in DASHBOARDS for v in b.variables]
    for expr, data in exprs:
        metrics = _metrics(expr)
        assert metrics and metrics <= set(KNOWN), (expr, metrics - set(KNOWN))
        assert _metrics(data) <= metrics, (expr, data)
        labels = set().union(*(KNOWN[m] for m in metrics))
        assert _used_labels(expr) <= labels, (expr, _used_labels(expr) - labels)
        assert _used_labels(data) <= labels, data
    for board in DASHBOARDS:
        for variable in board.variables:
            assert variable.label in set().union(*(KNOWN[m] for m in _metrics(variable.selector)))


def test_every_query_is_well_formed_and_runnable() -> None:
    for board, _, query in queries():
        names = {v.name for v in board.variables}
        for variable in re.findall(r"\$\{?(\w+)", query.expr):
            assert variable in names or f"${variable}" in BUILTINS, (board.uid, variable)
        assert _balanced(query.expr) and _balanced(query.data), query.expr
        assert "$" not in runnable(query.expr)
    assert runnable('rate(x{namespace=~"$namespace"}[$__rate_interval])') == 'rate(x{namespace=~".*"}[1m])'
    assert not _balanced("sum by (x (y)") and not _balanced('x{a="}"')


def test_the_operator_panels_read_the_alerts_scrape_job() -> None:
    up = [q for _, p, q in queries() if p.title == "Operator up"]
    assert [q.expr for q in up] == [f'up{{job="{OPERATOR_JOB}"}}']


def test_only_live_sidecar_panels_may_be_empty() -> None:
    sidecar = set(usage_metrics.metric_names())
    for _, panel, query in queries():
        assert bool(query.expected_empty) == bool(_metrics(query.data) & sidecar), panel.title


def test_the_operator_never_imports_the_generator() -> None:
    """The SDK is a dev dependency: only the generator itself may import it."""
    for path in PACKAGE.rglob("*.py"):
        if path.name == "dashboards.py" and path.parent.name == "telemetry":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                assert not name.startswith(("grafana_foundation_sdk", "scriptrun.telemetry.dashboards")), path

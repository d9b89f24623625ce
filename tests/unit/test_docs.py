"""The usage table in docs/monitor.md is the one in the code."""

from pathlib import Path

from scriptrun.model.usage import FIELDS
from scriptrun.telemetry.usage_metrics import LIVE, metric_names

DOC = (Path(__file__).resolve().parents[2] / "docs" / "monitor.md").read_text()


def test_every_usage_field_is_documented_with_its_names() -> None:
    for f in FIELDS:
        metric = f"`{f.metric}` ({f.kind})" if f.metric else "summary only"
        assert f"| `{f.seed}` | `{f.status}` | {metric} | {f.description} |" in DOC, f.seed


def test_every_live_metric_is_documented() -> None:
    for name, help_text, _ in LIVE:
        assert f"| `{name}` (gauge) | {help_text} |" in DOC


def test_metric_names_follow_prometheus_conventions() -> None:
    names = metric_names()
    assert len(names) == len(set(names))
    for name in names:
        assert name.startswith("scriptrun_run_") and name == name.lower()
    for f in FIELDS:
        if f.kind == "counter":
            assert f.metric.endswith("_total"), f.metric


OPERATOR_DOC = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()


def test_operator_metrics_table_is_the_catalogue() -> None:
    from scriptrun.telemetry.catalogue import CATALOGUE

    table = [line for line in OPERATOR_DOC.splitlines() if line.startswith("| `scriptrun_")]
    expected = [
        f"| `{m.name}` | {m.kind} | {m.unit or '-'} | {', '.join(f'`{lab}`' for lab in m.labels) or '-'} | {m.help} |"
        for m in CATALOGUE
    ]
    assert table == expected


def test_operator_metric_names_follow_prometheus_conventions() -> None:
    from scriptrun.telemetry.catalogue import CATALOGUE
    from scriptrun.telemetry.operator_metrics import OperatorMetrics

    names = [m.name for m in CATALOGUE]
    assert len(names) == len(set(names))
    for m in CATALOGUE:
        assert m.name.startswith("scriptrun_") and not m.name.startswith("scriptrun_run_")  # the sidecar's prefix
        assert m.name.endswith("_total") == (m.kind == "counter"), m.name
        assert "name" not in m.labels and "scriptrun" not in m.labels and "pod" not in m.labels  # bounded
    exposed = {f.name for f in OperatorMetrics().registry.collect()}
    assert {m.name.removesuffix("_total") for m in CATALOGUE} == exposed


def test_workflow_and_task_labels_are_bounded() -> None:
    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from scriptrun.telemetry.operator_metrics import OperatorMetrics

    def pairs(metrics: OperatorMetrics) -> set[tuple[str, str]]:
        text = generate_latest(metrics.registry).decode()
        return {
            (s.labels["workflow"], s.labels["task"])
            for f in text_string_to_metric_families(text)
            if f.name == "scriptrun_used_cpu_seconds"
            for s in f.samples
        }

    usage = {"userTimeSeconds": 1.0, "memoryMaxMb": 10}
    off, capped = OperatorMetrics(), OperatorMetrics(task_labels=2)
    for i in range(5):
        for m in (off, capped):
            m.used("ns", usage, f"wf-{i}", "t")
            m.used("ns", usage, "wf-0", "t")
    assert pairs(off) == {("", "")}
    assert pairs(capped) == {("wf-0", "t"), ("wf-1", "t"), ("other", "other")}

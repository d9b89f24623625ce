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

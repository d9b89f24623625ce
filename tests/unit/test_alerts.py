"""spec.alerts: which rules fire over a finished run's usage, and the webhook channel's
de-duplication, against a real HTTP server on loopback."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scriptrun.controllers.alerting import AlertNotifier, load_webhooks, slack_payload
from scriptrun.engine.observe import AttemptObservation
from scriptrun.engine.run import decide
from scriptrun.model.alerts import AlertRule, FiredAlert
from scriptrun.model.scriptrun import RunPhase, ScriptRunSpec, ScriptRunStatus
from tests.support.webhook import Receiver

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
HUNGRY = {"available": True, "cpuMaxPercent": 97.5, "memoryMaxMb": 2048.0}
RULE = {"name": "hungry", "expression": "usage.cpuMaxPercent > 85 && usage.memoryMaxMb > 1024", "severity": "critical"}


def finish(alerts: list[dict[str, Any]], usage: dict[str, Any] | None, state: str = "Succeeded") -> Any:
    sp = ScriptRunSpec.model_validate({"script": {"source": "1"}, "alerts": alerts})
    started = decide(sp, ScriptRunStatus(), {}, T0).status
    code = 0 if state == "Succeeded" else 1
    obs = AttemptObservation(1, "r-a1", state, T0, T0, code, "Completed" if code == 0 else "Error", usage=usage)  # type: ignore[arg-type]
    return decide(sp, started, {1: obs}, T0 + timedelta(seconds=1), expected={1})


def test_a_matching_rule_fires_with_an_event_and_the_measured_values() -> None:
    d = finish([RULE, {**RULE, "name": "slow", "expression": "usage.memoryMaxMb > 4096"}], HUNGRY)
    assert d.status.phase == RunPhase.SUCCEEDED  # an alert never changes the run's outcome
    (fired,) = d.status.alerts or []
    assert (fired.name, fired.severity, fired.fired_at) == ("hungry", "critical", "2026-01-01T12:00:01Z")
    assert fired.message.endswith("(cpuMaxPercent=97.5, memoryMaxMb=2048.0)")
    assert ("Warning", "AlertFiring") in [(e.type, e.reason) for e in d.events]


def test_alerts_judge_failed_runs_too_and_see_the_phase() -> None:
    d = finish([{**RULE, "expression": "phase == 'Failed' && exitCode == 1"}], HUNGRY, state="Failed")
    assert d.status.phase == RunPhase.FAILED and [a.name for a in d.status.alerts or []] == ["hungry"]


def test_no_usage_fires_nothing_and_a_bad_field_is_an_alert_error_event() -> None:
    assert finish([RULE], None).status.alerts is None
    d = finish([{**RULE, "expression": "usage.gpu > 1"}], HUNGRY)
    assert d.status.alerts is None and "AlertError" in [e.reason for e in d.events]


def test_an_alert_that_does_not_compile_fails_the_run_before_any_pod() -> None:
    sp = ScriptRunSpec.model_validate({"script": {"source": "1"}, "alerts": [{**RULE, "expression": "usage.x >"}]})
    d = decide(sp, ScriptRunStatus(), {}, T0)
    assert d.actions == [] and d.status.phase == RunPhase.FAILED
    assert {c.type: c.reason for c in d.status.conditions}["Failed"] == "InvalidAlert"
    assert (d.status.message or "").startswith("alerts[0].expression: invalid expression")


def test_webhooks_file(tmp_path: Path) -> None:
    good = tmp_path / "hooks.json"
    good.write_text(json.dumps({"team": "https://hooks.example.test/T0/B0/x"}))
    assert load_webhooks(str(good)) == {"team": "https://hooks.example.test/T0/B0/x"}
    assert load_webhooks(None) == {}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"team": "ftp://x"}))
    with pytest.raises(ValueError, match="not an http\\(s\\) URL for team"):
        load_webhooks(str(bad))


def fired(name: str = "hungry") -> FiredAlert:
    return FiredAlert(name=name, severity="warning", message="too much", fired_at="2026-01-01T12:00:00Z")


def test_one_message_per_window_per_namespace_alert_and_channel() -> None:
    receiver = Receiver()
    now = [1000.0]
    outcomes: list[tuple[str, str, str]] = []
    rule = AlertRule.model_validate({**RULE, "channels": ["team"], "dedupSeconds": 60})

    async def scenario() -> None:
        notifier = AlertNotifier({"team": receiver.url + "/t"}, lambda *o: outcomes.append(o), clock=lambda: now[0])
        notifier.fired("ScriptRun", "a", "r1", [rule], [fired()])
        notifier.fired("ScriptRun", "a", "r2", [rule], [fired()])  # same window: suppressed
        notifier.fired("ScriptRun", "b", "r3", [rule], [fired()])  # another namespace: its own window
        now[0] += 61
        notifier.fired("ScriptRun", "a", "r4", [rule], [fired()])  # the window has passed
        await notifier.close()

    try:
        asyncio.run(scenario())
    finally:
        receiver.close()
    texts = [m["text"] for m in receiver.on("/t")]
    assert sorted(texts) == sorted(
        [
            "[warning] hungry on ScriptRun a/r1: too much",
            "[warning] hungry on ScriptRun b/r3: too much",
            "[warning] hungry on ScriptRun a/r4: too much",
        ]
    )
    assert sorted(outcomes) == sorted(
        [("a", "team", "sent"), ("a", "team", "suppressed"), ("b", "team", "sent"), ("a", "team", "sent")]
    )


def test_a_receiver_that_is_down_is_counted_as_failed_and_never_raises() -> None:
    outcomes: list[tuple[str, str, str]] = []
    rule = AlertRule.model_validate({**RULE, "channels": ["gone"]})

    async def scenario() -> None:
        notifier = AlertNotifier({"gone": "http://127.0.0.1:9/x"}, lambda *o: outcomes.append(o))
        notifier.fired("ScriptRun", "a", "r", [rule], [fired()])
        await notifier.close()

    asyncio.run(scenario())
    assert outcomes == [("a", "gone", "failed")]


def test_the_payload_is_slack_shaped() -> None:
    payload = slack_payload("ScriptRun", "ns", "r", fired())
    assert payload["text"] == "[warning] hungry on ScriptRun ns/r: too much"
    assert payload["attachments"][0]["color"] == "#daa038"


# -- the same rules as a PrometheusRule (scriptrun prometheus-rule) ---------------------------------


def test_rules_translate_to_promql_over_the_sidecar_series() -> None:
    from scriptrun.telemetry.alert_rules import NotTranslatable, promql

    sel = 'namespace="ns", scriptrun="r"'
    assert promql("usage.cpuMaxPercent > 85 && usage.memoryMaxMb > 1024", sel) == (
        f"scriptrun_run_cpu_max_cores{{{sel}}} > 0.85 and scriptrun_run_memory_rss_max_bytes{{{sel}}} > 1073741824"
    )
    assert promql("3600 < usage.executionTimeSeconds || usage.numFdsMax >= 1000", sel) == (
        f"scriptrun_run_execution_seconds{{{sel}}} > 3600 or scriptrun_run_open_fds_max{{{sel}}} >= 1000"
    )
    for untranslatable in ("exitCode != 0", "(usage.memoryMaxMb > 1)", "usage.memoryUssMaxMb > 1", "usage.x > 1"):
        with pytest.raises(NotTranslatable):
            promql(untranslatable, sel)


def test_prometheus_rule_command(tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    manifest = {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "ScriptRun",
        "metadata": {"name": "r", "namespace": "ns"},
        "spec": {"script": {"source": "1"}, "alerts": [RULE, {**RULE, "name": "odd", "expression": "exitCode != 0"}]},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(manifest))
    proc = subprocess.run(
        [sys.executable, "-m", "scriptrun", "prometheus-rule", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    rule = yaml.safe_load(proc.stdout)
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    (group,) = rule["spec"]["groups"]
    (only,) = group["rules"]
    assert only["alert"] == "hungry" and only["labels"]["severity"] == "critical"
    assert "not translated: r: alert odd:" in proc.stderr


def test_locally_channels_and_the_regression_check_are_named_as_ignored() -> None:
    from scriptrun.local.ignored import warnings

    spec = ScriptRunSpec.model_validate(
        {"script": {"source": "1"}, "alerts": [{**RULE, "channels": ["team"]}], "regression": {"key": "k"}}
    )
    found = warnings(spec, {})
    assert "spec.alerts[0].channels is ignored locally: webhooks are the operator's" in " ".join(found)
    assert "spec.regression is ignored locally: no history is kept locally: no verdict" in found

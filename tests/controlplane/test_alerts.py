"""spec.alerts on the control plane: every run whose usage matches gets the AlertFiring Event and
status.alerts; a local webhook receiver gets one Slack-compatible message per de-duplication
window, counted in scriptrun_alert_notifications_total."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.controlplane import ControlPlane
from tests.support.kube import Kube, scriptrun
from tests.support.operator import OperatorProcess, namespace, own_operator
from tests.support.prometheus import tools
from tests.support.webhook import Receiver

EXIT = "test.scriptrun.dev/exit-code"
MONITOR = "test.scriptrun.dev/monitor-message"
HUNGRY = {"cpuMaxPercent": 97.5, "memoryMaxMb": 2048.0, "executionTimeSeconds": 4.0, "exitCode": 0}
MODEST = {"cpuMaxPercent": 12.0, "memoryMaxMb": 64.0, "executionTimeSeconds": 1.0, "exitCode": 0}
RULE = "usage.cpuMaxPercent > 85 && usage.memoryMaxMb > 1024"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def alerting(cluster: ControlPlane, operator: OperatorProcess, receiver: Receiver) -> Iterator[OperatorProcess]:
    hooks = cluster.workdir / "alert-webhooks.json"
    hooks.write_text(json.dumps({"team": f"{receiver.url}/team", "noisy": f"{receiver.url}/noisy"}))
    env = {"SCRIPTRUN_ALERT_WEBHOOKS_FILE": str(hooks)}
    op = own_operator(cluster, operator, env, "operator-alerts.log")
    yield op
    op.stop()
    assert not [e for e in op.errors() if "Traceback" in e], op.tail()


@pytest.fixture
def ns(cluster: ControlPlane, alerting: OperatorProcess) -> Iterator[Kube]:
    yield from namespace(cluster, alerting)


def alerted(run: str, usage: dict[str, Any], **rule: Any) -> dict[str, Any]:
    alert = {"name": "hungry", "expression": RULE, "severity": "critical", "channels": ["team"], **rule}
    return scriptrun(run, {"alerts": [alert]}, {EXIT: "0", MONITOR: json.dumps(usage)})


def test_one_webhook_message_per_window_and_an_event_on_every_run(ns: Kube, receiver: Receiver) -> None:
    ns.apply([alerted(f"hungry-{i}", HUNGRY) for i in range(3)] + [alerted("modest", MODEST)])
    for i in range(3):
        status = ns.wait_phase(f"hungry-{i}", "Succeeded")
        (fired,) = status["alerts"]
        assert (fired["name"], fired["severity"]) == ("hungry", "critical")
        assert fired["message"] == f"{RULE} (cpuMaxPercent=97.5, memoryMaxMb=2048.0)"
        ns.wait("AlertFiring Event", lambda i=i: "AlertFiring" in {e["reason"] for e in ns.events(f"hungry-{i}")})
    assert "alerts" not in ns.wait_phase("modest", "Succeeded")
    sent = ns.wait("the webhook message", lambda: receiver.on("/team") or None)
    assert len(sent) == 1, sent  # three runs fired within one window (dedupSeconds: 3600 by default)
    message = sent[0]
    assert message["text"].startswith(f"[critical] hungry on ScriptRun {ns.ns}/hungry-")
    attachment = message["attachments"][0]
    assert (
        attachment["color"] == "#d00000"
        and {"title": "namespace", "value": ns.ns, "short": True} in attachment["fields"]
    )


def test_a_zero_window_sends_every_firing_and_an_unknown_channel_is_counted(
    ns: Kube, receiver: Receiver, alerting: OperatorProcess
) -> None:
    runs = [
        alerted(f"noisy-{i}", HUNGRY, name="noisy", channels=["noisy", "nowhere"], dedupSeconds=0) for i in range(3)
    ]
    ns.apply(runs)
    for i in range(3):
        ns.wait_phase(f"noisy-{i}", "Succeeded")
    ns.wait("three messages", lambda: len(receiver.on("/noisy")) >= 3 or None, timeout=30)
    assert len(receiver.on("/noisy")) == 3
    found = [(s.name, s.labels, s.value) for f in text_string_to_metric_families(alerting.scrape()) for s in f.samples]

    def count(channel: str, outcome: str) -> float:
        return sum(
            v
            for n, lab, v in found
            if n == "scriptrun_alert_notifications_total"
            and lab == {"namespace": ns.ns, "channel": channel, "outcome": outcome}
        )

    assert count("noisy", "sent") == 3 and count("nowhere", "unknown-channel") == 3


def test_the_prometheus_rule_fires_on_the_sidecar_series_in_promtool(tmp_path: Path) -> None:
    """`scriptrun prometheus-rule`'s PromQL, run by Prometheus' own rule tester over series shaped
    as the monitor sidecar serves them: it fires for the hungry run only."""
    from scriptrun.local.manifest import parse
    from scriptrun.telemetry.alert_rules import prometheus_rule

    manifest = alerted("hungry", HUNGRY)
    manifest["metadata"]["namespace"] = "ns"
    rule, skipped = prometheus_rule("ScriptRun", parse(yaml.safe_dump(manifest)).obj)
    assert rule is not None and skipped == []
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))

    def series(metric: str, run: str, value: float) -> dict[str, str]:
        labels = f'namespace="ns", scriptrun="{run}", job="scriptrun-runs", instance="10.0.0.1:9090"'
        return {"series": f"{metric}{{{labels}}}", "values": f"{value}x10"}

    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    series("scriptrun_run_cpu_max_cores", "hungry", 0.975),
                    series("scriptrun_run_memory_rss_max_bytes", "hungry", 2048 * 1024 * 1024),
                    series("scriptrun_run_cpu_max_cores", "other", 0.975),  # another run: not selected
                    series("scriptrun_run_memory_rss_max_bytes", "other", 2048 * 1024 * 1024),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "5m",
                        "alertname": "hungry",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "namespace": "ns",
                                    "scriptrun": "hungry",
                                    "job": "scriptrun-runs",
                                    "instance": "10.0.0.1:9090",
                                },
                                "exp_annotations": {"summary": "hungry on ScriptRun ns/hungry", "description": RULE},
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    _, promtool = tools()
    check = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.run([promtool, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr

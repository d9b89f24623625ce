"""Bad input: the API server refuses what the schema can express, naming the field; the operator
fails what only it can see with a reason, and one bad object never blocks the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import Kube, scriptrun

EXIT = "test.scriptrun.dev/exit-code"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"script": {"source": "x", "command": ["python"]}},
            "exactly one of script.source, script.configMapRef or script.command must be set",
        ),
        ({"script": {}}, "exactly one of script.source"),
        ({"retryStrategy": {"limit": -1}}, "spec.retryStrategy.limit: Invalid value: -1"),
        (
            {"retryStrategy": {"retryPolicy": "Sometimes"}},
            'spec.retryStrategy.retryPolicy: Unsupported value: "Sometimes"',
        ),
        ({"retryStrategy": {"backoff": {"strategy": "random"}}}, "spec.retryStrategy.backoff.strategy"),
        (
            {"monitor": {"intervalSeconds": 0}},
            'spec.monitor.intervalSeconds: Invalid value: "number": must be at least',
        ),
        ({"monitor": {"intervalSeconds": -1}}, "spec.monitor.intervalSeconds"),
        ({"timeoutSeconds": 0}, "spec.timeoutSeconds: Invalid value: 0"),
        (
            {"retryStrategy": {"onExitCodes": [{"action": "Fail", "operator": "In", "values": [0]}]}},
            "exit code 0 is success and cannot be listed with operator In",
        ),
        (
            {"retryStrategy": {"onExitCodes": [{"action": "Explode", "values": [1]}]}},
            "spec.retryStrategy.onExitCodes[0].action: Unsupported value",
        ),
        ({"nosuchfield": 1}, 'unknown field "spec.nosuchfield"'),
        ({"resources": {"limits": {"memory": "lots"}}}, "spec.resources.limits.memory in body should match"),
        (
            {"gates": {"after": [{"name": "m", "expression": "true"}, {"name": "m", "expression": "false"}]}},
            'spec.gates.after[1]: Duplicate value: {"name":"m"}',
        ),
        ({"gates": {"after": [{"name": "m", "expression": "true", "action": "Page"}]}}, "spec.gates.after[0].action"),
        ({"gates": {"before": {"secretScan": {"severity": "urgent"}}}}, "spec.gates.before.secretScan.severity"),
        ({"gates": {"before": {"staticAnalysis": {"skip": ["rm -rf"]}}}}, "spec.gates.before.staticAnalysis.skip[0]"),
        (
            {"gates": {"before": {"dependencyScan": {"requirements": ["requests==2.19.1"]}}}},
            "spec.gates.before.dependencyScan.database: Required value",
        ),
    ],
    ids=[
        "source-and-command",
        "no-script",
        "negative-limit",
        "bad-policy",
        "bad-backoff",
        "zero-interval",
        "negative-interval",
        "zero-timeout",
        "exit-code-zero",
        "bad-action",
        "unknown-field",
        "bad-quantity",
        "duplicate-gate",
        "bad-gate-action",
        "bad-severity",
        "bad-bandit-id",
        "no-osv-database",
    ],
)
def test_schema_refusals_name_the_field(kube: Kube, spec: dict[str, Any], expected: str) -> None:
    body = scriptrun("bad", {})
    body["spec"].update(spec)
    if "script" in spec:
        body["spec"]["script"] = spec["script"]
    message = kube.refuse(body)
    assert expected in message, message


def test_workflow_refusals(kube: Kube) -> None:
    task = {"name": "a", "script": {"source": "x"}}
    wf = {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "w"},
        "spec": {"tasks": [task, task]},
    }
    assert "Duplicate value" in kube.refuse(wf)
    wf["spec"]["tasks"] = [{**task, "name": "Bad_Name"}]
    assert "spec.tasks[0].name" in kube.refuse(wf)
    wf["spec"]["tasks"] = [{**task, "dependencies": ["b"], "depends": "b.Succeeded"}]
    assert "use either dependencies or depends, not both" in kube.refuse(wf)


def test_examples_pass_server_side_validation(kube: Kube) -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        proc = kube.cluster.kubectl("-n", kube.ns, "apply", "--dry-run=server", "-f", str(path), check=False)
        assert proc.returncode == 0, f"{path.name}: {proc.stderr}"


def test_missing_configmap_fails_with_reason_and_others_proceed(kube: Kube) -> None:
    kube.apply(
        [
            scriptrun("nocm", {"script": {"configMapRef": {"name": "absent"}}}),
            scriptrun("badpod", {"nodeSelector": {"not a label key!": "x"}}),
            scriptrun("good", {}, {EXIT: "0"}),
        ]
    )
    bad = kube.wait_phase("nocm", "Failed")
    reasons = {c["type"]: c["reason"] for c in bad["conditions"]}
    assert reasons["Failed"] == "ConfigMapNotFound"
    assert "absent" in bad["message"]
    rejected = kube.wait_phase("badpod", "Failed")
    assert {c["type"]: c["reason"] for c in rejected["conditions"]}["Failed"] == "PodRejected"
    assert "spec.nodeSelector" in rejected["message"]
    kube.wait_phase("good", "Succeeded")
    assert kube.list("pods", "scriptrun.dev/scriptrun=nocm") == []


def test_a_missing_osv_database_or_an_invalid_gate_fails_before_any_pod(kube: Kube) -> None:
    """What only the operator can detect ends as a condition with a reason, and no pod is made."""
    scan = {"dependencyScan": {"requirements": ["requests==2.19.1"], "database": {"configMapName": "no-osv"}}}
    kube.apply(
        [
            scriptrun("nodb", {"gates": {"before": scan}}),
            scriptrun("badcel", {"gates": {"after": [{"name": "m", "expression": "usage.memoryMaxMb <"}]}}),
        ]
    )
    nodb = kube.wait_phase("nodb", "Failed")
    assert {c["type"]: c["reason"] for c in nodb["conditions"]}["Failed"] == "ConfigMapNotFound"
    assert nodb["message"] == "ConfigMap 'no-osv' (spec.gates.before.dependencyScan.database) not found"
    badcel = kube.wait_phase("badcel", "Failed")
    assert {c["type"]: c["reason"] for c in badcel["conditions"]}["Failed"] == "InvalidGate"
    assert badcel["message"].startswith("gates.after[0].expression: invalid expression 'usage.memoryMaxMb <'")
    assert (
        kube.list("pods", "scriptrun.dev/scriptrun=nodb") == [] == kube.list("pods", "scriptrun.dev/scriptrun=badcel")
    )


def test_configmap_script_runs(kube: Kube) -> None:
    kube.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "code"}, "data": {"job.py": "print('x')"}}
    )
    kube.apply(scriptrun("fromcm", {"script": {"configMapRef": {"name": "code", "key": "job.py"}}}, {EXIT: "0"}))
    kube.wait_phase("fromcm", "Succeeded")
    pod = kube.get("pod", "fromcm-a1")
    assert pod is not None
    assert pod["spec"]["containers"][0]["command"][-2:] == ["python3", "/scriptrun/script/job.py"]
    assert {"name": "script", "configMap": {"name": "code", "defaultMode": 420}} in pod["spec"]["volumes"]

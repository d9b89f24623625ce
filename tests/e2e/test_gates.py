"""Gates on the real node: spec.gates.after judged over what the monitor sidecar really measured."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tests.e2e.conftest import operator_log
from tests.e2e.test_runs import HOLD_100_MIB, run
from tests.support.gate_fixtures import AWS_KEY, every_scan, osv_configmap, source
from tests.support.kube import Kube
from tests.support.realnode import RealCluster

MEMORY_GATE = {"name": "memory", "expression": "usage.memoryMaxMb < 64", "message": "stay under 64 MiB"}
QUICK_GATE = {"name": "quick", "expression": "usage.executionTimeSeconds < 120 && exitCode == 0"}


def test_a_gate_blocks_the_greedy_run_and_passes_the_small_one(kube: Kube) -> None:
    gates = {"gates": {"after": [MEMORY_GATE, QUICK_GATE]}, "monitor": {"intervalSeconds": 0.2}}
    kube.apply([run("gate-greedy", HOLD_100_MIB, **gates), run("gate-small", "print('small')", **gates)])

    greedy = kube.wait_phase("gate-greedy", "Failed", timeout=120)
    assert greedy["attempts"][-1]["phase"] == "Succeeded"  # the script did its job; the gate said no
    assert [(g["name"], g["result"]) for g in greedy["gates"]] == [("memory", "Failed"), ("quick", "Passed")]
    assert greedy["message"].startswith("gate memory: stay under 64 MiB (memoryMaxMb=1"), greedy["message"]
    failed = {c["type"]: c for c in greedy["conditions"]}["Failed"]
    assert (failed["status"], failed["reason"]) == ("True", "GateFailed")
    reasons = kube.wait("GateFailed Event", lambda: {e["reason"] for e in kube.events("gate-greedy")} & {"GateFailed"})
    assert reasons == {"GateFailed"}

    small = kube.wait_phase("gate-small", "Succeeded", timeout=120)
    assert [g["result"] for g in small["gates"]] == ["Passed", "Passed"]
    assert small["usage"]["memoryMaxMb"] < 64


# -- spec.gates.before: the gate init container in the runner image ------------------------------

PLANTED = "planted-secret-value-7f3a91c2"
USES_SECRET = """
import hashlib, os
token = os.environ["TOKEN"]
digest = hashlib.sha256(token.encode()).hexdigest()
open(os.path.join(os.environ["SCRIPTRUN_OUTPUTS"], "token-sha256"), "w").write(digest)
"""


def scanned(name: str, fixture: str, requirement: str, **spec: Any) -> dict[str, Any]:
    return run(name, source(fixture), gates={"before": every_scan(requirement)}, **spec)


def test_before_gates_block_each_bad_fixture_pass_the_clean_one_and_leak_nothing(
    kube: Kube, realnode: RealCluster
) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"token": PLANTED}}
    from_secret = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}
    kube.apply(
        [
            osv_configmap(),
            secret,
            scanned("shell", "shell_injection.py", "requests==2.32.3"),
            scanned("key-in-script", "aws_key.py", "requests==2.32.3"),
            scanned("key-in-env", "clean.py", "requests==2.32.3", env=[{"name": "KEY", "value": AWS_KEY}]),
            scanned("old-requests", "clean.py", "requests==2.19.1"),
            scanned("clean", "clean.py", "requests==2.32.3", env=[from_secret]),
            run("uses-secret", USES_SECRET, env=[from_secret], gates={"before": {"secretScan": {}}}),
        ]
    )
    for name, gate in [
        ("shell", "staticAnalysis"),
        ("key-in-script", "secretScan"),
        ("key-in-env", "secretScan"),
        ("old-requests", "dependencyScan"),
    ]:
        status = kube.wait_phase(name, "Failed", timeout=180)
        assert {c["type"]: c["reason"] for c in status["conditions"]}["Failed"] == "GateFailed", status
        assert status["message"].startswith(f"gate {gate}: "), status["message"]
        assert status["attemptCount"] == 1 and status["attempts"][0]["reason"] == "GateFailed"
        assert {g["name"]: g["result"] for g in status["gates"]}[gate] == "Failed"
        pod = kube.get("pods", status["attempts"][0]["podName"]) or {}
        main = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "main")
        assert "terminated" not in main["state"] and "running" not in main["state"]  # the script never started
        report = kube.get("configmaps", status["gatesReport"]) or {}
        sarif = json.loads(report["data"]["results.sarif"])
        results = [r for run_ in sarif["runs"] for r in run_["results"] if r["level"] == "error"]
        assert results and {r["properties"]["gate"] for r in results} == {gate}

    clean = kube.wait_phase("clean", "Succeeded", timeout=180)
    assert [g["result"] for g in clean["gates"]] == ["Passed", "Passed", "Passed"]
    report = kube.get("configmaps", clean["gatesReport"]) or {}
    assert json.loads(report["data"]["sbom.cdx.json"])["components"][0]["purl"] == "pkg:pypi/requests@2.32.3"
    assert (kube.get("configmaps", clean["gatesReport"]) or {})["metadata"]["ownerReferences"][0]["kind"] == "ScriptRun"

    # env from a Secret works in a gated run (the script saw it), and is not what the scan reads
    used = kube.wait_phase("uses-secret", "Succeeded", timeout=180)
    assert used["outputs"]["token-sha256"] == hashlib.sha256(PLANTED.encode()).hexdigest()
    assert [g["result"] for g in used["gates"]] == ["Passed"]

    # nothing scriptrun writes repeats a secret: statuses, Events, the reports, the operator's log
    said = [
        json.dumps([item["status"] for item in kube.list("scriptruns")]),  # the specs hold what the user wrote
        realnode.kubectl("-n", kube.ns, "get", "events", "-o", "json").stdout,
        realnode.kubectl("-n", kube.ns, "get", "configmaps", "-l", "app.kubernetes.io/managed-by", "-o", "json").stdout,
        operator_log(realnode, tail=2000),
    ]
    for text in said:
        assert AWS_KEY not in text and PLANTED not in text

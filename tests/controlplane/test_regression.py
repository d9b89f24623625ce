"""spec.regression on the control plane: runs of one key build its history (a ConfigMap, written by
runs finishing at once), and a run twice as slow as that history is flagged: the Regressed
condition, a Warning Event and scriptrun_regressions_total; a normal one is not."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.kube import Kube, scriptrun
from tests.support.operator import OperatorProcess

EXIT = "test.scriptrun.dev/exit-code"
MONITOR = "test.scriptrun.dev/monitor-message"
CHECK = {"regression": {"key": "nightly-import", "fields": ["executionTimeSeconds"]}}
BASELINE = [4.0, 4.2, 3.9, 4.1, 4.0, 3.8]


def timed(name: str, seconds: float) -> dict[str, Any]:
    usage = {"executionTimeSeconds": seconds, "memoryMaxMb": 40.0, "exitCode": 0}
    return scriptrun(name, CHECK, {EXIT: "0", MONITOR: json.dumps(usage)})


def regressed(kube: Kube, name: str) -> tuple[str, str, str]:
    status = kube.wait_phase(name, "Succeeded")
    cond = {c["type"]: c for c in status["conditions"]}["Regressed"]
    return cond["status"], cond["reason"], cond["message"]


def test_a_run_twice_as_slow_as_its_history_is_flagged(kube: Kube, live_operator: OperatorProcess) -> None:
    kube.apply([timed(f"base-{i}", s) for i, s in enumerate(BASELINE)])  # finishing together
    for i in range(len(BASELINE)):
        status, reason, _ = regressed(kube, f"base-{i}")
        assert status == "False" and reason in ("TooFewRuns", "WithinHistory")
    history = json.loads((kube.get("configmap", "scriptrun-history-nightly-import") or {})["data"]["history.json"])
    assert sorted(r["values"]["executionTimeSeconds"] for r in history["runs"]) == sorted(BASELINE)

    kube.apply(timed("slow", 8.1))
    assert regressed(kube, "slow") == (
        "True",
        "Regressed",
        "nightly-import: executionTimeSeconds 8.1 against a median of 4 (MAD 0.1, 6 runs)",
    )
    (found,) = kube.wait_phase("slow", "Succeeded")["regressions"]
    assert found == {
        "field": "executionTimeSeconds",
        "value": 8.1,
        "median": 4.0,
        "mad": 0.1,
        "runs": 6,
        "regressed": True,
    }
    kube.wait("Regressed Event", lambda: "Regressed" in {e["reason"] for e in kube.events("slow")})
    kube.apply(timed("normal", 4.1))
    assert regressed(kube, "normal")[:2] == ("False", "WithinHistory")
    metrics = [
        (s.name, s.labels, s.value) for f in text_string_to_metric_families(live_operator.scrape()) for s in f.samples
    ]
    counted = [v for n, lab, v in metrics if n == "scriptrun_regressions_total" and lab.get("namespace") == kube.ns]
    assert counted == [1.0]

"""Gates on the real node: spec.gates.after judged over what the monitor sidecar really measured."""

from __future__ import annotations

from tests.e2e.test_runs import HOLD_100_MIB, run
from tests.support.kube import Kube

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

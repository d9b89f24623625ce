"""Sharding by label selector (build/shard.py): two operators, `team=ml` and `team!=ml` (the second
also takes unlabeled runs); each reconciles only its own Workflows and ScriptRuns, whose children and
pods carry the selector's labels; a malformed selector stops the operator with a clear message."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.kube import Kube, scriptrun
from tests.support.operator import OperatorProcess, namespace

EXIT = "test.scriptrun.dev/exit-code"
SHARDS = {"shard-ml": "team=ml", "shard-rest": "team!=ml"}


def shard(cluster: ControlPlane, name: str, selector: str) -> OperatorProcess:
    op = OperatorProcess(cluster, extra_env={"POD_NAME": name, "SCRIPTRUN_SHARD_SELECTOR": selector})
    op.log = cluster.workdir / f"operator-{name}.log"
    return op


@pytest.fixture(scope="module")
def shards(cluster: ControlPlane, operator: OperatorProcess) -> Iterator[list[OperatorProcess]]:
    operator.stop()  # the session's operator serves every run
    ops = [shard(cluster, name, selector) for name, selector in SHARDS.items()]
    try:
        for op in ops:
            op.start()
        yield ops
    finally:
        for op in ops:
            op.stop()


@pytest.fixture
def kube(cluster: ControlPlane, shards: list[OperatorProcess]) -> Iterator[Kube]:
    yield from namespace(cluster, shards[0])


def workflow(name: str, labels: dict[str, str]) -> dict[str, Any]:
    tasks = [
        {"name": "a", "script": {"source": "print(1)"}, "podMetadata": {"annotations": {EXIT: "0"}}},
        {
            "name": "b",
            "dependencies": ["a"],
            "script": {"source": "print(2)"},
            "podMetadata": {"annotations": {EXIT: "0"}},
        },
    ]
    return {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name, "labels": labels},
        "spec": {"tasks": tasks},
    }


def reporters(kube: Kube, name: str) -> set[str]:
    return {e.get("reportingInstance", "") for e in kube.events(name)}


def test_each_shard_serves_its_own_runs(kube: Kube, shards: list[OperatorProcess]) -> None:
    lone = scriptrun("lone-ml", {}, {EXIT: "0"})
    lone["metadata"]["labels"] = {"team": "ml"}
    kube.apply([workflow("wf-ml", {"team": "ml"}), workflow("wf-rest", {}), lone])
    for wf in ("wf-ml", "wf-rest"):
        kube.wait(
            f"{wf} Succeeded",
            lambda wf=wf: (kube.get("workflow", wf) or {}).get("status", {}).get("phase") == "Succeeded",
        )
    kube.wait_phase("lone-ml", "Succeeded")

    for run in ("wf-ml-a", "wf-ml-b"):
        assert kube.get("scriptrun", run)["metadata"]["labels"]["team"] == "ml"  # type: ignore[index]
        assert kube.get("pod", f"{run}-a1")["metadata"]["labels"]["team"] == "ml"  # type: ignore[index]
        assert reporters(kube, run) == {"shard-ml"}
    assert kube.get("pod", "lone-ml-a1")["metadata"]["labels"]["team"] == "ml"  # type: ignore[index]
    assert reporters(kube, "lone-ml") == {"shard-ml"}
    for run in ("wf-rest-a", "wf-rest-b"):
        assert "team" not in kube.get("pod", f"{run}-a1")["metadata"]["labels"]  # type: ignore[index]
        assert reporters(kube, run) == {"shard-rest"}
    assert reporters(kube, "wf-ml") == {"shard-ml"} and reporters(kube, "wf-rest") == {"shard-rest"}
    for op in shards:
        assert not [e for e in op.errors() if "Traceback" in e], op.tail()


def test_a_malformed_selector_stops_the_operator_with_its_reason(cluster: ControlPlane) -> None:
    op = shard(cluster, "shard-bad", "team in ml")
    with pytest.raises(RuntimeError, match="operator exited"):
        op.start(timeout=30)
    assert "not a label selector requirement: 'team in ml'" in op.log.read_text()

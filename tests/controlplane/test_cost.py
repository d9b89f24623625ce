"""Costs on the control plane: kwok nodes shaped like an AWS m5.large (us-east-1), an Azure
Standard_D4s_v5 spot node and a GCP n2-standard-4, a static price table, runs pinned to each; the
cost in each run's status equals the hand-computed value (to the cent, and within two millionths).

Prices are set absurdly high (tens of thousands a core-hour) so runs of a few seconds cost dollars. The session
operator is stopped for this module and one with the price table runs instead."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import yaml

from scriptrun.engine import clock
from tests.support.controlplane import ControlPlane
from tests.support.kube import Kube, scriptrun
from tests.support.operator import OperatorProcess, namespace, own_operator

EXIT = "test.scriptrun.dev/exit-code"
MONITOR = "test.scriptrun.dev/monitor-message"
TAINT = {"key": "scriptrun.dev/cost-test", "value": "true", "effect": "NoSchedule"}
REGION, ZONE, TYPE = "topology.kubernetes.io/region", "topology.kubernetes.io/zone", "node.kubernetes.io/instance-type"
NODES: dict[str, dict[str, Any]] = {
    "cost-aws-m5": {
        "provider_id": "aws:///us-east-1a/i-0123456789abcdef0",
        "labels": {REGION: "us-east-1", ZONE: "us-east-1a", TYPE: "m5.large"},
        "capacity": {"cpu": "2", "memory": "8Gi"},
    },
    "cost-azure-spot": {
        "provider_id": "azure:///subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachineScaleSets/v/0",
        "labels": {REGION: "westeurope", TYPE: "Standard_D4s_v5", "kubernetes.azure.com/scalesetpriority": "spot"},
        "capacity": {"cpu": "4", "memory": "16Gi"},
    },
    "cost-gcp-n2": {
        "provider_id": "gce://project/us-central1-a/cost-gcp-n2",
        "labels": {REGION: "us-central1", TYPE: "n2-standard-4"},
        "capacity": {"cpu": "4", "memory": "16Gi"},
    },
}
PRICES = {
    "currency": "USD",
    "nodes": {"m5.large": {"hourly": "36000"}, "n2-standard-4": {"cpu": "360000", "memory": "36000"}},
    "spot": {"Standard_D4s_v5": {"cpu": "72000", "memory": "7200"}},
}
SUMMARY = {"cpuAvgPercent": 80.0, "memoryAvgMb": 512.0, "memoryMaxMb": 600.0, "userTimeSeconds": 1.0}
GIB = Decimal(1024**3)


@pytest.fixture(scope="module")
def priced(cluster: ControlPlane, operator: OperatorProcess) -> Iterator[OperatorProcess]:
    existing = {n["metadata"]["name"] for n in cluster.request("GET", "/api/v1/nodes")["items"]}
    for name, shape in NODES.items():
        if name not in existing:
            cluster.create_node(name, taints=[TAINT], **shape)
    prices = cluster.workdir / "prices.yaml"
    prices.write_text(yaml.safe_dump(PRICES))
    op = own_operator(cluster, operator, {"SCRIPTRUN_PRICES": str(prices)}, "operator-priced.log")
    yield op
    op.stop()
    for name in NODES:  # other modules count the cluster's nodes in scheduler messages
        cluster.request("DELETE", f"/api/v1/nodes/{name}")
    assert not [e for e in op.errors() if "Traceback" in e], op.tail()


@pytest.fixture
def ns(cluster: ControlPlane, priced: OperatorProcess) -> Iterator[Kube]:
    yield from namespace(cluster, priced)


def pinned(name: str, node: str) -> dict[str, Any]:
    spec = {
        "script": {"source": "print(1)"},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
        "nodeSelector": {"kubernetes.io/hostname": node},
        "tolerations": [{**TAINT, "operator": "Equal"}],
        "podMetadata": {"annotations": {MONITOR: json.dumps(SUMMARY)}},
    }
    return scriptrun(name, spec)


def split(hourly: Decimal, vcpus: int, gib: int) -> tuple[Decimal, Decimal]:
    """A whole-node price as per-core and per-GiB rates, by OpenCost's default ratios (by hand)."""
    ratio = Decimal("0.031611") / Decimal("0.004237")
    ram = hourly / (vcpus * ratio + gib)
    cpu = ram * ratio
    assert abs(vcpus * cpu + gib * ram - hourly) < Decimal("1e-18")
    return cpu, ram


def by_hand(status: dict[str, Any], cpu: Decimal, ram: Decimal) -> Decimal:
    """max(request, measured average) per container x runtime x these rates (a core-hour, a GiB-hour)."""
    (attempt,) = status["attempts"]
    start, finish = clock.parse(attempt["startTime"]), clock.parse(attempt["finishTime"])
    assert start is not None and finish is not None
    hours = Decimal(str((finish - start).total_seconds())) / 3600
    cores = Decimal("0.8") + Decimal("0.01")  # the script measured at 80% of a core (> 500m); the monitor's 10m
    gib = Decimal(1) + Decimal(32) / 1024  # the script's 1Gi request (> 512 MiB measured); the monitor's 32Mi
    return (cores * cpu + gib * ram) * hours


def expected(node: str, status: dict[str, Any]) -> Decimal:
    """By hand, with the price table's rates for the node."""
    if node == "cost-aws-m5":  # a whole-node price, split as OpenCost does
        cpu, ram = split(Decimal(36000), 2, 8)
    elif node == "cost-azure-spot":
        cpu, ram = Decimal(72000), Decimal(7200)
    else:
        cpu, ram = Decimal(360000), Decimal(36000)
    return by_hand(status, cpu, ram)


def finish_on_each_node(ns: Kube) -> None:
    """A run pinned to each node, running a couple of seconds (a runtime worth pricing), then done."""
    for node in NODES:
        ns.apply(pinned(node, node))
    for node in NODES:
        ns.wait(f"{node} running", lambda node=node: ns.run_status(node).get("phase") == "Running")
    time.sleep(2)
    for node in NODES:
        ns.patch("pod", f"{node}-a1", {"metadata": {"annotations": {EXIT: "0"}}})


def test_each_run_costs_what_its_node_and_usage_say(ns: Kube) -> None:
    finish_on_each_node(ns)
    for node, shape in NODES.items():
        status = ns.wait_phase(node, "Succeeded")
        cost = status["cost"]
        want = expected(node, status)
        assert want > 1, (node, want)  # dollars, so the comparison to the cent means something
        got = Decimal(cost["amount"])
        assert round(got, 2) == round(want, 2), (node, got, want)
        assert abs(got - want) <= Decimal("0.000002"), (node, got, want)  # shares rounded to a millionth
        assert Decimal(cost["breakdown"]["cpu"]) + Decimal(cost["breakdown"]["memory"]) == got
        assert cost["currency"] == "USD" and cost["source"] == "static" and "note" not in cost
        assert cost["basis"] == {"cpu": "usage", "memory": "request", "gpu": "request"}
        assert cost["display"] == f"{got.quantize(Decimal('0.0001'))} USD"
        assert status["attempts"][0]["nodeName"] == node
        facts = cost["node"]
        assert facts["instanceType"] == shape["labels"][TYPE] and facts["region"] == shape["labels"][REGION]
    assert {n: ns.run_status(n)["cost"]["node"]["provider"] for n in NODES} == {
        "cost-aws-m5": "aws",
        "cost-azure-spot": "azure",
        "cost-gcp-n2": "gcp",
    }
    assert ns.run_status("cost-azure-spot")["cost"]["node"]["capacityType"] == "spot"
    # the printer column
    out = ns.cluster.kubectl("-n", ns.ns, "get", "scriptrun", "cost-aws-m5").stdout
    assert "COST" in out and " USD" in out


def test_a_node_without_a_price_falls_back_and_says_why(ns: Kube) -> None:
    ns.apply(pinned("unpriced", "kwok-node-0"))  # no instance type, no table entry, no default entry
    ns.wait("its pod", lambda: ns.get("pod", "unpriced-a1"))
    ns.patch("pod", "unpriced-a1", {"metadata": {"annotations": {EXIT: "0"}}})
    cost = ns.wait_phase("unpriced", "Succeeded")["cost"]
    assert cost["source"] == "default" and cost["currency"] == "USD"
    assert cost["note"] == "static: no price for this node"
    assert cost["node"] == {"name": "kwok-node-0", "provider": "unknown", "capacityType": "on-demand"}


def fail_pod(ns: Kube, pod: str, status: dict[str, Any]) -> None:
    """What the kubelet (or the node lifecycle) writes when it ends a pod."""
    ns.wait(f"{pod} running", lambda: ((ns.get("pod", pod) or {}).get("status") or {}).get("phase") == "Running")
    ns.patch("pod", pod, {"status": status}, subresource="status")


def test_a_spot_reclaim_is_retried_without_counting_and_still_costs(ns: Kube) -> None:
    # no retryStrategy: a failure of the script would end the run; a reclaimed pod does not
    ns.apply(pinned("reclaimed", "cost-azure-spot"))
    shutdown = {
        "phase": "Failed",
        "reason": "Terminated",
        "message": "Pod was terminated in response to imminent node shutdown.",
        "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet"}],
    }
    fail_pod(ns, "reclaimed-a1", shutdown)
    ns.wait("the replacement", lambda: ns.get("pod", "reclaimed-a2"))
    ns.patch("pod", "reclaimed-a2", {"metadata": {"annotations": {EXIT: "0"}}})
    status = ns.wait_phase("reclaimed", "Succeeded")
    first, second = status["attempts"]
    assert (first["counted"], first["disruption"], first["reason"]) == (False, "TerminationByKubelet", "Terminated")
    assert second["reason"] == "Completed" and "disruption" not in second
    assert status["cost"]["attempts"] == 2  # the reclaimed pod ran on the node too: it is paid for
    assert any(e["reason"] == "Disrupted" and e["type"] == "Warning" for e in ns.events("reclaimed"))

    # an eviction without the condition: on a spot node a reclaim, on an on-demand node an error
    ns.apply(pinned("evicted-spot", "cost-azure-spot"))
    ns.apply(pinned("evicted-on-demand", "cost-aws-m5"))
    evicted = {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}
    fail_pod(ns, "evicted-spot-a1", evicted)
    fail_pod(ns, "evicted-on-demand-a1", evicted)
    ns.wait("the spot run's replacement", lambda: ns.get("pod", "evicted-spot-a2"))
    assert ns.run_status("evicted-spot")["attempts"][0]["disruption"] == "SpotReclaim"
    lost = ns.wait_phase("evicted-on-demand", "Failed")
    assert lost["attempts"][0]["counted"] is True and "disruption" not in lost["attempts"][0]
    assert lost["cost"]["attempts"] == 1
    # every run ends here: one left running would still be reconciled while its namespace is deleted
    ns.patch("pod", "evicted-spot-a2", {"metadata": {"annotations": {EXIT: "0"}}})
    assert ns.wait_phase("evicted-spot", "Succeeded")["cost"]["attempts"] == 2


def chained(name: str, tasks: int, budget: dict[str, str]) -> dict[str, Any]:
    node = "cost-aws-m5"
    task = {k: v for k, v in pinned("x", node)["spec"].items() if k != "script"}
    steps = [{"name": "t0", "script": {"source": "print(0)"}, **task}]
    steps += [
        {"name": f"t{i}", "script": {"source": f"print({i})"}, "dependencies": [f"t{i - 1}"], **task}
        for i in range(1, tasks)
    ]
    return {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"tasks": steps, "budget": budget},
    }


def test_a_workflow_adds_up_its_tasks_and_stops_at_its_budget(ns: Kube) -> None:
    # a task on this node costs dollars a second: the first one spends the whole budget
    ns.apply(chained("capped", 3, {"amount": "0.50", "currency": "USD", "action": "Stop"}))
    ns.wait("t0 running", lambda: ((ns.get("pod", "capped-t0-a1") or {}).get("status") or {}).get("phase") == "Running")
    time.sleep(1)
    ns.patch("pod", "capped-t0-a1", {"metadata": {"annotations": {EXIT: "0"}}})

    def finished() -> dict[str, Any] | None:
        status = (ns.get("workflow", "capped") or {}).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = ns.wait("the workflow to end", finished)
    child = ns.run_status("capped-t0")["cost"]
    assert Decimal(child["amount"]) > Decimal("0.50")
    assert status["phase"] == "Failed" and status["tasks"]["t1"]["phase"] == "Omitted"
    assert ns.get("scriptrun", "capped-t1") is None  # never started
    cost = status["cost"]
    assert (cost["amount"], cost["currency"], cost["tasks"]) == (child["amount"], "USD", 1)
    assert status["tasks"]["t0"]["cost"] == f"{child['amount']} USD"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["BudgetExceeded"]["status"] == "True"
    assert conditions["BudgetExceeded"]["message"].endswith("of the 0.50 USD budget")
    assert conditions["Completed"]["reason"] == "BudgetExceeded"
    events = {(e["type"], e["reason"]) for e in ns.events("capped")}
    assert ("Warning", "BudgetExceeded") in events
    out = ns.cluster.kubectl("-n", ns.ns, "get", "workflow", "capped").stdout
    assert "COST" in out.splitlines()[0] and f"{Decimal(child['amount']).quantize(Decimal('0.0001'))} USD" in out

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


def expected(node: str, status: dict[str, Any]) -> Decimal:
    """By hand: max(request, measured average) per container x runtime x the node's rates."""
    (attempt,) = status["attempts"]
    start, finish = clock.parse(attempt["startTime"]), clock.parse(attempt["finishTime"])
    assert start is not None and finish is not None
    hours = Decimal(str((finish - start).total_seconds())) / 3600
    cores = Decimal("0.8") + Decimal("0.01")  # the script measured at 80% of a core (> 500m); the monitor's 10m
    gib = Decimal(1) + Decimal(32) / 1024  # the script's 1Gi request (> 512 MiB measured); the monitor's 32Mi
    if node == "cost-aws-m5":  # a whole-node price, split as OpenCost does
        ratio = Decimal("0.031611") / Decimal("0.004237")
        ram = Decimal(36000) / (2 * ratio + 8)
        cpu = ram * ratio
        assert abs(2 * cpu + 8 * ram - 36000) < Decimal("1e-18")
    elif node == "cost-azure-spot":
        cpu, ram = Decimal(72000), Decimal(7200)
    else:
        cpu, ram = Decimal(360000), Decimal(36000)
    return (cores * cpu + gib * ram) * hours


def test_each_run_costs_what_its_node_and_usage_say(ns: Kube) -> None:
    for node in NODES:
        ns.apply(pinned(node, node))
    for node in NODES:
        ns.wait(f"{node} running", lambda node=node: ns.run_status(node).get("phase") == "Running")
    time.sleep(2)  # a runtime worth pricing
    for node in NODES:
        ns.patch("pod", f"{node}-a1", {"metadata": {"annotations": {EXIT: "0"}}})
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

"""Billing reconciliation on the control plane: an operator started with SCRIPTRUN_BILLING=aws, no lag
and a pass every 2 s, its boto3 Cost Explorer client sent to a local stand-in by the standard
AWS_ENDPOINT_URL_COST_EXPLORER (fake credentials). Runs on a kwok node shaped like a dedicated,
tagged node: two annotated with one tag value share its spend, one annotated with a value nothing was
billed for records zero and why, one without the annotation is left alone.

The stand-in speaks Cost Explorer's JSON 1.1 protocol (moto's server would need moto[server], i.e.
Flask, which the venv does not have): it answers GetCostAndUsage with the spend set per tag value
for the values asked about, and keeps each request so the test checks what the operator asked."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from scriptrun.engine import clock
from tests.controlplane.test_cost import EXIT, TAINT, pinned
from tests.support.controlplane import ControlPlane
from tests.support.kube import Kube
from tests.support.operator import OperatorProcess, namespace, own_operator

NODE = "billing-pool-node"
TAG_KEY = "scriptrun-run"
SHARED, UNBILLED = "pool-7f2c", "pool-none"
SPEND = {SHARED: "1.2345"}  # USD, what the shared capacity was billed
TARGET = "AWSInsightsIndexService.GetCostAndUsage"


class CostExplorer(ThreadingHTTPServer):
    """GetCostAndUsage over [Start, End): one day's group per asked value that has spend."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.requests.append(request)
        key = request["GroupBy"][0]["Key"]
        values = request["Filter"]["Tags"]["Values"]
        groups = [
            {"Keys": [f"{key}${v}"], "Metrics": {"UnblendedCost": {"Amount": SPEND[v], "Unit": "USD"}}}
            for v in values
            if v in SPEND
        ]
        groups.append({"Keys": [f"{key}$"], "Metrics": {"UnblendedCost": {"Amount": "9.99", "Unit": "USD"}}})
        period = request["TimePeriod"]
        return {
            "GroupDefinitions": request["GroupBy"],
            "ResultsByTime": [{"TimePeriod": period, "Total": {}, "Groups": groups, "Estimated": True}],
            "DimensionValueAttributes": [],
        }


class _Handler(BaseHTTPRequestHandler):
    server: CostExplorer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("X-Amz-Target") != TARGET:
            status, answer = 400, {"__type": "UnknownOperationException", "message": self.headers.get("X-Amz-Target")}
        else:
            status, answer = 200, self.server.answer(json.loads(body))
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def ce() -> Iterator[CostExplorer]:
    server = CostExplorer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def billed(cluster: ControlPlane, operator: OperatorProcess, ce: CostExplorer) -> Iterator[OperatorProcess]:
    cluster.create_node(
        NODE,
        provider_id="aws:///us-east-1a/i-0fedcba9876543210",
        labels={"node.kubernetes.io/instance-type": "m5.large", "karpenter.sh/nodepool": SHARED},
        capacity={"cpu": "2", "memory": "8Gi"},
        taints=[TAINT],
    )
    env = {
        "SCRIPTRUN_BILLING": "aws",
        "SCRIPTRUN_BILLING_TAG_KEY": TAG_KEY,
        "SCRIPTRUN_BILLING_LAG_SECONDS": "0",
        "SCRIPTRUN_BILLING_INTERVAL_SECONDS": "2",
        "SCRIPTRUN_BILLING_MAX_REQUESTS": "5",
        "AWS_ENDPOINT_URL_COST_EXPLORER": ce.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(cluster.workdir / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(cluster.workdir / "no-aws-credentials"),
    }
    op = own_operator(cluster, operator, env, "operator-billing.log")
    yield op
    op.stop()
    cluster.request("DELETE", f"/api/v1/nodes/{NODE}")  # other modules count the cluster's nodes
    assert not [e for e in op.errors() if "Traceback" in e], op.tail()


@pytest.fixture
def ns(cluster: ControlPlane, billed: OperatorProcess) -> Iterator[Kube]:
    yield from namespace(cluster, billed)


def run(name: str, tag: str | None) -> dict[str, Any]:
    body = pinned(name, NODE)
    if tag is not None:
        body["metadata"]["annotations"] = {"scriptrun.dev/billing-tag": tag}
    return body


def test_tagged_runs_get_what_the_provider_billed(ns: Kube, ce: CostExplorer, billed: OperatorProcess) -> None:
    runs = {"shared-a": SHARED, "shared-b": SHARED, "unbilled": UNBILLED, "plain": None}
    for name, tag in runs.items():
        ns.apply(run(name, tag))
    for name in runs:
        ns.wait(f"{name}'s pod", lambda name=name: ns.get("pod", f"{name}-a1"))
    for name in runs:
        ns.patch("pod", f"{name}-a1", {"metadata": {"annotations": {EXIT: "0"}}})
    for name in runs:
        assert ns.wait_phase(name, "Succeeded")["cost"]["amount"]

    def actual(name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = ns.run_status(name).get("cost", {}).get("actual")
        return found

    records = {
        name: ns.wait(f"{name}'s actual cost", lambda name=name: actual(name), timeout=30)
        for name in runs
        if runs[name]
    }
    for name in ("shared-a", "shared-b"):
        status = ns.run_status(name)
        record = records[name]
        completed = clock.parse(status["completionTime"])
        started = clock.parse(status["startTime"])
        assert completed is not None and started is not None
        assert record == {
            "amount": "1.2345",
            "currency": "USD",
            "source": "aws-cost-explorer",
            "at": record["at"],
            "tag": f"{TAG_KEY}={SHARED}",
            "periodStart": records["shared-a"]["periodStart"],
            "periodEnd": records["shared-a"]["periodEnd"],
            "runsSharing": 2,
            "note": f"the spend of the capacity tagged {TAG_KEY}={SHARED}, shared by 2 runs (not split)",
        }
        assert record["periodStart"] <= started.date().isoformat()
        assert record["periodEnd"] >= (completed.date() + timedelta(days=1)).isoformat()
        assert status["cost"]["amount"] and status["cost"]["source"] == "default"  # the estimate stays beside it
    zero = records["unbilled"]
    assert zero["amount"] == "0" and zero["runsSharing"] == 1
    assert zero["note"] == f"no spend tagged {TAG_KEY}={UNBILLED}: is the tag activated as a cost allocation tag?"

    # what the operator asked Cost Explorer
    asked = list(ce.requests)
    assert asked, "no request reached the Cost Explorer stand-in"
    for request in asked:
        assert request["Granularity"] == "DAILY" and request["Metrics"] == ["UnblendedCost"]
        assert request["GroupBy"] == [{"Type": "TAG", "Key": TAG_KEY}]
        assert request["Filter"]["Tags"]["Key"] == TAG_KEY
        assert set(request["Filter"]["Tags"]["Values"]) <= {SHARED, UNBILLED}
    assert {v for r in asked for v in r["Filter"]["Tags"]["Values"]} == {SHARED, UNBILLED}

    # reconciled runs are not asked about again; the run without the annotation never gets a record
    before = len(ce.requests)
    time.sleep(4.5)  # two more passes
    assert len(ce.requests) == before
    assert "actual" not in ns.run_status("plain")["cost"]
    assert "billing reconciliation on: aws-cost-explorer, tag scriptrun-run" in billed.log.read_text(errors="replace")

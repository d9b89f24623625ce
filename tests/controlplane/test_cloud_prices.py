"""The operator asking the clouds' price APIs: an operator with SCRIPTRUN_PRICE_PROVIDERS=aws,azure,gcp
whose real clients (boto3, urllib, Google's CloudCatalogClient) are pointed, by their documented
endpoint settings, at one local server that answers as the AWS Price List API (JSON 1.1), Azure's
Retail Prices API and the Cloud Billing Catalog (REST) do. Runs on kwok nodes shaped like an AWS
m5.large, an Azure Standard_D4s_v5 spot node and a GCP n2-standard-4 are priced from those answers,
to the cent, with the source and the SKU or meter in their status; each API is asked once.

The answers are absurd prices (tens of thousands an hour) so runs of seconds cost dollars. There
is no cloud here: the server is the stand-in, speaking each API's wire format with payloads shaped
like the real ones (tests/unit/test_pricing_*.py build them)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.controlplane.test_cost import EXIT, NODES, TAINT, by_hand, finish_on_each_node, pinned, split
from tests.support.controlplane import ControlPlane
from tests.support.kube import Kube
from tests.support.operator import OperatorProcess, namespace, own_operator
from tests.unit.test_pricing_aws import product
from tests.unit.test_pricing_azure import meter, page
from tests.unit.test_pricing_gcp import sku

AZURE_SPOT_HOURLY = "576000.0"  # Standard_D4s_v5 spot: 4 vCPU, 16 GiB
AWS_HOURLY = "36000.0000000000"  # m5.large: 2 vCPU, 8 GiB
GCP_CORE, GCP_RAM = "360000", "36000"  # n2 in us-central1, a core-hour and a GiB-hour
CATALOGUE = [
    sku("CF4E-A0C7-E3BF", "N2 Instance Core running in Americas", 0, group="CPU", units=GCP_CORE),
    sku("F449-33EC-A5EF", "N2 Instance Ram running in Americas", 0, group="RAM", units=GCP_RAM),
    sku("0C9A-1A2B-3C4D", "Commitment v1: N2 Cpu in Americas for 1 Year", 0, group="CPU", usage="Commit1Yr"),
]


class Clouds(BaseHTTPRequestHandler):
    """The three price APIs on one port, by path and header; every request is recorded."""

    seen: list[tuple[str, str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, body: dict[str, Any], content_type: str = "application/json") -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/api/retail/prices":  # Azure
            self.seen.append(("azure", self.path))
            spot = meter("D4s v5 Spot", "Virtual Machines Dsv5 Series", 0.0, meter_id="3e3d7ab1-2b66-5d6e-9da0")
            spot["retailPrice"] = spot["unitPrice"] = "PRICE"
            text = json.dumps(page([spot])).replace('"PRICE"', AZURE_SPOT_HOURLY)
            data = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == "/v1/services/6F81-5844-456A/skus":  # GCP
            self.seen.append(("gcp", self.path))
            self._reply({"skus": CATALOGUE, "nextPageToken": ""})
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        target = self.headers.get("X-Amz-Target", "")
        if target == "AWSPriceListService.GetProducts":
            self.seen.append(("aws", json.dumps(request, sort_keys=True)))
            items = (
                [product(usd=AWS_HOURLY)]
                if {"Field": "instanceType", "Type": "TERM_MATCH", "Value": "m5.large"}
                in [dict(sorted(f.items())) for f in request.get("Filters", [])]
                else []
            )
            self._reply({"FormatVersion": "aws_v1", "PriceList": items}, "application/x-amz-json-1.1")
        elif self.path.startswith("/token"):  # Google's token endpoint, for the service account
            self._reply({"access_token": "fake", "expires_in": 3600, "token_type": "Bearer"})
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def clouds() -> Iterator[str]:
    Clouds.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Clouds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def clouded(cluster: ControlPlane, operator: OperatorProcess, clouds: str) -> Iterator[OperatorProcess]:
    existing = {n["metadata"]["name"] for n in cluster.request("GET", "/api/v1/nodes")["items"]}
    for name, shape in NODES.items():
        if name not in existing:
            cluster.create_node(name, taints=[TAINT], **shape)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    account = cluster.workdir / "gcp-service-account.json"
    account.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "scriptrun-test",
                "private_key_id": "0" * 40,
                "private_key": pem,
                "client_email": "scriptrun@scriptrun-test.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": f"{clouds}/token",
            }
        )
    )
    env = {
        "SCRIPTRUN_PRICE_PROVIDERS": "aws,azure,gcp",
        # each client's own endpoint setting (boto3's, ours for Azure's plain GET, the Google client's)
        "AWS_ENDPOINT_URL_PRICING": clouds,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "SCRIPTRUN_AZURE_PRICES_URL": f"{clouds}/api/retail/prices",
        "SCRIPTRUN_GCP_CATALOG_ENDPOINT": clouds,
        "GOOGLE_APPLICATION_CREDENTIALS": str(account),
        "GOOGLE_CLOUD_PROJECT": "scriptrun-test",
    }
    op = own_operator(cluster, operator, env, "operator-clouds.log")
    yield op
    op.stop()
    for name in NODES:
        cluster.request("DELETE", f"/api/v1/nodes/{name}")
    assert not [e for e in op.errors() if "Traceback" in e], op.tail()


@pytest.fixture
def ns(cluster: ControlPlane, clouded: OperatorProcess) -> Iterator[Kube]:
    yield from namespace(cluster, clouded)


def expected(node: str, status: dict[str, Any]) -> Decimal:
    """By hand, with the rates the stand-in APIs answered for the node."""
    if node == "cost-aws-m5":
        cpu, ram = split(Decimal(AWS_HOURLY), 2, 8)
    elif node == "cost-azure-spot":
        cpu, ram = split(Decimal(AZURE_SPOT_HOURLY), 4, 16)
    else:
        cpu, ram = Decimal(GCP_CORE), Decimal(GCP_RAM)
    return by_hand(status, cpu, ram)


def test_each_cloud_api_prices_its_own_node(ns: Kube) -> None:
    finish_on_each_node(ns)
    details = {}
    for node in NODES:
        status = ns.wait_phase(node, "Succeeded")
        cost = status["cost"]
        want, got = expected(node, status), Decimal(cost["amount"])
        assert want > 1 and round(got, 2) == round(want, 2), (node, got, want)
        assert abs(got - want) <= Decimal("0.000002"), (node, got, want)
        assert "note" not in cost, cost  # no fallback
        details[node] = (cost["source"], cost["priceDetail"])
    assert details["cost-aws-m5"] == ("aws", "sku 2WZ3VX2DN4NW4QHV (m5.large us-east-1 Linux on-demand)")
    assert details["cost-azure-spot"][0] == "azure" and "D4s v5 Spot" in details["cost-azure-spot"][1]
    assert details["cost-gcp-n2"][0] == "gcp" and "CF4E-A0C7-E3BF + F449-33EC-A5EF" in details["cost-gcp-n2"][1]
    # each API asked once (then the cache answers), with the query each documents
    asked = [api for api, _ in Clouds.seen]
    assert sorted(asked) == ["aws", "azure", "gcp"], Clouds.seen
    azure = next(path for api, path in Clouds.seen if api == "azure")
    query = parse_qs(urlsplit(azure).query)
    assert query["currencyCode"] == ["USD"]  # top level: inside $filter Azure silently answers nothing
    assert query["$filter"] == [
        "serviceName eq 'Virtual Machines' and armRegionName eq 'westeurope' and "
        "armSkuName eq 'Standard_D4s_v5' and priceType eq 'Consumption'"
    ]
    aws = json.loads(next(body for api, body in Clouds.seen if api == "aws"))
    assert aws["ServiceCode"] == "AmazonEC2"
    assert {"Field": "regionCode", "Type": "TERM_MATCH", "Value": "us-east-1"} in aws["Filters"]

    # a second run on the AWS node: priced from the cache
    ns.apply(pinned("again", "cost-aws-m5"))
    ns.wait("again running", lambda: ns.run_status("again").get("phase") == "Running")
    ns.patch("pod", "again-a1", {"metadata": {"annotations": {EXIT: "0"}}})
    assert ns.wait_phase("again", "Succeeded")["cost"]["source"] == "aws"
    assert [api for api, _ in Clouds.seen].count("aws") == 1

"""GCP prices from the Cloud Billing Catalog: the real `CloudCatalogClient` (REST transport, anonymous
credentials) against a local HTTP server that answers like cloudbilling.googleapis.com, two pages of
real-looking Compute Engine SKUs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials

from scriptrun.cost.nodes import node_facts
from scriptrun.cost.prices import StaticPrices, quote
from scriptrun.pricing.cache import CachedSource, PriceKey, RetryAfter
from scriptrun.pricing.gcp import GcpPrices, family_of, retry_after, sku_family

NOW = datetime(2026, 11, 22, tzinfo=UTC)
AMERICAS = ["us-central1", "us-east1", "us-west1"]
EMEA = ["europe-west1", "europe-west4"]


def sku(
    sku_id: str,
    description: str,
    nanos: int,
    *,
    group: str,
    usage: str = "OnDemand",
    regions: list[str] | None = None,
    unit: str | None = None,
    units: str = "0",
    currency: str = "USD",
    family: str = "Compute",
) -> dict[str, Any]:
    """A SKU exactly as the REST API returns it (camelCase JSON, int64 as a string)."""
    unit = unit or ("GiBy.h" if group == "RAM" or "Ram" in description else "h")
    return {
        "name": f"services/6F81-5844-456A/skus/{sku_id}",
        "skuId": sku_id,
        "description": description,
        "category": {
            "serviceDisplayName": "Compute Engine",
            "resourceFamily": family,
            "resourceGroup": group,
            "usageType": usage,
        },
        "serviceRegions": regions or ["us-central1"],
        "pricingInfo": [
            {
                "effectiveTime": "2026-11-21T12:07:30.185Z",
                "pricingExpression": {
                    "usageUnit": unit,
                    "displayQuantity": 1,
                    "tieredRates": [
                        {"startUsageAmount": 0, "unitPrice": {"currencyCode": currency, "units": units, "nanos": nanos}}
                    ],
                    "usageUnitDescription": "hour" if unit == "h" else "gibibyte hour",
                    "baseUnit": "s" if unit == "h" else "By.s",
                    "baseUnitDescription": "second" if unit == "h" else "byte second",
                    "baseUnitConversionFactor": 3600 if unit == "h" else 3865470566400,
                },
                "aggregationInfo": {
                    "aggregationLevel": "ACCOUNT",
                    "aggregationInterval": "DAILY",
                    "aggregationCount": 1,
                },
                "currencyConversionRate": 1,
            }
        ],
        "serviceProviderName": "Google",
        "geoTaxonomy": {"type": "MULTI_REGIONAL", "regions": regions or ["us-central1"]},
    }


PAGE_1 = [
    sku("CF4E-A0C7-E3BF", "N2 Instance Core running in Americas", 31611000, group="CPU", regions=AMERICAS),
    sku("F449-33EC-A5EF", "N2 Instance Ram running in Americas", 4237000, group="RAM", regions=AMERICAS),
    sku(
        "BDB2-3CAE-4F6E",
        "Spot Preemptible N2 Instance Core running in Americas",
        7652000,
        group="CPU",
        usage="Preemptible",
        regions=AMERICAS,
    ),
    sku(
        "E65D-79C6-2C53",
        "Spot Preemptible N2 Instance Ram running in Americas",
        1026000,
        group="RAM",
        usage="Preemptible",
        regions=AMERICAS,
    ),
    # look-alikes that must not be taken for the N2 rates
    sku("D6B5-7CB9-8C69", "N2 Custom Instance Core running in Americas", 33191000, group="CPU", regions=AMERICAS),
    sku("6B3E-2DA8-6BB0", "N2 Custom Instance Ram running in Americas", 4449000, group="RAM", regions=AMERICAS),
    sku("0F2C-0A5D-8D4E", "N2 Custom Extended Instance Ram running in Americas", 9550000, group="RAM"),
    sku("A8D1-4F2B-3E77", "N2 Sole Tenancy Instance Core running in Americas", 34772000, group="CPU"),
    sku("9D7C-5E1A-2B3F", "N2 Sole Tenancy Instance Ram running in Americas", 4661000, group="RAM"),
    sku("5A1B-8E0F-A1C2", "Commitment v1: N2 Cpu in Americas for 1 Year", 19915000, group="CPU", usage="Commit1Yr"),
    sku("5A1B-8E0F-A1C3", "Commitment v1: N2 Ram in Americas for 1 Year", 2669000, group="RAM", usage="Commit1Yr"),
    sku(
        "C2C2-0001-0003",
        "Commitment: Compute optimized Core running in Americas for 1 Year",
        21030000,
        group="CPU",
        usage="Commit1Yr",
    ),
    sku("0A1B-2C3D-4E5F", "N2D AMD Instance Core running in Americas", 27502000, group="CPU", regions=AMERICAS),
    sku("0A1B-2C3D-4E60", "N2D AMD Instance Ram running in Americas", 3686000, group="RAM", regions=AMERICAS),
    sku("1D6E-3C2B-9F01", "Nvidia Tesla T4 GPU running in Americas", 350000000, group="GPU"),
    sku("9E4C-5A0D-0D23", "Balanced PD Capacity in Americas", 100000000, group="SSD", unit="GiBy.mo"),
]
PAGE_2 = [
    sku("CF4E-A0C7-0001", "N2 Instance Core running in Netherlands", 34800000, group="CPU", regions=["europe-west4"]),
    sku("F449-33EC-0001", "N2 Instance Ram running in Netherlands", 4664000, group="RAM", regions=["europe-west4"]),
    sku("4B9A-1C5D-9E2F", "E2 Instance Core running in Americas", 21811590, group="CPU", regions=AMERICAS),
    sku("5C0B-2D6E-AF30", "E2 Instance Ram running in Americas", 2923530, group="RAM", regions=AMERICAS),
    sku("2E25-2A1A-5F02", "N1 Predefined Instance Core running in Americas", 31611000, group="N1Standard"),
    sku("5E5E-4B8A-1B2C", "N1 Predefined Instance Ram running in Americas", 4237000, group="N1Standard"),
    sku(
        "1F1F-7C3A-6D2E",
        "Spot Preemptible N1 Predefined Instance Core running in Americas",
        6655000,
        group="N1Standard",
        usage="Preemptible",
    ),
    sku(
        "1F1F-7C3A-6D2F",
        "Spot Preemptible N1 Predefined Instance Ram running in Americas",
        892000,
        group="N1Standard",
        usage="Preemptible",
    ),
    sku("3C3C-0000-0001", "C3 Instance Core running in EMEA", 37790000, group="CPU", regions=EMEA),
    sku("3C3C-0000-0002", "C3 Instance Ram running in EMEA", 5065000, group="RAM", regions=EMEA),
    sku("C2C2-0000-0001", "Compute optimized Core running in Americas", 33982000, group="CPU"),
    sku("C2C2-0000-0002", "Compute optimized Ram running in Americas", 4555000, group="RAM"),
    sku("7F1A-0000-0001", "Micro Instance with burstable CPU running in Americas", 7600000, group="F1Micro"),
]


@dataclass
class FakeCatalog:
    """What the fake API serves and what it was asked."""

    pages: list[list[dict[str, Any]]]
    requests: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        self.requests.append((path, query))
        if self.status != 200:
            return self.status, {"error": {"code": self.status, "message": "backend says no", "status": "UNAVAILABLE"}}
        if path != "/v1/services/6F81-5844-456A/skus":
            return 404, {"error": {"code": 404, "message": f"no {path}", "status": "NOT_FOUND"}}
        page = int(query.get("pageToken", ["0"])[0] or 0)
        last = page == len(self.pages) - 1
        # the real API ends with an empty token; a missing one would also do, a stale one would loop
        return 200, {"skus": self.pages[page], "nextPageToken": "" if last else str(page + 1)}


@pytest.fixture
def catalog() -> Iterator[FakeCatalog]:
    fake = FakeCatalog([PAGE_1, PAGE_2])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            status, body = fake.answer(url.path, parse_qs(url.query))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in fake.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def prices(catalog: FakeCatalog, **kwargs: Any) -> GcpPrices:
    return GcpPrices(endpoint=catalog.endpoint, credentials=AnonymousCredentials(), timeout=5, **kwargs)


def test_n2_on_demand_and_spot_rates_are_exact(catalog: FakeCatalog) -> None:
    gcp = prices(catalog)
    assert gcp.name == "gcp"
    on_demand = gcp.lookup(PriceKey("us-central1", "n2-standard-4", spot=False))
    assert on_demand is not None and on_demand.rates is not None and on_demand.hourly is None
    assert on_demand.currency == on_demand.rates.currency == "USD"
    assert on_demand.rates.cpu_core_hour == Decimal("0.031611")
    assert on_demand.rates.ram_gib_hour == Decimal("0.004237")
    assert on_demand.detail == "skus CF4E-A0C7-E3BF + F449-33EC-A5EF (N2 Instance Core / N2 Instance Ram)"
    spot = gcp.lookup(PriceKey("us-east1", "n2-highmem-8", spot=True))
    assert spot is not None and spot.rates is not None
    assert (spot.rates.cpu_core_hour, spot.rates.ram_gib_hour) == (Decimal("0.007652"), Decimal("0.001026"))
    assert spot.detail is not None and "BDB2-3CAE-4F6E + E65D-79C6-2C53" in spot.detail
    # the other region's SKUs are on the second page
    eu = gcp.lookup(PriceKey("europe-west4", "n2-standard-2", spot=False))
    assert eu is not None and eu.rates is not None and eu.rates.cpu_core_hour == Decimal("0.0348")
    # one download of two pages answered all three
    assert [path for path, _ in catalog.requests] == ["/v1/services/6F81-5844-456A/skus"] * 2
    first, second = (query for _, query in catalog.requests)
    assert first["currencyCode"] == ["USD"] and first["pageSize"] == ["5000"] and "pageToken" not in first
    assert second["pageToken"] == ["1"]


@pytest.mark.parametrize(
    ("instance_type", "spot", "cpu", "ram", "skus"),
    [
        ("n1-standard-2", False, "0.031611", "0.004237", "2E25-2A1A-5F02 + 5E5E-4B8A-1B2C"),
        ("n1-highcpu-16", True, "0.006655", "0.000892", "1F1F-7C3A-6D2E + 1F1F-7C3A-6D2F"),
        ("e2-medium", False, "0.02181159", "0.00292353", "4B9A-1C5D-9E2F + 5C0B-2D6E-AF30"),
        ("n2d-standard-8", False, "0.027502", "0.003686", "0A1B-2C3D-4E5F + 0A1B-2C3D-4E60"),
        ("c2-standard-4", False, "0.033982", "0.004555", "C2C2-0000-0001 + C2C2-0000-0002"),
    ],
)
def test_families_from_the_machine_type(
    catalog: FakeCatalog, instance_type: str, spot: bool, cpu: str, ram: str, skus: str
) -> None:
    got = prices(catalog).lookup(PriceKey("us-central1", instance_type, spot))
    assert got is not None and got.rates is not None and got.detail is not None
    assert (got.rates.cpu_core_hour, got.rates.ram_gib_hour) == (Decimal(cpu), Decimal(ram))
    assert got.detail.startswith(f"skus {skus} (")


@pytest.mark.parametrize(
    ("region", "instance_type", "spot"),
    [
        ("us-central1", "z9-standard-4", False),  # no such family
        ("us-central1", "n2-custom-4-16384", False),  # custom: priced by the custom SKUs, not matched
        ("us-central1", "custom-2-4096", False),
        ("us-central1", "f1-micro", False),  # priced per instance, not per core
        ("us-central1", "c3-standard-8", False),  # C3 only in EMEA here
        ("asia-east1", "n2-standard-4", False),  # region not served
        ("europe-west4", "n2-standard-4", True),  # no spot SKU there
        ("us-central1", "c2-standard-4", True),  # commitments are not spot (nor on-demand)
    ],
)
def test_no_sku_is_unknown(catalog: FakeCatalog, region: str, instance_type: str, spot: bool) -> None:
    assert prices(catalog).lookup(PriceKey(region, instance_type, spot)) is None


def test_c3_in_its_region(catalog: FakeCatalog) -> None:
    got = prices(catalog).lookup(PriceKey("europe-west1", "c3-highcpu-8", False))
    assert got is not None and got.rates is not None and got.rates.cpu_core_hour == Decimal("0.03779")


def test_the_catalogue_is_downloaded_once_and_again_after_its_ttl(catalog: FakeCatalog) -> None:
    clock = Clock()
    gcp = prices(catalog, catalogue_ttl=3600, clock=clock)
    assert gcp.lookup(PriceKey("us-central1", "n2-standard-4", False)) is not None
    assert gcp.lookup(PriceKey("us-central1", "e2-standard-2", True)) is None  # no E2 spot here: still no call
    clock.now += 3599
    assert gcp.lookup(PriceKey("us-west1", "n1-standard-1", False)) is None
    assert len(catalog.requests) == 2 and gcp.downloads == 1
    catalog.pages = [[*PAGE_1[:2]], [{**PAGE_1[0], "skuId": "NEW0-0000-0001"} | _nanos(PAGE_1[0], 30000000)]]
    clock.now += 1
    with pytest.raises(ValueError, match=r"several N2 cpu prices in us-central1: .*CF4E-A0C7-E3BF.*NEW0-0000-0001"):
        gcp.lookup(PriceKey("us-central1", "n2-standard-4", False))
    assert len(catalog.requests) == 4 and gcp.downloads == 2


def _nanos(item: dict[str, Any], nanos: int) -> dict[str, Any]:
    info = json.loads(json.dumps(item["pricingInfo"]))
    info[0]["pricingExpression"]["tieredRates"][0]["unitPrice"]["nanos"] = nanos
    return {"pricingInfo": info}


def test_duplicate_skus_with_one_price_are_fine(catalog: FakeCatalog) -> None:
    catalog.pages = [[*PAGE_1[:2], {**PAGE_1[0], "skuId": "AAAA-0000-0001"}]]
    got = prices(catalog).lookup(PriceKey("us-central1", "n2-standard-4", False))
    assert got is not None and got.detail is not None and got.detail.startswith("skus AAAA-0000-0001 + ")


def test_the_currency_is_asked_for(catalog: FakeCatalog) -> None:
    catalog.pages = [
        [
            sku("CF4E-A0C7-E3BF", "N2 Instance Core running in Americas", 29010000, group="CPU", currency="EUR"),
            sku("F449-33EC-A5EF", "N2 Instance Ram running in Americas", 3889000, group="RAM", currency="EUR"),
        ]
    ]
    got = prices(catalog, currency="EUR").lookup(PriceKey("us-central1", "n2-standard-4", False))
    assert catalog.requests[0][1]["currencyCode"] == ["EUR"]
    assert got is not None and got.rates is not None and got.currency == got.rates.currency == "EUR"
    assert got.rates.cpu_core_hour == Decimal("0.02901")


def test_tiers_units_and_currency_are_checked(catalog: FakeCatalog) -> None:
    core = sku("CF4E-A0C7-E3BF", "N2 Instance Core running in Americas", 31611000, group="CPU", units="1")
    core["pricingInfo"][0]["pricingExpression"]["tieredRates"] = [
        {"startUsageAmount": 100, "unitPrice": {"currencyCode": "USD", "units": "0", "nanos": 20000000}},
        {"startUsageAmount": 200, "unitPrice": {"currencyCode": "USD", "units": "0", "nanos": 10000000}},
    ]
    catalog.pages = [[core, PAGE_1[1]]]
    got = prices(catalog).lookup(PriceKey("us-central1", "n2-standard-4", False))
    assert got is not None and got.rates is not None and got.rates.cpu_core_hour == Decimal("0.01")
    catalog.pages = [
        [PAGE_1[0], sku("F449-33EC-A5EF", "N2 Instance Ram running in Americas", 1, group="RAM", unit="GBy.h")],
        PAGE_2,
    ]
    gcp = prices(catalog)
    with pytest.raises(ValueError, match=r"F449-33EC-A5EF .* priced per 'GBy.h', expected 'GiBy.h'"):
        gcp.lookup(PriceKey("us-central1", "n2-standard-4", False))
    assert gcp.lookup(PriceKey("us-central1", "e2-standard-4", False)) is not None  # only N2 is spoilt
    catalog.pages = [
        [PAGE_1[0], sku("F449-33EC-A5EF", "N2 Instance Ram running in Americas", 1, group="RAM", units="2")]
    ]
    got = prices(catalog).lookup(PriceKey("us-central1", "n2-standard-4", False))
    assert got is not None and got.rates is not None and got.rates.ram_gib_hour == Decimal("2.000000001")
    catalog.pages = [
        [PAGE_1[0], sku("F449-33EC-A5EF", "N2 Instance Ram running in Americas", 1, group="RAM", currency="EUR")]
    ]
    with pytest.raises(ValueError, match="priced in EUR, asked for USD"):
        prices(catalog).lookup(PriceKey("us-central1", "n2-standard-4", False))


def test_a_429_says_when_to_ask_again(catalog: FakeCatalog) -> None:
    catalog.status, catalog.headers = 429, {"Retry-After": "120"}
    with pytest.raises(RetryAfter) as err:
        prices(catalog).lookup(PriceKey("us-central1", "n2-standard-4", False))
    assert err.value.seconds == 120 and isinstance(err.value.__cause__, google_exceptions.TooManyRequests)
    catalog.headers = {}
    with pytest.raises(RetryAfter) as err:
        prices(catalog).lookup(PriceKey("us-central1", "n2-standard-4", False))
    assert err.value.seconds == 60
    assert len(catalog.requests) == 2  # not retried


def test_retry_after_as_a_date() -> None:
    class Response:
        headers = {"Retry-After": "Sun, 22 Nov 2026 00:00:30 GMT"}

    err = google_exceptions.TooManyRequests("slow down", response=Response())
    assert retry_after(err, now=NOW) == 30
    assert retry_after(google_exceptions.TooManyRequests("slow down")) == 60


def test_a_500_fails(catalog: FakeCatalog) -> None:
    catalog.status = 500
    gcp = prices(catalog)
    with pytest.raises(google_exceptions.InternalServerError, match="backend says no"):
        gcp.lookup(PriceKey("us-central1", "n2-standard-4", False))
    assert len(catalog.requests) == 1
    catalog.status = 200  # a failed download is not kept: the next lookup asks again
    assert gcp.lookup(PriceKey("us-central1", "n2-standard-4", False)) is not None


def test_family_and_sku_parsing() -> None:
    assert [
        family_of(t) for t in ("n2-standard-4", "e2-medium", "n2d-highmem-2", "c3-highcpu-8", "t2d-standard-1")
    ] == [
        "N2",
        "E2",
        "N2D",
        "C3",
        "T2D",
    ]
    assert [family_of(t) for t in ("m1-ultramem-40", "c4a-standard-4", "custom-2-4096", "e2-custom-2-4096")] == [
        "M1",
        "C4A",
        None,
        None,
    ]
    assert sku_family("Memory-optimized Instance Core running in Americas") == ("M1", "cpu")
    assert sku_family("T2A Arm Instance Ram running in Americas") == ("T2A", "ram")
    assert sku_family("Memory Optimized Upgrade Premium for Memory-optimized Instance Core running in Americas") is None
    assert sku_family("Spot Preemptible E2 Custom Instance Core running in Paris") is None
    assert sku_family("Sole Tenancy Instance RAM running in Jakarta") is None


GKE_SPOT = node_facts(
    "gke-1",
    "gce://proj/us-central1-a/gke-1",
    {
        "topology.kubernetes.io/region": "us-central1",
        "node.kubernetes.io/instance-type": "n2-standard-4",
        "cloud.google.com/gke-spot": "true",
    },
    {"cpu": Decimal(4), "memory": Decimal(16 * 1024**3)},
)


def test_a_gke_spot_node_is_quoted_through_the_cache(catalog: FakeCatalog) -> None:
    source = CachedSource(prices(catalog), "gcp")
    assert source.serves(GKE_SPOT)
    got = quote([source], GKE_SPOT, NOW)
    assert got.source == "gcp" and got.note is None and got.at == NOW
    assert (got.rates.cpu_core_hour, got.rates.ram_gib_hour) == (Decimal("0.007652"), Decimal("0.001026"))
    assert got.detail == (
        "skus BDB2-3CAE-4F6E + E65D-79C6-2C53 (Spot Preemptible N2 Instance Core / Spot Preemptible N2 Instance Ram)"
    )


def test_a_failing_api_falls_back_and_says_why(catalog: FakeCatalog) -> None:
    catalog.status = 500
    table = StaticPrices.parse({"currency": "USD", "spot": {"default": {"cpu": "0.01", "memory": "0.001"}}})
    got = quote([CachedSource(prices(catalog), "gcp"), table], GKE_SPOT, NOW)
    assert got.source == "static" and got.note is not None
    assert got.note.startswith("gcp: InternalServerError: 500 GET http://127.0.0.1:") and "backend says no" in got.note
    last = quote([CachedSource(prices(catalog), "gcp")], GKE_SPOT, NOW)
    assert last.source == "default" and last.note is not None and last.note.startswith("gcp: InternalServerError")

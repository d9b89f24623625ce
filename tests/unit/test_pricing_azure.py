"""scriptrun.pricing.azure against a real local HTTP server: the Retail Prices API over urllib, and
Cost Management through the real azure-mgmt-costmanagement client (never Azure itself)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ServiceRequestError
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

from scriptrun.cost.nodes import NodeFacts, node_facts
from scriptrun.cost.prices import PriceSource, StaticPrices, quote
from scriptrun.cost.rates import Rates
from scriptrun.pricing.azure import AzureBilling, AzureBillingError, AzurePrices, AzurePricesError
from scriptrun.pricing.billing import Spend
from scriptrun.pricing.cache import CachedSource, PriceKey, RetryAfter, Throttled

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
D4 = PriceKey("westeurope", "Standard_D4s_v5", spot=False)
D4_SPOT = PriceKey("westeurope", "Standard_D4s_v5", spot=True)
FILTER = (
    "serviceName eq 'Virtual Machines' and armRegionName eq 'westeurope' "
    "and armSkuName eq 'Standard_D4s_v5' and priceType eq 'Consumption'"
)
SCOPE = "subscriptions/00000000-0000-0000-0000-000000000001"
QUERY_PATH = f"/{SCOPE}/providers/Microsoft.CostManagement/query"
TAG = "scriptrun.dev/run"


# --- a local HTTP server that records what it was asked -------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-able, or bytes as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Server:
    url: str
    seen: list[Seen] = field(default_factory=list)
    # what to answer: a function of the request, or replies in order (the last one repeats)
    answer: Callable[[Seen], Reply] | list[Reply] = field(default_factory=lambda: [Reply(404, {"error": "no"})])

    def reply(self, seen: Seen) -> Reply:
        self.seen.append(seen)
        if callable(self.answer):
            return self.answer(seen)
        return self.answer.pop(0) if len(self.answer) > 1 else self.answer[0]


@pytest.fixture
def server() -> Iterator[Server]:
    state: list[Server] = []

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen = Seen(self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()), body)
            reply = state[0].reply(seen)
            time.sleep(reply.delay)
            data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            try:
                self.send_response(reply.status)
                for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (the timeout test)
                pass

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.append(Server(f"http://127.0.0.1:{httpd.server_address[1]}"))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield state[0]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# --- Retail Prices payloads, with the API's real field names ---------------------------------------


def meter(
    sku_name: str,
    product: str,
    price: float,
    *,
    meter_id: str,
    primary: bool = True,
    currency: str = "USD",
    region: str = "westeurope",
    arm_sku: str = "Standard_D4s_v5",
) -> dict[str, Any]:
    return {
        "currencyCode": currency,
        "tierMinimumUnits": 0.0,
        "retailPrice": price,
        "unitPrice": price,
        "armRegionName": region,
        "location": "EU West",
        "effectiveStartDate": "2023-05-01T00:00:00Z",
        "meterId": meter_id,
        "meterName": sku_name,
        "productId": "DZH318Z0CSHK",
        "skuId": f"DZH318Z0CSHK/{meter_id[:4].upper()}",
        "productName": product,
        "skuName": sku_name,
        "serviceName": "Virtual Machines",
        "serviceId": "DZH313Z7MMC8",
        "serviceFamily": "Compute",
        "unitOfMeasure": "1 Hour",
        "type": "Consumption",
        "isPrimaryMeterRegion": primary,
        "armSkuName": arm_sku,
    }


LINUX = meter("D4s v5", "Virtual Machines Dsv5 Series", 0.23, meter_id="1c1b5ef9-0f44-5b4c-9b8e-8b0f3e0c6a01")
WINDOWS = meter(
    "D4s v5", "Virtual Machines Dsv5 Series Windows", 0.414, meter_id="2d2c6fa0-1a55-5c5d-8c9f-9c1a4f1d7b02"
)
SPOT = meter("D4s v5 Spot", "Virtual Machines Dsv5 Series", 0.0461, meter_id="3e3d7ab1-2b66-5d6e-9da0-ad2b5a2e8c03")
WINDOWS_SPOT = meter(
    "D4s v5 Spot", "Virtual Machines Dsv5 Series Windows", 0.1303, meter_id="4f4e8bc2-3c77-5e7f-aeb1-be3c6b3f9d04"
)
LOW_PRIORITY = meter(
    "D4s v5 Low Priority", "Virtual Machines Dsv5 Series", 0.046, meter_id="5a5f9cd3-4d88-5f80-bfc2-cf4d7c4a0e05"
)
# the same meter listed again for a non-primary region, at another price: ignored
LINUX_SECONDARY = meter(
    "D4s v5", "Virtual Machines Dsv5 Series", 0.25, meter_id="6b6a0de4-5e99-5091-c0d3-d05e8d5b1f06", primary=False
)
ALL_METERS = [WINDOWS, LOW_PRIORITY, LINUX_SECONDARY, SPOT, LINUX, WINDOWS_SPOT]


def page(items: list[dict[str, Any]], next_link: str | None = None, currency: str = "USD") -> dict[str, Any]:
    return {
        "BillingCurrency": currency,
        "CustomerEntityId": "Default",
        "CustomerEntityType": "Retail",
        "Items": items,
        "NextPageLink": next_link,
        "Count": len(items),
    }


def prices(server: Server, **kwargs: Any) -> AzurePrices:
    return AzurePrices(base_url=server.url + "/api/retail/prices", **kwargs)


# --- AzurePrices -----------------------------------------------------------------------------------


def test_the_linux_on_demand_meter_and_the_exact_query(server: Server) -> None:
    server.answer = [Reply(body=page(ALL_METERS))]

    price = prices(server).lookup(D4)

    assert price is not None
    assert (price.currency, price.hourly, price.rates) == ("USD", Decimal("0.23"), None)
    assert isinstance(price.hourly, Decimal)
    assert price.detail == f"meter {LINUX['meterId']} (D4s v5, Virtual Machines Dsv5 Series)"
    [seen] = server.seen
    assert (seen.method, seen.path) == ("GET", "/api/retail/prices")
    # currencyCode is a parameter of its own, not a term of $filter (there it silently matches nothing)
    assert seen.query == {
        "api-version": ["2023-01-01-preview"],
        "currencyCode": ["USD"],
        "$filter": [FILTER],
    }
    assert "currencyCode" not in seen.query["$filter"][0]


def test_spot_is_the_spot_meter_never_low_priority(server: Server) -> None:
    server.answer = [Reply(body=page(ALL_METERS))]

    price = prices(server).lookup(D4_SPOT)

    assert price is not None
    assert price.hourly == Decimal("0.0461")
    assert price.detail == f"meter {SPOT['meterId']} (D4s v5 Spot, Virtual Machines Dsv5 Series)"


def test_pages_are_followed_through_next_page_link(server: Server) -> None:
    # three pages of two meters: the primary Linux meter is on the last one, after a non-primary one
    def answer(seen: Seen) -> Reply:
        skip = int(seen.query.get("$skip", ["0"])[0])
        next_link = f"{server.url}/api/retail/prices?currencyCode=USD&$skip={skip + 2}" if skip < 4 else None
        return Reply(body=page(ALL_METERS[skip : skip + 2], next_link))

    server.answer = answer

    price = prices(server).lookup(D4)

    assert price is not None and price.hourly == Decimal("0.23")
    assert [s.query.get("$skip") for s in server.seen] == [None, ["2"], ["4"]]
    assert server.seen[1].path == "/api/retail/prices"
    assert server.seen[1].query["currencyCode"] == ["USD"]


def test_too_many_pages_is_an_error(server: Server) -> None:
    server.answer = lambda seen: Reply(body=page([], f"{server.url}/api/retail/prices?$skip=1"))

    with pytest.raises(AzurePricesError, match="more than 3 pages"):
        prices(server, max_pages=3).lookup(D4)
    assert len(server.seen) == 3


def test_an_unknown_sku_is_none(server: Server) -> None:
    server.answer = [Reply(body=page([]))]

    assert prices(server).lookup(PriceKey("westeurope", "Standard_Nope_v9", spot=False)) is None
    assert "armSkuName eq 'Standard_Nope_v9'" in server.seen[0].query["$filter"][0]


def test_windows_and_low_priority_only_is_none(server: Server) -> None:
    server.answer = [Reply(body=page([WINDOWS, LOW_PRIORITY, WINDOWS_SPOT]))]

    assert prices(server).lookup(D4) is None
    assert prices(server).lookup(D4_SPOT) is None


def test_several_prices_name_the_meters(server: Server) -> None:
    other = meter("D4s v5", "Virtual Machines Dsv5 Series", 0.24, meter_id="7c7b1ef5-0000-0000-0000-000000000007")
    server.answer = [Reply(body=page([LINUX, other]))]

    with pytest.raises(ValueError, match="2 prices") as err:
        prices(server).lookup(D4)
    assert LINUX["meterId"] in str(err.value) and other["meterId"] in str(err.value)


def test_eur(server: Server) -> None:
    euro = meter("D4s v5", "Virtual Machines Dsv5 Series", 0.2118, meter_id=LINUX["meterId"], currency="EUR")
    server.answer = [Reply(body=page([euro], currency="EUR"))]

    price = prices(server, currency="EUR").lookup(D4)

    assert price is not None
    assert (price.currency, price.hourly) == ("EUR", Decimal("0.2118"))
    assert server.seen[0].query["currencyCode"] == ["EUR"]


def test_a_price_in_another_currency_is_an_error(server: Server) -> None:
    server.answer = [Reply(body=page([LINUX]))]

    with pytest.raises(ValueError, match="asked Azure for EUR"):
        prices(server, currency="EUR").lookup(D4)


def test_429_says_retry_after(server: Server) -> None:
    server.answer = [Reply(429, {"Error": "Too many requests"}, {"Retry-After": "7"})]

    with pytest.raises(RetryAfter) as err:
        prices(server).lookup(D4)
    assert err.value.seconds == 7
    assert "HTTP 429" in str(err.value) and "?" not in str(err.value)


def test_503_without_retry_after_waits_a_minute(server: Server) -> None:
    server.answer = [Reply(503, {"Error": "busy"})]

    with pytest.raises(RetryAfter) as err:
        prices(server).lookup(D4)
    assert err.value.seconds == 60


def test_other_http_errors_name_the_url_and_status(server: Server) -> None:
    server.answer = [Reply(500, {"Error": "boom"})]

    with pytest.raises(AzurePricesError) as err:
        prices(server).lookup(D4)
    assert str(err.value).startswith(f"GET {server.url}/api/retail/prices (Standard_D4s_v5 in westeurope): HTTP 500")
    assert "$filter" not in str(err.value)


def test_not_json(server: Server) -> None:
    server.answer = [Reply(body=b"<html>gateway</html>")]

    with pytest.raises(AzurePricesError, match="not JSON"):
        prices(server).lookup(D4)


def test_a_slow_server_times_out(server: Server) -> None:
    server.answer = [Reply(body=page(ALL_METERS), delay=0.5)]
    started = time.monotonic()

    with pytest.raises(TimeoutError, match=r"no answer within 0\.1 s"):
        prices(server, timeout=0.1).lookup(D4)
    assert time.monotonic() - started < 0.45


# --- through the cache and the quote ---------------------------------------------------------------

PROVIDER_ID = "azure:///subscriptions/x/resourceGroups/mc/providers/Microsoft.Compute/virtualMachineScaleSets/aks-spot/virtualMachines/0"
CAPACITY = {"cpu": Decimal(4), "memory": Decimal(16 * 1024**3)}


def aks_node(spot: bool) -> NodeFacts:
    labels = {"topology.kubernetes.io/region": "westeurope", "node.kubernetes.io/instance-type": "Standard_D4s_v5"}
    if spot:
        labels["kubernetes.azure.com/scalesetpriority"] = "spot"
    return node_facts("aks-spot-1" if spot else "aks-nodes-1", PROVIDER_ID, labels, CAPACITY)


def node_hour(node: NodeFacts, rates: Rates) -> Decimal:
    return node.vcpus * rates.cpu_core_hour + node.memory_gib * rates.ram_gib_hour + node.gpus * rates.gpu_hour


@pytest.mark.parametrize(("spot", "hourly"), [(False, Decimal("0.23")), (True, Decimal("0.0461"))])
def test_a_cached_quote_splits_the_price_and_asks_once(server: Server, spot: bool, hourly: Decimal) -> None:
    server.answer = [Reply(body=page(ALL_METERS))]
    source = CachedSource(prices(server), "azure")
    node = aks_node(spot)

    first = source.quote(node, NOW)
    again = source.quote(node, NOW)

    assert first is not None and first == again
    assert (first.source, first.at, first.note) == ("azure", NOW, None)
    assert first.detail is not None and first.detail.endswith("Spot, Virtual Machines Dsv5 Series)") == spot
    assert first.rates.currency == "USD"
    assert abs(node_hour(node, first.rates) - hourly) < Decimal("1e-20")
    assert len(server.seen) == source.calls == 1


def test_after_a_429_the_cache_waits_retry_after_without_asking(server: Server) -> None:
    clock = [1000.0]
    server.answer = [Reply(429, {"Error": "Too many requests"}, {"Retry-After": "7"}), Reply(body=page(ALL_METERS))]
    source = CachedSource(prices(server), "azure", clock=lambda: clock[0])
    node = aks_node(spot=True)

    with pytest.raises(RetryAfter):
        source.quote(node, NOW)
    clock[0] += 6.9
    with pytest.raises(Throttled, match="HTTP 429"):
        source.quote(node, NOW)
    assert len(server.seen) == 1
    clock[0] += 0.2
    found = source.quote(node, NOW)

    assert found is not None and found.source == "azure"
    assert len(server.seen) == 2


def test_the_fallback_note_names_azure_and_why(server: Server) -> None:
    server.answer = [Reply(429, {"Error": "Too many requests"}, {"Retry-After": "7"})]
    static = StaticPrices.parse({"currency": "USD", "nodes": {"default": {"hourly": "0.2"}}})
    sources: list[PriceSource] = [CachedSource(prices(server), "azure"), static]
    node = aks_node(spot=False)

    found = quote(sources, node, NOW)

    assert found.source == "static"
    assert found.note is not None
    assert found.note.startswith("azure: RetryAfter: GET ")
    assert "HTTP 429, retry after 7 s" in found.note
    assert "nodes.default" in found.note
    again = quote(sources, node, NOW)
    assert again.note is not None and again.note.startswith("azure: Throttled: ")
    assert len(server.seen) == 1


def test_an_unknown_sku_falls_back_with_a_note(server: Server) -> None:
    server.answer = [Reply(body=page([]))]
    static = StaticPrices.parse({"currency": "USD", "nodes": {"Standard_D4s_v5": {"hourly": "0.2"}}})

    sources: list[PriceSource] = [CachedSource(prices(server), "azure"), static]
    found = quote(sources, aks_node(spot=False), NOW)

    assert (found.source, found.note) == ("static", "azure: no price for Standard_D4s_v5")


# --- AzureBilling through the real SDK client ------------------------------------------------------


class FakeCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("fake", int(time.time()) + 3600)


class HttpAllowed(ARMChallengeAuthenticationPolicy):
    """ARM's own bearer policy, letting a token go over plain http to the local server (tests only)."""

    def on_request(self, request: Any) -> None:
        request.context["enforce_https"] = False
        super().on_request(request)


def billing(server: Server, max_requests: int = 20, retries: int = 2) -> AzureBilling:
    from azure.mgmt.costmanagement import CostManagementClient

    credential = FakeCredential()
    client = CostManagementClient(
        credential,
        base_url=server.url,
        authentication_policy=HttpAllowed(credential, "https://management.azure.com/.default"),
        retry_total=retries,
        retry_backoff_factor=0,
    )
    return AzureBilling(SCOPE, max_requests=max_requests, client=client)


COLUMNS = [
    {"name": "Cost", "type": "Number"},
    {"name": "UsageDate", "type": "Number"},
    {"name": "TagKey", "type": "String"},
    {"name": "TagValue", "type": "String"},
    {"name": "Currency", "type": "String"},
]


def result(rows: list[list[Any]], next_link: str | None = None) -> dict[str, Any]:
    return {
        "id": f"{SCOPE}/providers/Microsoft.CostManagement/query/6a1e1b4c-1111-2222-3333-444455556666",
        "name": "6a1e1b4c-1111-2222-3333-444455556666",
        "type": "Microsoft.CostManagement/query",
        "location": None,
        "sku": None,
        "eTag": None,
        "properties": {"nextLink": next_link, "columns": COLUMNS, "rows": rows},
    }


def two_pages(server: Server) -> Callable[[Seen], Reply]:
    def answer(seen: Seen) -> Reply:
        if "$skiptoken" not in seen.query:
            link = f"{server.url}{QUERY_PATH}?api-version=2025-03-01&$skiptoken=AQAAAA%3D%3D"
            rows = [
                [1.1234567890123456789, 20261101, TAG, "run-a", "USD"],
                [0.5, 20261102, TAG, "run-a", "USD"],
                [2.25, 20261101, TAG, "run-b", "USD"],
            ]
            return Reply(body=result(rows, link))
        rows = [[0.0000000001, 20261102, TAG, "run-b", "USD"], [3, 20261102, TAG, "someone-else", "USD"]]
        return Reply(body=result(rows))

    return answer


def test_spend_follows_next_link_and_sums_per_value(server: Server) -> None:
    server.answer = two_pages(server)
    lookup = billing(server)

    spend = lookup.spend(TAG, ["run-a", "run-b", "run-c"], date(2026, 11, 1), date(2026, 11, 3))

    assert spend == {
        "run-a": Spend(Decimal("1.6234567890123457"), "USD"),
        "run-b": Spend(Decimal("2.2500000001"), "USD"),
    }
    assert lookup.requests == 2
    first, second = server.seen
    for seen in (first, second):
        assert (seen.method, seen.path) == ("POST", QUERY_PATH)
        assert seen.query["api-version"] == ["2025-03-01"]
        assert seen.headers["Authorization"] == "Bearer fake"
        assert seen.json() == {
            "type": "ActualCost",
            "timeframe": "Custom",
            # [Nov 1, Nov 3) asked as Nov 1 00:00:00 to Nov 2 23:59:59: Cost Management's end is inclusive
            "timePeriod": {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T23:59:59Z"},
            "dataset": {
                "granularity": "Daily",
                "aggregation": {"totalCost": {"name": "Cost", "function": "Sum"}},
                "grouping": [{"type": "TagKey", "name": TAG}],
                "filter": {"tags": {"name": TAG, "operator": "In", "values": ["run-a", "run-b", "run-c"]}},
            },
        }
    assert "$skiptoken" not in first.query
    assert second.query["$skiptoken"] == ["AQAAAA=="]


def test_the_amounts_are_read_as_decimals_from_the_text(server: Server) -> None:
    # 23 significant digits, which a float would not keep
    text = json.dumps(result([[0, 20261101, TAG, "run-a", "EUR"]])).replace("[0, ", "[0.12345678901234567890123, ")
    server.answer = [Reply(body=text.encode())]

    spend = billing(server).spend(TAG, ["run-a"], date(2026, 11, 1), date(2026, 11, 2))

    assert spend == {"run-a": Spend(Decimal("0.12345678901234567890123"), "EUR")}
    assert server.seen[0].json()["timePeriod"] == {"from": "2026-11-01T00:00:00Z", "to": "2026-11-01T23:59:59Z"}


def test_the_request_budget(server: Server) -> None:
    server.answer = two_pages(server)
    lookup = billing(server, max_requests=1)

    with pytest.raises(AzureBillingError, match="more than 1 pages"):
        lookup.spend(TAG, ["run-a"], date(2026, 11, 1), date(2026, 11, 3))
    assert lookup.requests == len(server.seen) == 1


def test_a_429_with_retry_after_is_retried_by_azure_core(server: Server) -> None:
    server.answer = [Reply(429, {"error": {"code": "429", "message": "Too many requests"}}, {"Retry-After": "0"})]
    server.answer.append(Reply(body=result([[1.5, 20261101, TAG, "run-a", "USD"]])))
    lookup = billing(server)

    spend = lookup.spend(TAG, ["run-a"], date(2026, 11, 1), date(2026, 11, 2))

    assert spend == {"run-a": Spend(Decimal("1.5"), "USD")}
    assert len(server.seen) == 2
    assert lookup.requests == 1  # a query; azure-core's retries are not counted


def test_a_persistent_429_is_retry_after(server: Server) -> None:
    # Cost Management says when in its own headers: azure-core does not retry a POST on them
    headers = {"x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after": "12"}
    server.answer = [Reply(429, {"error": {"code": "429", "message": "Too many requests"}}, headers)]

    with pytest.raises(RetryAfter) as err:
        billing(server).spend(TAG, ["run-a"], date(2026, 11, 1), date(2026, 11, 2))
    assert err.value.seconds == 12
    assert len(server.seen) == 1


def test_an_empty_period_or_no_values_asks_nothing(server: Server) -> None:
    lookup = billing(server)

    assert lookup.spend(TAG, [], date(2026, 11, 1), date(2026, 11, 2)) == {}
    with pytest.raises(ValueError, match="empty"):
        lookup.spend(TAG, ["run-a"], date(2026, 11, 2), date(2026, 11, 2))
    assert lookup.requests == len(server.seen) == 0


def test_the_production_client_sends_no_token_over_http(server: Server) -> None:
    lookup = AzureBilling("/" + SCOPE + "/", credential=FakeCredential(), base_url=server.url)

    with pytest.raises(ServiceRequestError, match="non-TLS"):
        lookup.spend(TAG, ["run-a"], date(2026, 11, 1), date(2026, 11, 2))
    assert server.seen == []
    assert lookup.scope == SCOPE


def test_the_default_credential_and_endpoint() -> None:
    from azure.identity import DefaultAzureCredential

    lookup = AzureBilling(SCOPE)

    assert lookup.name == "azure"
    assert isinstance(lookup.client._config.credential, DefaultAzureCredential)
    assert lookup.client._config.base_url.startswith("https://management.azure.com")

"""AWS prices and billing, offline: real boto3 clients answered by botocore's Stubber (which also
checks each request's parameters) for the Price List and EC2 APIs, and moto's in-process mock for
Cost Explorer. Fake credentials only; nothing leaves the process."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from scriptrun.cost.nodes import NodeFacts, node_facts
from scriptrun.cost.prices import StaticPrices, quote
from scriptrun.pricing.aws import AmbiguousPrice, AwsBilling, AwsPrices, RequestBudgetExceeded
from scriptrun.pricing.billing import Spend
from scriptrun.pricing.cache import CachedSource, PriceKey, Throttled
from tests.support.aws import fake_credentials, queue

NOW = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)
PRODUCT = json.loads((Path(__file__).parent / "fixtures/pricing/aws/m5.large-us-east-1-linux.json").read_text())
M5_LARGE = PriceKey("us-east-1", "m5.large", spot=False, zone="us-east-1a")
TAG = "scriptrun.dev/run"


@pytest.fixture(autouse=True)
def no_real_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_credentials(monkeypatch, tmp_path)


def client(service: str, region: str = "us-east-1") -> Any:
    return boto3.session.Session().client(service, region_name=region)


@pytest.fixture
def pricing() -> Iterator[tuple[Any, Stubber]]:
    c = client("pricing")
    with Stubber(c) as stub:
        yield c, stub
        stub.assert_no_pending_responses()


@pytest.fixture
def ec2() -> Iterator[tuple[Any, Stubber]]:
    c = client("ec2")
    with Stubber(c) as stub:
        yield c, stub
        stub.assert_no_pending_responses()


def product(sku: str = "2WZ3VX2DN4NW4QHV", usd: str = "0.0960000000", **attributes: str) -> str:
    """One PriceList item as AWS sends it: a JSON string, here the fixture with another SKU/price."""
    item = copy.deepcopy(PRODUCT)
    item["product"]["sku"] = sku
    item["product"]["attributes"].update(attributes)
    for kind in ("OnDemand", "Reserved"):
        item["terms"][kind] = {
            code.replace("2WZ3VX2DN4NW4QHV", sku): term for code, term in item["terms"][kind].items()
        }
    (term,) = item["terms"]["OnDemand"].values()
    (dimension,) = term["priceDimensions"].values()
    dimension["pricePerUnit"]["USD"] = usd
    return json.dumps(item)


def products_request(instance_type: str = "m5.large", region: str = "us-east-1", **extra: str) -> dict[str, Any]:
    """The exact get_products request: written out here, not taken from the module under test."""
    return {
        "ServiceCode": "AmazonEC2",
        "FormatVersion": "aws_v1",
        "Filters": [
            {"Type": "TERM_MATCH", "Field": "instanceType", "Value": instance_type},
            {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region},
            {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
            {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
            {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
            {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"},
            {"Type": "TERM_MATCH", "Field": "marketoption", "Value": "OnDemand"},
            {"Type": "TERM_MATCH", "Field": "licenseModel", "Value": "No License required"},
        ],
        **extra,
    }


def products_page(*items: str, next_token: str | None = None) -> dict[str, Any]:
    page: dict[str, Any] = {"FormatVersion": "aws_v1", "PriceList": list(items)}
    if next_token:
        page["NextToken"] = next_token
    return page


def throttle(stub: Stubber, operation: str = "get_products") -> None:
    stub.add_client_error(
        operation,
        service_error_code="ThrottlingException",
        service_message="Rate exceeded",
        http_status_code=400,
        expected_params=products_request(),
    )


def prices(pricing: Any = None, ec2: Any = None) -> AwsPrices:
    return AwsPrices(pricing_client=pricing, ec2_clients=(lambda region: ec2) if ec2 else None, clock=lambda: NOW)


# --- on-demand ---------------------------------------------------------------------------------


def test_on_demand_price_of_m5_large(pricing: tuple[Any, Stubber]) -> None:
    c, stub = pricing
    stub.add_response("get_products", products_page(product()), products_request())
    price = prices(c).lookup(M5_LARGE)
    assert price is not None
    assert price.currency == "USD"
    assert price.hourly == Decimal("0.096") and isinstance(price.hourly, Decimal)
    assert price.rates is None
    assert price.detail == "sku 2WZ3VX2DN4NW4QHV (m5.large us-east-1 Linux on-demand)"


def test_on_demand_pages_until_the_match(pricing: tuple[Any, Stubber]) -> None:
    c, stub = pricing
    stub.add_response("get_products", products_page(next_token="page-2-token"), products_request())
    stub.add_response("get_products", products_page(product()), products_request(NextToken="page-2-token"))
    price = prices(c).lookup(M5_LARGE)
    assert price is not None and price.hourly == Decimal("0.096")


def test_an_unknown_instance_type_has_no_price(pricing: tuple[Any, Stubber]) -> None:
    c, stub = pricing
    stub.add_response("get_products", products_page(), products_request("m5.huge"))
    assert prices(c).lookup(PriceKey("us-east-1", "m5.huge", spot=False)) is None


def test_zero_prices_are_ignored(pricing: tuple[Any, Stubber]) -> None:
    c, stub = pricing
    free = product("ZEROZEROZEROZERO", "0.0000000000", capacitystatus="AllocatedCapacityReservation")
    stub.add_response("get_products", products_page(free, product()), products_request())
    price = prices(c).lookup(M5_LARGE)
    assert price is not None and price.hourly == Decimal("0.096")
    assert price.detail is not None and "2WZ3VX2DN4NW4QHV" in price.detail


def test_several_prices_are_an_error_naming_the_skus(pricing: tuple[Any, Stubber]) -> None:
    c, stub = pricing
    other = product("8VCNEHQMSCQS4P39", "0.1080000000", licenseModel="No License required")
    stub.add_response("get_products", products_page(product(), other), products_request())
    with pytest.raises(AmbiguousPrice, match="2WZ3VX2DN4NW4QHV") as err:
        prices(c).lookup(M5_LARGE)
    assert "8VCNEHQMSCQS4P39" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_throttling_propagates(pricing: tuple[Any, Stubber]) -> None:
    c, stub = pricing
    throttle(stub)
    with pytest.raises(ClientError) as err:
        prices(c).lookup(M5_LARGE)
    assert err.value.response["Error"]["Code"] == "ThrottlingException"


# --- spot --------------------------------------------------------------------------------------


def spot(zone: str, price: str, at: datetime, instance_type: str = "m5.large") -> dict[str, Any]:
    return {
        "AvailabilityZone": zone,
        "InstanceType": instance_type,
        "ProductDescription": "Linux/UNIX",
        "SpotPrice": price,
        "Timestamp": at,
    }


def spot_request(zone: str | None = None, **extra: str) -> dict[str, Any]:
    request: dict[str, Any] = {"InstanceTypes": ["m5.large"], "ProductDescriptions": ["Linux/UNIX"], "StartTime": NOW}
    if zone:
        request["AvailabilityZone"] = zone
    return {**request, **extra}


def test_spot_price_in_the_nodes_zone(ec2: tuple[Any, Stubber]) -> None:
    c, stub = ec2
    history = [
        spot("us-east-1a", "0.041200", datetime(2026, 11, 22, 9, 45, tzinfo=UTC)),
        spot("us-east-1a", "0.035800", datetime(2026, 11, 22, 3, 12, tzinfo=UTC)),
    ]
    stub.add_response("describe_spot_price_history", {"SpotPriceHistory": history}, spot_request("us-east-1a"))
    price = prices(ec2=c).lookup(PriceKey("us-east-1", "m5.large", spot=True, zone="us-east-1a"))
    assert price is not None
    assert price.hourly == Decimal("0.041200")  # the most recent, not the highest or the first
    assert price.detail == "spot m5.large us-east-1a Linux/UNIX since 2026-11-22T09:45:00Z"


def test_spot_price_without_a_zone_is_the_highest_current_one(ec2: tuple[Any, Stubber]) -> None:
    c, stub = ec2
    history = [
        spot("us-east-1a", "0.035800", datetime(2026, 11, 22, 3, 12, tzinfo=UTC)),
        spot("us-east-1b", "0.044100", datetime(2026, 11, 21, 23, 2, tzinfo=UTC)),
        spot("us-east-1c", "0.038700", datetime(2026, 11, 22, 6, 40, tzinfo=UTC)),
    ]
    stub.add_response("describe_spot_price_history", {"SpotPriceHistory": history}, spot_request())
    price = prices(ec2=c).lookup(PriceKey("us-east-1", "m5.large", spot=True))
    assert price is not None and price.hourly == Decimal("0.044100")
    assert price.detail is not None
    assert "us-east-1b" in price.detail and "zone unknown: the highest of 3 zones in us-east-1" in price.detail


def test_spot_history_pages(ec2: tuple[Any, Stubber]) -> None:
    c, stub = ec2
    first = {"SpotPriceHistory": [spot("us-east-1a", "0.035800", NOW)], "NextToken": "spot-page-2"}
    second = {"SpotPriceHistory": [spot("us-east-1d", "0.051300", NOW)], "NextToken": ""}
    stub.add_response("describe_spot_price_history", first, spot_request())
    stub.add_response("describe_spot_price_history", second, spot_request(NextToken="spot-page-2"))
    price = prices(ec2=c).lookup(PriceKey("us-east-1", "m5.large", spot=True))
    assert price is not None and price.hourly == Decimal("0.051300")


def test_no_spot_history_has_no_price(ec2: tuple[Any, Stubber]) -> None:
    c, stub = ec2
    stub.add_response(
        "describe_spot_price_history", {"SpotPriceHistory": [], "NextToken": ""}, spot_request("us-east-1a")
    )
    assert prices(ec2=c).lookup(PriceKey("us-east-1", "m5.large", spot=True, zone="us-east-1a")) is None


def test_spot_asks_the_ec2_client_of_the_nodes_region(ec2: tuple[Any, Stubber]) -> None:
    c, stub = ec2
    asked: list[str] = []

    def factory(region: str) -> Any:
        asked.append(region)
        return c

    stub.add_response("describe_spot_price_history", {"SpotPriceHistory": []}, spot_request())
    stub.add_response("describe_spot_price_history", {"SpotPriceHistory": []}, spot_request())
    source = AwsPrices(ec2_clients=factory, clock=lambda: NOW)
    source.lookup(PriceKey("eu-west-1", "m5.large", spot=True))
    source.lookup(PriceKey("eu-west-1", "m5.large", spot=True))
    assert asked == ["eu-west-1"]  # built once per region


# --- clients built on first use ------------------------------------------------------------------


def test_clients_are_built_lazily_with_timeouts_and_standard_endpoint_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_PRICING", "http://127.0.0.1:9")
    source = AwsPrices(timeout=3)
    pricing_client = source.pricing_client()
    assert pricing_client.meta.endpoint_url == "http://127.0.0.1:9"
    assert pricing_client.meta.region_name == "us-east-1"
    assert pricing_client.meta.config.connect_timeout == 3 and pricing_client.meta.config.read_timeout == 3
    assert pricing_client.meta.config.retries["mode"] == "standard"
    assert source.pricing_client() is pricing_client
    eu = source.ec2_client("eu-west-1")
    assert eu.meta.region_name == "eu-west-1" and source.ec2_client("eu-west-1") is eu
    assert source.ec2_client("us-west-2") is not eu
    assert AwsBilling().client().meta.endpoint_url == "https://ce.us-east-1.amazonaws.com"


# --- behind the cache --------------------------------------------------------------------------


def aws_node(name: str = "ip-10-0-1-23.ec2.internal", provider_id: str = "aws:///us-east-1a/i-0abc") -> NodeFacts:
    labels = {
        "topology.kubernetes.io/region": "us-east-1",
        "topology.kubernetes.io/zone": "us-east-1a",
        "node.kubernetes.io/instance-type": "m5.large",
    }
    return node_facts(name, provider_id, labels, {"cpu": Decimal(2), "memory": Decimal(8 * 1024**3)})


def test_the_second_quote_comes_from_the_cache(pricing: tuple[Any, Stubber]) -> None:
    c, stub = pricing
    stub.add_response("get_products", products_page(product()), products_request())  # one answer only
    source = CachedSource(prices(c), "aws")
    node = aws_node()
    assert source.serves(node)
    first = source.quote(node, NOW)
    second = source.quote(aws_node("ip-10-0-9-9.ec2.internal", "aws:///us-east-1a/i-0def"), NOW)
    assert source.calls == 1
    assert first is not None and second == first
    assert first.source == "aws" and first.at == NOW
    assert first.detail == "sku 2WZ3VX2DN4NW4QHV (m5.large us-east-1 Linux on-demand)"
    rates = first.rates
    assert rates.currency == "USD"
    total = node.vcpus * rates.cpu_core_hour + node.memory_gib * rates.ram_gib_hour
    assert abs(total - Decimal("0.096")) < Decimal("1e-20")


def test_nodes_of_another_provider_are_not_served() -> None:
    source = CachedSource(prices(), "aws")
    gke = node_facts("gke-pool-1", "gce://project/us-central1-a/gke-pool-1", {}, {"cpu": Decimal(2)})
    assert not source.serves(gke)
    assert source.calls == 0


def test_after_throttling_the_next_quote_fails_fast(pricing: tuple[Any, Stubber]) -> None:
    c, stub = pricing
    throttle(stub)  # one error queued; a second call to AWS would find nothing queued
    source = CachedSource(prices(c), "aws")
    with pytest.raises(ClientError, match="ThrottlingException"):
        source.quote(aws_node(), NOW)
    with pytest.raises(Throttled, match="ThrottlingException"):
        source.quote(aws_node(), NOW)
    assert source.calls == 1


def test_a_failing_aws_falls_back_and_the_note_says_why(pricing: tuple[Any, Stubber]) -> None:
    c, stub = pricing
    throttle(stub)
    static = StaticPrices.parse({"currency": "USD", "nodes": {"m5.large": {"hourly": "0.1"}}})
    found = quote([CachedSource(prices(c), "aws"), static], aws_node(), NOW)
    assert found.source == "static" and found.detail == "nodes.m5.large"
    assert found.note is not None
    assert found.note == (
        "aws: ThrottlingException: An error occurred (ThrottlingException) when calling the GetProducts "
        "operation: Rate exceeded"
    )


# --- billing (Cost Explorer) -------------------------------------------------------------------


def group(value: str, amount: str) -> dict[str, Any]:
    return {"Keys": [f"{TAG}${value}"], "Metrics": {"UnblendedCost": {"Amount": amount, "Unit": "USD"}}}


def day(start: str, end: str, *groups: dict[str, Any]) -> dict[str, Any]:
    return {"TimePeriod": {"Start": start, "End": end}, "Total": {}, "Groups": list(groups), "Estimated": False}


def page(*days: dict[str, Any], next_token: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "GroupDefinitions": [{"Type": "TAG", "Key": TAG}],
        "ResultsByTime": list(days),
        "DimensionValueAttributes": [],
    }
    if next_token:
        result["NextPageToken"] = next_token
    return result


TWO_PAGES = [
    page(
        day("2026-11-18", "2026-11-19", group("nightly-etl-7f2c", "0.0481234"), group("report-91ab", "0.0123")),
        day("2026-11-19", "2026-11-20", group("nightly-etl-7f2c", "0.0500000")),
        next_token="ce-page-2",
    ),
    page(day("2026-11-19", "2026-11-20", group("report-91ab", "0.0077"), group("", "3.5"))),
]


@pytest.fixture
def moto_ce() -> Iterator[Any]:
    with mock_aws():
        yield client("ce")


def test_billing_sums_each_tag_value_across_days_and_pages(moto_ce: Any) -> None:
    queue(*TWO_PAGES)
    billing = AwsBilling(client=moto_ce)
    spent = billing.spend(TAG, ["nightly-etl-7f2c", "report-91ab"], date(2026, 11, 18), date(2026, 11, 20))
    assert spent == {
        "nightly-etl-7f2c": Spend(Decimal("0.0981234"), "USD"),
        "report-91ab": Spend(Decimal("0.0200"), "USD"),
    }  # the untagged group ("scriptrun.dev/run$") is skipped
    assert billing.requests == 2
    assert billing.name == "aws"


def test_billing_stops_before_exceeding_the_request_budget(moto_ce: Any) -> None:
    queue(*TWO_PAGES)
    billing = AwsBilling(client=moto_ce, max_requests=1)
    with pytest.raises(RequestBudgetExceeded, match=r"budget of 1 spent \(\$0.01 a request\)"):
        billing.spend(TAG, ["nightly-etl-7f2c"], date(2026, 11, 18), date(2026, 11, 20))
    assert billing.requests == 1


def test_billing_with_no_costs_is_empty(moto_ce: Any) -> None:
    billing = AwsBilling(client=moto_ce)
    assert billing.spend(TAG, ["nightly-etl-7f2c"], date(2026, 11, 18), date(2026, 11, 20)) == {}
    assert billing.requests == 1
    assert billing.spend(TAG, [], date(2026, 11, 18), date(2026, 11, 20)) == {}
    assert billing.requests == 1  # no values: nothing asked


def test_billing_request_parameters() -> None:
    ce = client("ce")
    request = {
        "TimePeriod": {"Start": "2026-11-18", "End": "2026-11-20"},
        "Granularity": "DAILY",
        "Metrics": ["UnblendedCost"],
        "Filter": {"Tags": {"Key": TAG, "Values": ["nightly-etl-7f2c"]}},
        "GroupBy": [{"Type": "TAG", "Key": TAG}],
    }
    with Stubber(ce) as stub:
        stub.add_response("get_cost_and_usage", TWO_PAGES[0], request)
        stub.add_response("get_cost_and_usage", TWO_PAGES[1], {**request, "NextPageToken": "ce-page-2"})
        spent = AwsBilling(client=ce).spend(TAG, ["nightly-etl-7f2c"], date(2026, 11, 18), date(2026, 11, 20))
        stub.assert_no_pending_responses()
    assert spent == {"nightly-etl-7f2c": Spend(Decimal("0.0981234"), "USD")}


def test_billing_rejects_an_empty_period() -> None:
    with pytest.raises(ValueError, match="empty"):
        AwsBilling(client=object()).spend(TAG, ["x"], date(2026, 11, 20), date(2026, 11, 20))

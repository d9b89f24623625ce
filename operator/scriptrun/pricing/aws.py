"""AWS: the list price of an EC2 node (on-demand from the Price List Query API, spot from EC2's spot
price history) and, for the opt-in reconciliation, what Cost Explorer billed per tag value.

Facts the code relies on:

- The Price List Query API (`pricing`) has endpoints only in us-east-1, eu-central-1 and ap-south-1;
  any of them answers for every region (the region asked about is the `regionCode` filter).
  `get_products` returns `PriceList` as a list of JSON *strings*, one product each: `product.sku`,
  `product.attributes` and `terms.OnDemand[offerTermCode].priceDimensions[rateCode].pricePerUnit.USD`
  (a decimal string such as "0.0960000000"); Reserved terms come along and are ignored here.
- Spot prices come from `ec2.describe_spot_price_history` in the node's own region; with `StartTime`
  set to now it returns only the price in effect now, one entry per availability zone.
- Cost Explorer (`ce`) is served from us-east-1 only and charges $0.01 per request, i.e. per page
  (`get_cost_and_usage` has no paginator: pages follow `NextPageToken`), hence the request budget.
  It sees AWS resource tags only (not pod labels), and only tags activated as cost allocation tags
  in the Billing console (activation takes about a day); costs appear 24-48 hours late.
- Credentials come from boto3's default chain: environment, shared config, IRSA (the
  AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE that EKS injects), EKS Pod Identity, instance profile.
  IAM permissions: pricing:GetProducts, ec2:DescribeSpotPriceHistory, ce:GetCostAndUsage.
- Endpoints can be overridden with the standard variables boto3 honours: AWS_ENDPOINT_URL_PRICING,
  AWS_ENDPOINT_URL_EC2, AWS_ENDPOINT_URL_COST_EXPLORER (or AWS_ENDPOINT_URL for all).

Money is `Decimal` parsed from the API's strings, never a float.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from scriptrun.pricing.billing import Spend
from scriptrun.pricing.cache import PriceKey, ProviderPrice

SPOT_PRODUCT = "Linux/UNIX"
CE_REGION = "us-east-1"


class AmbiguousPrice(ValueError):
    """The price list has several different prices for one node: a guess would be a wrong price."""


class RequestBudgetExceeded(RuntimeError):
    """Cost Explorer would be asked more often than allowed (each request costs $0.01)."""


def _client(service: str, region: str, timeout: float) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2, "mode": "standard"})
    return boto3.session.Session().client(service, region_name=region, config=config)


def _filters(key: PriceKey) -> list[dict[str, str]]:
    """The one product that is a shared-tenancy Linux on-demand instance without licensed software."""
    fields = {
        "instanceType": key.instance_type,
        "regionCode": key.region,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "marketoption": "OnDemand",
        "licenseModel": "No License required",
    }
    return [{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in fields.items()]


def _hourly_prices(item: str | dict[str, Any]) -> list[tuple[str, Decimal]]:
    """(sku, USD an hour) of each non-zero on-demand hourly price dimension of one PriceList item."""
    product = json.loads(item) if isinstance(item, str) else item
    sku = str(product["product"]["sku"])
    found = []
    for term in product.get("terms", {}).get("OnDemand", {}).values():
        for dimension in term.get("priceDimensions", {}).values():
            usd = dimension.get("pricePerUnit", {}).get("USD")
            if dimension.get("unit") == "Hrs" and usd is not None and Decimal(usd) != 0:
                found.append((sku, Decimal(usd)))
    return found


class AwsPrices:
    """`ProviderLookup` for EC2 nodes (Linux, shared tenancy). Clients are built on first use
    unless given (tests pass stubbed ones); `ec2_clients` maps a region to an EC2 client."""

    def __init__(
        self,
        *,
        pricing_client: Any = None,
        ec2_clients: Callable[[str], Any] | None = None,
        pricing_region: str = "us-east-1",
        timeout: float = 10,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pricing = pricing_client
        self._ec2_factory = ec2_clients or (lambda region: _client("ec2", region, timeout))
        self._ec2: dict[str, Any] = {}
        self.pricing_region = pricing_region
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()  # boto3 sessions are not thread-safe; clients are

    @property
    def name(self) -> str:
        return "aws"

    def pricing_client(self) -> Any:
        with self._lock:
            if self._pricing is None:
                self._pricing = _client("pricing", self.pricing_region, self.timeout)
            return self._pricing

    def ec2_client(self, region: str) -> Any:
        with self._lock:
            if region not in self._ec2:
                self._ec2[region] = self._ec2_factory(region)
            return self._ec2[region]

    def lookup(self, key: PriceKey) -> ProviderPrice | None:
        return self._spot(key) if key.spot else self._on_demand(key)

    def _on_demand(self, key: PriceKey) -> ProviderPrice | None:
        client = self.pricing_client()
        args: dict[str, Any] = {"ServiceCode": "AmazonEC2", "FormatVersion": "aws_v1", "Filters": _filters(key)}
        items: list[str | dict[str, Any]] = []
        while True:
            page = client.get_products(**args)
            items.extend(page.get("PriceList", []))
            if not page.get("NextToken"):
                break
            args["NextToken"] = page["NextToken"]
        if not items:
            return None  # no such instance type in this region
        prices = [found for item in items for found in _hourly_prices(item)]
        distinct = sorted({price for _, price in prices})
        what = f"{key.instance_type} {key.region} Linux on-demand"
        if not distinct:
            raise ValueError(f"the AWS price list has no non-zero hourly price for {what}")
        if len(distinct) > 1:
            listed = ", ".join(f"{sku} {price}" for sku, price in sorted(set(prices)))
            raise AmbiguousPrice(f"the AWS price list has {len(distinct)} prices for {what}: {listed}")
        sku = min(sku for sku, _ in prices)
        return ProviderPrice(currency="USD", hourly=distinct[0], detail=f"sku {sku} ({what})")

    def _spot(self, key: PriceKey) -> ProviderPrice | None:
        client = self.ec2_client(key.region)
        args: dict[str, Any] = {
            "InstanceTypes": [key.instance_type],
            "ProductDescriptions": [SPOT_PRODUCT],
            "StartTime": self._clock(),  # only the price in effect now
        }
        if key.zone:
            args["AvailabilityZone"] = key.zone
        latest: dict[str, dict[str, Any]] = {}  # zone -> its most recent entry
        while True:
            page = client.describe_spot_price_history(**args)
            for entry in page.get("SpotPriceHistory", []):
                zone = entry["AvailabilityZone"]
                if key.zone and zone != key.zone:
                    continue
                if zone not in latest or entry["Timestamp"] > latest[zone]["Timestamp"]:
                    latest[zone] = entry
            if not page.get("NextToken"):
                break
            args["NextToken"] = page["NextToken"]
        if not latest:
            return None
        entry = max(latest.values(), key=lambda e: Decimal(e["SpotPrice"]))
        at = entry["Timestamp"].strftime("%Y-%m-%dT%H:%M:%SZ")
        detail = f"spot {key.instance_type} {entry['AvailabilityZone']} {SPOT_PRODUCT} since {at}"
        if not key.zone:
            detail += f" (zone unknown: the highest of {len(latest)} zones in {key.region})"
        return ProviderPrice(currency="USD", hourly=Decimal(entry["SpotPrice"]), detail=detail)


class AwsBilling:
    """`BillingLookup` through Cost Explorer: the unblended cost per value of a cost allocation tag.
    `max_requests` caps the pages this object asks for over its lifetime (each costs $0.01): it
    raises `RequestBudgetExceeded` instead of sending request `max_requests + 1`."""

    def __init__(self, *, client: Any = None, max_requests: int = 10, timeout: float = 10) -> None:
        self._client = client
        self.max_requests = max_requests
        self.timeout = timeout
        self._requests = 0
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "aws"

    @property
    def requests(self) -> int:
        return self._requests

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = _client("ce", CE_REGION, self.timeout)
            return self._client

    def spend(self, tag_key: str, values: list[str], start: date, end: date) -> dict[str, Spend]:
        if start >= end:
            raise ValueError(f"the billing period {start}..{end} is empty (the end is exclusive)")
        if not values:
            return {}
        args: dict[str, Any] = {
            "TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()},
            "Granularity": "DAILY",
            "Metrics": ["UnblendedCost"],
            "Filter": {"Tags": {"Key": tag_key, "Values": values}},
            "GroupBy": [{"Type": "TAG", "Key": tag_key}],
        }
        totals: dict[str, Spend] = {}
        while True:
            page = self._request(args)
            for day in page.get("ResultsByTime", []):
                for group in day.get("Groups", []):
                    self._add(totals, tag_key, group)
            if not page.get("NextPageToken"):
                break
            args["NextPageToken"] = page["NextPageToken"]
        return {value: spend for value, spend in totals.items() if value in values and spend.amount != 0}

    def _request(self, args: dict[str, Any]) -> dict[str, Any]:
        if self._requests >= self.max_requests:
            raise RequestBudgetExceeded(
                f"Cost Explorer request budget of {self.max_requests} spent ($0.01 a request): "
                "ask for fewer tag values or a shorter period"
            )
        self._requests += 1
        page: dict[str, Any] = self.client().get_cost_and_usage(**args)
        return page

    @staticmethod
    def _add(totals: dict[str, Spend], tag_key: str, group: dict[str, Any]) -> None:
        """Adds one day's group: its key is "tagkey$value" ("tagkey$" for untagged cost: skipped)."""
        group_key = group["Keys"][0]
        value = group_key.removeprefix(f"{tag_key}$")
        if not value or value == group_key:
            return
        cost = group["Metrics"]["UnblendedCost"]
        amount, currency = Decimal(cost["Amount"]), cost["Unit"]
        before = totals.get(value)
        if before is not None and before.currency != currency:
            raise ValueError(f"Cost Explorer reported {tag_key}={value} in {before.currency} and {currency}")
        totals[value] = Spend((before.amount if before else Decimal(0)) + amount, currency)

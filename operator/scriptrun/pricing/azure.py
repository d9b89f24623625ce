"""Azure: a VM's list price (`AzurePrices`) and the actual spend per tag value (`AzureBilling`).

List prices come from the Retail Prices API (https://prices.azure.com/api/retail/prices):
- no authentication and no SDK: a plain HTTPS GET, made here with the standard library;
- `currencyCode` must be a top-level query parameter: inside `$filter` the API silently answers
  no items at all;
- `$filter` values are case-sensitive (`westeurope`, `Standard_D4s_v5`: as the node labels spell them);
- one VM size has several hourly meters: Linux and Windows (productName "... Windows"), on-demand,
  Spot (skuName "... Spot") and Low Priority (skuName "... Low Priority", the older Batch/VMSS
  low-priority meter). AKS spot node pools are Spot VMs: priced by the Spot meter, never by the
  Low Priority one (OpenCost priced them as low-priority: opencost#3226);
- answers are paged (`NextPageLink`); throttling is HTTP 429 (or 503) with Retry-After.

Spend comes from the Cost Management query API (azure-mgmt-costmanagement, the `azure` extra):
- Azure Resource Manager throttles it, about 100 calls in 5 minutes: `max_requests` bounds the
  pages one `spend` may ask for. azure-core retries a 429 only when it says Retry-After (a POST
  without it is not retried); Cost Management says when in `x-ms-ratelimit-*-retry-after` headers,
  which `RetryAfter` carries;
- the SDK does not follow `nextLink`: the next page is the same POST with the link's `$skiptoken`;
- the query's time period is inclusive at both ends, ours ends exclusively: `to` is the last day at
  23:59:59 UTC;
- amounts are read from the answer's JSON text as `Decimal` (the SDK's models would give floats).
"""

from __future__ import annotations

import email.utils
import json
import math
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from scriptrun.pricing.billing import Spend
from scriptrun.pricing.cache import PriceKey, ProviderPrice, RetryAfter

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.pipeline import PipelineResponse
    from azure.mgmt.costmanagement import CostManagementClient
    from azure.mgmt.costmanagement.models import QueryDefinition

RETAIL_PRICES_URL = "https://prices.azure.com/api/retail/prices"
RETAIL_PRICES_API_VERSION = "2023-01-01-preview"
DEFAULT_RETRY_AFTER = 60.0
# Cost Management's throttling headers (seconds), besides the standard Retry-After
RATE_LIMIT_HEADERS = tuple(
    f"x-ms-ratelimit-microsoft.costmanagement-{kind}-retry-after" for kind in ("qpu", "entity", "tenant", "client")
)


class AzurePricesError(RuntimeError):
    """The Retail Prices API failed or answered something unexpected (the message names the URL)."""


class AzureBillingError(RuntimeError):
    """Cost Management answered something unexpected, or more pages than `max_requests` allows."""


def retry_after_seconds(*values: str | None, default: float = DEFAULT_RETRY_AFTER) -> float:
    """The longest wait the headers ask for (seconds or an HTTP date), `default` when none says."""
    waits: list[float] = []
    for value in values:
        if not value:
            continue
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            seconds = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() - datetime.now(UTC).timestamp()
        if math.isfinite(seconds):
            waits.append(max(seconds, 0.0))
    return max(waits) if waits else default


def _odata(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _decimal(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise ValueError(f"{what}: {value!r} is not a number")
    try:
        number = Decimal(value)
    except InvalidOperation as err:
        raise ValueError(f"{what}: {value!r} is not a number") from err
    if not number.is_finite():
        raise ValueError(f"{what}: {value!r} is not a number")
    return number


class AzurePrices:
    """A VM size's Linux hourly list price in one region from the Retail Prices API (a
    `ProviderLookup`: a whole-node price, split by the node's capacity).

    Of the answer's meters it keeps the hourly consumption ones of the size and region that are
    neither Windows nor Low Priority, Spot ones for a spot key and the others otherwise, those of the
    primary meter region when there are any. None left: None (Azure has no such size there); several
    prices left: ValueError naming the meters. It does not retry: 429/503 raise `RetryAfter` and
    `CachedSource` waits; `opener` replaces urllib's default (which honours the proxy variables)."""

    def __init__(
        self,
        currency: str = "USD",
        base_url: str = RETAIL_PRICES_URL,
        timeout: float = 10,
        opener: urllib.request.OpenerDirector | None = None,
        max_pages: int = 20,
    ) -> None:
        self.currency = currency.upper()
        self.base_url = base_url
        self.timeout = timeout
        self.opener = opener or urllib.request.build_opener()
        self.max_pages = max_pages

    @property
    def name(self) -> str:
        return "azure"

    def url(self, key: PriceKey) -> str:
        """The first page's URL: currencyCode top-level, the rest in `$filter`."""
        terms = (
            ("serviceName", "Virtual Machines"),
            ("armRegionName", key.region),
            ("armSkuName", key.instance_type),
            ("priceType", "Consumption"),
        )
        query = {
            "api-version": RETAIL_PRICES_API_VERSION,
            "currencyCode": self.currency,
            "$filter": " and ".join(f"{field} eq {_odata(value)}" for field, value in terms),
        }
        return self.base_url + "?" + urlencode(query, safe="$'", quote_via=quote)

    def lookup(self, key: PriceKey) -> ProviderPrice | None:
        items: list[Any] = []
        url: str | None = self.url(key)
        for _ in range(self.max_pages):
            assert url is not None
            page = self._get(url, key)
            found = page.get("Items") or []
            if not isinstance(found, list):
                raise AzurePricesError(f"GET {_where(url)}: Items is not a list")
            items.extend(found)
            url = page.get("NextPageLink")
            if not url:
                return self._pick(items, key)
        raise AzurePricesError(f"GET {self.base_url}: more than {self.max_pages} pages for {key.instance_type}")

    def _get(self, url: str, key: PriceKey) -> dict[str, Any]:
        where = f"GET {_where(url)} ({key.instance_type} in {key.region})"
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as err:
            with err:
                if err.code in (429, 503):
                    seconds = retry_after_seconds(err.headers.get("Retry-After"))
                    raise RetryAfter(f"{where}: HTTP {err.code}, retry after {seconds:g} s", seconds) from err
                raise AzurePricesError(f"{where}: HTTP {err.code} {err.reason}") from err
        except TimeoutError as err:
            raise TimeoutError(f"{where}: no answer within {self.timeout:g} s") from err
        except urllib.error.URLError as err:
            if isinstance(err.reason, TimeoutError):
                raise TimeoutError(f"{where}: no answer within {self.timeout:g} s") from err
            raise AzurePricesError(f"{where}: {err.reason}") from err
        try:
            page = json.loads(body, parse_float=Decimal)
        except ValueError as err:
            raise AzurePricesError(f"{where}: HTTP 200 but the answer is not JSON: {body[:100]!r}") from err
        if not isinstance(page, dict):
            raise AzurePricesError(f"{where}: HTTP 200 but the answer is not a JSON object")
        return page

    def _fits(self, item: Mapping[str, Any], key: PriceKey) -> bool:
        sku = str(item.get("skuName", ""))
        return (
            item.get("serviceName") == "Virtual Machines"
            and item.get("armRegionName") == key.region
            and item.get("armSkuName") == key.instance_type
            and item.get("type") == "Consumption"
            and item.get("unitOfMeasure") == "1 Hour"
            and "Windows" not in str(item.get("productName", ""))
            and not sku.endswith(" Low Priority")
            and sku.endswith(" Spot") == key.spot
        )

    def _pick(self, items: list[Any], key: PriceKey) -> ProviderPrice | None:
        meters = [item for item in items if isinstance(item, dict) and self._fits(item, key)]
        meters = [m for m in meters if m.get("isPrimaryMeterRegion") is True] or meters
        if not meters:
            return None
        prices = {_decimal(m.get("retailPrice"), f"meter {m.get('meterId')} retailPrice") for m in meters}
        if len(prices) > 1:
            named = "; ".join(
                f"meter {m.get('meterId')} ({m.get('skuName')}, {m.get('productName')}): {m.get('retailPrice')}"
                for m in meters
            )
            raise ValueError(f"Azure lists {len(prices)} prices for {key.instance_type} in {key.region}: {named}")
        meter, price = meters[0], prices.pop()
        for m in meters:
            if m.get("currencyCode") != self.currency:
                raise ValueError(
                    f"asked Azure for {self.currency} prices, meter {m.get('meterId')} is in {m.get('currencyCode')!r}"
                )
        if price < 0:
            raise ValueError(f"meter {meter.get('meterId')}: negative price {price}")
        detail = f"meter {meter.get('meterId')} ({meter.get('skuName')}, {meter.get('productName')})"
        return ProviderPrice(self.currency, hourly=price, detail=detail)


def _raw_json(pipeline_response: PipelineResponse[Any, Any], _model: Any, _headers: Any) -> Any:
    """The SDK's `cls` hook: the answer's own JSON, numbers as Decimal (204: None)."""
    text = pipeline_response.http_response.text()
    return json.loads(text, parse_float=Decimal) if text.strip() else None


def _column(columns: list[str], *names: str) -> int | None:
    lowered = [c.lower() for c in columns]
    return next((lowered.index(n.lower()) for n in names if n.lower() in lowered), None)


class AzureBilling:
    """The actual cost per tag value in a Cost Management scope (a subscription
    "subscriptions/<id>", a resource group, a billing account...): a `BillingLookup`.

    `credential` defaults to azure.identity's DefaultAzureCredential (AKS workload identity, managed
    identity, environment, CLI); `max_requests` bounds the pages of one `spend`; `requests` counts
    every query made (a retry inside azure-core is not counted)."""

    def __init__(
        self,
        scope: str,
        credential: TokenCredential | None = None,
        base_url: str | None = None,
        max_requests: int = 20,
        client: CostManagementClient | None = None,
    ) -> None:
        if max_requests < 1:
            raise ValueError("max_requests must be at least 1")
        self.scope = scope.strip("/")
        self.max_requests = max_requests
        self._requests = 0
        if client is None:
            from azure.mgmt.costmanagement import CostManagementClient

            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            client = CostManagementClient(credential, base_url=base_url)
        self.client = client

    @property
    def name(self) -> str:
        return "azure"

    @property
    def requests(self) -> int:
        return self._requests

    @staticmethod
    def definition(tag_key: str, values: list[str], start: date, end: date) -> QueryDefinition:
        """The query: actual cost, summed per day and tag value, of resources tagged with one of `values`."""
        from azure.mgmt.costmanagement import models as m

        return m.QueryDefinition(
            type="ActualCost",
            timeframe="Custom",
            time_period=m.QueryTimePeriod(
                from_property=datetime.combine(start, time.min, tzinfo=UTC),
                to=datetime.combine(end - timedelta(days=1), time(23, 59, 59), tzinfo=UTC),
            ),
            dataset=m.QueryDataset(
                granularity="Daily",
                aggregation={"totalCost": m.QueryAggregation(name="Cost", function="Sum")},
                grouping=[m.QueryGrouping(type="TagKey", name=tag_key)],
                filter=m.QueryFilter(
                    tags=m.QueryComparisonExpression(name=tag_key, operator="In", values_property=list(values))
                ),
            ),
        )

    def spend(self, tag_key: str, values: list[str], start: date, end: date) -> dict[str, Spend]:
        if end <= start:
            raise ValueError(f"the period [{start}, {end}) is empty")
        if not values:
            return {}
        definition = self.definition(tag_key, values, start, end)
        totals: dict[str, Spend] = {}
        params: dict[str, str] = {}
        for page in range(self.max_requests):
            answer = self._query(definition, params)
            properties = answer.get("properties") or {}
            self._add(totals, properties, tag_key, values)
            next_link = properties.get("nextLink")
            if not next_link:
                return totals
            params = {k: v for k, v in parse_qsl(urlsplit(next_link).query) if k.lower() != "api-version"}
            if not params:
                raise AzureBillingError(f"page {page + 1}: nextLink has no $skiptoken: {next_link}")
        raise AzureBillingError(
            f"Cost Management has more than {self.max_requests} pages for {tag_key} in {self.scope} "
            "(max_requests; ARM allows about 100 calls in 5 minutes)"
        )

    def _query(self, definition: QueryDefinition, params: dict[str, str]) -> dict[str, Any]:
        from azure.core.exceptions import HttpResponseError

        self._requests += 1
        try:
            answer: object = self.client.query.usage(self.scope, definition, params=params, cls=_raw_json)
        except HttpResponseError as err:
            if err.status_code in (429, 503):
                headers: Mapping[str, str] = getattr(err.response, "headers", None) or {}
                seconds = retry_after_seconds(*(headers.get(h) for h in ("Retry-After", *RATE_LIMIT_HEADERS)))
                raise RetryAfter(f"Cost Management query in {self.scope}: HTTP {err.status_code}", seconds) from err
            raise
        if answer is None:
            return {}
        if not isinstance(answer, dict):
            raise AzureBillingError(f"Cost Management query in {self.scope}: the answer is not a JSON object")
        return answer

    def _add(self, totals: dict[str, Spend], properties: Mapping[str, Any], tag_key: str, values: list[str]) -> None:
        columns = [str(c.get("name", "")) for c in properties.get("columns") or [] if isinstance(c, dict)]
        rows = properties.get("rows") or []
        if not rows:
            return
        cost = _column(columns, "totalCost", "Cost", "PreTaxCost")
        value = _column(columns, "TagValue")
        currency = _column(columns, "Currency", "BillingCurrency", "BillingCurrencyCode")
        key = _column(columns, "TagKey")
        if cost is None or value is None or currency is None:
            raise AzureBillingError(
                f"Cost Management query in {self.scope}: no cost, tag value or currency column in {columns}"
            )
        exact, folded = set(values), {v.casefold(): v for v in values}
        for row in rows:
            try:
                if key is not None and str(row[key]).casefold() != tag_key.casefold():
                    continue
                raw, amount, money = str(row[value]), row[cost], str(row[currency])
            except (IndexError, KeyError, TypeError) as err:
                raise AzureBillingError(f"Cost Management query in {self.scope}: row {row!r} has no {err}") from err
            tag = raw if raw in exact else folded.get(raw.casefold())
            if tag is None:
                continue
            before = totals.get(tag)
            if before is not None and before.currency != money:
                raise AzureBillingError(f"{tag_key}={tag} is billed in {before.currency} and {money}")
            total = (before.amount if before else Decimal(0)) + _decimal(amount, f"cost of {tag_key}={tag}")
            totals[tag] = Spend(total, money)

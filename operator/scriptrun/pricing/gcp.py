"""GCP list prices from the Cloud Billing Catalog API (`google-cloud-billing`).

Compute Engine does not price machine types: it prices a vCPU-hour and a GiB-hour of memory per
machine family and region, so a node's price here is per-resource rates (`Rates`), not a whole-node
price. Facts this module relies on:

- Compute Engine is the catalogue service `services/6F81-5844-456A`; `list_skus` returns all of its
  SKUs (a few thousand, up to 5000 a page) in the requested currency. One download answers every
  machine type and region, so it is kept for `catalogue_ttl` rather than asked per node.
- A family's on-demand SKUs are described "N2 Instance Core running in Americas" and "N2 Instance Ram
  running in Americas" (category: resource_family "Compute", resource_group "CPU"/"RAM", usage_type
  "OnDemand"); N1's are "N1 Predefined Instance Core/Ram" in resource_group "N1Standard"; AMD and Arm
  families say so ("N2D AMD Instance Core", "T2A Arm Instance Core"); C2 is "Compute optimized
  Core/Ram" and M1 "Memory-optimized Instance Core/Ram". Spot (and the older preemptible) VMs bill
  under usage_type "Preemptible", described "Spot Preemptible N2 Instance Core running in Americas".
  The description names a location group; the regions are in `service_regions`.
- Custom machine types, extended memory, sole tenancy, committed use ("Commitment v1: N2 Cpu in
  Americas for 1 Year") and the M2 "Upgrade Premium" have SKUs of their own and are not matched:
  such nodes (and f1-micro / g1-small, billed per instance) get no price here (None: unknown).
- A price is `unit_price` {units, nanos} of a tiered rate, per `usage_unit` "h" (a core-hour) or
  "GiBy.h" (a GiB-hour): Decimal(units) + Decimal(nanos) / 10**9, never a float.
- E2 shared-core types (e2-micro, e2-small, e2-medium) bill fractions of a core at the E2 core rate,
  so the per-core rate is still right for them.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Literal

from google.api_core import exceptions as google_exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import Credentials
from google.cloud.billing_v1 import CloudCatalogClient, ListSkusRequest, Sku

from scriptrun.cost.rates import Rates
from scriptrun.pricing.cache import PriceKey, ProviderPrice, RetryAfter

COMPUTE_ENGINE = "services/6F81-5844-456A"
PAGE_SIZE = 5000  # the API's largest page
DEFAULT_RETRY_AFTER = 60.0

Kind = Literal["cpu", "ram"]
UNITS: dict[Kind, str] = {"cpu": "h", "ram": "GiBy.h"}
GROUPS: dict[Kind, frozenset[str]] = {"cpu": frozenset({"CPU", "N1Standard"}), "ram": frozenset({"RAM", "N1Standard"})}
USAGE_TYPES = {"OnDemand": False, "Preemptible": True}  # -> spot
EXCLUDED = ("Custom", "Extended", "Sole Tenancy", "Commitment", "Premium")
# "[Spot ]Preemptible <product> Core|Ram running in <location>"
DESCRIPTION = re.compile(r"^(?:(?:Spot )?Preemptible )?(?P<product>.+) (?P<kind>Core|Ram) running in (?P<where>.+)$")
PRODUCT = re.compile(r"^(?P<family>[A-Z][0-9A-Z]*)(?: (?:Predefined|AMD|Arm|Intel))? Instance$")
PRODUCT_ALIASES = {"Compute optimized": "C2", "Memory-optimized Instance": "M1"}


@dataclass(frozen=True)
class SkuPrice:
    """One kept SKU: its id, description and price per core-hour or GiB-hour, or why it has none (an
    unexpected unit or currency: raised by the lookups that need this SKU, not by every lookup)."""

    sku_id: str
    description: str
    price: Decimal | None
    problem: str | None = None

    @property
    def short(self) -> str:
        return self.description.split(" running in ")[0]


IndexKey = tuple[str, Kind, bool, str]  # (family, cpu|ram, spot, region)


def family_of(instance_type: str) -> str | None:
    """The machine family of a predefined machine type: n2-standard-4 -> N2, e2-medium -> E2,
    n2d-highmem-8 -> N2D; None for custom types (n2-custom-4-16384, custom-2-4096)."""
    parts = instance_type.strip().lower().split("-")
    if "custom" in parts or not re.fullmatch(r"[a-z][0-9a-z]*", parts[0]) or not any(c.isdigit() for c in parts[0]):
        return None
    return parts[0].upper()


def sku_family(description: str) -> tuple[str, Kind] | None:
    """The family and resource a plain instance core/RAM SKU prices, from its description; None for
    any other SKU (custom, sole tenancy, commitment, premium, GPUs, disks ...)."""
    if any(word in description for word in EXCLUDED):
        return None
    found = DESCRIPTION.match(description)
    if found is None:
        return None
    product = found["product"]
    family = PRODUCT_ALIASES.get(product)
    if family is None:
        plain = PRODUCT.match(product)
        if plain is None:
            return None
        family = plain["family"]
    return family, "cpu" if found["kind"] == "Core" else "ram"


def unit_price(sku: Sku, kind: Kind, currency: str) -> Decimal:
    """The SKU's current price per core-hour or GiB-hour: the tier starting at 0 (else the last)."""
    if not sku.pricing_info:
        raise ValueError(f"SKU {sku.sku_id} ({sku.description}) has no pricing info")
    info = max(sku.pricing_info, key=lambda p: p.effective_time.timestamp() if p.effective_time else 0.0)
    expression = info.pricing_expression
    if expression.usage_unit != UNITS[kind]:
        raise ValueError(
            f"SKU {sku.sku_id} ({sku.description}) is priced per {expression.usage_unit!r}, "
            f"expected {UNITS[kind]!r} (a {'core-hour' if kind == 'cpu' else 'GiB-hour'})"
        )
    tiers = list(expression.tiered_rates)
    if not tiers:
        raise ValueError(f"SKU {sku.sku_id} ({sku.description}) has no tiered rates")
    tier = next((t for t in tiers if t.start_usage_amount == 0), tiers[-1])
    money = tier.unit_price
    if money.currency_code and money.currency_code != currency:
        raise ValueError(f"SKU {sku.sku_id} is priced in {money.currency_code}, asked for {currency}")
    return Decimal(money.units) + Decimal(money.nanos) / 10**9


def index_catalogue(skus: Iterable[Sku], currency: str) -> dict[IndexKey, list[SkuPrice]]:
    """Only the plain on-demand/preemptible instance core and RAM SKUs, by (family, kind, spot, region)."""
    index: dict[IndexKey, list[SkuPrice]] = {}
    for sku in skus:
        category = sku.category
        spot = USAGE_TYPES.get(category.usage_type)
        if category.resource_family != "Compute" or spot is None:
            continue
        parsed = sku_family(sku.description)
        if parsed is None or category.resource_group not in GROUPS[parsed[1]]:
            continue
        family, kind = parsed
        try:
            kept = SkuPrice(sku.sku_id, sku.description, unit_price(sku, kind, currency))
        except ValueError as err:
            kept = SkuPrice(sku.sku_id, sku.description, None, str(err))
        for region in sku.service_regions:
            index.setdefault((family, kind, spot, region), []).append(kept)
    return index


def retry_after(err: google_exceptions.GoogleAPICallError, now: datetime | None = None) -> float:
    """Seconds from the response's Retry-After header (seconds or an HTTP date), else 60."""
    headers = getattr(getattr(err, "response", None), "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return DEFAULT_RETRY_AFTER
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


class GcpPrices:
    """GCP list prices as a `ProviderLookup`: per-core and per-GiB hourly rates of a node's machine
    family in its region, on-demand or spot, read from one download of the Compute Engine catalogue
    that is kept for `catalogue_ttl` seconds (thread-safe: concurrent lookups share one download).

    The default client talks REST to cloudbilling.googleapis.com (or `endpoint`) with `credentials`,
    by default Application Default Credentials: GKE Workload Identity, a service account key in
    GOOGLE_APPLICATION_CREDENTIALS or the metadata server. The catalogue is public: any valid
    credentials can read it, no billing role is needed. Calls are not retried (the cache backs off);
    each page waits at most `timeout` seconds.
    """

    def __init__(
        self,
        currency: str = "USD",
        client: CloudCatalogClient | None = None,
        endpoint: str | None = None,
        credentials: Credentials | None = None,
        catalogue_ttl: float = 86_400,
        timeout: float = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.currency = currency.upper()
        self._client = client
        self._endpoint, self._credentials = endpoint, credentials
        self.catalogue_ttl, self.timeout, self._clock = catalogue_ttl, timeout, clock
        self._index: dict[IndexKey, list[SkuPrice]] | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self.downloads = 0  # catalogue downloads made (for tests and the debug log)

    @property
    def name(self) -> str:
        return "gcp"

    @property
    def client(self) -> CloudCatalogClient:
        """Built on first use: without credentials the first lookup fails (and falls back), not the
        operator's start."""
        if self._client is None:
            self._client = CloudCatalogClient(
                credentials=self._credentials,
                transport="rest",
                client_options=ClientOptions(api_endpoint=self._endpoint) if self._endpoint else None,
            )
        return self._client

    def lookup(self, key: PriceKey) -> ProviderPrice | None:
        family = family_of(key.instance_type)
        if family is None:
            return None
        index = self._catalogue()
        cpu = self._one(index, (family, "cpu", key.spot, key.region))
        ram = self._one(index, (family, "ram", key.spot, key.region))
        if cpu is None or ram is None:
            return None
        assert cpu.price is not None and ram.price is not None  # _one raised the problems
        return ProviderPrice(
            currency=self.currency,
            rates=Rates(self.currency, cpu.price, ram.price),
            detail=f"skus {cpu.sku_id} + {ram.sku_id} ({cpu.short} / {ram.short})",
        )

    @staticmethod
    def _one(index: dict[IndexKey, list[SkuPrice]], key: IndexKey) -> SkuPrice | None:
        found = index.get(key, [])
        problem = next((s.problem for s in found if s.problem), None)
        if problem:
            raise ValueError(problem)
        if len({s.price for s in found}) > 1:
            listed = ", ".join(f"{s.sku_id} ({s.description}: {s.price})" for s in found)
            raise ValueError(f"several {key[0]} {key[1]} prices in {key[3]}: {listed}")
        return min(found, key=lambda s: s.sku_id) if found else None

    def _catalogue(self) -> dict[IndexKey, list[SkuPrice]]:
        with self._lock:
            if self._index is None or self._clock() >= self._expires:
                self._index = self._download()
                self._expires = self._clock() + self.catalogue_ttl
            return self._index

    def _download(self) -> dict[IndexKey, list[SkuPrice]]:
        request = ListSkusRequest(parent=COMPUTE_ENGINE, currency_code=self.currency, page_size=PAGE_SIZE)
        self.downloads += 1
        try:
            pager = self.client.list_skus(request=request, retry=None, timeout=self.timeout)
            return index_catalogue(pager, self.currency)
        except google_exceptions.TooManyRequests as err:
            raise RetryAfter(f"Cloud Billing Catalog API throttled: {err}", retry_after(err)) from err

"""One cloud price provider as a price source: a cache with a TTL, a rate limit and a back-off after
a failure, around the provider's own lookup (`ProviderLookup`). Each provider module (aws, azure, gcp)
only knows how to ask its API for one node's price; everything about how often it may ask is here.

Runs do not wait on this: the operator quotes in a worker thread, a cached price answers at once,
and a provider that is throttled, failing or slow raises, so `scriptrun.cost.prices.quote` falls back
to the next source and the status says why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from scriptrun.cost.nodes import NodeFacts
from scriptrun.cost.prices import Quote
from scriptrun.cost.rates import Rates, split_node_price

DAY = 86_400.0
HOUR = 3_600.0


@dataclass(frozen=True)
class PriceKey:
    """What a provider's price depends on."""

    region: str
    instance_type: str
    spot: bool
    zone: str | None = None


@dataclass(frozen=True)
class ProviderPrice:
    """A provider's answer for one key: a whole-node hourly price (AWS, Azure: split by the node's
    capacity like OpenCost) or per-resource rates (GCP prices cores and GiB apart), and what it was
    read from (a SKU, a meter), for the status note."""

    currency: str
    hourly: Decimal | None = None
    rates: Rates | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        if (self.hourly is None) == (self.rates is None):
            raise ValueError("a provider price is either a whole-node hourly price or per-resource rates")


class ProviderLookup(Protocol):
    """A provider's API, asked for one key. Returns None when the provider has no price for it (an
    unknown SKU); raises on any API failure (throttled, timed out, unexpected answer)."""

    @property
    def name(self) -> str: ...

    def lookup(self, key: PriceKey) -> ProviderPrice | None: ...


class Throttled(RuntimeError):
    """The provider is not asked now: the rate limit is spent, or it failed a moment ago."""


class RetryAfter(RuntimeError):
    """A provider error that says when to ask again (HTTP 429/503 with Retry-After)."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


class RateLimit:
    """A token bucket: `per_minute` calls a minute, `burst` at once. `take` waits up to `max_wait`
    seconds for a token and says whether it got one."""

    def __init__(
        self,
        per_minute: float,
        burst: int = 5,
        max_wait: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("a rate limit needs per_minute > 0 and burst >= 1")
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_wait = max_wait
        self._clock, self._sleep = clock, sleep
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
            if wait > self.max_wait:
                return False
            self._tokens -= 1  # taken now; the wait below pays it back
        if wait:
            self._sleep(wait)
        return True


@dataclass
class _Entry:
    price: ProviderPrice | None
    fetched: datetime
    expires: float


class CachedSource:
    """A provider as a `PriceSource`: answers nodes of its provider only, from the cache while a
    price is fresh (`ttl`, spot prices `spot_ttl`: they move), asks the provider within the rate
    limit, remembers "no such SKU" as long as a price, and after a failure does not ask again for
    `backoff` seconds (or the provider's Retry-After), failing fast with the first error instead."""

    def __init__(
        self,
        lookup: ProviderLookup,
        provider: str,
        *,
        ttl: float = DAY,
        spot_ttl: float = HOUR,
        backoff: float = 60.0,
        limit: RateLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.provider = provider
        self.ttl, self.spot_ttl, self.backoff = ttl, spot_ttl, backoff
        self.limit = limit or RateLimit(per_minute=60)
        self._clock = clock
        self._cache: dict[PriceKey, _Entry] = {}
        self._failed: tuple[float, str] | None = None  # (until, why)
        self._lock = threading.Lock()
        self.calls = 0  # provider calls made (for tests and the debug log)

    @property
    def name(self) -> str:
        return self.lookup.name

    @staticmethod
    def key(node: NodeFacts) -> PriceKey | None:
        if not node.region or not node.instance_type:
            return None
        return PriceKey(node.region, node.instance_type, node.capacity_type == "spot", node.zone)

    def serves(self, node: NodeFacts) -> bool:
        return node.provider == self.provider

    def quote(self, node: NodeFacts, now: datetime) -> Quote | None:
        key = self.key(node)
        if key is None:
            raise LookupError(f"node {node.name} has no region or instance-type label")
        entry = self._fetch(key, now)
        if entry.price is None:
            return None
        return Quote(self._rates(entry.price, node), self.name, entry.fetched, None, entry.price.detail)

    def _fetch(self, key: PriceKey, now: datetime) -> _Entry:
        with self._lock:
            clock = self._clock()
            cached = self._cache.get(key)
            if cached is not None and clock < cached.expires:
                return cached
            if self._failed is not None and clock < self._failed[0]:
                raise Throttled(f"not asked again until the back-off ends after: {self._failed[1]}")
        if not self.limit.take():
            raise Throttled(f"rate limit of {self.limit.rate * 60:g} calls a minute reached")
        self.calls += 1
        try:
            price = self.lookup.lookup(key)
        except RetryAfter as err:
            self._fail(max(err.seconds, 1.0), err)
            raise
        except Exception as err:
            self._fail(self.backoff, err)
            raise
        entry = _Entry(price, now, self._clock() + (self.spot_ttl if key.spot else self.ttl))
        with self._lock:
            self._cache[key] = entry
            self._failed = None
        return entry

    def _fail(self, seconds: float, err: Exception) -> None:
        with self._lock:
            self._failed = (self._clock() + seconds, f"{type(err).__name__}: {err}")

    @staticmethod
    def _rates(price: ProviderPrice, node: NodeFacts) -> Rates:
        if price.rates is not None:
            return price.rates
        assert price.hourly is not None
        return split_node_price(price.hourly, price.currency, vcpus=node.vcpus, ram_gib=node.memory_gib, gpus=node.gpus)

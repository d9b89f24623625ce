"""The cloud price sources the operator is configured with (`SCRIPTRUN_PRICE_PROVIDERS`), each behind
the cache, TTL, rate limit and back-off of `CachedSource`. A provider that cannot be built (its SDK
not installed, an unknown name) becomes an `Unavailable` source: every quote for its nodes says why.

Endpoints can be moved (a proxy, an offline test): AWS by boto3's own AWS_ENDPOINT_URL_PRICING /
AWS_ENDPOINT_URL_EC2, Azure by SCRIPTRUN_AZURE_PRICES_URL, GCP by SCRIPTRUN_GCP_CATALOG_ENDPOINT.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from scriptrun.cost.nodes import NodeFacts
from scriptrun.cost.prices import PriceSource, Quote, Unavailable
from scriptrun.pricing.cache import CachedSource, ProviderLookup, RateLimit

log = logging.getLogger(__name__)
PROVIDERS = ("aws", "azure", "gcp")
# calls a minute per provider: far below each API's own limit (Azure ARM ~100 per 5 min per client)
RATE_PER_MINUTE = {"aws": 60.0, "azure": 30.0, "gcp": 10.0}
EXTRA = {"aws": "boto3", "azure": "(nothing: the Retail Prices API needs no SDK)", "gcp": "google-cloud-billing"}


class ProviderUnavailable(RuntimeError):
    """The configured provider could not be built."""


@dataclass(frozen=True)
class _ProviderUnavailable(Unavailable):
    """A provider that could not be built: serves its own nodes only, each quote says why."""

    provider: str = ""

    def serves(self, node: NodeFacts) -> bool:
        return not self.provider or node.provider == self.provider  # an unknown name: every node

    def quote(self, node: NodeFacts, now: datetime) -> Quote | None:
        raise ProviderUnavailable(self.reason)


def _lookup(provider: str, currency: str, env: Mapping[str, str]) -> ProviderLookup:
    if provider == "aws":
        from scriptrun.pricing.aws import AwsPrices

        return AwsPrices()  # AWS prices are in USD only
    if provider == "azure":
        from scriptrun.pricing.azure import RETAIL_PRICES_URL, AzurePrices

        return AzurePrices(currency=currency, base_url=env.get("SCRIPTRUN_AZURE_PRICES_URL") or RETAIL_PRICES_URL)
    if provider == "gcp":
        from scriptrun.pricing.gcp import GcpPrices

        return GcpPrices(currency=currency, endpoint=env.get("SCRIPTRUN_GCP_CATALOG_ENDPOINT") or None)
    raise ValueError(f"unknown price provider {provider!r} (known: {', '.join(PROVIDERS)})")


def cloud_sources(providers: list[str], currency: str, env: Mapping[str, str]) -> list[PriceSource]:
    """One cached source per configured provider, in the order given."""
    sources: list[PriceSource] = []
    for provider in providers:
        try:
            lookup = _lookup(provider, currency, env)
        except ImportError as err:
            why = f"{provider}: {err.name or err} is not installed (pip install 'scriptrun[{provider}]')"
            log.error("price provider unavailable: %s", why)
            sources.append(_ProviderUnavailable(provider, why, provider))
            continue
        except ValueError as err:
            log.error("price provider unavailable: %s", err)
            sources.append(_ProviderUnavailable(provider, str(err)))
            continue
        limit = RateLimit(per_minute=RATE_PER_MINUTE.get(provider, 10.0))
        sources.append(CachedSource(lookup, provider, limit=limit))
    return sources

"""The operator's cloud price sources from configuration: one cached source per provider, each for
its own nodes; a provider that cannot be built says why in every quote for its nodes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from scriptrun.controllers.config import OperatorConfig
from scriptrun.controllers.costs import price_sources
from scriptrun.cost.nodes import node_facts
from scriptrun.cost.prices import quote
from scriptrun.pricing.cache import CachedSource

NOW = datetime(2026, 11, 22, tzinfo=UTC)
CAPACITY = {"cpu": Decimal(2), "memory": Decimal(8 * 1024**3)}


def test_the_configured_providers_each_serve_their_own_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPTRUN_PRICE_PROVIDERS", " AWS, azure ,gcp")
    monkeypatch.setenv("SCRIPTRUN_PRICE_CURRENCY", "eur")
    config = OperatorConfig.from_env()
    assert config.price_providers == ("aws", "azure", "gcp") and config.price_currency == "EUR"
    sources = price_sources(None, config.price_providers, config.price_currency)
    assert [s.name for s in sources] == ["aws", "azure", "gcp"]
    assert all(isinstance(s, CachedSource) for s in sources)
    gce = node_facts("n", "gce://p/us-central1-a/n", {}, CAPACITY)
    assert [s.serves(gce) for s in sources] == [False, False, True]


def test_an_unknown_provider_is_named_in_every_quote() -> None:
    sources = price_sources(None, ("aws", "oracle"))
    assert [s.name for s in sources] == ["aws", "oracle"]
    unknown = node_facts("n", None, {"node.kubernetes.io/instance-type": "x"}, CAPACITY)
    assert not sources[0].serves(unknown)
    got = quote(sources, unknown, NOW)
    assert got.source == "default"
    assert got.note is not None and "unknown price provider 'oracle'" in got.note

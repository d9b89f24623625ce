"""The pure cost core: the split of a node price, the allocation (property tests with hypothesis),
node facts from providerID and labels, the static price table and the fallback chain."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scriptrun.cost.allocation import GIB, ContainerUse, allocate
from scriptrun.cost.nodes import NodeFacts, node_facts
from scriptrun.cost.prices import PriceTableError, Quote, StaticPrices, quote
from scriptrun.cost.rates import DEFAULT_ON_DEMAND, DEFAULT_SPOT, Rates, split_node_price

NOW = datetime(2026, 11, 22, tzinfo=UTC)
money = st.decimals(min_value=0, max_value=100, places=6)
amounts = st.decimals(min_value=0, max_value=64, places=3)
positive = st.decimals(min_value=Decimal("0.25"), max_value=512, places=2)
seconds = st.decimals(min_value=0, max_value=7 * 86400, places=3)
RATES = Rates("USD", Decimal("0.04"), Decimal("0.005"), Decimal("0.9"))


@given(price=money, vcpus=positive, ram=positive, gpus=st.integers(0, 8))
def test_the_split_of_a_node_price_sums_back_to_it(price: Decimal, vcpus: Decimal, ram: Decimal, gpus: int) -> None:
    rates = split_node_price(price, "USD", vcpus=vcpus, ram_gib=ram, gpus=Decimal(gpus))
    total = vcpus * rates.cpu_core_hour + ram * rates.ram_gib_hour + gpus * rates.gpu_hour
    assert abs(total - price) <= Decimal("1e-20") * max(price, Decimal(1))
    # the resources keep OpenCost's relative prices
    if price:
        ratio = rates.cpu_core_hour / rates.ram_gib_hour
        expected = DEFAULT_ON_DEMAND.cpu_core_hour / DEFAULT_ON_DEMAND.ram_gib_hour
        assert abs(ratio - expected) <= Decimal("1e-20")


def use(cpu_req: Decimal, cpu_used: Decimal | None, mem_req: Decimal, mem_used: Decimal | None) -> ContainerUse:
    return ContainerUse(cpu_req, mem_req * GIB, Decimal(0), cpu_used, None if mem_used is None else mem_used * GIB)


@given(a=amounts, b=amounts, extra=amounts, mem=amounts, t=seconds)
def test_cost_is_monotone_in_usage(a: Decimal, b: Decimal, extra: Decimal, mem: Decimal, t: Decimal) -> None:
    low = allocate([use(a, b, mem, mem)], t, RATES)
    high = allocate([use(a, b + extra, mem, mem + extra)], t, RATES)
    assert high.amount >= low.amount


@given(a=amounts, mem=amounts, t=seconds, more=seconds)
def test_cost_is_monotone_in_time_and_zero_time_costs_zero(a: Decimal, mem: Decimal, t: Decimal, more: Decimal) -> None:
    containers = [use(a, None, mem, None)]
    assert allocate(containers, t + more, RATES).amount >= allocate(containers, t, RATES).amount
    assert allocate(containers, Decimal(0), RATES).amount == 0


@given(a=amounts, b=amounts, mem=amounts, t=seconds)
def test_the_breakdown_sums_to_the_amount(a: Decimal, b: Decimal, mem: Decimal, t: Decimal) -> None:
    cost = allocate([use(a, b, mem, None), ContainerUse(gpu_request=Decimal(1))], t, RATES)
    assert cost.cpu + cost.memory + cost.gpu == cost.amount


def test_max_of_request_and_usage_by_hand() -> None:
    # CPU: requested 0.5 core, used 0.8 on average -> 0.8; memory: requested 1 GiB, used 0.5 -> 1 GiB
    cost = allocate([use(Decimal("0.5"), Decimal("0.8"), Decimal(1), Decimal("0.5"))], Decimal(1800), RATES)
    assert cost.cpu == Decimal("0.8") * Decimal("0.5") * Decimal("0.04")  # 0.016
    assert cost.memory == Decimal("0.5") * Decimal("0.005")  # 0.0025
    assert cost.amount == Decimal("0.0185") and cost.currency == "USD"
    assert cost.basis == {"cpu": "usage", "memory": "request", "gpu": "request"}
    with pytest.raises(ValueError):
        allocate([], Decimal(-1), RATES)


def capacity(cpu: str, memory_gib: int, gpus: int = 0) -> dict[str, Decimal]:
    out = {"cpu": Decimal(cpu), "memory": Decimal(memory_gib) * GIB}
    if gpus:
        out["nvidia.com/gpu"] = Decimal(gpus)
    return out


def test_node_facts_from_provider_id_and_labels() -> None:
    aws = node_facts(
        "ip-10-0-0-1",
        "aws:///us-east-1a/i-0abc",
        {
            "topology.kubernetes.io/region": "us-east-1",
            "topology.kubernetes.io/zone": "us-east-1a",
            "node.kubernetes.io/instance-type": "m5.large",
        },
        capacity("2", 8),
    )
    assert (aws.provider, aws.region, aws.zone, aws.instance_type) == ("aws", "us-east-1", "us-east-1a", "m5.large")
    assert aws.capacity_type == "on-demand" and aws.vcpus == 2 and aws.memory_gib == 8 and aws.gpus == 0
    azure = node_facts(
        "aks-spot-1",
        "azure:///subscriptions/x/resourceGroups/y/providers/Microsoft.Compute/virtualMachineScaleSets/z/0",
        {"beta.kubernetes.io/instance-type": "Standard_D4s_v5", "kubernetes.azure.com/scalesetpriority": "spot"},
        capacity("4", 16),
    )
    assert (azure.provider, azure.instance_type, azure.capacity_type) == ("azure", "Standard_D4s_v5", "spot")
    gcp = node_facts(
        "gke-1", "gce://proj/europe-west1-b/gke-1", {"cloud.google.com/gke-spot": "true"}, capacity("4", 16, 1)
    )
    assert (gcp.provider, gcp.capacity_type, gcp.gpus) == ("gcp", "spot", 1)
    karpenter = node_facts("k", "aws:///x", {"karpenter.sh/capacity-type": "spot"}, capacity("2", 4))
    assert karpenter.capacity_type == "spot"
    bare = node_facts("metal", None, {}, {})
    assert (bare.provider, bare.region, bare.instance_type, bare.capacity_type) == ("unknown", None, None, "on-demand")


def facts(instance_type: str | None, spot: bool = False) -> NodeFacts:
    return NodeFacts(
        "n",
        "aws",
        "us-east-1",
        None,
        instance_type,
        "spot" if spot else "on-demand",
        Decimal(2),
        Decimal(8),
        Decimal(0),
    )


TABLE = {
    "currency": "eur",
    "nodes": {"m5.large": {"hourly": "0.096"}, "default": {"cpu": "0.03", "memory": "0.004", "gpu": "0.9"}},
    "spot": {"default": {"cpu": "0.007", "memory": "0.001"}},
}


def test_the_static_table_prices_by_instance_type_then_default_and_spot_apart() -> None:
    table = StaticPrices.parse(TABLE)
    exact = table.quote(facts("m5.large"), NOW)
    assert exact is not None and exact.source == "static" and exact.note is None
    assert exact.rates.currency == "EUR"
    node_total = 2 * exact.rates.cpu_core_hour + 8 * exact.rates.ram_gib_hour
    assert abs(node_total - Decimal("0.096")) < Decimal("1e-20")
    other = table.quote(facts("c5.xlarge"), NOW)
    assert other is not None and other.rates.cpu_core_hour == Decimal("0.03") and "nodes.default" in (other.note or "")
    spot = table.quote(facts("m5.large", spot=True), NOW)
    assert spot is not None and spot.rates.cpu_core_hour == Decimal("0.007") and "spot.default" in (spot.note or "")
    assert StaticPrices.parse({"currency": "USD", "nodes": {"m5.large": {"hourly": 1}}}).quote(facts("x"), NOW) is None


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"currency": "dollars"}, "currency"),
        ({"currency": "USD", "nodes": {"m5.large": {"hourly": "-1"}}}, "nodes.m5.large.hourly"),
        ({"currency": "USD", "nodes": {"m5.large": {"hourly": "cheap"}}}, "nodes.m5.large.hourly"),
        ({"currency": "USD", "nodes": {"m5.large": {"cpu": "1"}}}, "nodes.m5.large"),
        ({"currency": "USD", "spot": {"default": {"cpu": "1", "memory": "1", "disk": "1"}}}, "spot.default"),
        ({"currency": "USD", "nodes": ["m5.large"]}, "nodes"),
    ],
)
def test_a_bad_price_table_is_refused_naming_the_entry(doc: dict[str, object], field: str) -> None:
    with pytest.raises(PriceTableError, match=field.replace(".", r"\.")):
        StaticPrices.parse(doc)


class Failing:
    name = "aws"

    def serves(self, node: NodeFacts) -> bool:
        return True

    def quote(self, node: NodeFacts, now: datetime) -> Quote | None:
        raise TimeoutError("pricing endpoint timed out")


class Unknown:
    name = "gcp"

    def serves(self, node: NodeFacts) -> bool:
        return True

    def quote(self, node: NodeFacts, now: datetime) -> Quote | None:
        return None


def test_a_failing_provider_falls_back_and_says_why() -> None:
    got = quote([Failing(), StaticPrices.parse(TABLE)], facts("m5.large"), NOW)
    assert got.source == "static" and got.note == "aws: TimeoutError: pricing endpoint timed out"
    last = quote([Failing(), Unknown()], facts("m5.large", spot=True), NOW)
    assert last.source == "default" and last.rates == DEFAULT_SPOT
    assert last.note == "aws: TimeoutError: pricing endpoint timed out; gcp: no price for m5.large"
    assert quote([], facts(None), NOW).note == "no price source configured"


def test_a_runs_cost_sums_its_attempts_and_measures_the_last() -> None:
    from datetime import timedelta

    from scriptrun.cost.run import AttemptRuntime, run_cost

    request = (ContainerUse(Decimal("0.5"), Decimal(1) * GIB),)
    t0 = NOW
    attempts = [
        AttemptRuntime(1, "n", t0, t0 + timedelta(seconds=1800), request),  # failed: its requests
        AttemptRuntime(2, "n", t0 + timedelta(hours=1), t0 + timedelta(hours=1, seconds=1800), request),
        AttemptRuntime(3, None, None, None, request),  # never scheduled: costs nothing
    ]
    node = facts("m5.large")
    quotes = {"n": Quote(RATES, "static", NOW)}
    usage = {"available": True, "cpuAvgPercent": 80.0, "memoryAvgMb": 512.0}
    # the last attempt is measured (80% of a core, 512 MiB on average); the failed one by its requests
    cost = run_cost(attempts[:2], quotes, {"n": node}, usage)
    assert cost is not None
    first = Decimal("0.5") * Decimal("0.5") * Decimal("0.04") + Decimal("0.5") * Decimal("0.005")  # 0.0125
    second = Decimal("0.8") * Decimal("0.5") * Decimal("0.04") + Decimal("0.5") * Decimal("0.005")  # 0.0185
    assert Decimal(cost["amount"]) == first + second == Decimal("0.031")
    assert cost["currency"] == "USD" and cost["source"] == "static" and cost["attempts"] == 2
    assert cost["basis"] == {"cpu": "usage", "memory": "request", "gpu": "request"}
    assert Decimal(cost["breakdown"]["cpu"]) + Decimal(cost["breakdown"]["memory"]) == Decimal(cost["amount"])
    assert cost["node"] == {
        "name": "n",
        "provider": "aws",
        "region": "us-east-1",
        "instanceType": "m5.large",
        "capacityType": "on-demand",
    }
    assert run_cost(attempts[2:], quotes, {}, usage) is None
    # a fallback quote in another currency: no total, amounts per currency, and the reason
    mixed = {"n": Quote(RATES, "static", NOW), "m": Quote(Rates("EUR", Decimal(1), Decimal(1)), "static", NOW)}
    two = [attempts[0], AttemptRuntime(2, "m", t0, t0 + timedelta(seconds=36), request)]
    split = run_cost(two, mixed, {}, None)
    assert split is not None and "amount" not in split and set(split["byCurrency"]) == {"USD", "EUR"}


def test_quantities_and_the_status_shape() -> None:
    from scriptrun.controllers.costs import containers
    from scriptrun.model.common import parse_quantity
    from scriptrun.model.scriptrun import RunCost, RunTemplate, ScriptSource

    assert [parse_quantity(q) for q in ("500m", "16Gi", "1e3", "100M", 2, "0.5")] == [
        Decimal("0.5"),
        Decimal(16 * 1024**3),
        Decimal(1000),
        Decimal(10**8),
        Decimal(2),
        Decimal("0.5"),
    ]
    with pytest.raises(ValueError):
        parse_quantity("lots")
    # requests, or limits where only those are set; the monitor sidecar's own requests
    spec = RunTemplate.model_validate(
        {"script": {"source": "x"}, "resources": {"limits": {"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": 1}}}
    )
    main, monitor = containers(spec)
    assert (main.cpu_request_cores, main.memory_request_bytes, main.gpu_request) == (2, GIB, 1)
    assert (monitor.cpu_request_cores, monitor.memory_request_bytes) == (Decimal("0.01"), 32 * 1024 * 1024)
    assert len(containers(RunTemplate(script=ScriptSource(source="x"), monitor={"enabled": False}))) == 1
    # what run_cost returns is what the CRD's status.cost holds
    from datetime import timedelta

    from scriptrun.cost.run import AttemptRuntime, run_cost

    cost = run_cost(
        [AttemptRuntime(1, "n", NOW, NOW + timedelta(seconds=60), (main, monitor))],
        {"n": Quote(RATES, "static", NOW, "why")},
        {"n": facts("m5.large")},
        None,
    )
    assert cost is not None
    assert RunCost.model_validate(cost).dump() == cost

"""`scriptrun run` estimates what a run cost on this machine: priced like a node from `--price` (a
table or rates), SCRIPTRUN_PRICES or the default rates, always labelled as an estimate."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from scriptrun.cost.nodes import NodeFacts
from scriptrun.cost.rates import DEFAULT_ON_DEMAND
from scriptrun.local.cost import (
    PriceError,
    cost_line,
    estimate,
    machine,
    parse_rates,
    pricing,
    total_line,
)
from scriptrun.model.scriptrun import RunCost, RunTemplate, ScriptRunStatus

MILLIONTH = Decimal("0.000001")
MIB, GIB, HOUR = Decimal(1024**2), Decimal(1024**3), Decimal(3600)
BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
NODE = NodeFacts("local", "unknown", None, None, "local", "on-demand", Decimal(8), Decimal(32), Decimal(0))


def env() -> dict[str, str]:
    """The test's environment without a price table, and wide enough for the whole task table."""
    out = {k: v for k, v in os.environ.items() if k != "SCRIPTRUN_PRICES"}
    out["COLUMNS"] = "200"
    return out


def run_cli(
    tmp_path: Path, doc: dict[str, Any], *extra: str, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return subprocess.run(
        [sys.executable, "-m", "scriptrun", "run", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ or env(),
    )


def scriptrun(source: str, resources: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"script": {"source": source}, "monitor": {"intervalSeconds": 0.1}}
    if resources:
        spec["resources"] = resources
    return {"apiVersion": "scriptrun.dev/v1alpha1", "kind": "ScriptRun", "metadata": {"name": "c"}, "spec": spec}


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def by_hand(
    status: dict[str, Any], cpu_request: Decimal, memory_request: Decimal, cpu: Decimal, memory: Decimal
) -> Decimal:
    """The run's recorded runtime x max(request, measured average) x the rates, each share to a millionth."""
    attempt = status["attempts"][-1]
    hours = Decimal(str((when(attempt["finishTime"]) - when(attempt["startTime"])).total_seconds())) / HOUR
    usage = status["usage"]
    cores = max(cpu_request, Decimal(str(usage["cpuAvgPercent"])) / 100)
    gib = max(memory_request, Decimal(str(usage["memoryAvgMb"])) * MIB) / GIB
    return (cores * hours * cpu).quantize(MILLIONTH) + (gib * hours * memory).quantize(MILLIONTH)


# --- the price: rates, tables, errors (pure) ---


def test_rates_option_parses_and_names_every_problem() -> None:
    rates = parse_rates("cpu=0.031611,memory=0.004237,gpu=0.9,currency=eur")
    assert (rates.currency, rates.cpu_core_hour, rates.ram_gib_hour, rates.gpu_hour) == (
        "EUR",
        Decimal("0.031611"),
        Decimal("0.004237"),
        Decimal("0.9"),
    )
    assert parse_rates("cpu=1,memory=2").currency == "USD"
    for text, problem in [
        ("cpu=abc,memory=1", "cpu='abc' is not a number"),
        ("cpu=-1,memory=1", "cpu='-1' must be a number >= 0"),
        ("cpu=1", "memory missing"),
        ("cpu=1,memory=1,disk=3", "unknown rate 'disk'"),
        ("cpu=1,memory=1,currency=dollars", "currency='dollars' is not an ISO 4217 code"),
        ("cpu=1,memory", "expected NAME=VALUE, got 'memory'"),
        ("cpu=1,cpu=2,memory=1", "cpu given twice"),
        ("cpu=1,memory=nan", "memory='nan' must be a number >= 0"),
    ]:
        with pytest.raises(PriceError, match=re.escape(problem)):
            parse_rates(text)


def test_a_price_table_prices_this_machine_by_its_local_entry_else_default(tmp_path: Path) -> None:
    table = tmp_path / "prices.yaml"
    table.write_text(yaml.safe_dump({"currency": "EUR", "nodes": {"local": {"cpu": "0.5", "memory": "0.1"}}}))
    found = pricing(str(table), env={}, node=NODE)
    assert (found.quote.source, found.quote.rates.currency) == ("static", "EUR")
    assert found.quote.detail == f"{table}: nodes.local" and found.label == f"price table {table} nodes.local"
    assert found.quote.note == f"local estimate from the price table {table}"

    table.write_text(yaml.safe_dump({"currency": "EUR", "nodes": {"default": {"cpu": "0.5", "memory": "0.1"}}}))
    found = pricing(None, env={"SCRIPTRUN_PRICES": str(table)}, node=NODE)  # the operator's variable
    assert found.quote.rates.cpu_core_hour == Decimal("0.5")
    assert found.quote.note is not None and "nodes.default (no entry for local)" in found.quote.note

    # a whole-node price is split over this machine's capacity (8 cores, 32 GiB here)
    table.write_text(yaml.safe_dump({"currency": "USD", "nodes": {"local": {"hourly": "0.4"}}}))
    rates = pricing(str(table), env={}, node=NODE).quote.rates
    assert (8 * rates.cpu_core_hour + 32 * rates.ram_gib_hour).quantize(MILLIONTH) == Decimal("0.4")

    table.write_text(yaml.safe_dump({"currency": "USD", "nodes": {"m5.large": {"hourly": "0.096"}}}))
    found = pricing(str(table), env={}, node=NODE)
    assert found.quote.source == "default" and found.quote.rates == DEFAULT_ON_DEMAND
    assert found.label == f"default rates: {table} has no entry for local (nor a default)"


def test_an_invalid_table_names_the_entry(tmp_path: Path) -> None:
    table = tmp_path / "prices.yaml"
    for doc, problem in [
        (
            {"currency": "USD", "nodes": {"local": {"cpu": "abc", "memory": "1"}}},
            "nodes.local.cpu: 'abc' is not a number",
        ),
        ({"currency": "USD", "nodes": {"local": {"cpu": "1"}}}, "nodes.local: needs hourly, or both cpu and memory"),
        ({"currency": "dollars", "nodes": {}}, "currency: 'dollars' is not an ISO 4217 code"),
        (["not", "a", "mapping"], "expected a mapping with currency and nodes"),
    ]:
        table.write_text(yaml.safe_dump(doc))
        with pytest.raises(PriceError, match=re.escape(f"--price {table}: {problem}")):
            pricing(str(table), env={}, node=NODE)
    table.write_text(yaml.safe_dump({"currency": "dollars"}))
    with pytest.raises(PriceError, match=re.escape(f"SCRIPTRUN_PRICES={table}: currency: 'dollars'")):
        pricing(None, env={"SCRIPTRUN_PRICES": str(table)}, node=NODE)
    with pytest.raises(PriceError, match=re.escape(f"--price {tmp_path / 'none.yaml'}: cannot read")):
        pricing(str(tmp_path / "none.yaml"), env={}, node=NODE)
    table.write_text("currency: [USD\n")
    with pytest.raises(PriceError, match="not YAML"):
        pricing(str(table), env={}, node=NODE)


def test_no_table_means_the_default_rates_said_so() -> None:
    found = pricing(None, env={}, node=NODE)
    assert found.quote.source == "default" and found.quote.rates == DEFAULT_ON_DEMAND
    assert found.label == "default rates: no price table"
    assert found.quote.note is not None and "no price table given" in found.quote.note


def test_this_machine_is_an_on_demand_node_named_local() -> None:
    node = machine()
    assert (node.name, node.provider, node.instance_type, node.capacity_type) == (
        "local",
        "unknown",
        "local",
        "on-demand",
    )
    assert node.vcpus >= 1 and node.memory_gib > 0 and node.gpus == 0


def test_an_estimate_is_every_attempt_at_max_of_request_and_usage() -> None:
    spec = RunTemplate.model_validate(
        {"script": {"source": "x"}, "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}}
    )
    status = ScriptRunStatus.model_validate(
        {
            "phase": "Succeeded",
            "attempts": [
                {
                    "attempt": 1,
                    "podName": "c-a1",
                    "startTime": "2025-01-01T00:00:00Z",
                    "finishTime": "2025-01-01T00:30:00Z",
                },
                {
                    "attempt": 2,
                    "podName": "c-a2",
                    "startTime": "2025-01-01T01:00:00Z",
                    "finishTime": "2025-01-01T02:00:00Z",
                },
            ],
            "usage": {"available": True, "cpuAvgPercent": 150.0, "memoryAvgMb": 512.0},
        }
    )
    prices = pricing("cpu=0.04,memory=0.01", env={}, node=NODE)
    cost = estimate(spec, status, prices)
    assert cost is not None and cost.attempts == 2 and cost.seconds == "5400.000000"
    # attempt 1 by request (0.5 core, 1 GiB) for half an hour; the last by usage (1.5 cores) and request (1 GiB)
    assert cost.breakdown == {"cpu": "0.070000", "memory": "0.015000", "gpu": "0.000000"}
    assert cost.amount == "0.085000" and cost.basis == {"cpu": "usage", "memory": "request", "gpu": "request"}
    assert cost.node is not None and cost.node.name == "local" and cost.node.instance_type == "local"
    assert cost_line(cost, prices.label) == (
        "estimated cost: 0.085000 USD (local machine, --price rates; cpu 0.070000 + memory 0.015000)"
    )
    assert estimate(spec, ScriptRunStatus(), prices) is None
    costs = {"a": cost, "b": RunCost(amount="0.000001", currency="USD", source="static")}
    assert total_line(costs, "x") == "estimated cost: 0.085001 USD (local machine, x; 2 tasks)"


# --- real local runs ---


def test_a_run_priced_with_rates_costs_what_its_times_and_usage_say(tmp_path: Path) -> None:
    resources = {"requests": {"cpu": "100m", "memory": "64Mi"}}
    proc = run_cli(tmp_path, scriptrun(BURN, resources), "--price", "cpu=36,memory=3.6", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)["status"]
    cost = status["cost"]
    expected = by_hand(status, Decimal("0.1"), 64 * MIB, Decimal(36), Decimal("3.6"))
    assert Decimal(cost["amount"]) == expected > 0
    assert cost["currency"] == "USD" and cost["source"] == "static" and cost["note"] == "local estimate from --price"
    assert cost["priceDetail"] == "--price cpu=36,memory=3.6"
    assert Decimal(cost["breakdown"]["cpu"]) + Decimal(cost["breakdown"]["memory"]) == expected
    assert cost["node"] == {
        "name": "local",
        "provider": "unknown",
        "instanceType": "local",
        "capacityType": "on-demand",
    }

    text = run_cli(tmp_path, scriptrun(BURN, resources), "--price", "cpu=36,memory=3.6")
    assert text.returncode == 0, text.stderr
    line = next(x for x in text.stdout.splitlines() if x.startswith("estimated cost: "))
    assert re.fullmatch(
        r"estimated cost: \d+\.\d{6} USD \(local machine, --price rates; cpu \d+\.\d{6} \+ memory \d+\.\d{6}\)", line
    ), line


def test_a_run_priced_from_a_table(tmp_path: Path) -> None:
    table = tmp_path / "prices.yaml"
    table.write_text(yaml.safe_dump({"currency": "EUR", "nodes": {"local": {"cpu": "72", "memory": "7.2"}}}))
    proc = run_cli(tmp_path, scriptrun(BURN), "--price", str(table), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)["status"]
    cost = status["cost"]
    assert (cost["currency"], cost["source"], cost["priceDetail"]) == ("EUR", "static", f"{table}: nodes.local")
    assert Decimal(cost["amount"]) == by_hand(status, Decimal(0), Decimal(0), Decimal(72), Decimal("7.2"))
    text = run_cli(tmp_path, scriptrun("pass"), environ={**env(), "SCRIPTRUN_PRICES": str(table)})
    assert f" EUR (local machine, price table {table} nodes.local; cpu " in text.stdout


@pytest.mark.parametrize(
    ("price", "table", "problem"),
    [
        ("cpu=abc,memory=1", None, "error: --price: cpu='abc' is not a number"),
        ("cpu=1", None, "error: --price: memory missing"),
        (None, {"currency": "USD", "nodes": {"local": {"cpu": "1", "memory": "x"}}}, "nodes.local.memory: 'x'"),
        (None, {"currency": "USD", "nodes": {"local": {"cpu": "1", "ram": "1"}}}, "nodes.local: unknown field 'ram'"),
    ],
)
def test_an_unusable_price_fails_before_running_anything(
    tmp_path: Path, price: str | None, table: dict[str, Any] | None, problem: str
) -> None:
    marker = tmp_path / "ran"
    if table is not None:
        (tmp_path / "prices.yaml").write_text(yaml.safe_dump(table))
        price = str(tmp_path / "prices.yaml")
    assert price is not None
    proc = run_cli(tmp_path, scriptrun(f"open({str(marker)!r}, 'w').write('x')"), "--price", price)
    assert proc.returncode == 2
    assert problem in proc.stderr and proc.stderr.startswith("error: ")
    assert not marker.exists() and proc.stdout == ""


def test_default_rates_are_labelled_and_no_cost_prints_none(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, scriptrun("pass"))
    assert proc.returncode == 0, proc.stderr
    assert re.search(
        r"^estimated cost: \d+\.\d{6} USD \(local machine, default rates: no price table; cpu ", proc.stdout, re.M
    ), proc.stdout
    doc = json.loads(run_cli(tmp_path, scriptrun("pass"), "-o", "json").stdout)
    cost = doc["status"]["cost"]
    assert cost["source"] == "default" and cost["currency"] == "USD"
    assert cost["note"].startswith("local estimate at the default rates") and "no price table given" in cost["note"]

    quiet = run_cli(tmp_path, scriptrun("pass"), "--no-cost")
    assert quiet.returncode == 0 and "Succeeded" in quiet.stdout and "estimated" not in quiet.stdout
    assert "cost" not in json.loads(run_cli(tmp_path, scriptrun("pass"), "--no-cost", "-o", "json").stdout)["status"]


def test_a_workflow_total_is_the_sum_of_its_tasks(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "w"},
        "spec": {
            "tasks": [
                {"name": "a", "script": {"source": BURN}, "resources": {"requests": {"cpu": "1"}}},
                {"name": "b", "dependencies": ["a"], "script": {"source": BURN}},
                {"name": "c", "dependencies": ["a"], "script": {"source": "pass"}},
            ]
        },
    }
    proc = run_cli(tmp_path, doc, "--price", "cpu=36,memory=3.6")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(x for x in lines if "est. USD" in x)
    column = [c.strip() for c in header.split("┃")].index("est. USD")
    tasks = {}
    for row in lines:
        cells = [c.strip() for c in row.split("│")]
        if len(cells) > column and cells[1] in ("a", "b", "c"):
            tasks[cells[1]] = Decimal(cells[column])
    assert set(tasks) == {"a", "b", "c"} and tasks["a"] > 0
    total = next(x for x in lines if x.startswith("estimated cost: "))
    assert total == f"estimated cost: {sum(tasks.values())} USD (local machine, --price rates; 3 tasks)"

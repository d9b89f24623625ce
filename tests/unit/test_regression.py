"""spec.regression: median and MAD over a key's history flag a run twice as slow, not a normal one."""

import pytest

from scriptrun.engine.regression import History, describe, history_key, judge, measured
from scriptrun.model.regression import RegressionCheck

CHECK = RegressionCheck()
STEADY = [4.0, 4.2, 3.9, 4.1, 4.0, 3.8]


def history(values: list[float], field: str = "executionTimeSeconds") -> History:
    h = History("job", [])
    for i, v in enumerate(values):
        h = h.recorded(f"uid-{i}", f"run-{i}", "2026-01-01T00:00:00Z", {field: v}, limit=20)
    return h


def test_a_run_twice_as_slow_as_its_history_regressed() -> None:
    (found,) = judge(CHECK, {"executionTimeSeconds": 8.1}, history(STEADY)) or []
    assert found.regressed and found.median == 4.0 and found.runs == 6
    assert describe([found]) == "executionTimeSeconds 8.1 against a median of 4 (MAD 0.1, 6 runs)"


@pytest.mark.parametrize("value", [4.0, 4.3, 3.0, 4.7])
def test_a_normal_run_did_not(value: float) -> None:
    (found,) = judge(CHECK, {"executionTimeSeconds": value}, history(STEADY)) or []
    assert not found.regressed


def test_one_outlier_in_the_history_moves_nothing() -> None:
    (found,) = judge(CHECK, {"executionTimeSeconds": 8.1}, history([*STEADY, 60.0])) or []
    assert found.regressed and found.median == 4.0


def test_a_constant_history_needs_the_minimum_increase() -> None:
    flat = history([10.0] * 6)
    assert not (judge(CHECK, {"executionTimeSeconds": 10.5}, flat) or [])[0].regressed  # +5 %: noise
    assert (judge(CHECK, {"executionTimeSeconds": 12.5}, flat) or [])[0].regressed  # +25 %


def test_no_verdict_before_min_runs() -> None:
    assert judge(CHECK, {"executionTimeSeconds": 100.0}, history(STEADY[:4])) is None


def test_the_history_is_bounded_and_a_run_is_recorded_once() -> None:
    h = history([float(i) for i in range(30)])
    assert len(h.runs) == 20 and h.runs[0]["values"]["executionTimeSeconds"] == 10.0
    again = h.recorded("uid-29", "run-29", "t", {"executionTimeSeconds": 29.0}, limit=20)
    assert len(again.runs) == 20 and [r["uid"] for r in again.runs].count("uid-29") == 1
    assert History.parse("job", again.dump()).runs == again.runs
    assert History.parse("job", "not json").runs == []


def test_measured_and_the_default_key() -> None:
    usage = {"available": True, "executionTimeSeconds": 3, "memoryMaxMb": 12.5, "cpuAvgPercent": "x"}
    assert measured(CHECK, usage) == {"executionTimeSeconds": 3.0, "memoryMaxMb": 12.5}
    assert measured(CHECK, {"available": False, "executionTimeSeconds": 3}) == {}
    assert history_key(CHECK, name="nightly-x7k2p", generate_name="nightly-", workflow=None, task=None) == "nightly"
    assert history_key(CHECK, name="etl-load", generate_name=None, workflow="etl", task="load") == "etl.load"
    keyed = RegressionCheck(key="import")
    assert history_key(keyed, name="a", generate_name="b-", workflow="c", task="d") == "import"

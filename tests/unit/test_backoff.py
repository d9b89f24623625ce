import pytest

from scriptrun.engine.backoff import MAX_WAIT_SECONDS, backoff_seconds
from scriptrun.model.scriptrun import Backoff


@pytest.mark.parametrize(
    ("strategy", "waits"),
    [
        ("exponential", [2, 6, 18, 54]),
        ("linear", [2, 4, 6, 8]),
        ("fibonacci", [2, 2, 4, 6]),
        ("fixed", [2, 2, 2, 2]),
    ],
)
def test_strategies(strategy: str, waits: list[float]) -> None:
    backoff = Backoff(strategy=strategy, duration_seconds=2, factor=3)  # type: ignore[arg-type]
    assert [backoff_seconds(backoff, n) for n in range(1, 5)] == waits


def test_cap_and_no_overflow() -> None:
    assert backoff_seconds(Backoff(duration_seconds=1, factor=10, cap_seconds=30), 5) == 30
    assert backoff_seconds(Backoff(duration_seconds=1, factor=100), 1000) == MAX_WAIT_SECONDS
    assert backoff_seconds(Backoff(), 0) == 0

import json

from scriptrun.engine.observe import observe_pod


def pod(phase: str, **status: object) -> dict:
    return {"metadata": {"name": "r-a1"}, "status": {"phase": phase, "startTime": "2026-01-01T00:00:00Z", **status}}


def terminated(name: str, code: int, reason: str, message: str | None = None) -> dict:
    term = {"exitCode": code, "reason": reason, "finishedAt": "2026-01-01T00:00:05Z"}
    if message:
        term["message"] = message
    return {"name": name, "state": {"terminated": term}}


def test_running() -> None:
    assert observe_pod(pod("Running"), 1, monitor_enabled=True).state == "Running"


def test_oomkilled() -> None:
    obs = observe_pod(pod("Failed", containerStatuses=[terminated("main", 137, "OOMKilled")]), 1, monitor_enabled=False)
    assert (obs.state, obs.exit_code, obs.reason) == ("Failed", 137, "OOMKilled")


def test_evicted_pod_reason_wins() -> None:
    obs = observe_pod(pod("Failed", reason="Evicted", message="low memory"), 1, monitor_enabled=False)
    assert (obs.reason, obs.message) == ("Evicted", "low memory")


def test_monitor_summary_is_parsed_or_explained() -> None:
    summary = {"cpu_max": 97.5, "memory_max_mb": 256.0}
    ok = pod(
        "Succeeded",
        containerStatuses=[terminated("main", 0, "Completed")],
        initContainerStatuses=[terminated("monitor", 0, "Completed", json.dumps(summary))],
    )
    obs = observe_pod(ok, 1, monitor_enabled=True)
    assert obs.usage == {**summary, "available": True}
    bad = pod(
        "Succeeded",
        containerStatuses=[terminated("main", 0, "Completed")],
        initContainerStatuses=[terminated("monitor", 0, "Completed", "{truncated")],
    )
    usage = observe_pod(bad, 1, monitor_enabled=True).usage
    assert usage is not None and usage["available"] is False and usage["reason"] == "MonitorSummaryInvalid"

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


# -- why a pod that is not running waits (shapes as kube-apiserver 1.34 returns them) ---------------

MISSING = "docker.io/scriptrun/not-there:0"
UNSCHEDULABLE = (
    "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are "
    "available: 1 Preemption is not helpful for scheduling."
)


def waiting(name: str, reason: str, message: str | None = None) -> dict:
    state: dict = {"reason": reason}
    if message:
        state["message"] = message
    return {"name": name, "ready": False, "started": False, "restartCount": 0, "state": {"waiting": state}}


def running_sidecar() -> dict:
    return {
        "name": "monitor",
        "ready": True,
        "started": True,
        "restartCount": 0,
        "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}},
    }


def conditions(scheduled: bool = True, **extra: str) -> list[dict]:
    cond = {"type": "PodScheduled", "status": "True" if scheduled else "False", "lastProbeTime": None, **extra}
    return [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "False"}, cond]


def test_err_image_never_pull_names_the_container_and_image() -> None:
    message = f'Container image "{MISSING}" is not present with pull policy of Never'
    obs = observe_pod(
        pod(
            "Pending",
            conditions=conditions(),
            initContainerStatuses=[running_sidecar()],
            containerStatuses=[waiting("main", "ErrImageNeverPull", message)],
        ),
        1,
        monitor_enabled=True,
    )
    assert (obs.state, obs.reason, obs.message) == ("Pending", "ErrImageNeverPull", f"container main: {message}")


def test_image_pull_back_off_of_the_monitor_sidecar() -> None:
    message = f'Back-off pulling image "{MISSING}": ErrImagePull: failed to resolve reference'
    obs = observe_pod(
        pod(
            "Pending",
            conditions=conditions(),
            initContainerStatuses=[waiting("monitor", "ImagePullBackOff", message)],
            containerStatuses=[waiting("main", "PodInitializing")],
        ),
        1,
        monitor_enabled=True,
    )
    assert (obs.reason, obs.message) == ("ImagePullBackOff", f"init container monitor: {message}")


def test_a_main_container_error_beats_the_sidecar_and_scheduling() -> None:
    obs = observe_pod(
        pod(
            "Pending",
            conditions=conditions(),
            initContainerStatuses=[waiting("monitor", "ErrImagePull", "monitor image")],
            containerStatuses=[waiting("main", "CreateContainerConfigError", 'configmap "settings" not found')],
        ),
        1,
        monitor_enabled=True,
    )
    assert (obs.reason, obs.message) == ("CreateContainerConfigError", 'container main: configmap "settings" not found')


def test_unschedulable_comes_from_the_pod_scheduled_condition() -> None:
    unscheduled = {
        "metadata": {"name": "r-a1"},
        "status": {
            "phase": "Pending",
            "qosClass": "Burstable",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": UNSCHEDULABLE,
                    "lastProbeTime": None,
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        },
    }
    obs = observe_pod(unscheduled, 1, monitor_enabled=True)
    assert (obs.state, obs.start_time, obs.reason, obs.message) == ("Pending", None, "Unschedulable", UNSCHEDULABLE)


def test_normal_start_up_is_no_reason() -> None:
    obs = observe_pod(
        pod(
            "Pending",
            conditions=conditions(),
            initContainerStatuses=[waiting("monitor", "ContainerCreating")],
            containerStatuses=[waiting("main", "PodInitializing")],
        ),
        1,
        monitor_enabled=True,
    )
    assert (obs.state, obs.reason, obs.message) == ("Pending", None, None)
    assert observe_pod(pod("Pending"), 1, monitor_enabled=True).reason is None


def test_a_running_pod_has_no_pending_reason() -> None:
    obs = observe_pod(pod("Running", containerStatuses=[waiting("main", "ErrImagePull")]), 1, monitor_enabled=True)
    assert (obs.state, obs.reason) == ("Running", None)

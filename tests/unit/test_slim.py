"""What the operator keeps per object is what it reads, no more (10,000 runs must fit in 250 MiB):
stored bodies lose managedFields and kubectl's last-applied copy, indexed pods keep the status fields
the engine reads."""

from __future__ import annotations

import copy
from typing import Any

from scriptrun.controllers.bodies import LAST_APPLIED, Bodies, slim
from scriptrun.controllers.scriptrun import pod_snapshot


def test_stored_bodies_are_slim_and_the_caller_s_body_untouched() -> None:
    body: dict[str, Any] = {
        "metadata": {
            "name": "r",
            "resourceVersion": "5",
            "managedFields": [{"manager": "kubectl"}],
            "annotations": {LAST_APPLIED: "{...}", "keep": "me"},
        },
        "spec": {"script": {"source": "print(1)"}},
        "status": {"phase": "Running"},
    }
    original = copy.deepcopy(body)
    bodies = Bodies()
    bodies.store(("ns", "r"), body)
    kept = bodies.get(("ns", "r"))
    assert kept == {
        "metadata": {"name": "r", "resourceVersion": "5", "annotations": {"keep": "me"}},
        "spec": {"script": {"source": "print(1)"}},
        "status": {"phase": "Running"},
    }
    assert body == original
    plain = {"metadata": {"name": "x"}}
    assert slim(plain) is plain  # nothing to drop: no copy


def test_indexed_pods_keep_what_the_engine_reads() -> None:
    terminated = {"terminated": {"exitCode": 0, "reason": "Completed", "message": "{}", "finishedAt": "t"}}
    pod = {
        "metadata": {
            "name": "r-a1",
            "namespace": "ns",
            "labels": {"a": "b"},
            "ownerReferences": [{"kind": "ScriptRun", "name": "r", "uid": "u", "controller": True}],
        },
        "spec": {"nodeName": "n1", "containers": [{"name": "main", "image": "x"}]},
        "status": {
            "phase": "Succeeded",
            "reason": "r",
            "message": "m",
            "startTime": "t0",
            "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}],
            "podIP": "10.0.0.1",
            "hostIP": "10.1.0.1",
            "qosClass": "Burstable",
            "containerStatuses": [
                {"name": "main", "state": terminated, "lastState": {}, "restartCount": 0, "image": "x", "imageID": "y"}
            ],
            "initContainerStatuses": [{"name": "monitor", "state": terminated, "volumeMounts": [{"name": "v"}]}],
        },
    }
    found = pod_snapshot(pod)
    assert found is not None
    key, snapshot = found
    assert key == ("ns", "r")
    assert snapshot["status"] == {
        "phase": "Succeeded",
        "reason": "r",
        "message": "m",
        "startTime": "t0",
        "conditions": pod["status"]["conditions"],
        "containerStatuses": [{"name": "main", "state": terminated, "lastState": {}, "restartCount": 0}],
        "initContainerStatuses": [{"name": "monitor", "state": terminated}],
    }

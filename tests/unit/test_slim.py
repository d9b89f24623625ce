"""What the operator keeps per object is what it reads, no more (10,000 runs must fit in 250 MiB):
stored bodies lose managedFields and kubectl's last-applied copy, indexed pods keep the status fields
the engine reads."""

from __future__ import annotations

import copy
import json
from typing import Any

from scriptrun.controllers.bodies import LAST_APPLIED, Bodies, compact, slim
from scriptrun.controllers.pods import pod_snapshot


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


def test_bodies_kept_share_their_keys_and_short_strings() -> None:
    """Two watch events are two parses: each has its own "metadata", "phase", "Succeeded" ... Kept,
    they share them (10,000 bodies hold each key once), and equal what came in."""
    text = json.dumps(
        {
            "metadata": {"name": "r", "resourceVersion": "5", "uid": "u" * 36},
            "status": {"phase": "Succeeded", "conditions": [{"type": "Ready", "status": "True"}], "log": "x" * 200},
        }
    )
    bodies = Bodies()
    bodies.store(("ns", "a"), json.loads(text))
    bodies.store(("ns", "b"), json.loads(text))
    a, b = bodies.get(("ns", "a")), bodies.get(("ns", "b"))
    assert a == b == json.loads(text)
    key_a = next(k for k in a["status"] if k == "conditions")
    key_b = next(k for k in b["status"] if k == "conditions")
    assert key_a is key_b
    assert a["status"]["phase"] is b["status"]["phase"]
    assert a["status"]["conditions"][0]["status"] is b["status"]["conditions"][0]["status"]
    assert a["status"]["log"] is not b["status"]["log"]  # long strings are not worth sharing
    assert compact([{"k": 1}, "v", 2.5, None]) == [{"k": 1}, "v", 2.5, None]


def test_a_late_event_is_not_kept_nor_copied() -> None:
    bodies = Bodies()
    assert not bodies.store(("ns", "r"), {"metadata": {"resourceVersion": "7"}, "status": {"phase": "Running"}})
    assert bodies.store(("ns", "r"), {"metadata": {"resourceVersion": "6"}, "status": {"phase": "Pending"}})
    assert bodies.store(("ns", "r"), {"metadata": {"resourceVersion": "7"}, "status": {"phase": "Running"}})
    assert not bodies.store(("ns", "r"), {"metadata": {"resourceVersion": "8"}, "status": {"phase": "Succeeded"}})
    assert bodies.get(("ns", "r"))["status"]["phase"] == "Succeeded"  # type: ignore[index]


def test_packed_bodies_read_back_equal_and_take_a_fraction_of_their_json() -> None:
    """The ScriptRun controller keeps thousands of bodies packed: what get() returns equals what
    was stored (slimmed), a fresh copy each time; late events and echoes are told apart as before;
    the phase counts need no unpacking."""
    conditions = [
        {"type": t, "status": "True", "reason": "Succeeded", "lastTransitionTime": "2026-11-23T03:31:15Z"}
        for t in ("Started", "Complete", "Failed", "Retrying", "Waiting")
    ]

    def body(name: str, rv: str, phase: str) -> dict[str, Any]:
        return {
            "metadata": {
                "name": name,
                "namespace": "ns",
                "uid": f"uid-{name}",
                "resourceVersion": rv,
                "managedFields": [{"manager": "x"}],
            },
            "spec": {"script": {"source": "print(1)"}},
            "status": {"phase": phase, "conditions": conditions},
        }

    bodies = Bodies(packed=True)
    assert not bodies.store(("ns", "a"), body("a", "5", "Running"))
    assert bodies.store(("ns", "a"), body("a", "4", "Pending"))  # late
    assert bodies.store(("ns", "a"), body("a", "5", "Running"))  # echo
    assert not bodies.store(("ns", "b"), body("b", "9", "Succeeded"))
    kept = bodies.get(("ns", "a"))
    assert kept == slim(body("a", "5", "Running")) and "managedFields" not in kept["metadata"]  # type: ignore[index]
    kept["status"]["phase"] = "changed by a caller"  # type: ignore[index]
    assert bodies.get(("ns", "a"))["status"]["phase"] == "Running"  # type: ignore[index]
    assert bodies.count_phases("ScriptRun") == {("ScriptRun", "Running"): 1, ("ScriptRun", "Succeeded"): 1}
    assert bodies.count_phases("ScriptRun", {"uid-a": "Failed"})[("ScriptRun", "Failed")] == 1
    assert sorted(b["metadata"]["name"] for b in bodies.values()) == ["a", "b"]
    assert bodies.kept_bytes() * 3 < 2 * len(json.dumps(slim(body("a", "5", "Running"))))
    bodies.update(("ns", "c"), body("c", "1", "Running"))  # not tracked: not kept
    assert ("ns", "c") not in bodies and len(bodies) == 2
    bodies.store(("ns", "a"), {"metadata": {"resourceVersion": "x"}})  # unreadable version: replaced
    assert bodies.store(("ns", "a"), {"metadata": {"resourceVersion": "1"}}) is False

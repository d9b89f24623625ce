"""TTL after finish, and cascade deletion of pods and the script ConfigMap (a large inline script
gets one; a small one travels in the pod)."""

from __future__ import annotations

from tests.support.kube import Kube, scriptrun

EXIT = "test.scriptrun.dev/exit-code"
LARGE = {"script": {"source": "# " + "x" * 40_000 + "\nprint('hi')\n"}}  # over the in-pod limit: a ConfigMap


def test_ttl_deletes_the_finished_run_and_its_children(kube: Kube) -> None:
    kube.apply(scriptrun("short", {"ttlSecondsAfterFinished": 2, **LARGE}, {EXIT: "0"}))
    kube.wait_phase("short", "Succeeded")
    kube.wait("run deleted by TTL", lambda: kube.get("scriptrun", "short") is None, timeout=30)
    kube.wait("pods collected", lambda: kube.list("pods") == [], timeout=30)
    kube.wait("configmap collected", lambda: kube.get("configmap", "short-script") is None, timeout=30)


def test_deleting_a_running_run_deletes_pods_and_configmap(kube: Kube) -> None:
    kube.apply(scriptrun("doomed", LARGE))
    kube.wait("running", lambda: kube.run_status("doomed").get("phase") == "Running")
    assert kube.get("configmap", "doomed-script") is not None
    kube.delete("scriptrun", "doomed")
    kube.wait("pods collected", lambda: kube.list("pods") == [], timeout=30)
    kube.wait("configmap collected", lambda: kube.get("configmap", "doomed-script") is None, timeout=30)


def test_a_run_created_again_under_the_same_name_does_not_adopt_old_pods(kube: Kube) -> None:
    kube.apply(scriptrun("reborn", {}, {EXIT: "7"}))
    kube.wait_phase("reborn", "Failed")
    old = kube.get("scriptrun", "reborn")
    assert old is not None
    kube.cluster.kubectl("-n", kube.ns, "delete", "scriptrun/reborn", "--wait=true")
    kube.apply(scriptrun("reborn", {}, {EXIT: "0"}))  # at once: the old pod may not be collected yet
    status = kube.wait_phase("reborn", "Succeeded", timeout=60)
    assert [a["exitCode"] for a in status["attempts"]] == [0]
    pod = kube.get("pod", "reborn-a1")
    assert pod is not None and pod["metadata"]["ownerReferences"][0]["uid"] != old["metadata"]["uid"]

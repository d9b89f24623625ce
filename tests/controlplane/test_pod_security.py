"""Pod Security Standards: in a namespace whose PodSecurity admission enforces "restricted" (the API
server's own admission plugin, not a stand-in), a run that says it runs as non-root gets its pod
admitted as built (both containers: no privilege escalation, capabilities dropped, RuntimeDefault
seccomp, the monitor as its non-root user); a run that does not is refused by the API server, and
the run fails with PodRejected naming the violation instead of retrying hot."""

from __future__ import annotations

from tests.support.kube import Kube, scriptrun

EXIT = "test.scriptrun.dev/exit-code"


def test_runs_pass_the_restricted_level_when_they_run_as_non_root(kube: Kube) -> None:
    kube.cluster.kubectl("label", "namespace", kube.ns, "pod-security.kubernetes.io/enforce=restricted")
    spec = {"securityContext": {"runAsNonRoot": True, "runAsUser": 10001}}
    kube.apply(scriptrun("restricted", spec, {EXIT: "0"}))
    status = kube.wait_phase("restricted", "Succeeded")
    assert status["attempts"][0]["reason"] == "Completed"
    pod = kube.get("pod", "restricted-a1")
    assert pod is not None
    (main,) = pod["spec"]["containers"]
    (monitor,) = pod["spec"]["initContainers"]
    for container in (main, monitor):
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}

    kube.apply(scriptrun("as-root", {}, {EXIT: "0"}))  # no runAsNonRoot: the level refuses the pod
    failed = kube.wait_phase("as-root", "Failed")
    condition = {c["type"]: c for c in failed["conditions"]}["Failed"]
    assert condition["reason"] == "PodRejected"
    assert 'violates PodSecurity "restricted:latest"' in condition["message"]
    assert "runAsNonRoot" in condition["message"]

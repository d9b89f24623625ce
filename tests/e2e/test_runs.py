"""Real containers, real kernels: measured usage is plausible, a memory limit gives a real OOMKilled,
timeoutSeconds stops a real sleeping script, a user's own image without scriptrun works, and a pod
that cannot start says why."""

from __future__ import annotations

from typing import Any

from tests.support.kube import Kube

HOLD_100_MIB = """
import time
block = bytearray(100 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1          # touch every page: resident, not just reserved
time.sleep(3)
print("held", len(block) >> 20, "MiB")
"""

BURN_1S_CPU = """
import time
start = time.process_time()
n = 0
while time.process_time() - start < 1.0:
    n += 1
print("burned", round(time.process_time() - start, 3), "s of CPU")
"""

GROW_UNTIL_KILLED = """
chunks = []
while True:
    chunks.append(bytearray(8 * 1024 * 1024))
    for i in range(0, len(chunks[-1]), 4096):
        chunks[-1][i] = 1
"""

WRITE_OUTPUT = """
import os, sys
open(os.path.join(os.environ["SCRIPTRUN_OUTPUTS"], "answer"), "w").write("42")
print("python", sys.version.split()[0], "without scriptrun:", end=" ")
try:
    import scriptrun  # noqa: F401
    print("no")
except ImportError:
    print("yes")
"""


def run(name: str, source: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "ScriptRun",
        "metadata": {"name": name},
        "spec": {"script": {"source": source}, **spec},
    }


def test_measured_usage_is_plausible(kube: Kube) -> None:
    interval = {"monitor": {"intervalSeconds": 0.2}}
    kube.apply([run("hold", HOLD_100_MIB, **interval), run("burn", BURN_1S_CPU, **interval)])
    hold = kube.wait_phase("hold", "Succeeded", timeout=120)["usage"]
    burn = kube.wait_phase("burn", "Succeeded", timeout=120)["usage"]
    assert 100 <= hold["memoryMaxMb"] <= 130, hold
    cpu = burn["userTimeSeconds"] + burn["systemTimeSeconds"]
    assert 0.9 <= cpu <= 1.3, burn
    assert burn["executionTimeSeconds"] >= 1.0 and burn["exitCode"] == 0


def test_memory_limit_gives_a_real_oom_kill(kube: Kube) -> None:
    kube.apply(run("oom", GROW_UNTIL_KILLED, resources={"limits": {"memory": "64Mi"}}))
    status = kube.wait_phase("oom", "Failed", timeout=120)
    attempt = status["attempts"][-1]
    assert attempt["reason"] == "OOMKilled" and attempt["exitCode"] == 137, attempt


def test_timeout_stops_a_real_sleeping_script(kube: Kube) -> None:
    kube.apply(run("sleepy", "import time\nprint('sleeping', flush=True)\ntime.sleep(600)", timeoutSeconds=5))
    status = kube.wait_phase("sleepy", "Failed", timeout=120)
    attempt = status["attempts"][-1]
    assert attempt["reason"] == "DeadlineExceeded", attempt
    pod = kube.get("pod", attempt["podName"])
    assert pod is None or pod["status"]["phase"] == "Failed" or pod["metadata"].get("deletionTimestamp"), pod


def test_a_plain_python3_image_without_scriptrun(kube: Kube) -> None:
    """The user brings a Debian python3 rootfs with nothing of ours in it: the monitor runs in its own
    image, the launcher is copied in, and usage and outputs come back."""
    image = "docker.io/library/scriptrun-test-python3:bookworm"
    kube.apply(run("plain", WRITE_OUTPUT, image=image, imagePullPolicy="Never"))
    status = kube.wait_phase("plain", "Succeeded", timeout=120)
    assert status["outputs"] == {"answer": "42"}
    assert status["usage"]["available"] is True and status["usage"]["memoryMaxMb"] > 1
    log = kube.cluster.kubectl("-n", kube.ns, "logs", status["attempts"][-1]["podName"], "-c", "main").stdout
    assert "without scriptrun: yes" in log, log


def test_small_and_large_inline_scripts_reach_the_container(kube: Kube) -> None:
    """A small script travels in the pod (the kubelet writes it from an annotation: downward API),
    a large one in an owned ConfigMap; both run as written."""
    small = "print('small script ran')\n"
    large = "# " + "x" * 40_000 + "\nprint('large script ran')\n"
    kube.apply(run("small", small))
    kube.apply(run("large", large))
    for name in ("small", "large"):
        status = kube.wait_phase(name, "Succeeded", timeout=120)
        log = kube.cluster.kubectl("-n", kube.ns, "logs", status["attempts"][-1]["podName"], "-c", "main").stdout
        assert f"{name} script ran" in log, log
    assert kube.get("configmap", "small-script") is None
    assert kube.get("configmap", "large-script") is not None


def test_pending_is_explained_and_times_out_with_its_reason(kube: Kube) -> None:
    missing = "docker.io/scriptrun/not-there:0"
    kube.apply(
        [
            run("neverpull", "print(1)", image=missing, imagePullPolicy="Never"),
            run("neverpull-timeout", "print(1)", image=missing, imagePullPolicy="Never", pendingTimeoutSeconds=8),
        ]
    )

    def waiting() -> dict[str, Any] | None:
        status = kube.run_status("neverpull")
        cond = {c["type"]: c for c in status.get("conditions", [])}.get("Waiting")
        return status if cond and cond["status"] == "True" and cond["reason"] == "ErrImageNeverPull" else None

    status = kube.wait("a Waiting=ErrImageNeverPull condition", waiting, timeout=90)
    assert status["phase"] == "Pending"
    assert "ErrImageNeverPull" in status["message"] and missing in status["message"], status["message"]
    failed = kube.wait_phase("neverpull-timeout", "Failed", timeout=90)
    assert failed["attempts"][-1]["reason"] == "ErrImageNeverPull", failed
    failed_cond = {c["type"]: c for c in failed["conditions"]}["Failed"]
    assert failed_cond["reason"] == "ErrImageNeverPull", failed_cond

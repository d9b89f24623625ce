"""The pod builder, against a golden file."""

import os
from pathlib import Path

import yaml

from scriptrun.build.names import fit, pod_name
from scriptrun.build.pod import PodInputs, RunRef, build_pod, build_script_configmap
from scriptrun.model.manifest import parse_object
from scriptrun.model.scriptrun import MonitorSpec, ScriptRun

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"


def hello() -> ScriptRun:
    doc = yaml.safe_load((ROOT / "examples" / "hello-scriptrun.yaml").read_text())
    run = parse_object(doc)
    assert isinstance(run, ScriptRun)
    return run


def test_pod_matches_golden() -> None:
    run = hello()
    pod = build_pod(PodInputs(run=RunRef("hello", "ns1", "uid-1"), spec=run.spec, attempt=2))
    golden = GOLDEN / "hello-pod-a2.yaml"
    rendered = yaml.safe_dump(pod, sort_keys=False)
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert golden.exists(), f"{golden} missing: UPDATE_GOLDEN=1 pytest {__file__}, review, commit"
    assert rendered == golden.read_text(), "pod builder output changed: review, then UPDATE_GOLDEN=1"


def test_pod_essentials() -> None:
    run = hello()
    pod = build_pod(PodInputs(run=RunRef("hello", "ns1", "uid-1"), spec=run.spec, attempt=1))
    spec = pod["spec"]
    assert pod["metadata"]["name"] == "hello-a1"
    assert pod["metadata"]["ownerReferences"][0]["controller"] is True
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 60
    assert spec["shareProcessNamespace"] is True
    assert spec["automountServiceAccountToken"] is False
    monitor = spec["initContainers"][0]
    assert monitor["restartPolicy"] == "Always" and monitor["terminationMessagePath"] == "/dev/termination-log"
    assert pod["metadata"]["labels"]["scriptrun.dev/attempt"] == "1"
    # a small inline script travels in the pod: an annotation the kubelet writes to the script volume
    assert build_script_configmap(RunRef("hello", "ns1", "uid-1"), run.spec) is None
    assert pod["metadata"]["annotations"]["scriptrun.dev/script"] == run.spec.script.source
    (volume,) = [v for v in spec["volumes"] if v["name"] == "script"]
    assert volume["downwardAPI"]["items"] == [
        {"path": "main.py", "fieldRef": {"fieldPath": "metadata.annotations['scriptrun.dev/script']"}}
    ]


def test_a_large_inline_script_gets_its_own_configmap() -> None:
    run = hello()
    big = "# " + "x" * (32 * 1024) + "\nprint('big')\n"
    spec = run.spec.model_copy(update={"script": run.spec.script.model_copy(update={"source": big})})
    ref = RunRef("hello", "ns1", "uid-1")
    cm = build_script_configmap(ref, spec)
    assert cm is not None and cm["data"]["main.py"] == big
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    pod = build_pod(PodInputs(run=ref, spec=spec, attempt=1))
    assert "scriptrun.dev/script" not in (pod["metadata"].get("annotations") or {})
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "script"]
    assert volume["configMap"] == {"name": "hello-script"}


def test_long_names_stay_valid_and_deterministic() -> None:
    long = "x" * 300
    assert len(pod_name(long, 12)) <= 253
    assert pod_name(long, 12) == pod_name(long, 12) != pod_name(long, 13)
    assert len(fit("a" * 100, 63)) == 63


def test_command_mode_is_wrapped_by_a_shell_that_publishes_the_pid() -> None:
    run = hello()
    spec = run.spec.model_copy(
        update={"script": run.spec.script.model_copy(update={"source": None, "command": ["/app/job", "--fast"]})}
    )
    pod = build_pod(PodInputs(run=RunRef("hello", "ns1", "uid-1"), spec=spec, attempt=1))
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["sh", "-c"] and command[-2:] == ["/app/job", "--fast"]
    assert "/scriptrun/run/main.pid" in command[2]
    assert not any(v.get("name") == "script" for v in pod["spec"]["volumes"])


def test_monitor_runs_in_its_own_image_whatever_the_run_brings() -> None:
    run = hello()
    spec = run.spec.model_copy(update={"image": "python:3.12"})
    inputs = PodInputs(
        run=RunRef("hello", "ns1", "uid-1"),
        spec=spec,
        attempt=1,
        monitor_image="registry.example/scriptrun/monitor:9",
        monitor_pull_policy="Never",
    )
    pod = build_pod(inputs)
    main, monitor = pod["spec"]["containers"][0], pod["spec"]["initContainers"][0]
    assert main["image"] == "python:3.12"
    assert monitor["image"] == "registry.example/scriptrun/monitor:9"
    assert monitor["imagePullPolicy"] == "Never"
    # the user's image needs only python3: the launcher is copied in by the monitor
    assert main["command"][:2] == ["python3", "/scriptrun/run/launch.py"]


def test_outputs_directory_exists_in_every_pod() -> None:
    """$SCRIPTRUN_OUTPUTS is its own emptyDir, mounted in both containers, monitor or not."""
    run = hello()
    for enabled in (True, False):
        spec = run.spec.model_copy(update={"monitor": MonitorSpec(enabled=enabled)})
        pod = build_pod(PodInputs(run=RunRef("hello", "ns1", "uid-1"), spec=spec, attempt=1))
        containers = pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
        assert len(containers) == (2 if enabled else 1)
        for container in containers:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/scriptrun/run/outputs"] == "scriptrun-outputs"
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["SCRIPTRUN_OUTPUTS"] == "/scriptrun/run/outputs"
        assert {"name": "scriptrun-outputs", "emptyDir": {}} in pod["spec"]["volumes"]

"""The pod/launcher contract: the pod builder, the launcher, the monitor and the local backend agree.

Each side is taken as it behaves (a built pod, a real local attempt, the monitor's CLI), not as it
imports the constants, so a side that spells a name on its own again fails here.
"""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from scriptrun import cli
from scriptrun.build import names
from scriptrun.build.pod import PodInputs, RunRef, build_pod, shell_launch
from scriptrun.local.process import start_attempt
from scriptrun.model import contract
from scriptrun.model.scriptrun import MonitorSpec, RunTemplate
from scriptrun.monitor import launch, sidecar

SPEC = RunTemplate.model_validate(
    {
        "script": {
            "source": (
                "import json, os, sys\n"
                "names = json.loads(sys.argv[1])\n"
                "seen = {n: os.environ.get(n) for n in names}\n"
                "open('seen.json', 'w').write(json.dumps(seen))\n"  # in its working directory
            )
        },
        "env": [{"name": "GREETING", "value": "hi"}],
        "monitor": {"enabled": True, "intervalSeconds": 0.1},
    }
)
WORKFLOW_LABELS = ((names.LABEL_WORKFLOW, "etl"), (names.LABEL_TASK, "load"))


def pod(attempt: int = 3, spec: RunTemplate = SPEC) -> dict[str, Any]:
    inputs = PodInputs(run=RunRef("hello", "ns1", "uid-1"), spec=spec, attempt=attempt, extra_labels=WORKFLOW_LABELS)
    return build_pod(inputs)


def containers(built: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return built["spec"]["containers"][0], built["spec"]["initContainers"][0]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_the_launcher_repeats_the_contract_file_names() -> None:
    """launch.py runs standalone in the user's image, so it spells these itself: the same."""
    assert (launch.PID_FILE, launch.EXIT_FILE) == (contract.PID_FILE, contract.EXIT_FILE)
    assert Path(launch.__file__).name == contract.LAUNCHER_FILE


def test_the_contract_module_loads_only_the_standard_library() -> None:
    """The monitor sidecar imports it: no pydantic, nothing outside the standard library."""
    code = "import json, sys; import scriptrun.model.contract; print(json.dumps(sorted(sys.modules)))"
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    modules = set(json.loads(ran.stdout))
    third_party = {m.split(".")[0] for m in modules} - set(sys.stdlib_module_names) - {"scriptrun"}
    assert {m for m in third_party if not m.startswith("_")} == set()
    assert {m for m in modules if m.startswith("scriptrun")} == {"scriptrun", "scriptrun.model", contract.__name__}


def test_the_pod_follows_the_contract() -> None:
    main, monitor = containers(pod())
    assert list(env_of(main).items())[:2] == list(
        contract.script_env(outputs_dir=contract.OUTPUTS_DIR, attempt=3).items()
    )
    assert main["command"][:3] == ["python3", f"{contract.RUN_DIR}/{contract.LAUNCHER_FILE}", contract.RUN_DIR]
    assert main["command"][-1] == f"{contract.SCRIPT_DIR}/{contract.SCRIPT_KEY}"
    for container in (main, monitor):
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {contract.RUN_DIR, contract.OUTPUTS_DIR} <= mounts
        assert container["terminationMessagePath"] == contract.TERMINATION_LOG
    assert f"--run-dir={contract.RUN_DIR}" in monitor["args"]
    assert set(env_of(monitor)) == set(contract.MONITOR_LABEL_ENV.values())
    assert f"{contract.RUN_DIR}/{contract.PID_FILE}" in shell_launch()


def test_the_monitor_reads_what_the_pod_builder_sets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`scriptrun monitor`, run with the built sidecar's env and no arguments, watches the pod's run
    directory, writes where the pod reads the summary, and labels its metrics with the run."""
    _, monitor = containers(pod())
    for name, value in env_of(monitor).items():
        monkeypatch.setenv(name, value)
    seen: list[sidecar.MonitorConfig] = []

    def run_monitor(config: sidecar.MonitorConfig) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(sidecar, "run_monitor", run_monitor)
    assert cli.main(["monitor"]) == 0
    config = seen[0]
    assert config.labels == {"namespace": "ns1", "scriptrun": "hello", "workflow": "etl", "task": "load"}
    assert str(config.run_dir) == contract.RUN_DIR == monitor["args"][-1].removeprefix("--run-dir=")
    assert str(config.termination_path) == monitor["terminationMessagePath"]
    assert sidecar.install_launcher(tmp_path).name == Path(containers(pod())[0]["command"][1]).name


def test_a_local_attempt_gets_what_a_pod_gets(tmp_path: Path) -> None:
    """The script's environment locally has every name the pod gives it, with the same meaning, and
    the launcher leaves the same handshake files in the local work directory."""
    pod_env = env_of(containers(pod(attempt=3))[0])
    contract_names = [n for n in pod_env if n not in {e.name for e in SPEC.env or []}]
    assert contract_names == list(contract.script_env(outputs_dir="x", attempt=1))
    attempt = start_attempt(
        spec=SPEC.model_copy(update={"args": [json.dumps(contract_names)]}),
        attempt=3,
        name="hello-a3",
        source=SPEC.script.source,
        base_dir=tmp_path,
    )
    deadline = time.monotonic() + 60
    while attempt.exit_code is None:
        assert time.monotonic() < deadline, "the local attempt did not finish"
        attempt.tick()
        time.sleep(0.02)
    assert attempt.exit_code == 0
    seen = json.loads((attempt.workdir / "seen.json").read_text())
    assert set(seen) == set(contract_names) and None not in seen.values()
    assert seen[contract.ENV_ATTEMPT] == pod_env[contract.ENV_ATTEMPT] == "3"
    # outputs: the same directory name under the run directory (pod) or the work directory (local)
    local_outputs, pod_outputs = Path(seen[contract.ENV_OUTPUTS]), Path(pod_env[contract.ENV_OUTPUTS])
    assert local_outputs == attempt.workdir / pod_outputs.relative_to(contract.RUN_DIR)
    assert (attempt.workdir / contract.PID_FILE).is_file() and (attempt.workdir / contract.EXIT_FILE).is_file()
    assert (attempt.workdir / contract.SCRIPT_KEY).read_text() == SPEC.script.source


def test_the_monitor_env_round_trips() -> None:
    env = contract.monitor_env(namespace="ns", name="n", workflow="w", task="t")
    assert contract.monitor_labels(env) == {"namespace": "ns", "scriptrun": "n", "workflow": "w", "task": "t"}
    assert contract.monitor_labels({}) == dict.fromkeys(contract.MONITOR_LABEL_ENV, "")


def test_without_the_monitor_the_script_still_gets_the_contract_env() -> None:
    (main,) = pod(spec=SPEC.model_copy(update={"monitor": MonitorSpec(enabled=False)}))["spec"]["containers"]
    assert list(env_of(main))[:2] == [contract.ENV_OUTPUTS, contract.ENV_ATTEMPT]
    assert main["command"] == ["python3", f"{contract.SCRIPT_DIR}/{contract.SCRIPT_KEY}"]

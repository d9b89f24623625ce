"""`scriptrun run`: the local backend runs manifests as real processes with the engine's semantics."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    tmp_path: Path, manifest: dict[str, Any] | list[dict[str, Any]], *extra: str
) -> subprocess.CompletedProcess[str]:
    docs = manifest if isinstance(manifest, list) else [manifest]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return subprocess.run(
        [sys.executable, "-m", "scriptrun", "run", str(path), *extra], capture_output=True, text=True, timeout=120
    )


def scriptrun(spec: dict[str, Any], name: str = "t") -> dict[str, Any]:
    return {"apiVersion": "scriptrun.dev/v1alpha1", "kind": "ScriptRun", "metadata": {"name": name}, "spec": spec}


def test_hello_example_succeeds() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scriptrun", "run", str(ROOT / "examples" / "hello-scriptrun.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Succeeded" in proc.stdout
    assert "hello from scriptrun" in proc.stderr


def test_failure_is_retried_with_backoff_then_fails(tmp_path: Path) -> None:
    spec = {
        "script": {"source": "import sys; sys.exit(3)"},
        "retryStrategy": {"limit": 2, "backoff": {"durationSeconds": 0.3, "factor": 2}},
    }
    proc = run_cli(tmp_path, scriptrun(spec), "-o", "json")
    assert proc.returncode == 1
    status = json.loads(proc.stdout)["status"]
    assert status["phase"] == "Failed"
    assert [a["exitCode"] for a in status["attempts"]] == [3, 3, 3]
    assert "Backoff: retrying in 0.3s" in proc.stderr and "retrying in 0.6s" in proc.stderr


def test_timeout_kills_and_reports_deadline(tmp_path: Path) -> None:
    spec = {"script": {"source": "import time; time.sleep(60)"}, "timeoutSeconds": 1}
    proc = run_cli(tmp_path, scriptrun(spec), "-o", "json")
    assert proc.returncode == 1
    attempt = json.loads(proc.stdout)["status"]["attempts"][0]
    assert attempt["reason"] == "DeadlineExceeded"


def test_configmap_in_the_same_file(tmp_path: Path) -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "code"},
        "data": {"job.py": "import sys; print('from cm', sys.argv[1:])"},
    }
    spec = {"script": {"configMapRef": {"name": "code", "key": "job.py"}}, "args": ["x"]}
    proc = run_cli(tmp_path, [cm, scriptrun(spec)])
    assert proc.returncode == 0, proc.stderr
    assert "from cm ['x']" in proc.stderr


def test_missing_configmap_is_a_clear_failure(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, scriptrun({"script": {"configMapRef": {"name": "nope"}}}), "-o", "json")
    assert proc.returncode == 1
    status = json.loads(proc.stdout)["status"]
    assert status["phase"] == "Failed"
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Failed"] == "ConfigMapNotFound"


def test_invalid_manifest_names_the_field(tmp_path: Path) -> None:
    spec = {"script": {"source": "print(1)"}, "retryStrategy": {"limit": -1}}
    proc = run_cli(tmp_path, scriptrun(spec))
    assert proc.returncode == 2
    assert "spec.retryStrategy.limit" in proc.stderr


def test_local_runs_are_measured_by_the_same_sampler(tmp_path: Path) -> None:
    # the script's own CPU account is the reference (allocating 100 MiB takes more or less system
    # time with what else the machine does)
    code = (
        "import os, time\nx = b'1' * (100 * 1024 * 1024)\nt = time.process_time()\n"
        "while time.process_time() - t < 1: pass\n"
        "open(os.path.join(os.environ['SCRIPTRUN_OUTPUTS'], 'cpu'), 'w').write(str(time.process_time()))"
    )
    spec = {"script": {"source": code}, "monitor": {"intervalSeconds": 0.1}}
    proc = run_cli(tmp_path, scriptrun(spec), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    usage = json.loads(proc.stdout)["status"]["usage"]
    assert usage["available"] is True and usage["exitCode"] == 0
    assert usage["memoryMaxMb"] >= 100 and usage["samples"] >= 5
    own = float(json.loads(proc.stdout)["status"]["outputs"]["cpu"])
    assert own >= 1.0
    assert abs(usage["userTimeSeconds"] + usage["systemTimeSeconds"] - own) <= 0.3
    text = run_cli(tmp_path, scriptrun(spec))
    assert "usage: cpu avg" in text.stdout and "memory max" in text.stdout

"""Bad input, through `scriptrun run`: every hostile manifest ends with exit code 2 and one `error:`
line naming the problem (the field, where there is one), never a traceback, never running anything.

The corpus is tests/unit/hostile/ (each file's first line: `# expect: <fragment of the error>`)
plus the large cases built in tests/unit/hostile_cases.py (megabytes are not committed). Each
manifest's script would create the file $HOSTILE_MARKER; it must not exist afterwards, nor any
scriptrun-* work directory.

Then what a valid manifest asks for that a local run ignores (one warning line each), the honest
reason of an attempt killed by a signal, and the work directory removed after a successful, a
failed and an interrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from scriptrun.cli import main
from scriptrun.local.process import failure, oom_kills
from tests.unit.hostile_cases import (
    CORPUS,
    GENERATED,
    corpus_files,
    deep_nesting,
    dump,
    expectation,
    scriptrun,
    task,
    workflow,
)


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOSTILE_MARKER for the scripts, and a private temporary directory (checked for leftovers)."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("HOSTILE_MARKER", str(tmp_path / "ran"))
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return tmp_path


def assert_refused(path: Path, expect: str, code: int, out: str, err: str, sandbox: Path) -> None:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1, err
    assert errors[0].startswith(f"error: {path}: "), errors[0]
    assert expect in errors[0], errors[0]
    assert "Traceback" not in err + out and out == ""
    assert len(errors[0]) < 400
    assert not (sandbox / "ran").exists(), "the hostile manifest ran"
    assert list((sandbox / "tmp").iterdir()) == []


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.stem)
def test_a_hostile_manifest_is_refused(path: Path, sandbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(path)])
    out, err = capsys.readouterr()
    assert_refused(path, expectation(path), code, out, err, sandbox)


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_a_large_hostile_manifest_is_refused(name: str, sandbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build, expect = GENERATED[name]
    path = sandbox / f"{name}.yaml"
    path.write_bytes(build())
    began = time.monotonic()
    code = main(["run", str(path)])
    out, err = capsys.readouterr()
    assert_refused(path, expect, code, out, err, sandbox)
    assert time.monotonic() - began < 30


def test_the_corpus_is_large_and_every_case_has_an_expectation() -> None:
    files = corpus_files()
    assert len(files) + len(GENERATED) >= 90
    assert all(expectation(p) for p in files)


@pytest.mark.parametrize(
    ("target", "expect"),
    [("missing.yaml", "cannot read: No such file or directory"), (".", "cannot read: Is a directory")],
)
def test_an_unreadable_file_is_one_line(
    target: str, expect: str, sandbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = sandbox / target
    code = main(["run", str(path)])
    out, err = capsys.readouterr()
    assert_refused(path, expect, code, out, err, sandbox)


def test_a_bad_parameter_is_exit_2(sandbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = sandbox / "wf.yaml"
    path.write_bytes(dump(workflow([task("a")])))
    assert main(["run", str(path), "-p", "novalue"]) == 2
    assert capsys.readouterr().err == "error: -p expects NAME=VALUE, got 'novalue'\n"
    assert main(["run", str(path), "-p", "x=1"]) == 2
    assert "parameter 'x' is not declared in spec.arguments.parameters" in capsys.readouterr().err
    assert not (sandbox / "ran").exists()


def run_cli(path: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scriptrun", "run", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def child_env(sandbox: Path) -> dict[str, str]:
    return {**os.environ, "HOSTILE_MARKER": str(sandbox / "ran"), "TMPDIR": str(sandbox / "tmp")}


@pytest.mark.parametrize("name", ["not-utf8", "metadata-null", "billion-laughs", "python-tag"])
def test_in_a_real_process_no_traceback(name: str, sandbox: Path) -> None:
    """The same through the installed command: the process itself, not only main()."""
    path = CORPUS / f"{name}.yaml"
    proc = run_cli(path, env=child_env(sandbox))
    assert_refused(path, expectation(path), proc.returncode, proc.stdout, proc.stderr, sandbox)


def test_a_million_deep_document_does_not_crash_the_process(sandbox: Path) -> None:
    """libyaml's composer recurses in C: without the nesting check this is a segmentation fault."""
    path = sandbox / "deep.yaml"
    path.write_bytes(deep_nesting())
    proc = run_cli(path, env=child_env(sandbox))
    assert_refused(path, "YAML nested more than 100 deep", proc.returncode, proc.stdout, proc.stderr, sandbox)


# -- what is ignored locally says so; what can be honoured is -------------------------------------


def test_ignored_fields_warn_once_each_and_the_run_proceeds(sandbox: Path) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"MODE": "fast", "N": "3"}}
    spec = {
        "script": {
            "source": "import os; print('env', os.environ.get('CFG_MODE'), os.environ.get('N'), "
            "os.environ.get('TOKEN'), os.environ.get('PLAIN'))"
        },
        "image": "python:3.12",
        "imagePullPolicy": "Always",
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}, {"secretRef": {"name": "creds"}}],
        "env": [
            {"name": "N", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "N"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "PLAIN", "value": "yes"},
        ],
        "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "64Mi", "cpu": "1"}},
        "nodeSelector": {"disk": "ssd"},
        "serviceAccountName": "robot",
        "securityContext": {"runAsUser": 1000},
    }
    path = sandbox / "run.yaml"
    path.write_bytes(dump(cm, scriptrun(spec)))
    proc = run_cli(path, "--no-cost", env=child_env(sandbox))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: spec.image is ignored locally: the script runs with this machine's python",
        "warning: spec.imagePullPolicy is ignored locally: no image is pulled",
        "warning: spec.resources.limits is ignored locally: nothing limits the script's cpu or memory "
        "(requests only price the run)",
        "warning: spec.nodeSelector is ignored locally: there is one machine",
        "warning: spec.serviceAccountName is ignored locally: the script gets no Kubernetes credentials",
        "warning: spec.securityContext is ignored locally: the script runs as the user running scriptrun",
        "warning: spec.envFrom[1] is ignored locally: Secrets are not read locally; its variables are not set",
        "warning: spec.env[1].valueFrom is ignored locally: Secrets are not read locally; TOKEN is not set",
    ]
    assert "env fast 3 None yes" in proc.stderr  # the ConfigMap in the same file is read, as a pod would
    assert list((sandbox / "tmp").iterdir()) == []


def test_a_workflow_names_the_first_task_and_counts_the_rest(sandbox: Path) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "code"}, "data": {"job.py": "print('cm job')"}}
    tasks = [
        {"name": "a", "script": {"configMapRef": {"name": "code", "key": "job.py"}}, "image": "python:3.12"},
        {"name": "b", "script": {"source": "pass"}, "image": "python:3.11", "dependencies": ["a"]},
        {"name": "c", "script": {"source": "pass"}, "image": "python:3.10", "tolerations": [{"operator": "Exists"}]},
    ]
    path = sandbox / "wf.yaml"
    path.write_bytes(dump(cm, workflow(tasks)))
    proc = run_cli(path, "--no-cost", env=child_env(sandbox))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: spec.tasks[0].image (and 2 more) is ignored locally: the script runs with this machine's python",
        "warning: spec.tasks[2].tolerations is ignored locally: there is one machine",
    ]
    assert "cm job" in proc.stderr  # a task reads its script from a ConfigMap in the same file
    assert list((sandbox / "tmp").iterdir()) == []


# -- honest reasons -----------------------------------------------------------------------------


def test_a_sigkill_that_is_no_oom_is_not_called_oomkilled(sandbox: Path) -> None:
    path = sandbox / "kill.yaml"
    path.write_bytes(dump(scriptrun({"script": {"source": "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"}})))
    proc = run_cli(path, "-o", "json", "--no-cost", env=child_env(sandbox))
    assert proc.returncode == 1, proc.stderr
    attempt = json.loads(proc.stdout)["status"]["attempts"][0]
    assert attempt["exitCode"] == 137 and attempt["reason"] == "Error"
    assert attempt["message"].startswith("exit code 137: killed by signal 9 (SIGKILL)")
    assert "OOM" not in attempt["reason"]


@pytest.mark.parametrize(
    ("code", "before", "after", "reason", "message"),
    [
        (1, 0, 0, "Error", None),
        (137, 0, 0, "Error", "exit code 137: killed by signal 9 (SIGKILL), not by the OOM killer"),
        (137, 2, 3, "OOMKilled", "exit code 137: killed by signal 9 (SIGKILL) from the kernel's OOM killer"),
        (137, None, None, "Error", "exit code 137: killed by signal 9 (SIGKILL); whether by the OOM killer cannot"),
        (139, 0, 1, "Error", "exit code 139: killed by signal 11 (SIGSEGV)"),
        (143, None, None, "Error", "exit code 143: killed by signal 15 (SIGTERM)"),
    ],
)
def test_the_failure_reason_of_an_exit_code(
    code: int, before: int | None, after: int | None, reason: str, message: str | None
) -> None:
    got_reason, got_message = failure(code, oom_before=before, oom_after=after)
    assert got_reason == reason
    assert got_message == message or (
        message is not None and got_message is not None and got_message.startswith(message)
    )


def test_oom_kills_reads_cgroup_v2_and_v1(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    (v2 / "user.slice").mkdir(parents=True)
    (v2 / "user.slice" / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n")
    (tmp_path / "cg2").write_text("0::/user.slice\n")
    assert oom_kills(tmp_path / "cg2", v2) == 2
    v1 = tmp_path / "v1"
    (v1 / "memory" / "job").mkdir(parents=True)
    (v1 / "memory" / "job" / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n")
    (tmp_path / "cg1").write_text("5:cpu,cpuacct:/job\n4:memory:/job\n0::/\n")
    assert oom_kills(tmp_path / "cg1", v1) == 5
    assert oom_kills(tmp_path / "nothing", v1) is None


def test_a_command_that_cannot_start_is_a_start_error(sandbox: Path) -> None:
    """An argument longer than the kernel takes (E2BIG): the attempt fails, no traceback."""
    spec = {"script": {"source": "pass"}, "args": ["x" * (256 * 1024)]}
    path = sandbox / "big.yaml"
    path.write_bytes(dump(scriptrun(spec)))
    proc = run_cli(path, "-o", "json", "--no-cost", env=child_env(sandbox))
    assert proc.returncode == 1, proc.stderr
    attempt = json.loads(proc.stdout)["status"]["attempts"][0]
    assert attempt["reason"] == "StartError" and "Argument list too long" in attempt["message"]
    assert "Traceback" not in proc.stderr
    assert list((sandbox / "tmp").iterdir()) == []


# -- no work directory left behind -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        (scriptrun({"script": {"source": "print('ok')"}}), 0),
        (
            scriptrun(
                {
                    "script": {"source": "raise SystemExit(3)"},
                    "retryStrategy": {"limit": 1, "backoff": {"durationSeconds": 0}},
                }
            ),
            1,
        ),
        (
            workflow(
                [
                    {"name": "a", "script": {"source": "pass"}},
                    {"name": "b", "script": {"source": "raise SystemExit(1)"}},
                ]
            ),
            1,
        ),
    ],
    ids=["succeeded", "failed", "workflow"],
)
def test_no_work_directory_is_left(doc: dict[str, Any], code: int, sandbox: Path) -> None:
    path = sandbox / "run.yaml"
    path.write_bytes(dump(doc))
    proc = run_cli(path, "--no-cost", env=child_env(sandbox))
    assert proc.returncode == code, proc.stderr
    assert list((sandbox / "tmp").iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("kind", ["ScriptRun", "Workflow"])
def test_an_interrupted_run_stops_its_script_and_cleans_up(kind: str, signum: int, sandbox: Path) -> None:
    pid_file = sandbox / "script.pid"
    source = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)\n"
    if kind == "ScriptRun":
        doc = scriptrun({"script": {"source": source}})
    else:
        doc = workflow([{"name": "sleepy", "script": {"source": source}}])
    path = sandbox / "run.yaml"
    path.write_bytes(dump(doc))
    proc = subprocess.Popen(
        [sys.executable, "-m", "scriptrun", "run", str(path), "--no-cost"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(sandbox),
    )
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pid_file.exists(), "the script never started"
        script = int(pid_file.read_text())
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "scriptrun: interrupted; the running attempts were stopped" in err
    assert "Traceback" not in err + out
    with pytest.raises(ProcessLookupError):
        os.kill(script, 0)
    assert list((sandbox / "tmp").iterdir()) == []


def test_an_interrupt_wrapped_by_a_library_is_still_an_interrupt() -> None:
    """SIGTERM during a pydantic dump came back as PydanticSerializationError (a fresh-clone CI run):
    `scriptrun run` must still stop with 130, not a traceback."""
    from scriptrun.cli import caused_by_interrupt

    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as inner:
            raise ValueError("Error calling function `str`: KeyboardInterrupt") from inner
    except ValueError as wrapped:
        assert caused_by_interrupt(wrapped)
    assert not caused_by_interrupt(ValueError("no interrupt here"))

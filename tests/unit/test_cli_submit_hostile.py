"""Bad input through `scriptrun submit`: the file is read as `scriptrun run` reads one (size, UTF-8,
bounded YAML of JSON data), before any cluster is asked; a bad one is exit code 2 and one `error:`
line, never a traceback. No cluster here: KUBECONFIG names a missing file, so a manifest that got
past the check would end in a credentials error (exit 1) instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scriptrun.cli import main
from tests.unit.hostile_cases import CORPUS, GENERATED, dump, expectation, scriptrun

# refused by the YAML loader or the file checks: the same words as `scriptrun run` says
LOADER_CASES = [
    "alias-nesting",
    "billion-laughs",
    "binary-tag",
    "complex-key",
    "control-character",
    "custom-tag",
    "duplicate-key",
    "latin1",
    "lone-surrogate",
    "not-utf8",
    "python-tag",
    "recursive-alias",
    "set-tag",
    "tab-indent",
    "yaml-syntax",
]
LARGE_CASES = ["deep-nesting", "deep-block-nesting", "too-large-file", "wide-aliases"]
# refused by the models or the document checks, in submit's words
OTHER_CASES = {
    "negative-retry-limit": "spec.retryStrategy.limit: Input should be greater than or equal to 0",
    "unknown-field": "spec.imagee: Extra inputs are not permitted",
    "list-document": "every document must be a mapping",
    "secret-document": "kind 'Secret' is not ScriptRun or Workflow",
}


@pytest.fixture(autouse=True)
def no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def submit(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["submit", "-f", str(path)])
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    return code, err


def assert_refused(path: Path, expect: str, code: int, err: str) -> None:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1, err
    assert errors[0].startswith(f"error: {path}: "), errors[0]
    assert expect in err, err  # the models' problems are listed under the error line


@pytest.mark.parametrize("name", LOADER_CASES)
def test_what_the_loader_refuses(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = CORPUS / f"{name}.yaml"
    assert_refused(path, expectation(path), *submit(path, capsys))


@pytest.mark.parametrize("name", LARGE_CASES)
def test_a_large_case(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build, expect = GENERATED[name]
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(build())
    assert_refused(path, expect, *submit(path, capsys))


@pytest.mark.parametrize("name", sorted(OTHER_CASES))
def test_what_the_models_refuse(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = CORPUS / f"{name}.yaml"
    assert_refused(path, OTHER_CASES[name], *submit(path, capsys))


def test_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "missing.yaml"
    assert_refused(path, "cannot read: No such file or directory", *submit(path, capsys))


def test_a_good_manifest_goes_on_to_the_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The control: a valid file passes the checks and stops only at the missing kubeconfig."""
    path = tmp_path / "good.yaml"
    path.write_bytes(dump(scriptrun({"script": {"source": "print(1)"}})))
    code, err = submit(path, capsys)
    assert code == 1 and err.startswith("error: no cluster credentials: no kubeconfig at "), err


@pytest.mark.parametrize("name", ["not-utf8", "billion-laughs"])
def test_in_a_real_process_no_traceback(name: str, tmp_path: Path) -> None:
    path = CORPUS / f"{name}.yaml"
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")}
    proc = subprocess.run(
        [sys.executable, "-m", "scriptrun", "submit", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert_refused(path, expectation(path), proc.returncode, proc.stderr)

"""spec.gates.after: CEL over the measured usage, judged by the engine once the script succeeded."""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest

from scriptrun.engine import gates
from scriptrun.engine.dag import PlanError, build_plan
from scriptrun.engine.observe import AttemptObservation
from scriptrun.engine.run import StartAttempt, decide
from scriptrun.local.validate import locate_plan_error
from scriptrun.model.scriptrun import RunPhase, ScriptRunSpec, ScriptRunStatus
from scriptrun.model.workflow import WorkflowSpec
from tests.support.gate_fixtures import every_scan, osv_configmap, source
from tests.unit.test_local import run_cli, scriptrun

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
USAGE = {"available": True, "memoryMaxMb": 612.5, "executionTimeSeconds": 3.2, "cpuMaxPercent": 97.0}


def spec(*after: dict[str, Any], **kw: Any) -> ScriptRunSpec:
    return ScriptRunSpec.model_validate({"script": {"source": "print(1)"}, "gates": {"after": list(after)}, **kw})


def finish(sp: ScriptRunSpec, usage: dict[str, Any] | None, state: Literal["Succeeded", "Failed"] = "Succeeded") -> Any:
    started = decide(sp, ScriptRunStatus(), {}, T0).status
    code = 0 if state == "Succeeded" else 3
    obs = AttemptObservation(1, "r-a1", state, T0, T0 + timedelta(seconds=3), code, "Completed", usage=usage)
    return decide(sp, started, {1: obs}, T0 + timedelta(seconds=4), expected={1})


def conditions(status: ScriptRunStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_a_gate_that_holds_lets_the_run_succeed() -> None:
    d = finish(spec({"name": "memory", "expression": "usage.memoryMaxMb < 1024"}), USAGE)
    assert d.status.phase == RunPhase.SUCCEEDED
    assert [(g.name, g.stage, g.result) for g in d.status.gates or []] == [("memory", "after", "Passed")]


def test_a_failed_gate_fails_the_run_with_gate_failed_and_the_measured_value() -> None:
    sp = spec(
        {"name": "fast", "expression": "usage.executionTimeSeconds < 60"},
        {"name": "memory", "expression": "usage.memoryMaxMb < 512 && usage.cpuMaxPercent < 200"},
    )
    d = finish(sp, USAGE)
    assert d.status.phase == RunPhase.FAILED
    assert conditions(d.status)["Failed"] == ("True", "GateFailed")
    assert d.status.message == "gate memory: usage.memoryMaxMb < 512 && usage.cpuMaxPercent < 200 is false " + (
        "(memoryMaxMb=612.5, cpuMaxPercent=97.0)"
    )
    assert [g.result for g in d.status.gates or []] == ["Passed", "Failed"]
    assert [(e.type, e.reason) for e in d.events][-1] == ("Warning", "GateFailed")
    assert d.actions == []  # a failed gate is not retried


def test_the_gate_message_is_said_when_it_fails() -> None:
    d = finish(spec({"name": "m", "expression": "usage.memoryMaxMb < 512", "message": "stay under 512 MiB"}), USAGE)
    assert d.status.message == "gate m: stay under 512 MiB (memoryMaxMb=612.5)"


def test_a_warn_gate_warns_and_the_run_succeeds() -> None:
    d = finish(spec({"name": "m", "expression": "usage.memoryMaxMb < 512", "action": "Warn"}), USAGE)
    assert d.status.phase == RunPhase.SUCCEEDED
    assert (d.status.gates or [])[0].result == "Warned"
    assert ("Warning", "GateWarning") in [(e.type, e.reason) for e in d.events]


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (None, "spec.monitor.enabled is false"),
        ({"available": False, "reason": "MonitorNoSummary", "message": "no summary"}, "MonitorNoSummary: no summary"),
        (USAGE, "no such field; usage has available, cpuMaxPercent, executionTimeSeconds, memoryMaxMb"),
    ],
)
def test_a_gate_that_cannot_be_judged_fails_the_run(usage: dict[str, Any] | None, expected: str) -> None:
    d = finish(spec({"name": "g", "expression": "usage.gpuMaxPercent < 10"}), usage)
    assert d.status.phase == RunPhase.FAILED and conditions(d.status)["Failed"][1] == "GateFailed"
    assert (d.status.gates or [])[0].result == "Error"
    assert expected in (d.status.message or "")


def test_a_gate_that_is_not_a_bool_is_an_error() -> None:
    d = finish(spec({"name": "g", "expression": "usage.memoryMaxMb"}), USAGE)
    assert (d.status.gates or [])[0].result == "Error" and "not true or false" in (d.status.message or "")


def test_gates_see_exit_code_and_attempt() -> None:
    d = finish(spec({"name": "g", "expression": "exitCode == 0 && attempt == 1"}), USAGE)
    assert d.status.phase == RunPhase.SUCCEEDED


def test_gates_are_not_judged_on_a_failed_run() -> None:
    d = finish(spec({"name": "g", "expression": "usage.memoryMaxMb < 1"}), USAGE, state="Failed")
    assert d.status.phase == RunPhase.FAILED and d.status.gates is None
    assert conditions(d.status)["Failed"][1] != "GateFailed"


def test_a_finished_run_is_not_judged_again() -> None:
    sp = spec({"name": "g", "expression": "usage.memoryMaxMb < 1024"})
    d = finish(sp, USAGE)
    obs = AttemptObservation(1, "r-a1", "Succeeded", T0, T0 + timedelta(seconds=3), 0, "Completed", usage={**USAGE})
    again = decide(sp, d.status, {1: obs}, T0 + timedelta(seconds=60))
    assert again.status.gates == d.status.gates and again.events == []


def test_an_invalid_gate_fails_the_run_before_any_pod() -> None:
    d = decide(spec({"name": "g", "expression": "usage.memoryMaxMb <"}), ScriptRunStatus(), {}, T0)
    assert not any(isinstance(a, StartAttempt) for a in d.actions)
    assert d.status.phase == RunPhase.FAILED and conditions(d.status)["Failed"][1] == "InvalidGate"
    assert (d.status.message or "").startswith("gates.after[0].expression: invalid expression")


def test_an_invalid_gate_in_a_workflow_task_is_a_plan_error_naming_the_field() -> None:
    wf = WorkflowSpec.model_validate(
        {
            "tasks": [
                {"name": "a", "script": {"source": "1"}},
                {"name": "b", "script": {"source": "1"}, "gates": {"after": [{"name": "g", "expression": "1 +"}]}},
            ]
        }
    )
    with pytest.raises(PlanError) as err:
        build_plan(wf)
    located = [locate_plan_error(wf, p) for p in err.value.errors]
    assert located[0].startswith("spec.tasks[1].gates.after[0].expression: invalid expression '1 +'")


def test_gate_names_are_unique_and_dns_labels() -> None:
    with pytest.raises(ValueError, match="pattern"):
        spec({"name": "Bad_Name", "expression": "true"})
    assert gates.problems(spec({"name": "ok", "expression": "true"})) == []


# -- scriptrun run: the same gates locally, and --junit ----------------------------------------------

# resident for a while: the sampler sees the peak however busy the machine is
GREEDY = (
    "import time\nbuf = bytearray(64 * 1024 * 1024)\n"
    "for i in range(0, len(buf), 4096):\n    buf[i] = 1\ntime.sleep(1)\n"
)


def test_locally_a_gate_blocks_the_bad_run_and_passes_the_clean_one(tmp_path: Path) -> None:
    gate = {"name": "memory", "expression": "usage.memoryMaxMb < 48", "message": "stay under 48 MiB"}
    warn = {"name": "quick", "expression": "usage.executionTimeSeconds < 0.000001", "action": "Warn"}
    bad = scriptrun({"script": {"source": GREEDY}, "gates": {"after": [gate, warn]}}, "greedy")
    proc = run_cli(tmp_path, bad, "--junit", str(tmp_path / "bad.xml"), "--no-cost", "-o", "json")
    assert proc.returncode == 1, proc.stderr
    status = json.loads(proc.stdout)["status"]
    assert status["phase"] == "Failed" and status["message"].startswith("gate memory: stay under 48 MiB (memoryMaxMb=")
    assert [g["result"] for g in status["gates"]] == ["Failed", "Warned"]
    suite = ET.parse(tmp_path / "bad.xml").getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert cases["run"].find("failure") is None  # the script itself succeeded
    failure = cases["gate memory"].find("failure")
    assert failure is not None and failure.get("type") == "GateFailed"
    assert "warning:" in (cases["gate quick"].findtext("system-out") or "")

    clean = scriptrun({"script": {"source": "print('small')"}, "gates": {"after": [gate]}}, "small")
    proc = run_cli(tmp_path, clean, "--junit", str(tmp_path / "ok.xml"), "--no-cost")
    assert proc.returncode == 0, proc.stderr
    assert "gate memory (after): Passed" in proc.stdout
    suite = ET.parse(tmp_path / "ok.xml").getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "0", "0")


def test_locally_an_invalid_gate_is_refused_naming_the_field(tmp_path: Path) -> None:
    bad = scriptrun({"script": {"source": "1"}, "gates": {"after": [{"name": "g", "expression": "usage.x <"}]}})
    proc = run_cli(tmp_path, bad)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "spec.gates.after[0].expression: invalid expression 'usage.x <'" in proc.stderr


def test_a_workflow_junit_has_a_case_per_task_gate(tmp_path: Path) -> None:
    gate = {"name": "memory", "expression": "usage.memoryMaxMb < 48"}
    wf = {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "wf"},
        "spec": {
            "tasks": [
                {"name": "small", "script": {"source": "print(1)"}, "gates": {"after": [gate]}},
                {"name": "greedy", "script": {"source": GREEDY}, "gates": {"after": [gate]}},
            ]
        },
    }
    proc = run_cli(tmp_path, wf, "--junit", str(tmp_path / "wf.xml"), "--no-cost", "-o", "json")
    assert proc.returncode == 1, proc.stderr
    tasks = json.loads(proc.stdout)["status"]["tasks"]
    assert tasks["small"]["phase"] == "Succeeded" and tasks["greedy"]["phase"] == "Failed"
    assert tasks["greedy"]["message"].startswith("gate memory: usage.memoryMaxMb < 48 is false")
    suite = ET.parse(tmp_path / "wf.xml").getroot()
    cases = [(c.get("classname"), c.get("name"), c.find("failure") is not None) for c in suite.findall("testcase")]
    assert cases == [
        ("wf", "small", False),
        ("wf.small", "gate memory", False),
        ("wf", "greedy", False),
        ("wf.greedy", "gate memory", True),
    ]
    assert suite.get("failures") == "1"


# -- spec.gates.before locally -------------------------------------------------------------------------


def scanned(name: str, fixture: str, requirement: str, **extra: Any) -> dict[str, Any]:
    return scriptrun(
        {"script": {"source": source(fixture)}, "gates": {"before": every_scan(requirement)}, **extra}, name
    )


@pytest.mark.parametrize(
    ("fixture", "requirement", "env", "blocked_by"),
    [
        ("shell_injection.py", "requests==2.32.3", None, "staticAnalysis"),
        ("aws_key.py", "requests==2.32.3", None, "secretScan"),
        ("clean.py", "requests==2.32.3", "AKIAIOSFODNN7EXAMPLE", "secretScan"),
        ("clean.py", "requests==2.19.1", None, "dependencyScan"),
    ],
)
def test_locally_each_before_gate_blocks_its_bad_fixture(
    tmp_path: Path, fixture: str, requirement: str, env: str | None, blocked_by: str
) -> None:
    extra = {"env": [{"name": "KEY", "value": env}]} if env else {}
    doc = scanned("bad", fixture, requirement, **extra)
    sarif, junit = tmp_path / "bad.sarif", tmp_path / "bad.xml"
    proc = run_cli(
        tmp_path, [osv_configmap(), doc], "-o", "json", "--no-cost", "--sarif", str(sarif), "--junit", str(junit)
    )
    assert proc.returncode == 1, proc.stderr
    status = json.loads(proc.stdout)["status"]
    assert status["phase"] == "Failed" and status["message"].startswith(f"gate {blocked_by}: ")
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Failed"] == "GateFailed"
    assert status["attempts"][0]["reason"] == "GateFailed" and "usage" not in status  # the script never ran
    assert {g["name"]: g["result"] for g in status["gates"]}[blocked_by] == "Failed"
    # the spec (echoed by -o json) holds what the user wrote; nothing scriptrun says repeats it
    everything = json.dumps(status) + proc.stderr + sarif.read_text() + junit.read_text()
    assert "AKIAIOSFODNN7EXAMPLE" not in everything
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().findall("testcase")}
    assert cases[f"gate {blocked_by}"].find("failure") is not None


def test_locally_the_clean_fixture_passes_every_before_gate_and_runs(tmp_path: Path) -> None:
    doc = scanned("clean", "clean.py", "requests==2.32.3")
    sbom = tmp_path / "clean.cdx.json"
    proc = run_cli(tmp_path, [osv_configmap(), doc], "-o", "json", "--no-cost", "--sbom", str(sbom))
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)["status"]
    assert [g["result"] for g in status["gates"]] == ["Passed", "Passed", "Passed"]
    assert status["usage"]["exitCode"] == 0
    assert json.loads(sbom.read_text())["components"][0]["purl"] == "pkg:pypi/requests@2.32.3"


def test_locally_a_missing_database_configmap_blocks_with_its_name(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, scanned("nodb", "clean.py", "requests==2.32.3"), "-o", "json", "--no-cost")
    assert proc.returncode == 1
    message = json.loads(proc.stdout)["status"]["message"]
    assert message.startswith("gate dependencyScan: ConfigMap 'osv' (dependencyScan.database) not found")


def test_the_gated_example_passes_every_gate_locally_as_the_readme_runs_it(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "gated-scriptrun.yaml"
    junit, sarif, sbom = tmp_path / "gates.xml", tmp_path / "gates.sarif", tmp_path / "sbom.cdx.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scriptrun",
            "run",
            str(example),
            "--junit",
            str(junit),
            "--sarif",
            str(sarif),
            "--sbom",
            str(sbom),
            "--no-cost",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "0", "0")
    assert [r["tool"]["driver"]["name"] for r in json.loads(sarif.read_text())["runs"]] == [
        "bandit",
        "detect-secrets",
        "scriptrun-osv",
    ]
    assert json.loads(sbom.read_text())["components"][0]["purl"] == "pkg:pypi/requests@2.32.3"
    assert "spec.regression is ignored locally" in proc.stderr

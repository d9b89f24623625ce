"""spec.gates.before: each scanner blocks its bad fixture and passes the clean one; SARIF, SBOM,
the gate container's summary, the pod it runs in, and what the engine makes of its verdicts."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from scriptrun.build.pod import PodInputs, RunRef, build_pod
from scriptrun.engine.observe import AttemptObservation, observe_pod
from scriptrun.engine.run import StartAttempt, decide
from scriptrun.model.gates import BeforeGates, DependencyScan, SecretScan, StaticAnalysis
from scriptrun.model.scriptrun import RunPhase, ScriptRunSpec, ScriptRunStatus
from scriptrun.scan import osv, secrets, static
from scriptrun.scan.command import TERMINATION_LIMIT, termination_message
from scriptrun.scan.findings import Finding, ScanOutcome, Tool, redact
from scriptrun.scan.run import BeforeReport, run_before

FIXTURES = Path(__file__).parent / "fixtures" / "gates"
OSV = FIXTURES / "osv"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


# -- staticAnalysis: Bandit ----------------------------------------------------------------------


def test_bandit_blocks_the_shell_injection_and_passes_the_clean_script() -> None:
    bad = static.scan(FIXTURES / "shell_injection.py", StaticAnalysis(), "main.py")
    assert ("B602", "high", 5) in [(f.rule_id, f.severity, f.line) for f in bad.findings]
    verdict, failure = bad.judge(StaticAnalysis())
    assert verdict.result == "Failed" and failure is not None
    assert "B602" in failure and "(main.py:5)" in failure
    clean = static.scan(FIXTURES / "clean.py", StaticAnalysis(), "main.py")
    assert clean.findings == [] and clean.judge(StaticAnalysis())[0].result == "Passed"


def test_bandit_skip_and_threshold() -> None:
    skipped = static.scan(FIXTURES / "shell_injection.py", StaticAnalysis(skip=["B602"]), "main.py")
    assert "B602" not in {f.rule_id for f in skipped.findings}
    assert skipped.judge(StaticAnalysis(skip=["B602"]))[0].result == "Passed"  # B404 is low, below medium
    assert skipped.judge(StaticAnalysis(severity="low"))[0].result == "Failed"


def test_a_script_bandit_cannot_parse_is_an_error_not_a_pass(tmp_path: Path) -> None:
    broken = tmp_path / "main.py"
    broken.write_text("def (:\n")
    outcome = static.scan(broken, StaticAnalysis(), "main.py")
    assert outcome.error is not None and outcome.judge(StaticAnalysis())[0].result == "Error"


def test_bandit_messages_never_quote_the_code() -> None:
    assert redact("Possible hardcoded password: 'hunter2'") == "Possible hardcoded password: '***'"


# -- secretScan: detect-secrets ------------------------------------------------------------------


def test_secrets_in_the_script_and_in_the_inputs_are_found_by_type_and_place(tmp_path: Path) -> None:
    inputs = [("spec.env[KEY]", AWS_KEY), ("spec.args[0]", "--rows=300"), ("spec.env[MODE]", "fast")]
    outcome = secrets.scan(FIXTURES / "aws_key.py", inputs, "main.py", tmp_path)
    places = {(f.rule_id, f.where) for f in outcome.findings}
    assert ("AWSAccessKey", "main.py:3") in places and ("AWSAccessKey", "spec.env[KEY]") in places
    assert not any(f.location in ("spec.args[0]", "spec.env[MODE]") for f in outcome.findings)
    assert AWS_KEY not in json.dumps([f.__dict__ for f in outcome.findings])
    assert list(tmp_path.iterdir()) == []  # the inputs' scratch file is gone
    clean = secrets.scan(FIXTURES / "clean.py", [("spec.env[MODE]", "fast")], "main.py", tmp_path)
    assert clean.findings == []


# -- dependencyScan: OSV ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        ("requests==2.19.1", ["GHSA-j8r2-6x86-q33q"]),
        ("requests==2.3.0", ["GHSA-j8r2-6x86-q33q"]),  # introduced: included
        ("requests==2.31.0", []),  # fixed: excluded
        ("requests==2.2.1", []),
        ("Requests==2.20.0", ["GHSA-j8r2-6x86-q33q"]),  # names compare canonically
        ("urllib3==1.26.3", ["PYSEC-2021-59"]),
        ("urllib3==1.26.4", []),
        ("jinja2==2.10.0", ["GHSA-1111-last-affd"]),  # last_affected: included
        ("jinja2==2.10.1", []),
        ("pyyaml==5.3", []),  # only a withdrawn record names it
    ],
)
def test_osv_matching(requirement: str, expected: list[str]) -> None:
    outcome = osv.scan([requirement], OSV)
    assert [f.rule_id for f in outcome.findings] == expected


def test_osv_severity_from_github_else_from_the_cvss_vector() -> None:
    found = {f.rule_id: f.severity for f in osv.scan(["requests==2.19.1", "urllib3==1.26.0"], OSV).findings}
    assert found == {"GHSA-j8r2-6x86-q33q": "medium", "PYSEC-2021-59": "high"}  # CVSS 7.5
    assert osv.severity({"id": "X"}) == "high"  # ungraded: blocks at the default threshold


def test_unpinned_requirements_are_reported_not_passed_silently() -> None:
    outcome = osv.scan(["requests>=2", "not a requirement!", "flask==2.0.0"], OSV)
    assert [(f.rule_id, f.severity, f.line) for f in outcome.findings] == [
        ("UnpinnedRequirement", "low", 1),
        ("UnpinnedRequirement", "low", 2),
    ]
    assert outcome.judge(DependencyScan(requirements=["x"], database={"configMapName": "osv"}))[0].result == "Passed"


def test_a_missing_or_broken_database_is_an_error(tmp_path: Path) -> None:
    config = DependencyScan(requirements=["requests==2.19.1"], database={"configMapName": "osv"})
    assert osv.scan(["requests==2.19.1"], tmp_path / "none").judge(config)[0].result == "Error"
    (tmp_path / "bad.json").write_text("{not json")
    outcome = osv.scan(["requests==2.19.1"], tmp_path)
    assert outcome.error is not None and "bad.json" in outcome.error


# -- the whole report: verdicts, SARIF, SBOM, the termination message ---------------------------------


def before(**kw: Any) -> BeforeGates:
    return BeforeGates.model_validate(kw)


ALL = before(
    staticAnalysis={},
    secretScan={},
    dependencyScan={"severity": "medium", "requirements": ["requests==2.19.1"], "database": {"configMapName": "osv"}},
)


def test_the_report_blocks_on_each_bad_fixture_and_never_holds_the_secret(tmp_path: Path) -> None:
    inputs = [("spec.env[KEY]", AWS_KEY)]
    report = run_before(ALL, name="r", script=FIXTURES / "aws_key.py", inputs=inputs, osv_dir=OSV, work=tmp_path)
    assert [(r.name, r.result) for r in report.results] == [
        ("staticAnalysis", "Passed"),
        ("secretScan", "Failed"),
        ("dependencyScan", "Failed"),
    ]
    assert report.failure is not None and report.failure.startswith("gate secretScan: ")
    assert report.failure.endswith("(and 1 more gate(s))")
    everything = json.dumps([report.summary(), report.sarif, report.sbom])
    assert AWS_KEY not in everything


def test_the_clean_fixture_passes_every_gate(tmp_path: Path) -> None:
    gates = before(
        staticAnalysis={},
        secretScan={},
        dependencyScan={"requirements": ["requests==2.32.3"], "database": {"configMapName": "osv"}},
    )
    report = run_before(gates, name="r", script=FIXTURES / "clean.py", inputs=[], osv_dir=OSV, work=tmp_path)
    assert [r.result for r in report.results] == ["Passed", "Passed", "Passed"] and report.failure is None


def test_warn_gates_warn_and_do_not_block(tmp_path: Path) -> None:
    gates = before(secretScan={"action": "Warn"})
    report = run_before(gates, name="r", script=FIXTURES / "aws_key.py", inputs=[], osv_dir=None, work=tmp_path)
    assert report.failure is None and report.results[0].result == "Warned" and len(report.warnings) == 1


def test_sarif_has_one_run_per_tool_with_rules_levels_and_locations(tmp_path: Path) -> None:
    inputs = [("spec.env[KEY]", AWS_KEY)]
    report = run_before(
        ALL, name="r", script=FIXTURES / "shell_injection.py", inputs=inputs, osv_dir=OSV, work=tmp_path
    )
    log = report.sarif
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    assert [r["tool"]["driver"]["name"] for r in log["runs"]] == ["bandit", "detect-secrets", "scriptrun-osv"]
    bandit = log["runs"][0]
    b602 = next(r for r in bandit["results"] if r["ruleId"] == "B602")
    assert b602["level"] == "error" and b602["properties"]["severity"] == "high"
    assert bandit["tool"]["driver"]["rules"][b602["ruleIndex"]]["id"] == "B602"
    assert b602["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "main.py"},
        "region": {"startLine": 5},
    }
    secret = log["runs"][1]["results"][0]
    assert secret["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "spec.env[KEY]"
    dep = log["runs"][2]["results"][0]
    assert dep["ruleId"] == "GHSA-j8r2-6x86-q33q" and dep["level"] == "error"
    assert all(run["invocations"][0]["executionSuccessful"] for run in log["runs"])


def test_the_sbom_is_valid_cyclonedx_with_the_matched_advisory(tmp_path: Path) -> None:
    gates = before(
        dependencyScan={
            "requirements": ["requests==2.19.1", "flask==2.0.0", "numpy"],
            "database": {"configMapName": "o"},
        }
    )
    report = run_before(gates, name="etl", script=None, inputs=[], osv_dir=OSV, work=tmp_path)
    assert report.sbom is not None
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(report.sbom))
    assert error is None, error
    assert {c["purl"] for c in report.sbom["components"]} == {"pkg:pypi/requests@2.19.1", "pkg:pypi/flask@2.0.0"}
    (vuln,) = report.sbom["vulnerabilities"]
    assert vuln["id"] == "GHSA-j8r2-6x86-q33q" and vuln["affects"] == [{"ref": "pkg:pypi/requests@2.19.1"}]
    assert report.sbom["metadata"]["component"]["name"] == "etl"


def test_the_termination_message_fits_in_4_kib() -> None:
    outcome = ScanOutcome("staticAnalysis", Tool("bandit", "1", "u"))
    long = [Finding("bandit", f"B{i:03}", "n", "high", "x" * 290, "main.py", i) for i in range(1, 40)]
    outcome.findings = long
    verdict, failure = outcome.judge(StaticAnalysis())
    report = BeforeReport(results=[verdict] * 20, failure=failure)
    text = termination_message(report)
    assert len(text.encode()) <= TERMINATION_LIMIT and json.loads(text)["failure"] == failure


# -- in the pod: the init container, what observing it gives, what the engine does ------------------


def spec(**kw: Any) -> ScriptRunSpec:
    return ScriptRunSpec.model_validate({"script": {"source": "print(1)"}, **kw})


def test_the_gate_container_runs_first_in_the_runner_image_with_the_database_mounted() -> None:
    sp = spec(
        env=[{"name": "TOKEN", "value": "x"}, {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        gates={"before": ALL.dump()},
    )
    pod = build_pod(PodInputs(run=RunRef("r", "ns", "uid"), spec=sp, attempt=1, gate_image="scriptrun/runner:9"))
    first, monitor = pod["spec"]["initContainers"]
    assert (first["name"], first["image"], monitor["name"]) == ("gates", "scriptrun/runner:9", "monitor")
    assert first["command"] == ["scriptrun", "gate"] and "--script=/scriptrun/script/main.py" in first["args"]
    config = json.loads(first["env"][0]["value"])
    assert config["inputs"] == [["spec.env[TOKEN]", "x"]]  # a Secret's value is not an input to scan
    assert config["before"]["dependencyScan"]["database"] == {"configMapName": "osv"}
    assert {"name": "scriptrun-osv", "mountPath": "/scriptrun/osv", "readOnly": True} in first["volumeMounts"]
    assert {"name": "scriptrun-osv", "configMap": {"name": "osv"}} in pod["spec"]["volumes"]
    assert first["securityContext"]["runAsNonRoot"] and first["securityContext"]["readOnlyRootFilesystem"]
    plain = build_pod(PodInputs(run=RunRef("r", "ns", "uid"), spec=spec(), attempt=1))
    assert [c["name"] for c in plain["spec"]["initContainers"]] == ["monitor"]


def gate_pod(exit_code: int, summary: dict[str, Any], main: dict[str, Any] | None) -> dict[str, Any]:
    gate = {"exitCode": exit_code, "message": json.dumps(summary), "finishedAt": "2026-01-01T12:00:02Z"}
    statuses = [{"name": "gates", "state": {"terminated": gate}}]
    return {
        "metadata": {"name": "r-a1"},
        "status": {
            "phase": "Failed" if exit_code else "Succeeded",
            "startTime": "2026-01-01T12:00:00Z",
            "initContainerStatuses": statuses,
            "containerStatuses": [{"name": "main", "state": main or {"waiting": {"reason": "PodInitializing"}}}],
        },
    }


BLOCKED = {
    "gates": [{"name": "secretScan", "stage": "before", "result": "Failed", "message": "1 finding(s)"}],
    "failure": "gate secretScan: 1 finding(s)",
}


def test_a_blocked_pod_is_a_gate_failed_attempt_with_the_verdicts() -> None:
    obs = observe_pod(gate_pod(3, BLOCKED, None), 1, monitor_enabled=True)
    assert (obs.state, obs.reason, obs.message) == ("Failed", "GateFailed", "gate secretScan: 1 finding(s)")
    assert obs.gates == BLOCKED["gates"] and obs.usage is None
    crashed = observe_pod(gate_pod(137, {}, None), 1, monitor_enabled=True)
    assert crashed.reason == "GateFailed" and "exit code 137" in (crashed.message or "")


def test_a_gate_failed_attempt_fails_the_run_without_a_retry_and_records_the_verdicts() -> None:
    sp = spec(retryStrategy={"limit": 3, "retryPolicy": "Always"}, gates={"before": {"secretScan": {}}})
    started = decide(sp, ScriptRunStatus(), {}, T0).status
    obs = AttemptObservation(
        1, "r-a1", "Failed", T0, T0, None, "GateFailed", BLOCKED["failure"], gates=BLOCKED["gates"]
    )
    d = decide(sp, started, {1: obs}, T0 + timedelta(seconds=2), expected={1})
    assert d.status.phase == RunPhase.FAILED and not any(isinstance(a, StartAttempt) for a in d.actions)
    assert {c.type: c.reason for c in d.status.conditions}["Failed"] == "GateFailed"
    assert d.status.message == "gate secretScan: 1 finding(s)"
    assert [(g.name, g.stage, g.result) for g in d.status.gates or []] == [("secretScan", "before", "Failed")]


def test_before_and_after_verdicts_together_and_a_warning_event_once() -> None:
    warned = [{"name": "secretScan", "stage": "before", "result": "Warned", "message": "1 finding(s)"}]
    sp = spec(
        gates={
            "before": {"secretScan": {"action": "Warn"}},
            "after": [{"name": "m", "expression": "usage.memoryMaxMb < 9"}],
        }
    )
    started = decide(sp, ScriptRunStatus(), {}, T0).status
    running = AttemptObservation(1, "r-a1", "Running", T0, gates=warned)
    d1 = decide(sp, started, {1: running}, T0 + timedelta(seconds=1), expected={1})
    assert [e.reason for e in d1.events].count("GateWarning") == 1
    usage = {"available": True, "memoryMaxMb": 5}
    done = AttemptObservation(1, "r-a1", "Succeeded", T0, T0, 0, "Completed", usage=usage, gates=warned)
    d2 = decide(sp, d1.status, {1: done}, T0 + timedelta(seconds=2), expected={1})
    assert "GateWarning" not in [e.reason for e in d2.events]
    assert d2.status.phase == RunPhase.SUCCEEDED
    assert [(g.stage, g.result) for g in d2.status.gates or []] == [("before", "Warned"), ("after", "Passed")]


def test_the_model_refuses_bad_gate_settings() -> None:
    with pytest.raises(ValueError):
        StaticAnalysis(skip=["not-a-test-id"])
    with pytest.raises(ValueError):
        SecretScan(severity="urgent")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        DependencyScan(requirements=[], database={"configMapName": "osv"})


# -- the report the operator keeps: the gate container's marked log line -> an owned ConfigMap --------


def test_the_report_line_is_found_in_the_log_and_kept_in_an_owned_configmap(tmp_path: Path) -> None:
    from scriptrun.build.gates import REPORT_LIMIT, SARIF_KEY, SBOM_KEY, gate_report_configmap, parse_report
    from scriptrun.model.contract import GATE_REPORT_MARK

    report = run_before(ALL, name="r", script=FIXTURES / "clean.py", inputs=[], osv_dir=OSV, work=tmp_path)
    line = GATE_REPORT_MARK + json.dumps({"sarif": report.sarif, "sbom": report.sbom})
    log = f"gate staticAnalysis: Passed\n{line}\ngate secretScan: Passed\n"
    parsed = parse_report(log)
    assert parsed == {"sarif": report.sarif, "sbom": report.sbom}
    assert parse_report("nothing here") is None and parse_report(GATE_REPORT_MARK + "{broken") is None
    cm = gate_report_configmap(RunRef("r", "ns", "uid-1"), parsed)
    assert cm["metadata"]["name"] == "r-gates" and cm["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert json.loads(cm["data"][SARIF_KEY]) == report.sarif and json.loads(cm["data"][SBOM_KEY]) == report.sbom

    many = {"sarif": {"version": "2.1.0", "runs": [{"results": [{"message": {"text": "x" * 1000}}] * 5000}]}}
    fitted = gate_report_configmap(RunRef("r", "ns", "u"), many)["data"][SARIF_KEY]
    assert len(fitted.encode()) <= REPORT_LIMIT
    run = json.loads(fitted)["runs"][0]
    assert 0 < len(run["results"]) < 5000 and run["properties"]["scriptrun/droppedResults"] == 5000 - len(
        run["results"]
    )

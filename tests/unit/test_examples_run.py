"""Every workflow example runs locally (`scriptrun run`), with the results the example promises."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run(path: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "scriptrun", "run", str(path), "-o", "json", *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


def test_etl_passes_outputs_along_and_writes_junit(tmp_path: Path) -> None:
    junit = tmp_path / "etl.xml"
    code, wf, err = run(EXAMPLES / "etl-workflow.yaml", "-p", "rows=300", "--junit", str(junit))
    assert code == 0, err
    tasks = wf["status"]["tasks"]
    assert wf["status"]["phase"] == "Succeeded" and wf["status"]["progress"] == "6/6"
    assert tasks["extract"]["outputs"]["rows"] == "300"
    sizes = [int(tasks[f"transform-{i}"]["outputs"]["bytes"]) for i in range(3)]
    assert int(tasks["load"]["outputs"]["total"]) == sum(sizes)
    assert "loaded 3 files" in err and "ETL finished: Succeeded" in err
    assert all("cpuAvgPercent" in t["usage"] for t in tasks.values())
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "6" and suite.get("failures") == "0"
    assert [c.get("name") for c in suite.findall("testcase")][:2] == ["extract", "transform(format=csv)"]


def test_etl_exit_handler_reports_the_failures() -> None:
    """`{{workflow.failures}}` is a JSON list (quotes and all): the exit handler gets it as data."""
    code, wf, err = run(EXAMPLES / "etl-workflow.yaml", "-p", "rows=notanumber")
    assert code == 1, err
    tasks = wf["status"]["tasks"]
    assert tasks["extract"]["phase"] == "Failed" and tasks["report"]["phase"] == "Succeeded", err
    assert "ETL finished: Failed; failures: extract" in err


def test_no_example_splices_placeholders_into_script_source() -> None:
    """A value substituted into Python source is code, not data: pass it through env or args."""
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            spec = (doc or {}).get("spec") or {}
            for task in [spec, *(spec.get("tasks") or []), *(spec.get("onExit") or [])]:
                source = (task.get("script") or {}).get("source") or ""
                assert "{{" not in source, f"{path.name}: {task.get('name', 'spec')}: placeholder in script.source"


def test_diamond_takes_one_branch_and_runs_the_exit_handler() -> None:
    code, wf, err = run(EXAMPLES / "diamond-workflow.yaml")
    assert code == 0, err
    phases = {n: t["phase"] for n, t in wf["status"]["tasks"].items()}
    assert phases == {
        "plan": "Succeeded",
        "fast": "Succeeded",
        "thorough": "Skipped",
        "report": "Succeeded",
        "notify": "Succeeded",
    }
    code, wf, err = run(EXAMPLES / "diamond-workflow.yaml", "-p", "mode=deep")
    assert code == 0
    assert {n: t["phase"] for n, t in wf["status"]["tasks"].items()}["fast"] == "Skipped"
    assert "workflow Succeeded, failed tasks: []" in err


def test_api_integration_retries_with_backoff() -> None:
    code, wf, err = run(EXAMPLES / "api-integration-workflow.yaml")
    assert code == 0, err
    assert wf["status"]["tasks"]["fetch"]["attempts"] == 3
    assert "upserted 5 records" in err and "503 Service Unavailable" in err


def test_file_processing_fans_out_and_merges() -> None:
    code, wf, err = run(EXAMPLES / "file-processing-workflow.yaml")
    assert code == 0, err
    assert wf["status"]["progress"] == "10/10"
    assert "8 shards" in err


def test_a_failing_workflow_exits_non_zero(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "bad"},
        "spec": {"tasks": [{"name": "a", "script": {"source": "raise SystemExit(4)"}}]},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(doc))
    code, wf, _ = run(path, "--junit", str(tmp_path / "j.xml"))
    assert code == 1 and wf["status"]["phase"] == "Failed"
    assert wf["status"]["tasks"]["a"]["exitCode"] == 4
    assert ET.parse(tmp_path / "j.xml").getroot().get("failures") == "1"


def test_an_invalid_workflow_is_refused_with_every_problem(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "scriptrun.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "bad"},
        "spec": {
            "tasks": [
                {"name": "a", "dependencies": ["b"], "script": {"source": "x"}},
                {"name": "b", "dependencies": ["a"], "script": {"source": "x"}},
                {"name": "c", "dependencies": ["zz"], "script": {"source": "x"}},
            ]
        },
    }
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(doc))
    proc = subprocess.run([sys.executable, "-m", "scriptrun", "run", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "dependency cycle: a -> b -> a" in proc.stderr and "task 'zz' does not exist" in proc.stderr

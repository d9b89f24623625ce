"""The architecture's contracts, enforced by import-linter (pyproject.toml [tool.importlinter]):
layers model < engine < build < k8s < controllers < handlers; only k8s imports the Kubernetes
client; the two controllers (and their Kopf registrations) independent; the local backend needs no
cluster; the model does no file I/O; the price providers know nothing of Kubernetes."""

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "scriptrun"
CONTRACTS = {
    "Layers: handlers > controllers > k8s > build > engine > model",
    "Pure core imports no Kubernetes, Kopf or OpenTelemetry",
    "Only scriptrun.k8s imports the Kubernetes client",
    "Only scriptrun.handlers imports Kopf",
    "The ScriptRun and Workflow controllers are independent",
    "The ScriptRun and Workflow Kopf registrations are independent",
    "The local backend needs no cluster",
    "The model does no file I/O",
    "The price providers know nothing of Kubernetes, Kopf or the controllers",
    "The scanners know nothing of Kubernetes, Kopf or the controllers",
}


def test_every_contract_is_declared() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {c["name"] for c in config["tool"]["importlinter"]["contracts"]}
    assert declared == CONTRACTS


def test_import_linter_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    proc = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(CONTRACTS)} kept, 0 broken" in proc.stdout


def test_model_never_opens_a_file() -> None:
    """import-linter sees imports, not builtins: no `open(...)` call in the model either."""
    for path in (PACKAGE / "model").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
                raise AssertionError(f"{path.name}:{node.lineno} opens a file")


def test_nothing_outside_k8s_imports_the_client() -> None:
    """The same rule as the import-linter contract, for modules it does not list (new packages)."""
    for path in PACKAGE.rglob("*.py"):
        if path.is_relative_to(PACKAGE / "k8s"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert not name.startswith(("kubernetes_asyncio", "kubernetes.")), f"{path}: imports {name}"

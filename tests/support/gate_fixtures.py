"""The offline fixtures of spec.gates.before (tests/unit/fixtures/gates), shared by the local and
the real-node tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "unit" / "fixtures" / "gates"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example key id: shaped like one, not one


def osv_configmap(name: str = "osv") -> dict[str, Any]:
    """The OSV records as the ConfigMap a cluster would provide (one key per record file)."""
    data = {p.name: p.read_text() for p in sorted((FIXTURES / "osv").glob("*.json"))}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def every_scan(requirement: str) -> dict[str, Any]:
    """spec.gates.before with all three scans, the requirement checked at medium or above."""
    return {
        "staticAnalysis": {},
        "secretScan": {},
        "dependencyScan": {"severity": "medium", "requirements": [requirement], "database": {"configMapName": "osv"}},
    }


def source(fixture: str) -> str:
    return (FIXTURES / fixture).read_text()

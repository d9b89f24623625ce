"""staticAnalysis: Bandit (PyCQA's security linter for Python) over the script, through its library API."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from scriptrun.model.gates import StaticAnalysis
from scriptrun.scan.findings import Finding, ScanOutcome, Tool, redact

GATE = "staticAnalysis"


def scan(script: Path | None, config: StaticAnalysis, shown_as: str) -> ScanOutcome:
    """Bandit's findings in `script`, which reports call `shown_as` (e.g. main.py)."""
    with warnings.catch_warnings():  # Bandit 1.9 passes stevedore an argument stevedore 5.10 deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        import bandit
        from bandit.core import config as bandit_config
        from bandit.core import manager

        tool = Tool("bandit", bandit.__version__, "https://bandit.readthedocs.io/")
        if script is None:
            return ScanOutcome(GATE, tool, error="no script file to analyse (spec.script.command)")
        logging.getLogger("bandit").setLevel(logging.ERROR)  # it logs progress at INFO
        conf = bandit_config.BanditConfig()
        profile = {"exclude": list(config.skip or []), "include": []}
        mgr = manager.BanditManager(conf, "file", quiet=True, profile=profile)
        mgr.discover_files([str(script)])
        mgr.run_tests()
    if mgr.skipped:  # a file Bandit could not parse: say why, never pass it unread
        _, reason = mgr.skipped[0]
        return ScanOutcome(GATE, tool, error=f"{shown_as}: {reason}")
    findings = []
    for issue in mgr.get_issue_list():
        data = issue.as_dict()  # its "code" (the source lines) is never kept: they may hold a secret
        findings.append(
            Finding(
                tool="bandit",
                rule_id=str(data["test_id"]),
                rule_name=str(data["test_name"]),
                severity=str(data["issue_severity"]).lower(),  # type: ignore[arg-type]
                message=redact(str(data["issue_text"])),
                location=shown_as,
                line=int(data["line_number"]),
                help_uri=str(data.get("more_info") or "") or None,
            )
        )
    return ScanOutcome(GATE, tool, sorted(findings, key=lambda f: (f.line or 0, f.rule_id)))

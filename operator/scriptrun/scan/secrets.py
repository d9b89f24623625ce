"""secretScan: detect-secrets (Yelp's maintained scanner) over the script and the run's inputs.

Its plugins find keys by shape (AWS, GitHub, Slack, private keys, JWTs...), by keyword
(`password = ...`) and by entropy (long high-entropy base64/hex strings). It reports a secret's
type and line with a hash of the value; only the type and the line are kept here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from scriptrun.scan.findings import Finding, ScanOutcome, Tool

GATE = "secretScan"


def _finding(kind: str, where: str, line: int | None) -> Finding:
    rule = kind.replace(" ", "")
    return Finding("detect-secrets", rule, kind, "high", f"{kind} found", where, line)


def _scan_file(path: Path) -> list[tuple[str, int]]:
    from detect_secrets.core.secrets_collection import SecretsCollection

    secrets = SecretsCollection()
    secrets.scan_file(str(path))
    return [(secret.type, secret.line_number) for _, secret in secrets]


def scan(script: Path | None, inputs: Sequence[tuple[str, str]], shown_as: str, work: Path) -> ScanOutcome:
    """The script (shown as `shown_as`) and each input, (where, text): args and plain env values.
    The inputs are scanned as a file of string assignments written in `work` (one per line), so
    the entropy plugins judge them as they judge a literal in code."""
    from importlib.metadata import version

    from detect_secrets.settings import default_settings

    tool = Tool("detect-secrets", version("detect-secrets"), "https://github.com/Yelp/detect-secrets")
    findings: list[Finding] = []
    wheres = [where for where, _ in inputs]
    with default_settings():
        if script is not None:
            findings += [_finding(kind, shown_as, line) for kind, line in _scan_file(script)]
        if wheres:
            listing = work / "scriptrun-inputs.py"
            listing.write_text("".join(f"value_{i} = {json.dumps(text)}\n" for i, (_, text) in enumerate(inputs)))
            try:
                seen = set()
                for kind, line in _scan_file(listing):
                    if (kind, line) not in seen:
                        seen.add((kind, line))
                        findings.append(_finding(kind, wheres[line - 1], None))
            finally:
                listing.unlink()
    return ScanOutcome(GATE, tool, findings)

"""dependencyScan: the script's declared requirements against an OSV export, and their SBOM.

The database is a directory of OSV records (https://ossf.github.io/osv-schema/), each `*.json` file
one record or a list of them: what a ConfigMap mounted as a volume looks like, or an unzipped
`PyPI/all.zip` from osv.dev. Matching follows the schema: a record affects a PyPI package's version
when the version is listed in `affected[].versions`, or falls in an ECOSYSTEM range
(`introduced` <= v < `fixed`, or <= `last_affected`). Versions and names are compared with
`packaging` (PEP 440 versions, PEP 503 names).

Severity: the record's `database_specific.severity` (GitHub's LOW, MODERATE, HIGH, CRITICAL), else
the highest CVSS base score of its `severity` vectors (computed by the `cvss` library; 0.1-3.9 low,
4-6.9 medium, 7-8.9 high, 9+ critical), else high: a record we cannot grade blocks at the
default threshold rather than slipping through."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from scriptrun.model.gates import Severity
from scriptrun.scan.findings import Finding, ScanOutcome, Tool

GATE = "dependencyScan"
REQUIREMENTS = "requirements.txt"  # how reports name the declared requirements
MAX_RECORDS = 200_000
_GITHUB_SEVERITY: dict[str, Severity] = {
    "LOW": "low",
    "MODERATE": "medium",
    "MEDIUM": "medium",
    "HIGH": "high",
    "CRITICAL": "critical",
}


@dataclass(frozen=True)
class Pinned:
    name: str  # canonical
    version: str
    line: int


class DatabaseError(ValueError):
    pass


def load_records(directory: Path) -> list[dict[str, Any]]:
    """Every OSV record in the directory's *.json files (a ConfigMap volume's keys are files)."""
    if not directory.is_dir():
        raise DatabaseError(f"no OSV database at {directory}")
    records: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DatabaseError(f"{path.name}: not an OSV JSON record ({err})") from None
        for record in data if isinstance(data, list) else [data]:
            if not isinstance(record, dict) or "id" not in record:
                raise DatabaseError(f"{path.name}: an entry without an id is not an OSV record")
            records.append(record)
            if len(records) > MAX_RECORDS:
                raise DatabaseError(f"more than {MAX_RECORDS} records")
    if not records:
        raise DatabaseError(f"no *.json OSV records in {directory}")
    return records


def pinned(requirements: list[str]) -> tuple[list[Pinned], list[Finding]]:
    """The `name==version` requirements; the others are findings (low): they cannot be checked."""
    out: list[Pinned] = []
    problems: list[Finding] = []
    for line, text in enumerate(requirements, start=1):
        try:
            req = Requirement(text)
        except InvalidRequirement as err:
            problems.append(_unchecked(text, line, f"not a requirement: {str(err).splitlines()[0][:120]}"))
            continue
        pins = [s.version for s in req.specifier if s.operator in ("==", "===") and "*" not in s.version]
        if len(pins) != 1:
            problems.append(_unchecked(req.name, line, "not pinned to one version (name==version): not checked"))
            continue
        out.append(Pinned(canonicalize_name(req.name), pins[0], line))
    return out, problems


def _unchecked(name: str, line: int, why: str) -> Finding:
    return Finding("osv", "UnpinnedRequirement", "unchecked requirement", "low", f"{name}: {why}", REQUIREMENTS, line)


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _in_range(version: Version, events: list[dict[str, Any]]) -> bool:
    """OSV's event walk over one ECOSYSTEM range (events sorted by version, `introduced: 0` first)."""

    def key(event: dict[str, Any]) -> tuple[int, Version]:
        value = next(iter(event.values()), "0")
        parsed = _version(str(value)) if value != "0" else None
        return (0, Version("0")) if parsed is None else (1, parsed)

    affected = False
    for event in sorted(events, key=key):
        if "introduced" in event:
            start = _version(str(event["introduced"])) if event["introduced"] != "0" else Version("0")
            if start is not None and version >= start:
                affected = True
        elif "fixed" in event:
            fixed = _version(str(event["fixed"]))
            if fixed is not None and version >= fixed:
                affected = False
        elif "last_affected" in event:
            last = _version(str(event["last_affected"]))
            if last is not None and version > last:
                affected = False
    return affected


def affects(record: dict[str, Any], pin: Pinned) -> bool:
    version = _version(pin.version)
    for entry in record.get("affected") or []:
        package = entry.get("package") or {}
        if package.get("ecosystem") != "PyPI" or canonicalize_name(str(package.get("name", ""))) != pin.name:
            continue
        if pin.version in (entry.get("versions") or []):
            return True
        if version is None:
            continue
        for rng in entry.get("ranges") or []:
            if rng.get("type") == "ECOSYSTEM" and _in_range(version, list(rng.get("events") or [])):
                return True
    return False


def _cvss_severity(vector: str) -> Severity | None:
    from cvss import CVSS3, CVSS4  # RedHat's maintained CVSS calculator

    try:
        score = float(CVSS4(vector).base_score if vector.startswith("CVSS:4") else CVSS3(vector).scores()[0])
    except Exception:  # any vector it cannot read (its errors share no base class)
        return None
    return "critical" if score >= 9 else "high" if score >= 7 else "medium" if score >= 4 else "low"


def severity(record: dict[str, Any]) -> Severity:
    named = str((record.get("database_specific") or {}).get("severity") or "").upper()
    if named in _GITHUB_SEVERITY:
        return _GITHUB_SEVERITY[named]
    graded = [s for s in (_cvss_severity(str(v.get("score", ""))) for v in record.get("severity") or []) if s]
    order = ("low", "medium", "high", "critical")
    return max(graded, key=order.index) if graded else "high"


def _findings(records: list[dict[str, Any]], pins: list[Pinned]) -> Iterator[Finding]:
    for pin in pins:
        for record in records:
            if record.get("withdrawn") or not affects(record, pin):
                continue
            rid = str(record["id"])
            aliases = [str(a) for a in record.get("aliases") or []][:3]
            summary = str(record.get("summary") or record.get("details") or "")[:160]
            also = f" ({', '.join(aliases)})" if aliases else ""
            yield Finding(
                "osv",
                rid,
                summary or rid,
                severity(record),
                f"{pin.name} {pin.version}: {summary or rid}{also}",
                REQUIREMENTS,
                pin.line,
                f"https://osv.dev/vulnerability/{rid}",
            )


def scan(requirements: list[str], database: Path) -> ScanOutcome:
    tool = Tool("scriptrun-osv", _own_version(), "https://ossf.github.io/osv-schema/")
    pins, problems = pinned(requirements)
    try:
        records = load_records(database)
    except DatabaseError as err:
        return ScanOutcome(GATE, tool, problems, error=str(err))
    return ScanOutcome(GATE, tool, [*_findings(records, pins), *problems])


def _own_version() -> str:
    from scriptrun import __version__

    return __version__

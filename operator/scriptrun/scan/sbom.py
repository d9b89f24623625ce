"""The run's SBOM: its declared requirements as CycloneDX 1.6 components (pkg:pypi purls), with the
advisories the dependency scan matched as vulnerabilities. Built and serialized by
cyclonedx-python-lib (CycloneDX's own library), as hack/sbom.py does for our images."""

from __future__ import annotations

import json
from typing import Any

from scriptrun.scan.findings import Finding
from scriptrun.scan.osv import REQUIREMENTS, pinned


def run_sbom(run_name: str, requirements: list[str], findings: list[Finding]) -> dict[str, Any]:
    """The BOM of one run (metadata.component: the run, an application) as its JSON document."""
    from cyclonedx.model import XsUri
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.vulnerability import (
        BomTarget,
        Vulnerability,
        VulnerabilityRating,
        VulnerabilitySeverity,
        VulnerabilitySource,
    )
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    pins, _ = pinned(requirements)
    components: dict[int, Component] = {}
    for pin in pins:
        purl = PackageURL(type="pypi", name=pin.name, version=pin.version)
        components[pin.line] = Component(
            name=pin.name, version=pin.version, type=ComponentType.LIBRARY, purl=purl, bom_ref=str(purl)
        )
    root = Component(name=run_name, type=ComponentType.APPLICATION, bom_ref=f"scriptrun:{run_name}")
    bom = Bom(components=list(components.values()), metadata=BomMetaData(component=root))
    bom.register_dependency(root, list(components.values()))
    for finding in findings:
        component = components.get(finding.line or 0) if finding.location == REQUIREMENTS else None
        if finding.tool != "osv" or component is None or finding.rule_id == "UnpinnedRequirement":
            continue
        bom.vulnerabilities.add(
            Vulnerability(
                bom_ref=f"{finding.rule_id}/{component.bom_ref.value}",
                id=finding.rule_id,
                source=VulnerabilitySource(name="OSV", url=XsUri(finding.help_uri) if finding.help_uri else None),
                description=finding.rule_name,
                ratings=[VulnerabilityRating(severity=VulnerabilitySeverity(finding.severity))],
                affects=[BomTarget(ref=str(component.bom_ref.value))],
            )
        )
    return dict(json.loads(JsonV1Dot6(bom).output_as_string()))

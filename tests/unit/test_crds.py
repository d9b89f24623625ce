"""The committed CRDs are exactly what the models generate, and are structural."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from scriptrun.model.crd import all_crds, render

ROOT = Path(__file__).resolve().parents[2]
CRD_DIRS = [ROOT / "crds", ROOT / "charts" / "scriptrun" / "crds"]


@pytest.mark.parametrize("directory", CRD_DIRS, ids=["crds", "chart"])
@pytest.mark.parametrize("filename", sorted(all_crds()))
def test_committed_crd_matches_models(filename: str, directory: Path) -> None:
    committed = directory / filename
    assert committed.exists(), f"{committed} missing: run `make crds`"
    assert committed.read_text() == render(all_crds()[filename]), f"{filename} drifted from the models: make crds"


def _walk(node: Any, path: str = "") -> list[str]:
    problems = []
    if isinstance(node, dict):
        for bad in ("$ref", "anyOf", "oneOf", "allOf", "$defs", "title", "const"):
            if bad in node:
                problems.append(f"{path}: {bad}")
        if node.get("additionalProperties") is False:
            problems.append(f"{path}: additionalProperties false")
        props = node.get("properties")
        if props is not None and node.get("type") != "object":
            problems.append(f"{path}: properties without type object")
        if "type" not in node and not node.get("x-kubernetes-int-or-string") and path:
            problems.append(f"{path}: no type")
        for key, value in (props or {}).items():
            problems += _walk(value, f"{path}.{key}")
        if "items" in node:
            problems += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            problems += _walk(node["additionalProperties"], f"{path}{{}}")
    return problems


@pytest.mark.parametrize("filename", sorted(all_crds()))
def test_crd_schema_is_structural(filename: str) -> None:
    crd = yaml.safe_load(render(all_crds()[filename]))
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    schema = version["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert {"Phase", "Duration", "Age"} <= set(names)


def test_scriptrun_schema_has_descriptions_defaults_enums_and_cel() -> None:
    spec = all_crds()["scriptrun.dev_scriptruns.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"
    ]["spec"]["properties"]
    retry = spec["retryStrategy"]["properties"]
    assert retry["retryPolicy"]["enum"] == ["Always", "OnFailure", "OnError"]
    assert retry["backoff"]["properties"]["strategy"]["enum"] == ["exponential", "linear", "fibonacci", "fixed"]
    assert retry["limit"]["minimum"] == 0
    assert spec["monitor"]["properties"]["intervalSeconds"]["minimum"] == 0.1
    assert spec["script"]["x-kubernetes-validations"][0]["rule"].startswith("[has(self.source)")
    assert spec["timeoutSeconds"]["description"]

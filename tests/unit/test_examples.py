"""Every manifest under examples/ is valid against the CRD schema and parses into the models."""

from pathlib import Path

import jsonschema
import pytest
import yaml

from scriptrun.model.crd import all_crds
from scriptrun.model.manifest import parse_object

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
SCHEMAS = {
    crd["spec"]["names"]["kind"]: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for crd in all_crds().values()
}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") in SCHEMAS]


def test_there_are_examples() -> None:
    assert any(_docs(p) for p in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_matches_crd_schema(path: Path) -> None:
    for doc in _docs(path):
        jsonschema.Draft4Validator(SCHEMAS[doc["kind"]]).validate(doc)
        parse_object(doc, str(path))

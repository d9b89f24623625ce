"""hack/sbom.py on a tiny fake image tree (no root, no image build): which Debian packages and Python
distributions it lists, their purls, the image as metadata.component, a reproducible and
schema-valid BOM. The built images' SBOMs against the images themselves: tests/unit/test_image.py."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

ROOT = Path(__file__).resolve().parents[2]
REF = "docker.io/scriptrun/runner:9.9.9"
DIGEST = "sha256:" + "ab" * 32
CLAMP = 1_700_000_000


def _sbom() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sbom", ROOT / "hack" / "sbom.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sbom"] = module
    spec.loader.exec_module(module)
    return module


sbom = _sbom()

STATUS = """\
Package: keep
Status: install ok installed
Architecture: amd64
Version: 1.0-1
Description: every file still there
 a continuation line: not a field

Package: part
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Source: partsrc (2.0-3)
Version: 1:2.0-3+b1

Package: gone
Status: install ok installed
Architecture: all
Version: 0.5

Package: removed
Status: deinstall ok config-files
Architecture: amd64
Version: 3.0
"""
LISTS = {
    "keep.list": ["/.", "/usr", "/usr/bin", "/usr/bin/keep", "/bin/keep-link"],
    # multi-arch: the list is named with the architecture; a directory of its own, left empty
    "part:amd64.list": [
        "/.",
        "/usr",
        "/usr/lib",
        "/usr/lib/libpart.so.2",
        "/usr/share/doc/part/copyright",
        "/var/part",
    ],
    "gone.list": ["/.", "/usr", "/usr/share", "/usr/share/doc/gone/copyright"],
    "removed.list": ["/etc/removed.conf"],
}
SITE = "usr/local/lib/python3.11/dist-packages"


def _tree(root: Path, *, with_db: bool = True) -> tuple[Path, Path]:
    """(tree, dpkg database): merged /usr (/bin -> usr/bin), os-release through a link."""
    tree = root / "tree"
    for d in ("usr/bin", "usr/lib", "etc", "var/part", f"{SITE}/scriptrun", "usr/lib/python3/dist-packages"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    os.symlink("usr/bin", tree / "bin")
    (tree / "usr/lib/os-release").write_text('ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12"\n')
    os.symlink("../usr/lib/os-release", tree / "etc/os-release")
    (tree / "usr/bin/keep").write_text("#!/bin/sh\n")
    os.symlink("keep", tree / "usr/bin/keep-link")  # listed as /bin/keep-link: found through /bin
    (tree / "usr/lib/libpart.so.2").write_bytes(b"\x7fELF")  # its copyright went with the docs
    (tree / "etc/removed.conf").write_text("")  # a config file of a package no longer installed
    for site, name, version in ((SITE, "Foo_Bar", "1.2.post1"), (SITE, "scriptrun", "9.9.9")):
        dist = tree / site / f"{name}-{version}.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nA description.\n")
    egg = tree / "usr/lib/python3/dist-packages/legacy-0.1.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: legacy\nVersion: 0.1\n")
    db = (tree if with_db else root / "base") / "var/lib/dpkg"
    (db / "info").mkdir(parents=True)
    (db / "status").write_text(STATUS)
    for name, lines in LISTS.items():
        (db / "info" / name).write_text("\n".join(lines) + "\n")
    return tree, db


def _components(bom: Any) -> dict[str, Any]:
    return {str(c.purl): c for c in bom.components}


def _props(component: Any) -> dict[str, str]:
    return {p.name: p.value for p in component.properties}


def test_what_it_lists(tmp_path: Path) -> None:
    tree, _ = _tree(tmp_path)
    bom = sbom.make_bom(tree, REF, CLAMP, digest=DIGEST)
    got = _components(bom)
    assert set(got) == {
        "pkg:deb/debian/keep@1.0-1?arch=amd64&distro=debian-12",
        "pkg:deb/debian/part@1:2.0-3%2Bb1?arch=amd64&distro=debian-12",
        "pkg:pypi/foo-bar@1.2.post1",
        "pkg:pypi/scriptrun@9.9.9",
        "pkg:pypi/legacy@0.1",
    }
    keep = got["pkg:deb/debian/keep@1.0-1?arch=amd64&distro=debian-12"]
    assert (keep.name, keep.version) == ("keep", "1.0-1")
    assert _props(keep) == {
        "scriptrun:dpkg:files-kept": "2",
        "scriptrun:dpkg:files-listed": "2",
        "scriptrun:dpkg:source": "keep 1.0-1",
    }
    # partially kept: listed, with what is left of it; its own directory is not a file
    part = got["pkg:deb/debian/part@1:2.0-3%2Bb1?arch=amd64&distro=debian-12"]
    assert (part.name, part.version) == ("part", "1:2.0-3+b1")
    assert _props(part) == {
        "scriptrun:dpkg:files-kept": "1",
        "scriptrun:dpkg:files-listed": "2",
        "scriptrun:dpkg:source": "partsrc 2.0-3",
    }
    foo = got["pkg:pypi/foo-bar@1.2.post1"]
    assert (foo.name, foo.version) == ("Foo_Bar", "1.2.post1")
    assert [o.location for o in foo.evidence.occurrences] == [f"/{SITE}/Foo_Bar-1.2.post1.dist-info"]
    # installed with no file left (gone), and not installed (removed): named in the metadata, not listed
    meta = {p.name: p.value for p in bom.metadata.properties}
    assert meta == {"scriptrun:dpkg:database": "/var/lib/dpkg", "scriptrun:dpkg:not-in-image": "gone"}


def test_the_image_is_the_metadata_component(tmp_path: Path) -> None:
    tree, _ = _tree(tmp_path)
    bom = sbom.make_bom(tree, REF, CLAMP, digest=DIGEST)
    image = bom.metadata.component
    assert (image.type.value, image.name, image.version) == ("container", "docker.io/scriptrun/runner", "9.9.9")
    assert str(image.purl) == f"pkg:oci/runner@{DIGEST}?repository_url=docker.io/scriptrun/runner&tag=9.9.9"
    assert int(bom.metadata.timestamp.timestamp()) == CLAMP
    data = json.loads(sbom.render(bom))
    [dependency] = [d for d in data["dependencies"] if d["ref"] == str(image.bom_ref)]
    assert sorted(dependency["dependsOn"]) == sorted(str(c.purl) for c in bom.components)


def test_a_slimmed_tree_is_read_with_the_database_it_was_cut_from(tmp_path: Path) -> None:
    tree, db = _tree(tmp_path, with_db=False)
    assert not (tree / "var/lib/dpkg").exists()
    bom = sbom.make_bom(tree, REF, CLAMP, dpkg_db=db)
    assert {c.name for c in bom.components if c.purl.type == "deb"} == {"keep", "part"}
    meta = {p.name: p.value for p in bom.metadata.properties}
    assert meta["scriptrun:dpkg:database"].endswith("(not in the image)")
    # a file removed since: the package goes with it
    (tree / "usr/lib/libpart.so.2").unlink()
    bom = sbom.make_bom(tree, REF, CLAMP, dpkg_db=db)
    assert {c.name for c in bom.components if c.purl.type == "deb"} == {"keep"}


def test_json_is_valid_and_reproducible(tmp_path: Path) -> None:
    tree, _ = _tree(tmp_path)
    first = sbom.render(sbom.make_bom(tree, REF, CLAMP, digest=DIGEST))
    again = sbom.render(sbom.make_bom(tree, REF, CLAMP, digest=DIGEST))
    assert first == again  # the serial number comes from the content, the time from the clamp
    data = json.loads(first)
    assert (data["bomFormat"], data["specVersion"]) == ("CycloneDX", "1.6")
    assert data["serialNumber"].startswith("urn:uuid:")
    assert data["metadata"]["timestamp"] == "2023-11-14T22:13:20+00:00"
    validator = JsonStrictValidator(SchemaVersion.V1_6)
    assert validator.validate_str(first) is None
    # the validator is no rubber stamp
    broken = json.loads(first)
    broken["components"][0]["version"] = 1
    assert validator.validate_str(json.dumps(broken)) is not None
    # another content, another serial number
    (tree / "usr/lib/libpart.so.2").unlink()
    other = json.loads(sbom.render(sbom.make_bom(tree, REF, CLAMP, digest=DIGEST)))
    assert other["serialNumber"] != data["serialNumber"]


def test_command_line_writes_beside_the_archive(tmp_path: Path) -> None:
    tree, _ = _tree(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    index = {"manifests": [{"digest": DIGEST, "annotations": {"org.opencontainers.image.ref.name": REF}}]}
    with tarfile.open(out / "runner.oci.tar", "w") as tar:
        data = json.dumps(index).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    argv = ["--out-dir", str(out), "--timestamp", str(CLAMP), "--image", f"runner={tree}"]
    assert sbom.main(argv) == 0
    written = (out / "runner.cdx.json").read_text()
    assert json.loads(written)["metadata"]["component"]["purl"].startswith(f"pkg:oci/runner@{DIGEST}?")
    mtime = (out / "runner.cdx.json").stat().st_mtime_ns
    assert sbom.main(argv) == 0
    assert (out / "runner.cdx.json").stat().st_mtime_ns == mtime  # unchanged: not rewritten
    with pytest.raises(SystemExit):
        sbom.main([*argv[:-1], "runner"])  # NAME=TREE

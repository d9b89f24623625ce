"""SBOMs of the built images (`make image`): CycloneDX 1.6 JSON of what is really in each image's tree.

    sbom.py --out-dir DIR --timestamp EPOCH --image NAME=TREE ... [--dpkg-db NAME=DIR ...]
        DIR/NAME.cdx.json for the image in DIR/NAME.oci.tar (its reference and manifest digest),
        whose layers were packed from TREE.

Components, read from the image's final tree (the one its layers are packed from):
  - Debian packages: dpkg's database (the tree's own /var/lib/dpkg, or --dpkg-db: the monitor's
    slimming removed its own, so it is read from the base it was slimmed from) says what is
    installed and which paths each package owns; a package is listed if at least one of its files
    (not directories) is still in the tree, with the version dpkg recorded. The slimming (and the
    base's: no docs, man pages, locales) left most packages partial: each carries how many of its
    files are kept (`scriptrun:dpkg:files-kept` of `scriptrun:dpkg:files-listed`); a package none
    of whose files is left is not listed, only named in the metadata (`scriptrun:dpkg:not-in-image`).
  - Python distributions: every *.dist-info / *.egg-info in the tree's site directories (scriptrun
    itself among them), name and version from their METADATA, where it was found as evidence.
metadata.component is the image: type container, its reference as name and version, the manifest's
digest in its purl (pkg:oci). The timestamp is the build's clamp time (SOURCE_DATE_EPOCH style, as the
layers' mtimes) and the serial number a UUID derived from the BOM's content, so two builds of the same
image write the same file.

cyclonedx-python-lib (CycloneDX's own Python library, a dev dependency) builds, serializes and
validates the BOM against the CycloneDX JSON schema: the format stays right as the spec moves, and no
JSON is written by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
import sys
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PathDistribution
from pathlib import Path

from cyclonedx.contrib.this.builders import this_component
from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.component_evidence import ComponentEvidence, Occurrence
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oci_image import in_tree  # paths as the tree's own root sees them, resolved as the slimming does

SCHEMA = SchemaVersion.V1_6
INSTALLED = ("installed", "triggers-pending", "triggers-awaited")  # dpkg -l: ii, it, iW
SITE_GLOBS = ("usr/lib/python3*/*-packages", "usr/local/lib/python3*/*-packages")
REF_NAME = "org.opencontainers.image.ref.name"
SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/scriptrun/scriptrun/hack/sbom.py")


# -- Debian packages ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    arch: str
    source: str  # "name version" of the source package
    files_listed: int  # the paths dpkg lists for it that are not directories
    files_kept: int  # of those, the ones in the tree


def dpkg_status(text: str) -> Iterator[dict[str, str]]:
    """The paragraphs of a dpkg status file (continuation lines joined)."""
    for paragraph in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") and key is not None:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if fields.get("Package"):
            yield fields


def _source(fields: dict[str, str]) -> str:
    source = fields.get("Source", fields["Package"])
    name, _, version = source.partition(" ")
    return f"{name} {version.strip('()') or fields['Version']}"


def _owned_paths(db: Path, name: str, arch: str) -> list[str]:
    for candidate in (f"{name}:{arch}.list", f"{name}.list"):
        listed = db / "info" / candidate
        if listed.exists():
            return [line for line in listed.read_text().splitlines() if line.strip() and line != "/."]
    return []


def _lexists_in(tree: Path, path: str) -> os.stat_result | None:
    """lstat of `path` inside the tree: its directories resolved there, the last component not followed."""
    parent = in_tree(tree, os.path.dirname(path))
    if parent is None:
        return None
    try:
        return os.lstat(tree / parent.lstrip("/") / os.path.basename(path))
    except FileNotFoundError:
        return None


def debian_packages(tree: Path, db: Path) -> tuple[list[DebPackage], list[str]]:
    """(the installed packages with a file in the tree, the installed ones with none)."""
    kept: list[DebPackage] = []
    gone: list[str] = []
    for fields in dpkg_status((db / "status").read_text()):
        if fields.get("Status", "").rpartition(" ")[2] not in INSTALLED:
            continue  # not-installed, config-files, half-installed...
        name, arch = fields["Package"], fields.get("Architecture", "all")
        paths = _owned_paths(db, name, arch)
        parents = {os.path.dirname(p) for p in paths}
        listed = present = 0
        for path in paths:
            if path in parents:  # dpkg lists every directory its files are in
                continue
            st = _lexists_in(tree, path)
            if st is not None and stat.S_ISDIR(st.st_mode):
                continue  # an (empty) directory of its own
            listed += 1
            present += st is not None
        if present:
            kept.append(DebPackage(name, fields["Version"], arch, _source(fields), listed, present))
        else:
            gone.append(name)
    return kept, gone


def os_release(tree: Path) -> dict[str, str]:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        found = in_tree(tree, path)
        if found is not None:
            out = {}
            for line in (tree / found.lstrip("/")).read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    out[key.strip()] = value.strip().strip("\"'")
            return out
    raise SystemExit(f"sbom: no os-release in {tree}")


# -- Python distributions -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PyDist:
    name: str
    version: str
    location: str  # the *.dist-info directory, as the image sees it


def python_distributions(tree: Path) -> list[PyDist]:
    out = []
    for pattern in SITE_GLOBS:
        for site in sorted(tree.glob(pattern)):
            for meta in sorted([*site.glob("*.dist-info"), *site.glob("*.egg-info")]):
                dist = PathDistribution(meta)
                name, version = dist.metadata["Name"], dist.version
                if not name or not version:
                    raise SystemExit(f"sbom: {meta} has no Name or Version")
                out.append(PyDist(name, version, "/" + str(meta.relative_to(tree))))
    return out


# -- the BOM ------------------------------------------------------------------------------------------
def split_ref(ref: str) -> tuple[str, str]:
    """docker.io/scriptrun/runner:0.1.0 -> (docker.io/scriptrun/runner, 0.1.0)."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return name, tag


def image_component(ref: str, digest: str | None) -> Component:
    repository, tag = split_ref(ref)
    purl = None
    hashes = []
    if digest:
        purl = PackageURL(
            type="oci",
            name=repository.rsplit("/", 1)[-1],
            version=digest,
            qualifiers={"repository_url": repository, "tag": tag},
        )
        hashes = [HashType(alg=HashAlgorithm.SHA_256, content=digest.removeprefix("sha256:"))]
    return Component(
        type=ComponentType.CONTAINER,
        name=repository,
        version=tag,
        purl=purl,
        hashes=hashes,
        bom_ref=str(purl) if purl else ref,
    )


def deb_component(pkg: DebPackage, distro: str) -> Component:
    purl = PackageURL(
        type="deb",
        namespace="debian",
        name=pkg.name,
        version=pkg.version,
        qualifiers={"arch": pkg.arch, "distro": distro},
    )
    return Component(
        type=ComponentType.LIBRARY,
        name=pkg.name,
        version=pkg.version,
        purl=purl,
        bom_ref=str(purl),
        properties=[
            Property(name="scriptrun:dpkg:source", value=pkg.source),
            Property(name="scriptrun:dpkg:files-kept", value=str(pkg.files_kept)),
            Property(name="scriptrun:dpkg:files-listed", value=str(pkg.files_listed)),
        ],
    )


def py_component(dist: PyDist) -> Component:
    purl = PackageURL(type="pypi", name=dist.name, version=dist.version)
    return Component(
        type=ComponentType.LIBRARY,
        name=dist.name,
        version=dist.version,
        purl=purl,
        bom_ref=str(purl),
        evidence=ComponentEvidence(occurrences=[Occurrence(location=dist.location)]),
    )


def make_bom(tree: Path, ref: str, timestamp: int, *, dpkg_db: Path | None = None, digest: str | None = None) -> Bom:
    db = dpkg_db if dpkg_db is not None else tree / "var/lib/dpkg"
    release = os_release(tree)
    distro = f"{release.get('ID', 'debian')}-{release.get('VERSION_ID', '')}".rstrip("-")
    debs, gone = debian_packages(tree, db)
    components = [deb_component(p, distro) for p in debs] + [py_component(d) for d in python_distributions(tree)]
    refs = [str(c.bom_ref) for c in components]
    duplicates = sorted({r for r in refs if refs.count(r) > 1})
    if duplicates:
        raise SystemExit(f"sbom: listed twice in {tree}: {duplicates}")
    image = image_component(ref, digest)
    own_db = db.resolve() == (tree / "var/lib/dpkg").resolve()
    metadata = BomMetaData(
        component=image,
        timestamp=datetime.fromtimestamp(timestamp, tz=UTC),
        properties=[
            Property(
                name="scriptrun:dpkg:database",
                value="/var/lib/dpkg" if own_db else "/var/lib/dpkg of the tree it was slimmed from (not in the image)",
            ),
            Property(name="scriptrun:dpkg:not-in-image", value=" ".join(sorted(gone))),
        ],
    )
    metadata.tools.components.add(this_component())
    bom = Bom(components=components, metadata=metadata, serial_number=uuid.UUID(int=0))
    bom.register_dependency(image, components)
    return bom


def render(bom: Bom, validator: JsonStrictValidator | None = None) -> str:
    """Validated JSON; the serial number derived from everything else in it."""
    bom.serial_number = uuid.UUID(int=0)
    draft = JsonV1Dot6(bom).output_as_string(indent=2)
    bom.serial_number = uuid.uuid5(SERIAL_NAMESPACE, hashlib.sha256(draft.encode()).hexdigest())
    text = JsonV1Dot6(bom).output_as_string(indent=2) + "\n"
    error = (validator or JsonStrictValidator(SCHEMA)).validate_str(text)
    if error is not None:
        raise SystemExit(f"sbom: the BOM does not validate against CycloneDX {SCHEMA.to_version()}: {error}")
    return text


def archive_image(archive: Path) -> tuple[str, str]:
    """(reference, manifest digest) of the image in an OCI archive (its index.json's first entry)."""
    with tarfile.open(archive) as tar:
        handle = tar.extractfile("index.json")
        if handle is None:
            raise SystemExit(f"sbom: {archive} has no index.json")
        entry = json.load(handle)["manifests"][0]
    return entry["annotations"][REF_NAME], entry["digest"]


def write(path: Path, text: str) -> None:
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.rename(path)


def _pairs(items: list[str], what: str) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{what} expects NAME=DIR, got {item!r}")
        out[name] = Path(value)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="CycloneDX SBOMs of image trees, beside their OCI archives")
    p.add_argument("--out-dir", type=Path, required=True, help="where NAME.oci.tar is and NAME.cdx.json goes")
    p.add_argument("--image", action="append", default=[], required=True, help="NAME=TREE: the image's final tree")
    p.add_argument("--dpkg-db", action="append", default=[], help="NAME=DIR: dpkg's database (default: the tree's)")
    p.add_argument("--timestamp", type=int, required=True, help="the build's clamp time (unix time)")
    args = p.parse_args(argv)
    dbs = _pairs(args.dpkg_db, "--dpkg-db")
    validator = JsonStrictValidator(SCHEMA)
    for name, tree in _pairs(args.image, "--image").items():
        ref, digest = archive_image(args.out_dir / f"{name}.oci.tar")
        bom = make_bom(tree, ref, args.timestamp, dpkg_db=dbs.get(name), digest=digest)
        output = args.out_dir / f"{name}.cdx.json"
        write(output, render(bom, validator))
        debs = sum(1 for c in bom.components if c.purl is not None and c.purl.type == "deb")
        print(f"{output} {ref}: {debs} Debian packages, {len(bom.components) - debs} Python distributions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

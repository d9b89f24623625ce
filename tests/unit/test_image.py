"""The image archives from `make image` (registry-free, $SCRIPTRUN_IMAGE_DIR): OCI layout, the reference
`ctr images import` tags, config, contents, that each runs (a chroot of its unpacked layers, the root
read-only as the chart and the pod builder run them), that runner-image/Dockerfile* say the same, and
that the SBOM beside each product archive (NAME.cdx.json) is valid CycloneDX and lists what is in it.

Archives are built as root; without them these tests skip (as a normal user) or fail (under CI)."""

from __future__ import annotations

import copy
import email.parser
import gzip
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

import scriptrun

ROOT = Path(__file__).resolve().parents[2]
VERSION = scriptrun.__version__
CACHE = Path(os.environ.get("SCRIPTRUN_CACHE") or Path.home() / ".cache" / "scriptrun")
IMAGE_DIR = Path(os.environ.get("SCRIPTRUN_IMAGE_DIR") or CACHE / "image")
PRODUCT_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONDONTWRITEBYTECODE=1",
    "PYTHONUNBUFFERED=1",
]
# what each archive must be, written out here rather than read from hack/oci_image.py
EXPECTED: dict[str, dict[str, Any]] = {
    "runner": {
        "ref": f"docker.io/scriptrun/runner:{VERSION}",
        "config": {
            "User": "10001:10001",
            "Entrypoint": ["scriptrun"],
            "Cmd": ["--help"],
            "Env": PRODUCT_ENV,
            "WorkingDir": "/home/scriptrun",
        },
        "title": "scriptrun-runner",
    },
    "operator": {
        "ref": f"docker.io/scriptrun/operator:{VERSION}",
        "config": {
            "User": "10001:10001",
            "Entrypoint": ["scriptrun", "operator"],
            "Env": PRODUCT_ENV,
            "WorkingDir": "/home/scriptrun",
        },
        "title": "scriptrun-operator",
    },
    "monitor": {
        "ref": f"docker.io/scriptrun/monitor:{VERSION}",
        "config": {
            "User": "10001:10001",
            "Entrypoint": ["scriptrun", "monitor"],
            "Env": PRODUCT_ENV,
            "WorkingDir": "/home/scriptrun",
        },
        "title": "scriptrun-monitor",
    },
    "test-python3": {
        "ref": "docker.io/library/scriptrun-test-python3:bookworm",
        "config": {"Cmd": ["python3"], "Env": PRODUCT_ENV[:1]},
        "title": "scriptrun-test-python3",
    },
}
PRODUCTS = ("runner", "operator", "monitor")
HEAVY = ("pydantic", "kopf", "kubernetes_asyncio", "rich", "yaml", "opentelemetry", "cel", "aiohttp")
SITE = "usr/local/lib/python3.11/dist-packages"
# the price providers' SDKs (the extras aws, gcp, azure): the operator asks the clouds' price APIs
CLOUD_SDKS = ("boto3", "botocore", "google/cloud/billing_v1", "azure/mgmt/costmanagement", "azure/identity")


def _oci_image() -> ModuleType:
    spec = importlib.util.spec_from_file_location("oci_image", ROOT / "hack" / "oci_image.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["oci_image"] = module
    spec.loader.exec_module(module)
    return module


# -- the archives ----------------------------------------------------------------------------------
@dataclass
class Archive:
    name: str
    path: Path
    layout: dict[str, Any]
    index: dict[str, Any]
    manifest: dict[str, Any]
    config: dict[str, Any]
    members: dict[str, tarfile.TarInfo]  # the merged file system: whiteouts applied
    files: dict[str, bytes]  # small files' contents (_kept_file), from the merged view
    blobs: dict[str, Path]  # digest -> the blob, unpacked next to the archive's tests


SMALL_FILES = ("etc/passwd", "etc/group", "var/lib/dpkg/status")
DIST_INFO = re.compile(r"usr/(?:local/)?lib/python3[^/]*/[^/]*-packages/[^/]+\.(?:dist-info|egg-info)")


def _kept_file(name: str) -> bool:
    """What the SBOM tests read: dpkg's status and file lists, the Python distributions' metadata."""
    if name in SMALL_FILES:
        return True
    if name.startswith("var/lib/dpkg/info/") and name.endswith(".list"):
        return True
    parent, _, base = name.rpartition("/")
    return base in ("METADATA", "PKG-INFO") and DIST_INFO.fullmatch(parent) is not None


def _missing_reason() -> str | None:
    missing = [f"{name}.oci.tar" for name in EXPECTED if not (IMAGE_DIR / f"{name}.oci.tar").exists()]
    if missing:
        return f"image archives missing in {IMAGE_DIR}: {', '.join(missing)} (`make image`, as root)"
    return None


def _load(name: str, blob_dir: Path) -> Archive:
    path = IMAGE_DIR / f"{name}.oci.tar"
    blobs: dict[str, Path] = {}
    with tarfile.open(path) as tar:

        def read(member: str) -> bytes:
            handle = tar.extractfile(member)
            assert handle is not None, member
            return handle.read()

        for member in tar.getmembers():
            if member.isfile() and member.name.startswith("blobs/sha256/"):
                target = blob_dir / member.name.rsplit("/", 1)[1]
                if not target.exists():
                    handle = tar.extractfile(member)
                    assert handle is not None
                    with target.open("wb") as out:
                        shutil.copyfileobj(handle, out)
                blobs["sha256:" + target.name] = target
        layout = json.loads(read("oci-layout"))
        index = json.loads(read("index.json"))
    manifest = json.loads(blobs[index["manifests"][0]["digest"]].read_bytes())
    config = json.loads(blobs[manifest["config"]["digest"]].read_bytes())
    members: dict[str, tarfile.TarInfo] = {}
    files: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        with tarfile.open(blobs[layer["digest"]], mode="r:gz") as tar:
            for member in tar:
                parent, _, base = member.name.rpartition("/")
                if base.startswith(".wh."):
                    gone = f"{parent}/{base[4:]}" if parent else base[4:]
                    for key in [k for k in members if k == gone or k.startswith(gone + "/")]:
                        del members[key]
                        files.pop(key, None)
                    continue
                members[member.name] = member
                files.pop(member.name, None)
                if member.isfile() and _kept_file(member.name):
                    handle = tar.extractfile(member)
                    assert handle is not None
                    files[member.name] = handle.read()
    return Archive(name, path, layout, index, manifest, config, members, files, blobs)


def _skip(request: pytest.FixtureRequest, reason: str, *, fail_in_ci: bool = False) -> NoReturn:
    if fail_in_ci and os.environ.get("SCRIPTRUN_REQUIRE_CONTROLPLANE"):  # set by .ci/run
        pytest.fail(reason)
    # a test carrying the `skip` keyword (and no mark of its own) is folded into one summary line
    request.node.add_marker(pytest.mark.skip(reason=reason))
    pytest.skip(reason)


@pytest.fixture(scope="session")
def _loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Archive] | None:
    if _missing_reason():
        return None
    blob_dir = tmp_path_factory.mktemp("blobs")
    return {name: _load(name, blob_dir) for name in EXPECTED}


@pytest.fixture
def archives(request: pytest.FixtureRequest, _loaded: dict[str, Archive] | None) -> dict[str, Archive]:
    if _loaded is None:
        _skip(request, _missing_reason() or "", fail_in_ci=True)
    return _loaded


@pytest.fixture(params=list(EXPECTED))
def archive(request: pytest.FixtureRequest, archives: dict[str, Archive]) -> Archive:
    return archives[request.param]


# -- layout, reference, config -----------------------------------------------------------------------
def test_oci_layout_and_reference(archive: Archive) -> None:
    assert archive.layout == {"imageLayoutVersion": "1.0.0"}
    [entry] = archive.index["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    ref = EXPECTED[archive.name]["ref"]
    # ctr (containerd 1.6+) names the import after io.containerd.image.name, other tools read ref.name
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": ref, "io.containerd.image.name": ref}
    assert entry["size"] == archive.blobs[entry["digest"]].stat().st_size
    layers = archive.manifest["layers"]
    assert archive.manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert {layer["mediaType"] for layer in layers} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    assert len(archive.config["rootfs"]["diff_ids"]) == len(layers) == len(archive.config["history"])


_VERIFIED: dict[str, str] = {}


def test_blobs_match_their_digests(archive: Archive) -> None:
    for digest, blob in archive.blobs.items():
        if digest not in _VERIFIED:
            with blob.open("rb") as handle:
                _VERIFIED[digest] = "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
        assert _VERIFIED[digest] == digest
    for layer, diff_id in zip(archive.manifest["layers"], archive.config["rootfs"]["diff_ids"], strict=True):
        assert layer["size"] == archive.blobs[layer["digest"]].stat().st_size
        key = "diff:" + layer["digest"]
        if key not in _VERIFIED:
            with gzip.open(archive.blobs[layer["digest"]], "rb") as handle:
                _VERIFIED[key] = "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
        assert _VERIFIED[key] == diff_id


def test_config(archive: Archive) -> None:
    expected = EXPECTED[archive.name]
    cfg = dict(archive.config["config"])
    labels = cfg.pop("Labels")
    assert cfg == expected["config"]
    assert labels["org.opencontainers.image.title"] == expected["title"]
    if archive.name in PRODUCTS:
        assert labels["org.opencontainers.image.version"] == VERSION
        assert archive.manifest["annotations"] == labels
    assert archive.config["os"] == "linux" and archive.config["architecture"] == "amd64"


def test_the_archives_are_what_hack_oci_image_declares(archives: dict[str, Archive]) -> None:
    for spec in _oci_image().images(VERSION):
        got = archives[spec.file.removesuffix(".oci.tar")]
        assert got.index["manifests"][0]["annotations"]["io.containerd.image.name"] == spec.ref
        assert got.config["config"] == {**spec.config, "Labels": spec.labels}


def test_layers_are_shared(archives: dict[str, Archive]) -> None:
    """The operator is the runner under another config; both start with the test image's base layer."""

    def digests(name: str) -> list[str]:
        return [layer["digest"] for layer in archives[name].manifest["layers"]]

    assert digests("operator") == digests("runner")
    assert digests("runner")[0] == digests("test-python3")[0]
    assert len(digests("test-python3")) == 1
    assert not set(digests("monitor")[:1]) & set(digests("runner"))


# -- contents -----------------------------------------------------------------------------------
def _has_module(archive: Archive, module: str) -> bool:
    return f"{SITE}/{module}" in archive.members or f"{SITE}/{module}.py" in archive.members  # package or module


def test_contents_common(archive: Archive) -> None:
    members = archive.members
    assert members["usr/bin/python3"].issym() and "usr/bin/python3.11" in members
    assert "usr/bin/python" in members  # `python` as the pods call it
    assert not [n for n in members if n.startswith("dev/")]  # the runtime mounts /dev
    assert not [n for n in members if n.startswith("var/lib/apt/lists/") and members[n].isfile()]
    assert members["tmp"].mode & 0o1777 == 0o1777


@pytest.fixture(params=PRODUCTS)
def product(request: pytest.FixtureRequest, archives: dict[str, Archive]) -> Archive:
    return archives[request.param]


def test_product_images_have_scriptrun_and_its_user(product: Archive) -> None:
    image = product
    members = image.members
    assert members["usr/local/bin/scriptrun"].mode & 0o111
    assert (members["home/scriptrun"].uid, members["home/scriptrun"].gid) == (10001, 10001)
    assert "scriptrun:x:10001:10001:" in image.files["etc/passwd"].decode()
    assert "scriptrun:x:10001:" in image.files["etc/group"].decode()
    for module in ("scriptrun", "psutil", "prometheus_client"):
        assert _has_module(image, module), module
    assert f"{SITE}/scriptrun/monitor/launch.py" in members
    # bytecode for every module: a read-only root filesystem never compiles at start-up
    sources = [n for n in members if n.startswith(SITE + "/") and n.endswith(".py")]
    missing = [
        n
        for n in sources
        if f"{n.rsplit('/', 1)[0]}/__pycache__/{n.rsplit('/', 1)[1][:-3]}.cpython-311.pyc" not in members
    ]
    assert sources and missing == [], missing[:20]


def test_runner_and_operator_have_every_dependency(archives: dict[str, Archive]) -> None:
    for name in ("runner", "operator"):
        for module in HEAVY:
            assert _has_module(archives[name], module), (name, module)


def test_the_operator_has_the_cloud_price_sdks(archives: dict[str, Archive]) -> None:
    for module in CLOUD_SDKS:
        assert _has_module(archives["operator"], module), module
        assert not _has_module(archives["monitor"], module), module


def test_monitor_is_small_and_has_none_of_the_heavy_dependencies(archives: dict[str, Archive]) -> None:
    monitor = archives["monitor"]
    assert [m for m in HEAVY if _has_module(monitor, m)] == []
    members = monitor.members
    gone = ["var/lib/dpkg", "usr/bin/perl", "usr/bin/apt", "usr/bin/dpkg", "usr/share/zoneinfo", "usr/share/doc"]
    assert [p for p in gone if p in members] == []
    assert not [n for n in members if n.startswith("usr/lib/x86_64-linux-gnu/gconv/")]
    assert "usr/bin/sh" in members  # a shell stays, for kubectl exec
    assert monitor.path.stat().st_size < archives["runner"].path.stat().st_size / 2


def test_test_image_has_nothing_of_scriptrun(archives: dict[str, Archive]) -> None:
    image = archives["test-python3"]
    scriptrun_paths = [n for n in image.members if "scriptrun" in n or n.startswith(f"{SITE}/")]
    assert scriptrun_paths == []
    assert ":10001:" not in image.files["etc/passwd"].decode()
    assert not _has_module(image, "psutil")


# -- the SBOMs: valid CycloneDX, and what is in the image ----------------------------------------------
def _sbom(name: str) -> dict[str, Any]:
    path = IMAGE_DIR / f"{name}.cdx.json"
    assert path.exists(), f"{path}: `make image` writes an SBOM beside each product archive"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _resolve(members: dict[str, tarfile.TarInfo], path: str, *, follow_last: bool = True) -> str | None:
    """The member `path` names in the image, symlinks followed inside the image; None if absent."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        member = members.get("/".join([*done, part]))
        if member is None:
            return None
        if member.issym() and (parts or follow_last):
            hops += 1
            assert hops < 40, path
            if member.linkname.startswith("/"):
                done = []
            parts = [p for p in member.linkname.split("/") if p not in ("", ".")] + parts
        else:
            done.append(part)
    return "/".join(done)


def _member(image: Archive, path: str) -> tarfile.TarInfo | None:
    """What is at `path` in the image, as dpkg lists it: its directories' links followed, not its own."""
    found = _resolve(image.members, path, follow_last=False)
    return None if found is None else image.members[found]


def _deb_components(sbom: dict[str, Any]) -> dict[str, tuple[str, str, str, str]]:
    """name -> (version, arch, files kept, files listed), from the SBOM's purls and properties."""
    out = {}
    for component in sbom["components"]:
        purl = PackageURL.from_string(component["purl"])
        if purl.type != "deb":
            continue
        assert (purl.namespace, purl.qualifiers["distro"]) == ("debian", "debian-12"), purl
        assert (purl.name, purl.version) == (component["name"], component["version"]), purl
        props = {p["name"]: p["value"] for p in component["properties"]}
        kept, listed = props["scriptrun:dpkg:files-kept"], props["scriptrun:dpkg:files-listed"]
        out[purl.name] = (purl.version or "", str(purl.qualifiers["arch"]), kept, listed)
    return out


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_sbom_is_valid_cyclonedx_and_names_the_image(product: Archive) -> None:
    path = IMAGE_DIR / f"{product.name}.cdx.json"
    sbom = _sbom(product.name)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(path.read_text()) is None
    assert (sbom["bomFormat"], sbom["specVersion"]) == ("CycloneDX", "1.6")
    assert re.fullmatch(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", sbom["serialNumber"])
    image = sbom["metadata"]["component"]
    ref = EXPECTED[product.name]["ref"]
    assert image["type"] == "container"
    assert f"{image['name']}:{image['version']}" == ref
    digest = product.index["manifests"][0]["digest"]  # this very image
    repository = ref.rsplit(":", 1)[0]
    assert image["purl"] == f"pkg:oci/{product.name}@{digest}?repository_url={repository}&tag={VERSION}"
    # the build's clamp time, as the layers' newest entries carry it: builds stay reproducible
    clamp = max(member.mtime for member in product.members.values())
    assert sbom["metadata"]["timestamp"] == time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(clamp))
    [dependency] = [d for d in sbom["dependencies"] if d["ref"] == image["bom-ref"]]
    assert sorted(dependency["dependsOn"]) == sorted(c["bom-ref"] for c in sbom["components"])


def test_sbom_lists_the_debian_packages_in_the_image(product: Archive, archives: dict[str, Archive]) -> None:
    """Every installed package with a file left in the image, at the version of the image's own dpkg
    database; the monitor's slimming removed that database, so it is the base's (the test image's,
    which the monitor was cut from). Packages none of whose files is left are not listed."""
    db = product
    if product.name == "monitor":
        assert "var/lib/dpkg" not in product.members
        db = archives["test-python3"]
    expected = {}
    for paragraph in db.files["var/lib/dpkg/status"].decode().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in paragraph.splitlines() if ": " in line and not line.startswith(" ")
        )
        if fields.get("Status") != "install ok installed":
            continue
        name, arch = fields["Package"], fields["Architecture"]
        listing = db.files.get(f"var/lib/dpkg/info/{name}:{arch}.list") or db.files[f"var/lib/dpkg/info/{name}.list"]
        paths = [p for p in listing.decode().splitlines() if p and p != "/."]
        parents = {p.rsplit("/", 1)[0] for p in paths}  # dpkg lists directories too
        found = {p: _member(product, p) for p in paths if p not in parents}
        files = [p for p, member in found.items() if member is None or not member.isdir()]
        kept = [p for p in files if found[p] is not None]
        if kept:
            expected[name] = (fields["Version"], arch, str(len(kept)), str(len(files)))
    got = _deb_components(_sbom(product.name))
    assert got == expected
    assert {"libc6", "python3.11-minimal", "libpython3.11-stdlib", "ca-certificates"} <= set(got)
    if product.name == "monitor":
        assert not {"perl-base", "apt", "dpkg", "tzdata"} & set(got)
    else:
        assert {"perl-base", "apt", "dpkg", "tzdata"} <= set(got)


def test_sbom_lists_the_python_distributions_in_the_image(product: Archive) -> None:
    expected = {}
    for name, member in product.members.items():
        if member.isdir() and DIST_INFO.fullmatch(name):
            metadata = product.files.get(f"{name}/METADATA") or product.files[f"{name}/PKG-INFO"]
            headers = email.parser.BytesHeaderParser().parsebytes(metadata)
            expected[_canonical(headers["Name"])] = (headers["Version"], f"/{name}")
    got = {}
    for component in _sbom(product.name)["components"]:
        purl = PackageURL.from_string(component["purl"])
        if purl.type == "pypi":
            [occurrence] = component["evidence"]["occurrences"]
            got[_canonical(purl.name)] = (purl.version, occurrence["location"])
    assert got == expected  # every distribution in the image, and nothing that is not
    assert got["scriptrun"][0] == VERSION
    assert {"psutil", "prometheus-client"} <= set(got)
    if product.name == "monitor":
        assert not {"kopf", "boto3", "pydantic", "kubernetes-asyncio"} & set(got)
    else:
        assert {"kopf", "boto3", "botocore", "pydantic", "kubernetes-asyncio", "azure-identity"} <= set(got)


def test_the_operator_sbom_lists_what_the_runner_does(archives: dict[str, Archive]) -> None:
    """The operator is the runner's file system under another config: the same components."""
    assert _sbom("operator")["components"] == _sbom("runner")["components"]
    assert _sbom("operator")["metadata"]["component"] != _sbom("runner")["metadata"]["component"]


# -- they run: chroot into the unpacked layers (root) --------------------------------------------------
_ROOTS: dict[tuple[str, ...], Path] = {}


@pytest.fixture
def rootfs(
    request: pytest.FixtureRequest, archives: dict[str, Archive], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """name -> the image's layers unpacked in order, whiteouts applied (once per session and layer
    chain: the operator's root is the runner's)."""
    if os.geteuid() != 0:
        _skip(request, "running the images needs root (chroot, mount namespace): skipped as a normal user")

    def unpack(name: str) -> Path:
        image = archives[name]
        chain = tuple(layer["digest"] for layer in image.manifest["layers"])
        if chain not in _ROOTS:
            root = tmp_path_factory.mktemp(f"rootfs-{name}")
            for digest in chain:
                with tarfile.open(image.blobs[digest], mode="r:gz") as tar:
                    for member in tar:
                        parent, _, base = member.name.rpartition("/")
                        if base.startswith(".wh."):
                            gone = root / parent / base[4:]
                            if gone.is_dir() and not gone.is_symlink():
                                shutil.rmtree(gone)
                            else:
                                gone.unlink(missing_ok=True)
                            continue
                        tar.extract(member, root, filter="tar")
            root.chmod(0o755)  # it is "/" for the image's user
            _ROOTS[chain] = root
        return _ROOTS[chain]

    return unpack


def run_in(
    root: Path,
    argv: list[str],
    *,
    image: Archive,
    binds: dict[str, Path] | None = None,
    proc: bool = False,
    popen: bool = False,
    timeout: float = 120,
) -> Any:
    """argv inside the image as its runtime would start it: its user and Env, the root file system
    read-only, in a private mount namespace (so nothing is left mounted)."""
    cfg = image.config["config"]
    user = cfg.get("User")
    home = "/home/scriptrun" if user else "/root"
    env = [*cfg["Env"], f"HOME={home}"]
    script = ["set -e", 'r="$1"; shift', 'mount --bind "$r" "$r"', 'mount -o remount,bind,ro "$r"']
    if proc:
        script.append('mount -t proc proc "$r/proc"')
    for inside, outside in (binds or {}).items():
        script.append(f'mount --bind {shlex.quote(str(outside))} "$r{inside}"')
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    userspec = f"--userspec={user} " if user else ""
    script.append(f'exec env -i {" ".join(map(shlex.quote, env))} {chroot} {userspec}"$r" "$@"')
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script), "sh", str(root), *argv]
    if popen:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _no_compiling(stderr: str) -> list[str]:
    """From `python -v`: modules compiled from source now (stale or missing bytecode)."""
    return [
        line
        for line in stderr.splitlines()
        if "bytecode is stale" in line or re.search(r"code object from '.*\.py'$", line)
    ]


def test_runner_runs_as_its_user(archives: dict[str, Archive], rootfs: Callable[[str], Path]) -> None:
    image = archives["runner"]
    root = rootfs("runner")
    version = run_in(root, ["scriptrun", "--version"], image=image)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"scriptrun {VERSION}"
    crds = run_in(root, ["scriptrun", "crds"], image=image)
    assert crds.returncode == 0 and "kind: CustomResourceDefinition" in crds.stdout, crds.stderr
    whoami = run_in(root, ["python", "-c", "import os; print(os.getuid(), os.getgid())"], image=image)
    assert whoami.stdout.split() == ["10001", "10001"], whoami.stderr


def test_operator_runs_on_a_read_only_root(archives: dict[str, Archive], rootfs: Callable[[str], Path]) -> None:
    image = archives["operator"]
    root = rootfs("operator")
    helped = run_in(root, ["scriptrun", "operator", "--help"], image=image)
    assert helped.returncode == 0 and "--liveness" in helped.stdout, helped.stderr
    imports = run_in(root, ["python3", "-v", "-c", "import kopf, kubernetes_asyncio, scriptrun.handlers"], image=image)
    assert imports.returncode == 0, imports.stderr[-3000:]
    assert _no_compiling(imports.stderr) == []


def test_monitor_runs_without_the_heavy_dependencies(
    archives: dict[str, Archive], rootfs: Callable[[str], Path]
) -> None:
    image = archives["monitor"]
    root = rootfs("monitor")
    helped = run_in(root, ["scriptrun", "monitor", "--help"], image=image)
    assert helped.returncode == 0 and "--run-dir" in helped.stdout, helped.stderr
    assert run_in(root, ["scriptrun", "--version"], image=image).stdout.strip() == f"scriptrun {VERSION}"
    code = "import scriptrun.cli, scriptrun.monitor.sidecar, scriptrun.telemetry.usage_metrics; scriptrun.cli.parser()"
    imports = run_in(root, ["python3", "-v", "-c", code], image=image)
    assert imports.returncode == 0, imports.stderr[-3000:]
    assert _no_compiling(imports.stderr) == []
    absent = run_in(root, ["python3", "-c", "import pydantic"], image=image)
    assert "No module named 'pydantic'" in absent.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_monitor_measures_a_script_in_an_image_without_scriptrun(
    archives: dict[str, Archive], rootfs: Callable[[str], Path], tmp_path: Path
) -> None:
    """The pod's handshake with two images: the monitor (read-only root, user 10001, /proc) installs
    the launcher in the shared run directory and serves /metrics (the startup probe); the main
    container, the test image with no scriptrun in it, runs the script through the launcher; on
    SIGTERM (the kubelet stopping the native sidecar) the monitor has written its summary."""
    shared = tmp_path / "shared"  # the emptyDir (here mounted at /tmp in both)
    shared.mkdir()
    shared.chmod(0o1777)
    port = _free_port()
    monitor = run_in(
        rootfs("monitor"),
        [
            "scriptrun",
            "monitor",
            "--interval=0.2",
            f"--port={port}",
            "--run-dir=/tmp/run",
            "--termination-path=/tmp/log",
        ],
        image=archives["monitor"],
        binds={"/tmp": shared},
        proc=True,
        popen=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # the startup probe
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert monitor.poll() is None, monitor.communicate()
                assert time.monotonic() < deadline, "the monitor never served /metrics"
                time.sleep(0.1)
        assert (shared / "run" / "launch.py").exists()
        script = "import time\nblob = bytearray(32 << 20)\nend = time.time() + 1\nwhile time.time() < end: pass\n"
        main = run_in(
            rootfs("test-python3"),
            ["python3", "/tmp/run/launch.py", "/tmp/run", "--", "python3", "-c", script],
            image=archives["test-python3"],
            binds={"/tmp": shared},
        )
        assert main.returncode == 0, main.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        deadline = time.monotonic() + 30
        while not (shared / "log").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        monitor.send_signal(signal.SIGTERM)
        _, err = monitor.communicate(timeout=30)
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.communicate()
    assert monitor.returncode == 0, err
    summary = json.loads((shared / "log").read_text())
    assert summary["available"] is True and summary["success"] is True and summary["exitCode"] == 0, summary
    assert summary["executionTimeSeconds"] >= 0.9
    assert summary["memoryMaxMb"] >= 32
    assert "scriptrun_run_execution_seconds" in metrics


def test_test_image_runs_python_as_root(archives: dict[str, Archive], rootfs: Callable[[str], Path]) -> None:
    image = archives["test-python3"]
    root = rootfs("test-python3")
    ran = run_in(root, ["python3", "-c", "import os, sys; print(os.getuid(), sys.version_info[:2])"], image=image)
    assert ran.returncode == 0 and ran.stdout.split()[0] == "0", ran.stderr
    assert "No module named 'scriptrun'" in run_in(root, ["python3", "-c", "import scriptrun"], image=image).stderr


# -- without archives: the monitor's imports, the Dockerfiles ------------------------------------------
def test_monitor_imports_stay_within_its_requirements() -> None:
    """`scriptrun monitor` imports only the standard library, scriptrun, and what
    runner-image/monitor-requirements.txt installs in the monitor image."""
    code = (
        "import json, sys\n"
        "import scriptrun.cli, scriptrun.monitor.sidecar, scriptrun.telemetry.usage_metrics\n"
        "from prometheus_client import CollectorRegistry, start_http_server\n"
        "scriptrun.cli.parser()\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    third_party = {m for m in json.loads(ran.stdout) if m not in sys.stdlib_module_names and not m.startswith("_")}
    allowed = {"scriptrun"} | {
        re.split(r"[<>=!~ ;]", line, maxsplit=1)[0].replace("-", "_")
        for line in (ROOT / "runner-image" / "monitor-requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert third_party <= allowed, third_party - allowed


def test_the_package_defaults_name_the_built_images() -> None:
    """What the pod builder and the chart ask for is what `make image` tags."""
    assert EXPECTED["runner"]["ref"] == f"docker.io/{scriptrun.DEFAULT_IMAGE}"
    assert EXPECTED["monitor"]["ref"] == f"docker.io/{scriptrun.DEFAULT_MONITOR_IMAGE}"
    assert EXPECTED["operator"]["ref"] == f"docker.io/{scriptrun.OPERATOR_IMAGE}"


def dockerfile_config(name: str) -> tuple[dict[str, Any], str]:
    """The config a runner-image Dockerfile declares (USER, WORKDIR, ENV, ENTRYPOINT, CMD, LABEL with
    ARG defaults), inheriting from runner-image/Dockerfile when it builds FROM the runner image."""
    text = (ROOT / "runner-image" / name).read_text()
    args: dict[str, str] = {}
    cfg: dict[str, Any] = {}
    cmd_inherited = False

    def sub(value: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)

    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG":
            key, _, default = rest.partition("=")
            args[key] = sub(default)
        elif instruction == "FROM":
            base = sub(rest.split()[0])
            if base.startswith("scriptrun/runner:"):
                cfg, cmd_inherited = copy.deepcopy(dockerfile_config("Dockerfile")[0]), True
            else:
                cfg, cmd_inherited = {"Env": {}, "Labels": {}}, False
        elif instruction in ("LABEL", "ENV"):
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                cfg["Labels" if instruction == "LABEL" else "Env"][key] = sub(value)
        elif instruction == "USER":
            cfg["User"] = rest
        elif instruction == "WORKDIR":
            cfg["WorkingDir"] = rest
        elif instruction == "ENTRYPOINT":
            cfg["Entrypoint"] = json.loads(rest)
            if cmd_inherited:  # Docker: a new ENTRYPOINT drops the base image's CMD
                cfg.pop("Cmd", None)
        elif instruction == "CMD":
            cfg["Cmd"], cmd_inherited = json.loads(rest), False
    return cfg, text


@pytest.mark.parametrize(
    ("dockerfile", "image"),
    [("Dockerfile", "runner"), ("Dockerfile.operator", "operator"), ("Dockerfile.monitor", "monitor")],
)
def test_dockerfile_says_the_same(dockerfile: str, image: str) -> None:
    cfg, text = dockerfile_config(dockerfile)
    [spec] = [s for s in _oci_image().images(VERSION) if s.file == f"{image}.oci.tar"]
    assert cfg["Labels"] == spec.labels  # ARG VERSION defaults to scriptrun.__version__
    assert cfg["Env"] == dict(e.split("=", 1) for e in spec.config["Env"] if not e.startswith("PATH="))
    for key in ("User", "WorkingDir", "Entrypoint", "Cmd"):
        assert cfg.get(key) == spec.config.get(key), key
    assert spec.config == EXPECTED[image]["config"]
    if image == "monitor":
        assert "--no-deps" in text and "runner-image/monitor-requirements.txt" in text
    if image == "operator":
        assert re.search(r"^FROM \$\{RUNNER_IMAGE\}$", text, re.M)
    else:
        assert re.search(r"^ARG BASE_IMAGE=", text, re.M)

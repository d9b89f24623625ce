"""The runner image archive from `make image` (registry-free): its OCI config, its contents, that it
runs, and that runner-image/Dockerfile says the same."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

import scriptrun

ROOT = Path(__file__).resolve().parents[2]
ARCHIVE = os.environ.get("SCRIPTRUN_IMAGE_ARCHIVE", "")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not ARCHIVE or not Path(ARCHIVE).exists():
        if os.environ.get("SCRIPTRUN_REQUIRE_CONTROLPLANE"):
            pytest.fail(f"no image archive at {ARCHIVE!r}: make image (make test builds it)")
        pytest.skip("no image archive: run `make image`, or `make test`")
    with tarfile.open(ARCHIVE) as tar:

        def blob(digest: str) -> bytes:
            handle = tar.extractfile(f"blobs/sha256/{digest.split(':')[1]}")
            assert handle is not None
            return handle.read()

        layout = json.loads(tar.extractfile("oci-layout").read())  # type: ignore[union-attr]
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        rootfs = tmp_path_factory.mktemp("rootfs")
        rootfs.chmod(0o755)  # it is "/" for the image's user
        layer = rootfs.parent / "layer.tar.gz"
        layer.write_bytes(blob(manifest["layers"][0]["digest"]))
    with tarfile.open(layer) as tar:
        members = {m.name: m for m in tar.getmembers()}
        tar.extractall(rootfs, filter="tar")
    return {
        "layout": layout,
        "index": index,
        "manifest": manifest,
        "config": config,
        "members": members,
        "rootfs": rootfs,
    }


def test_oci_layout_and_config(image: dict[str, Any]) -> None:
    assert image["layout"] == {"imageLayoutVersion": "1.0.0"}
    ann = image["index"]["manifests"][0]["annotations"]
    assert ann["io.containerd.image.name"] == f"docker.io/scriptrun/runner:{scriptrun.__version__}"
    cfg = image["config"]["config"]
    assert cfg["User"] == "10001:10001"
    assert cfg["Entrypoint"] == ["scriptrun"]
    assert cfg["Labels"]["org.opencontainers.image.title"] == "scriptrun-runner"
    assert cfg["Labels"]["org.opencontainers.image.version"] == scriptrun.__version__
    assert "PYTHONDONTWRITEBYTECODE=1" in cfg["Env"]
    assert image["config"]["rootfs"]["diff_ids"][0].startswith("sha256:")


def test_contents(image: dict[str, Any]) -> None:
    members = image["members"]
    assert members["usr/local/bin/scriptrun"].mode & 0o111
    assert members["home/scriptrun"].uid == 10001
    assert "usr/bin/python" in members  # `python` as the pods call it
    assert any(n.endswith("dist-packages/scriptrun/monitor/launch.py") for n in members)
    assert any(n.endswith("dist-packages/psutil/__init__.py") for n in members)
    assert not [n for n in members if n.startswith("var/lib/apt/lists/") and members[n].isfile()]
    assert "scriptrun:x:10001:10001" in (image["rootfs"] / "etc" / "passwd").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_the_image_runs_as_its_user(image: dict[str, Any]) -> None:
    rootfs = str(image["rootfs"])
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    version = subprocess.run(
        [chroot, "--userspec=10001:10001", rootfs, "/usr/local/bin/scriptrun", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"scriptrun {scriptrun.__version__}"
    crds = subprocess.run(
        [chroot, "--userspec=10001:10001", rootfs, "/usr/local/bin/scriptrun", "crds"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crds.returncode == 0 and "kind: CustomResourceDefinition" in crds.stdout, crds.stderr
    imports = subprocess.run(
        [
            chroot,
            "--userspec=10001:10001",
            rootfs,
            "python",
            "-c",
            "import kopf, kubernetes_asyncio, psutil, prometheus_client, scriptrun.handlers",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imports.returncode == 0, imports.stderr


def test_dockerfile_says_the_same() -> None:
    text = (ROOT / "runner-image" / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=", text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["scriptrun"\]$', text, re.M)
    for key in ("org.opencontainers.image.title", "org.opencontainers.image.version"):
        assert key in text
    assert "PYTHONDONTWRITEBYTECODE=1" in text

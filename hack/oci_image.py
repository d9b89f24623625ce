"""Assemble a directory tree into a single-layer OCI image archive (oci-layout, index.json, blobs).

Deterministic: entries sorted, times fixed, owners root unless --owned says otherwise. The config
(user, entrypoint, env, labels) is the runner image's, kept in step with runner-image/Dockerfile by
tests/unit/test_image.py.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

USER = "10001:10001"
ENTRYPOINT = ["scriptrun"]
CMD = ["--help"]
WORKDIR = "/home/scriptrun"
ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONDONTWRITEBYTECODE=1",
    "PYTHONUNBUFFERED=1",
]
EPOCH = 0


def labels(version: str) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": "scriptrun-runner",
        "org.opencontainers.image.description": "scriptrun operator, monitor sidecar and script runner",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }


def _layer(rootfs: Path, owned: dict[str, tuple[int, int]], path: Path) -> tuple[str, str, int]:
    """Write the gzipped layer; returns (digest of gzip, diff_id of tar, size)."""
    sha_tar = hashlib.sha256()

    class Hashing(io.RawIOBase):
        def __init__(self, sink: gzip.GzipFile) -> None:
            self.sink = sink

        def writable(self) -> bool:
            return True

        def write(self, data: bytes) -> int:  # type: ignore[override]
            sha_tar.update(data)
            self.sink.write(data)
            return len(data)

    with (
        path.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=EPOCH, compresslevel=6) as gz,
        tarfile.open(fileobj=Hashing(gz), mode="w|", format=tarfile.PAX_FORMAT) as tar,  # type: ignore[arg-type]
    ):
        entries = []
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                entries.append(Path(dirpath) / name)
        for full in entries:
            rel = full.relative_to(rootfs).as_posix()
            info = tar.gettarinfo(str(full), arcname=rel)
            info.mtime = EPOCH
            info.uid, info.gid = next(
                ((u, g) for p, (u, g) in owned.items() if rel == p or rel.startswith(p + "/")), (0, 0)
            )
            info.uname = info.gname = ""
            if info.isreg():
                with full.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    data = path.read_bytes()
    return "sha256:" + hashlib.sha256(data).hexdigest(), "sha256:" + sha_tar.hexdigest(), len(data)


def _blob(blobs: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return "sha256:" + digest, len(data)


def build(rootfs: Path, output: Path, version: str, owned: dict[str, tuple[int, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        layout = Path(tmp)
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        layer_tmp = layout / "layer.tar.gz"
        layer_digest, diff_id, layer_size = _layer(rootfs, owned, layer_tmp)
        layer_tmp.rename(blobs / layer_digest.split(":")[1])
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "User": USER,
                "Entrypoint": ENTRYPOINT,
                "Cmd": CMD,
                "Env": ENV,
                "WorkingDir": WORKDIR,
                "Labels": labels(version),
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "hack/build-image.sh: debootstrap bookworm + scriptrun wheels"}],
        }
        config_digest, config_size = _blob(blobs, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}
            ],
            "annotations": labels(version),
        }
        manifest_digest, manifest_size = _blob(blobs, json.dumps(manifest, sort_keys=True).encode())
        ref = f"scriptrun/runner:{version}"
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": manifest_size,
                    "annotations": {
                        "org.opencontainers.image.ref.name": version,
                        "io.containerd.image.name": f"docker.io/{ref}",
                    },
                }
            ],
        }
        (layout / "index.json").write_text(json.dumps(index, sort_keys=True))
        (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        output.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(output, "w") as tar:
            for name in ("oci-layout", "index.json", "blobs"):
                tar.add(layout / name, arcname=name)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rootfs", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--owned", action="append", default=[], help="PATH=UID:GID inside the rootfs")
    args = parser.parse_args()
    owned = {}
    for item in args.owned:
        path, ids = item.split("=", 1)
        uid, gid = ids.split(":")
        owned[path.strip("/")] = (int(uid), int(gid))
    build(args.rootfs, args.output, args.version, owned)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Registry-free image tooling: directory trees in, OCI image archives (oci-layout, index.json, blobs) out.

Three ways in:
    oci_image.py images --tree base=DIR --tree deps=DIR ... --out-dir DIR --version V
        `make image` (hack/build-image.sh): every image of images(), one archive each, in
        --out-dir. Layers are shared: runner and operator are the same three layers (base, deps, app)
        under two configs, the test image is the base layer alone, the monitor has its own two.
    oci_image.py slim ROOTFS --remove-package PKG ...
        The monitor's rootfs: drop whole Debian packages, then every shared library that nothing left
        needs (the DT_NEEDED closure), then check that every ELF file left still finds its libraries.
    oci_image.py --rootfs DIR --output FILE --ref REF [--entrypoint X ...] [--user U] ...
        One single-layer image from one tree (the test harness's pause image).

Deterministic: entries sorted, owners as in the tree (the tree is built as root), no user/group
names, mtimes clamped to --clamp-mtime (SOURCE_DATE_EPOCH style: the base's own times are kept, so
Debian's timestamp-checked .pyc files stay valid; everything newer gets the clamp time, and the
build compiles those files to unchecked-hash .pyc, which no mtime can invalidate). Device nodes in
/dev are left out (the runtime mounts /dev). Each index entry carries the image's full reference in
both `org.opencontainers.image.ref.name` and `io.containerd.image.name`: `ctr images import` tags
it with the latter (containerd 1.6+), other tools read the former.
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import struct
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PRODUCT_ENV = [PATH_ENV, "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"]
USER = "10001:10001"
HOME = "/home/scriptrun"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CACHE_FORMAT = "scriptrun-layer-v1"


# -- what `make image` builds -------------------------------------------------------------------
@dataclass(frozen=True)
class LayerSpec:
    tree: str  # a --tree name
    lower: str | None  # the tree it is a diff over (None: the whole tree)
    created_by: str


@dataclass(frozen=True)
class ImageSpec:
    file: str  # archive name in --out-dir
    ref: str
    layers: tuple[str, ...]
    config: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)


LAYERS = {
    "base": LayerSpec("base", None, "debootstrap --variant=minbase bookworm + python3 (hack/build-image.sh)"),
    "deps": LayerSpec("deps", "base", "user 10001 + scriptrun's locked dependencies (manylinux wheels, bytecode)"),
    "app": LayerSpec("runner", "deps", "scriptrun wheel + /usr/local/bin/scriptrun (bytecode)"),
    "monitor-base": LayerSpec(
        "monitor-deps", None, "slimmed base (no package manager, perl, docs) + user 10001 + psutil, prometheus-client"
    ),
    "monitor-app": LayerSpec(
        "monitor", "monitor-deps", "scriptrun wheel without dependencies + /usr/local/bin/scriptrun"
    ),
}


def _labels(title: str, description: str, version: str) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": title,
        "org.opencontainers.image.description": description,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }


def images(version: str) -> list[ImageSpec]:
    """runner-image/Dockerfile* say the same (tests/unit/test_image.py checks both)."""
    product = {"User": USER, "Env": PRODUCT_ENV, "WorkingDir": HOME}
    return [
        ImageSpec(
            "runner.oci.tar",
            f"docker.io/scriptrun/runner:{version}",
            ("base", "deps", "app"),
            {**product, "Entrypoint": ["scriptrun"], "Cmd": ["--help"]},
            _labels("scriptrun-runner", "the default image for scripts: python3 + scriptrun", version),
        ),
        ImageSpec(
            "operator.oci.tar",
            f"docker.io/scriptrun/operator:{version}",
            ("base", "deps", "app"),
            {**product, "Entrypoint": ["scriptrun", "operator"]},
            _labels("scriptrun-operator", "the scriptrun operator (Kopf)", version),
        ),
        ImageSpec(
            "monitor.oci.tar",
            f"docker.io/scriptrun/monitor:{version}",
            ("monitor-base", "monitor-app"),
            {**product, "Entrypoint": ["scriptrun", "monitor"]},
            _labels(
                "scriptrun-monitor",
                "the usage monitor sidecar: python3 + scriptrun, psutil, prometheus-client",
                version,
            ),
        ),
        ImageSpec(
            "test-python3.oci.tar",
            "docker.io/library/scriptrun-test-python3:bookworm",
            ("base",),
            {"Env": [PATH_ENV], "Cmd": ["python3"]},
            {
                "org.opencontainers.image.title": "scriptrun-test-python3",
                "org.opencontainers.image.description": "TEST ONLY: Debian minbase + python3, no scriptrun",
            },
        ),
    ]


# -- layers -------------------------------------------------------------------------------------
def _same(new: os.stat_result, old: os.stat_result, new_path: Path, old_path: Path) -> bool:
    """rsync's rule: same type, mode, owner, and for files size and mtime (the trees are copies)."""
    if (new.st_mode, new.st_uid, new.st_gid) != (old.st_mode, old.st_uid, old.st_gid):
        return False
    if stat.S_ISDIR(new.st_mode):
        return True
    if stat.S_ISLNK(new.st_mode):
        return os.readlink(new_path) == os.readlink(old_path)
    if stat.S_ISREG(new.st_mode):
        if (new.st_dev, new.st_ino) == (old.st_dev, old.st_ino):
            return True
        return (new.st_size, new.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    return new.st_rdev == old.st_rdev


def changes(tree: Path, lower: Path | None, exclude: frozenset[str] = frozenset()) -> list[tuple[str, Path | None]]:
    """The layer's entries in tar order: (path, source), source None for a whiteout. With a lower
    tree: what is new or changed (with the directories leading to it) and whiteouts for what is gone."""
    out: list[tuple[str, Path | None]] = []

    def visit(rel: str, lower_dir: Path | None) -> None:
        here = tree / rel if rel else tree
        names = sorted(n for n in os.listdir(here) if _join(rel, n) not in exclude)
        old_names: set[str] = set()
        if lower_dir is not None:
            old_names = {n for n in os.listdir(lower_dir) if _join(rel, n) not in exclude}
        if rel == "dev":  # device nodes: the runtime mounts /dev
            names, old_names = [], set()
        for name in sorted(old_names - set(names)):
            out.append((_join(rel, f".wh.{name}"), None))
        for name in names:
            path = _join(rel, name)
            src = tree / path
            st = os.lstat(src)
            old_st = None
            if name in old_names:
                assert lower_dir is not None
                old_st = os.lstat(lower_dir / name)
            changed = old_st is None or not _same(st, old_st, src, lower_dir / name if lower_dir else src)
            if stat.S_ISDIR(st.st_mode):
                mark = len(out)
                out.append((path, src))
                old_dir = (
                    lower_dir / name if old_st is not None and stat.S_ISDIR(old_st.st_mode) and lower_dir else None
                )
                visit(path, old_dir)
                if not changed and len(out) == mark + 1:
                    out.pop()  # unchanged and nothing changed below it
            elif changed:
                out.append((path, src))

    visit("", lower)
    return out


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _tarinfo(tar: tarfile.TarFile, rel: str, src: Path | None, clamp: int) -> tarfile.TarInfo | None:
    if src is None:
        info = tarfile.TarInfo(rel)
        info.mode, info.mtime = 0o644, clamp
        return info
    info = tar.gettarinfo(str(src), arcname=rel)
    if info is None:  # a socket
        return None
    info.mtime = min(int(info.mtime), clamp)
    info.uname = info.gname = ""
    return info


def _layer_key(entries: list[tuple[str, Path | None]], clamp: int) -> str:
    """Cache key: every entry's tar metadata and, for files, content (the wheels' fixed mtimes
    make metadata alone unsafe)."""
    key = hashlib.sha256(f"{CACHE_FORMAT}\0{clamp}\0".encode())
    for rel, src in entries:
        if src is None:
            key.update(f"{rel}\0wh\n".encode())
            continue
        st = os.lstat(src)
        link = os.readlink(src) if stat.S_ISLNK(st.st_mode) else ""
        mtime = min(int(st.st_mtime), clamp)
        key.update(
            f"{rel}\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0{st.st_size}\0{mtime}\0{link}\0{st.st_rdev}\n".encode()
        )
        if stat.S_ISREG(st.st_mode):
            with src.open("rb") as handle:
                key.update(hashlib.file_digest(handle, "sha256").digest())
    return key.hexdigest()


@dataclass
class Layer:
    digest: str  # of the gzip blob
    diff_id: str  # of the tar
    size: int
    path: Path
    created_by: str = ""


class _Hashing(io.RawIOBase):
    """The uncompressed tar stream: hashed (diff_id) on its way into gzip."""

    def __init__(self, sink: gzip.GzipFile) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.sink.write(view)
        return len(view)


def write_layer(entries: list[tuple[str, Path | None]], path: Path, clamp: int) -> Layer:
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz:
        hashing = _Hashing(gz)
        with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for rel, src in entries:
                info = _tarinfo(tar, rel, src, clamp)
                if info is None:
                    continue
                if info.isreg() and src is not None:
                    with src.open("rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256")
    return Layer("sha256:" + digest.hexdigest(), "sha256:" + hashing.sha.hexdigest(), path.stat().st_size, path)


def cached_layer(entries: list[tuple[str, Path | None]], clamp: int, cache: Path, used: set[str]) -> Layer:
    key = _layer_key(entries, clamp)
    used.update({f"{key}.tar.gz", f"{key}.json"})
    blob, meta = cache / f"{key}.tar.gz", cache / f"{key}.json"
    if blob.exists() and meta.exists():
        data = json.loads(meta.read_text())
        return Layer(data["digest"], data["diff_id"], data["size"], blob)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{key}.tmp"
    layer = write_layer(entries, tmp, clamp)
    tmp.rename(blob)
    meta.write_text(json.dumps({"digest": layer.digest, "diff_id": layer.diff_id, "size": layer.size}))
    layer.path = blob
    return layer


# -- archives -----------------------------------------------------------------------------------
def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write_archive(output: Path, ref: str, layers: list[Layer], config: dict[str, Any], labels: dict[str, str]) -> bool:
    """Write the archive unless an identical one is there; True if written."""
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {**config, "Labels": labels} if labels else config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": layer.created_by} for layer in layers],
    }
    config_bytes = _json(image_config)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
            "size": len(config_bytes),
        },
        "layers": [{"mediaType": LAYER_GZIP, "digest": layer.digest, "size": layer.size} for layer in layers],
    }
    if labels:
        manifest["annotations"] = labels
    manifest_bytes = _json(manifest)
    manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "annotations": {REF_NAME: ref, CONTAINERD_NAME: ref},
            }
        ],
    }
    index_bytes = _json(index)
    if output.exists():
        try:
            with tarfile.open(output) as old:
                handle = old.extractfile("index.json")
                if handle is not None and handle.read() == index_bytes:
                    return False
        except (tarfile.TarError, KeyError):
            pass
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        _add_bytes(tar, "index.json", index_bytes)
        blobs = tarfile.TarInfo("blobs/sha256")
        blobs.type, blobs.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(blobs)
        _add_bytes(tar, f"blobs/sha256/{manifest['config']['digest'][7:]}", config_bytes)
        _add_bytes(tar, f"blobs/sha256/{manifest_digest[7:]}", manifest_bytes)
        for layer in {layer.digest: layer for layer in layers}.values():
            info = tarfile.TarInfo(f"blobs/sha256/{layer.digest[7:]}")
            info.size, info.mode = layer.size, 0o644
            with layer.path.open("rb") as handle:
                tar.addfile(info, handle)
    tmp.rename(output)
    return True


def build_images(trees: dict[str, Path], out_dir: Path, version: str, clamp: int, cache: Path | None) -> list[Path]:
    wanted = {name for image in images(version) for name in image.layers}
    used: set[str] = set()
    built: dict[str, Layer] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(wanted):
            spec = LAYERS[name]
            lower = trees[spec.lower] if spec.lower else None
            entries = changes(trees[spec.tree], lower, frozenset({".complete"}))
            if cache is not None:
                layer = cached_layer(entries, clamp, cache, used)
            else:
                layer = write_layer(entries, Path(tmp) / f"{name}.tar.gz", clamp)
            layer.created_by = spec.created_by
            built[name] = layer
            print(f"layer {name}: {len(entries)} entries, {layer.size / 1e6:.1f} MB", file=sys.stderr)
        outputs = []
        for image in images(version):
            path = out_dir / image.file
            wrote = write_archive(path, image.ref, [built[n] for n in image.layers], image.config, image.labels)
            print(f"{path} {image.ref} {path.stat().st_size / 1e6:.1f} MB{'' if wrote else ' (unchanged)'}")
            outputs.append(path)
    if cache is not None:  # keep this build's layers only
        for stale in cache.iterdir():
            if stale.name not in used:
                stale.unlink()
    return outputs


# -- slimming -----------------------------------------------------------------------------------
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib", "/lib")


def in_tree(tree: Path, path: str, *, follow_last: bool = True) -> str | None:
    """`path` as the tree's own root sees it, symlinks resolved inside the tree (never the host's):
    the absolute path inside the tree, or None if it does not exist."""
    parts = [p for p in path.split("/") if p]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        here = tree.joinpath(*done, part)
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode) and (parts or follow_last):
            hops += 1
            if hops > 40:
                return None
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p] + parts
        else:
            done.append(part)
    return "/" + "/".join(done)


def elf_dynamic(data: bytes) -> tuple[list[str], list[str]] | None:
    """(DT_NEEDED, RPATH + RUNPATH entries) of a 64-bit little-endian ELF file; None if it is not one."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads: list[tuple[int, int, int]] = []
    dynamic = None
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 1:
            loads.append((p_vaddr, p_filesz, p_offset))
        elif p_type == 2:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return [], []
    tags: list[tuple[int, int]] = []
    for off in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, val = struct.unpack_from("<qQ", data, off)
        if tag == 0:
            break
        tags.append((tag, val))
    strtab = next((val for tag, val in tags if tag == 5), None)
    if strtab is None:
        return [], []
    base = next((strtab - vaddr + offset for vaddr, size, offset in loads if vaddr <= strtab < vaddr + size), None)
    if base is None:
        return [], []

    def string(at: int) -> str:
        end = data.index(b"\0", base + at)
        return data[base + at : end].decode()

    needed = [string(val) for tag, val in tags if tag == 1]
    paths = [p for tag, val in tags if tag in (15, 29) for p in string(val).split(":") if p]
    return needed, paths


def _walk_files(tree: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(tree):
        rel = "/" + os.path.relpath(dirpath, tree).removeprefix(".").lstrip("/")
        if rel in ("/proc", "/sys", "/dev"):
            dirnames[:] = []
            continue
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                yield os.path.join(rel, name)


def elf_files(tree: Path) -> dict[str, tuple[list[str], list[str]]]:
    out = {}
    for rel in _walk_files(tree):
        full = tree / rel.lstrip("/")
        with full.open("rb") as handle:
            if handle.read(4) != b"\x7fELF":
                continue
        parsed = elf_dynamic(full.read_bytes())
        if parsed is not None:
            out[rel] = parsed
    return out


def _ld_dirs(tree: Path) -> list[str]:
    dirs: list[str] = []
    conf = tree / "etc/ld.so.conf.d"
    if conf.is_dir():
        for item in sorted(conf.iterdir()):
            for line in item.read_text().splitlines():
                line = line.strip()
                if line.startswith("/"):
                    dirs.append(line)
    return dirs + list(LIB_DIRS)


def resolve_needed(tree: Path, elf: str, name: str, paths: list[str], dirs: list[str]) -> str | None:
    if "/" in name:
        return in_tree(tree, name)
    origin = os.path.dirname(elf)
    for d in [p.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for p in paths] + dirs:
        found = in_tree(tree, f"{d}/{name}")
        if found is not None:
            return found
    return None


def check_libraries(tree: Path) -> list[str]:
    """Every ELF file's DT_NEEDED, resolved the way ld.so does (RPATH/RUNPATH, ld.so.conf, defaults)."""
    dirs = _ld_dirs(tree)
    missing = []
    for elf, (needed, paths) in elf_files(tree).items():
        for name in needed:
            if resolve_needed(tree, elf, name, paths, dirs) is None:
                missing.append(f"{elf}: {name}")
    return missing


def _package_list(tree: Path, package: str) -> list[str]:
    info = tree / "var/lib/dpkg/info"
    for candidate in (f"{package}.list", f"{package}:amd64.list"):
        if (info / candidate).exists():
            return [line for line in (info / candidate).read_text().splitlines() if line.strip()]
    raise SystemExit(f"slim: package {package!r} is not installed in {tree}")


def remove_packages(tree: Path, packages: Iterable[str]) -> int:
    """Delete the files (not the directories) of whole packages, then their directories left empty.
    A link listed by a package that stays is kept: /bin -> usr/bin is every package's /bin."""
    packages = list(packages)
    removed = 0
    dirs = set()
    gone = {name for package in packages for name in (f"{package}.list", f"{package}:amd64.list")}
    kept = {
        line
        for listed in (tree / "var/lib/dpkg/info").glob("*.list")
        if listed.name not in gone
        for line in listed.read_text().splitlines()
    }
    for package in packages:
        for path in _package_list(tree, package):
            parent = in_tree(tree, os.path.dirname(path))
            if parent is None:
                continue
            full = tree / parent.lstrip("/") / os.path.basename(path)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                dirs.add(full)
            elif path not in kept:
                full.unlink()
                removed += 1
    for full in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        if full.is_dir() and not any(full.iterdir()):
            full.rmdir()
    return removed


def package_files(tree: Path, packages: Iterable[str]) -> set[str]:
    """The files of these packages, as paths inside the tree with symlinks resolved."""
    out = set()
    for package in packages:
        for path in _package_list(tree, package):
            real = in_tree(tree, path)
            if real is not None:
                out.add(real)
    return out


def prune_libraries(tree: Path, keep: set[str]) -> list[str]:
    """Remove the shared libraries in the multiarch directory that no remaining ELF file needs."""
    removed: list[str] = []
    while True:
        elves = elf_files(tree)
        dirs = _ld_dirs(tree)
        libdir = in_tree(tree, "/usr/lib/x86_64-linux-gnu")
        assert libdir is not None
        candidates = {
            rel
            for rel in elves
            if os.path.dirname(rel) == libdir
            and ".so" in os.path.basename(rel)
            and rel not in keep
            # dlopen()ed by name, never in DT_NEEDED
            and not os.path.basename(rel).startswith(("libnss_", "libresolv"))
        }
        needed = set()
        for elf, (names, paths) in elves.items():
            if elf in candidates:
                continue
            for name in names:
                found = resolve_needed(tree, elf, name, paths, dirs)
                if found:
                    needed.add(found)
        # libraries needed only by other candidates: iterate to the fixed point
        frontier = list(needed & candidates)
        while frontier:
            lib = frontier.pop()
            names, paths = elves[lib]
            for name in names:
                found = resolve_needed(tree, lib, name, paths, dirs)
                if found and found not in needed:
                    needed.add(found)
                    if found in candidates:
                        frontier.append(found)
        unused = sorted(candidates - needed)
        if not unused:
            break
        for rel in unused:
            (tree / rel.lstrip("/")).unlink()
            removed.append(rel)
    return removed


def remove_dangling_links(tree: Path) -> int:
    """Symlinks whose target is gone (of removed packages); /proc and /dev targets exist at run time."""
    count = 0
    while True:
        gone = []
        for dirpath, dirnames, filenames in os.walk(tree):
            rel_dir = "/" + os.path.relpath(dirpath, tree).removeprefix(".").lstrip("/")
            if rel_dir in ("/proc", "/sys", "/dev"):
                dirnames[:] = []
                continue
            for name in filenames + dirnames:
                full = os.path.join(dirpath, name)
                if not os.path.islink(full):
                    continue
                target = os.readlink(full)
                if target.startswith(("/proc/", "/dev/", "/run/", "/sys/")):
                    continue
                if in_tree(tree, os.path.join(rel_dir, name)) is None:
                    gone.append(full)
        if not gone:
            return count
        for full in gone:
            os.unlink(full)
        count += len(gone)


def slim(tree: Path, packages: list[str], keep_packages: list[str], paths: list[str]) -> None:
    before = _tree_size(tree)
    keep = package_files(tree, keep_packages)  # before the package database goes
    files = remove_packages(tree, packages)
    for pattern in paths:  # a glob in the last component only: the parent is resolved inside the tree
        parent = in_tree(tree, os.path.dirname(pattern))
        if parent is None:
            continue
        for name in sorted(os.listdir(tree / parent.lstrip("/"))):
            if not fnmatch.fnmatchcase(name, os.path.basename(pattern)):
                continue
            full = tree / parent.lstrip("/") / name
            if full.is_dir() and not full.is_symlink():
                shutil.rmtree(full)
            else:
                full.unlink()
    libs = prune_libraries(tree, keep)
    links = remove_dangling_links(tree)
    missing = check_libraries(tree)
    if missing:
        raise SystemExit("slim: libraries missing after slimming:\n  " + "\n  ".join(missing))
    print(
        f"slim: {len(packages)} packages ({files} files), {len(libs)} unused libraries, {links} dangling links; "
        f"{before / 1e6:.1f} -> {_tree_size(tree) / 1e6:.1f} MB; every ELF file's libraries resolve",
        file=sys.stderr,
    )


def _tree_size(tree: Path) -> int:
    return sum(os.lstat(tree / rel.lstrip("/")).st_size for rel in _walk_files(tree))


# -- command line -------------------------------------------------------------------------------
def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"{what} expects NAME=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["images"]:
        p = argparse.ArgumentParser(prog="oci_image.py images", description="make image: every image, one archive each")
        p.add_argument("--tree", action="append", default=[], required=True, help="NAME=DIR (base, deps, runner, ...)")
        p.add_argument("--out-dir", type=Path, required=True)
        p.add_argument("--version", required=True)
        p.add_argument("--clamp-mtime", type=int, required=True, help="no entry is newer (unix time)")
        p.add_argument("--layer-cache", type=Path, default=None, help="keep compressed layers here, by content")
        args = p.parse_args(argv[1:])
        trees = {k: Path(v) for k, v in _pairs(args.tree, "--tree").items()}
        build_images(trees, args.out_dir, args.version, args.clamp_mtime, args.layer_cache)
        return 0
    if argv[:1] == ["slim"]:
        p = argparse.ArgumentParser(prog="oci_image.py slim", description="slim a Debian rootfs in place")
        p.add_argument("rootfs", type=Path)
        p.add_argument("--remove-package", action="append", default=[], help="drop this package's files")
        p.add_argument("--keep-package", action="append", default=[], help="never prune this package's libraries")
        p.add_argument(
            "--remove-path", action="append", default=[], help="drop this path; a glob in its last component"
        )
        args = p.parse_args(argv[1:])
        slim(args.rootfs, args.remove_package, args.keep_package, args.remove_path)
        return 0
    p = argparse.ArgumentParser(description="one single-layer image archive from one directory tree")
    p.add_argument("--rootfs", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--ref", required=True, help="full reference, e.g. docker.io/library/name:tag")
    p.add_argument("--entrypoint", action="append", default=None)
    p.add_argument("--cmd", action="append", default=None)
    p.add_argument("--user", default=None)
    p.add_argument("--workdir", default=None)
    p.add_argument("--env", action="append", default=None, help="NAME=VALUE (default: PATH only)")
    p.add_argument("--label", action="append", default=[], help="NAME=VALUE")
    p.add_argument("--clamp-mtime", type=int, default=0)
    args = p.parse_args(argv)
    config: dict[str, Any] = {"Env": args.env or [PATH_ENV]}
    for key, value in (("Entrypoint", args.entrypoint), ("Cmd", args.cmd), ("User", args.user)):
        if value:
            config[key] = value
    if args.workdir:
        config["WorkingDir"] = args.workdir
    with tempfile.TemporaryDirectory() as tmp:
        layer = write_layer(changes(args.rootfs, None), Path(tmp) / "layer.tar.gz", args.clamp_mtime)
        layer.created_by = "hack/oci_image.py"
        write_archive(args.output, args.ref, [layer], config, _pairs(args.label, "--label"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env bash
# Registry-free build of the runner image (`make image`): a Debian bookworm rootfs from debootstrap
# (the base), scriptrun and its dependencies installed from wheels, a non-root user, assembled into
# an OCI image archive by hack/oci_image.py. Same user, entrypoint, env and labels as
# runner-image/Dockerfile (a test checks both). Cached: the rootfs is built once per suite.
# Usage: hack/build-image.sh OUTPUT.tar   (needs root for debootstrap/chroot; apt installs debootstrap)
set -euo pipefail
OUT="${1:?usage: build-image.sh OUTPUT.tar}"
ROOT_DIR="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SCRIPTRUN_CACHE:-$HOME/.cache/scriptrun}"
VENV="${UV_PROJECT_ENVIRONMENT:-$CACHE/venv}"
UV="${UV:-$CACHE/tools/bin/uv}"
SUITE=bookworm
BASE="$CACHE/image/base-$SUITE"
log() { echo "[image] $*" >&2; }

if [[ $(id -u) != 0 ]]; then log "needs root (debootstrap, chroot)"; exit 1; fi
if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror="${mirror:-http://deb.debian.org/debian}"

if [[ ! -f "$BASE/.complete" ]]; then
  log "debootstrap $SUITE (minbase + python3) from $mirror"
  rm -rf "$BASE"; mkdir -p "$BASE"
  debootstrap --variant=minbase --include=python3,python-is-python3,ca-certificates "$SUITE" "$BASE" "$mirror" >/dev/null
  # slim it: no apt lists, caches, docs, man pages or locales in the image
  rm -rf "$BASE"/var/lib/apt/lists/* "$BASE"/var/cache/apt/* "$BASE"/usr/share/doc/* "$BASE"/usr/share/man/* \
         "$BASE"/usr/share/locale/* "$BASE"/usr/share/info/* "$BASE"/var/log/*
  touch "$BASE/.complete"
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
log "building the scriptrun wheel"
"$UV" build --wheel -q -o "$WORK/dist" "$ROOT_DIR"
ROOTFS="$WORK/rootfs"
cp -a "$BASE" "$ROOTFS"
rm -f "$ROOTFS/.complete"
PYVER=$(chroot "$ROOTFS" python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
SITE="$ROOTFS/usr/local/lib/python$PYVER/dist-packages"
log "installing scriptrun and its dependencies for Python $PYVER (manylinux wheels)"
"$UV" pip install -q --target "$SITE" --python-version "$PYVER" --python-platform x86_64-manylinux_2_28 \
  --only-binary :all: "$WORK"/dist/scriptrun-*.whl
rm -rf "$SITE/bin"
cat > "$ROOTFS/usr/local/bin/scriptrun" <<'PY'
#!/usr/bin/python3
import sys

from scriptrun.cli import main

sys.exit(main())
PY
chmod 0755 "$ROOTFS/usr/local/bin/scriptrun"
# bytecode now, so a read-only root filesystem costs nothing at start-up
chroot "$ROOTFS" python3 -m compileall -q -j 0 "/usr/local/lib/python$PYVER/dist-packages" >/dev/null || true
echo "scriptrun:x:10001:10001:scriptrun:/home/scriptrun:/usr/sbin/nologin" >> "$ROOTFS/etc/passwd"
echo "scriptrun:x:10001:" >> "$ROOTFS/etc/group"
mkdir -p "$ROOTFS/home/scriptrun"
VERSION=$("$VENV/bin/python" -c 'import scriptrun; print(scriptrun.__version__)')
log "assembling the OCI archive"
"$VENV/bin/python" "$ROOT_DIR/hack/oci_image.py" --rootfs "$ROOTFS" --output "$OUT" --version "$VERSION" \
  --owned "home/scriptrun=10001:10001"
log "wrote $OUT ($(du -h "$OUT" | cut -f1))"

#!/usr/bin/env bash
# Registry-free build of scriptrun's images (`make image`): one OCI archive each in OUTPUT_DIR,
#   runner.oci.tar        docker.io/scriptrun/runner:VERSION     default image for scripts: python3 + scriptrun
#   operator.oci.tar      docker.io/scriptrun/operator:VERSION   `scriptrun operator`; the runner's layers
#   monitor.oci.tar       docker.io/scriptrun/monitor:VERSION    the sidecar: slimmed base, scriptrun without
#                                                                 its heavy dependencies (psutil, prometheus-client)
#   test-python3.oci.tar  docker.io/library/scriptrun-test-python3:bookworm   TEST ONLY: the plain base, no scriptrun
# and beside each product archive its SBOM, NAME.cdx.json (CycloneDX: Debian packages, Python distributions),
# written by hack/sbom.py from the tree the image was packed from.
# all from one debootstrap base (Debian bookworm minbase + python3, cached in $CACHE/image/base-bookworm).
# Cached by their inputs: stage-deps (base + user 10001 + the dependencies locked in uv.lock) and
# stage-monitor (slimmed base + user + the monitor's two); per build only scriptrun's wheel goes on
# hard-linked copies of them. Layers are cached by content (layers/), archives rewritten only on change.
# Configs (user, entrypoint, env, labels): hack/oci_image.py images(); runner-image/Dockerfile* agree.
# Usage: hack/build-image.sh OUTPUT_DIR     (needs root: debootstrap, chroot; apt installs debootstrap)
set -euo pipefail
OUT_DIR="${1:?usage: build-image.sh OUTPUT_DIR}"
ROOT_DIR="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SCRIPTRUN_CACHE:-$HOME/.cache/scriptrun}"
VENV="${UV_PROJECT_ENVIRONMENT:-$CACHE/venv}"
UV="${UV:-$CACHE/tools/bin/uv}"
PY="$VENV/bin/python"
OCI="$ROOT_DIR/hack/oci_image.py"
SUITE=bookworm
IMG="$CACHE/image"
BASE="$IMG/base-$SUITE"
log() { echo "[image] $*" >&2; }
started=$SECONDS

if [[ $(id -u) != 0 ]]; then
  log "make image needs root (debootstrap, chroot); run it as root (make test skips it for other users)"
  exit 1
fi
mkdir -p "$IMG" "$OUT_DIR"
exec 9>"$IMG/.lock"
flock 9  # one build at a time per cache (make test and make e2e may both ask)
rm -rf "$IMG"/work.*  # left by a build that was killed

# -- the base: debootstrap once --------------------------------------------------------------------
if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror="${mirror:-http://deb.debian.org/debian}"
if [[ ! -f "$BASE/.complete" ]]; then
  log "debootstrap $SUITE (minbase + python3) from $mirror"
  rm -rf "$BASE"; mkdir -p "$BASE"
  debootstrap --variant=minbase --include=python3,python-is-python3,ca-certificates "$SUITE" "$BASE" "$mirror" \
    >/dev/null
  # slim it: no apt lists, caches, docs, man pages or locales in the image
  rm -rf "$BASE"/var/lib/apt/lists/* "$BASE"/var/cache/apt/* "$BASE"/usr/share/doc/* "$BASE"/usr/share/man/* \
         "$BASE"/usr/share/locale/* "$BASE"/usr/share/info/* "$BASE"/var/log/*
  touch "$BASE/.complete"  # its mtime is the clamp for every layer: the base's own times stay as they are
fi

run_in() { # TREE CMD...: CMD chrooted in TREE with a clean environment
  local tree=$1; shift
  chroot "$tree" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"
}
compile() { # TREE DIR...: bytecode that needs neither a writable root nor the sources' mtimes
  local tree=$1; shift
  run_in "$tree" python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash "$@"
}
add_user() { # TREE: the product images run as 10001
  echo "scriptrun:x:10001:10001:scriptrun:/home/scriptrun:/usr/sbin/nologin" >> "$1/etc/passwd"
  echo "scriptrun:x:10001:" >> "$1/etc/group"
  install -d -o 10001 -g 10001 -m 0755 "$1/home/scriptrun"
}
pip_target() { # SITE ARGS...: manylinux wheels for the base's Python
  "$UV" pip install -q --target "$1" --python-version "$PYVER" --python-platform x86_64-manylinux_2_28 \
    --only-binary :all: "${@:2}"
  rm -rf "$1/bin"  # console scripts with the wrong interpreter: /usr/local/bin/scriptrun is ours
}
stage() { # NAME KEY FUNCTION: a tree cached until KEY changes, FUNCTION builds it from a copy of the base
  local dir="$IMG/stage-$1"
  if [[ -f "$dir.key" && "$(cat "$dir.key")" == "$2" ]]; then return; fi
  log "stage $1: building"
  rm -rf "$dir" "$dir.key"
  cp -a "$BASE" "$dir"
  rm -f "$dir/.complete"
  "$3" "$dir"
  echo "$2" > "$dir.key"
}

PYVER=$(run_in "$BASE" python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
SITE="usr/local/lib/python$PYVER/dist-packages"
WORK=$(mktemp -d "$IMG/work.XXXXXX")  # on the stages' file system: hard links
trap 'rm -rf "$WORK"' EXIT
"$UV" export --project "$ROOT_DIR" --frozen --no-dev --all-extras --no-emit-project --no-hashes --no-header -q \
  -o "$WORK/locked.txt" >/dev/null

# -- stage-deps: user + every locked dependency, compiled ----------------------------------------
build_deps() {
  add_user "$1"
  log "stage deps: installing the locked dependencies for Python $PYVER (manylinux wheels)"
  pip_target "$1/$SITE" -r "$WORK/locked.txt"
  compile "$1" "/$SITE"
}
deps_key=$( { stat -c %Y "$BASE/.complete"; cat "$WORK/locked.txt" "$ROOT_DIR/hack/build-image.sh"; } \
  | sha256sum | cut -c1-16)
stage deps "$deps_key" build_deps

# -- stage-monitor: the base without what a Python sidecar never runs, + psutil, prometheus-client --
MONITOR_DROP_PACKAGES=(
  apt libapt-pkg6.0 dpkg debconf libdebconfclient0 base-passwd perl-base gpgv debian-archive-keyring
  adduser passwd login libpam-runtime libpam-modules libpam-modules-bin util-linux util-linux-extra mount
  bsdutils sysvinit-utils init-system-helpers e2fsprogs libext2fs2 libss2 logsave tzdata openssl ncurses-bin
)
MONITOR_DROP_PATHS=(
  /var/lib/dpkg /var/lib/apt /var/cache/apt /var/cache/debconf /etc/apt /etc/dpkg /etc/timezone
  /usr/share/doc /usr/share/man /usr/share/info /usr/share/locale /usr/share/lintian /usr/share/bug
  /usr/share/doc-base /usr/share/gdb /usr/share/menu /usr/share/bash-completion /usr/share/perl5
  /usr/lib/x86_64-linux-gnu/gconv
  # stdlib the monitor never imports; their extension modules take libdb, sqlite, krb5, ncurses along
  "/usr/lib/python$PYVER/"{test,pydoc_data,ensurepip,idlelib,lib2to3,tkinter,turtledemo,sqlite3,curses}
  "/usr/lib/python$PYVER/lib-dynload/"{_test,_ctypes_test,xx,_xx,_dbm,_sqlite3,nis,_curses,readline}"*"
  "/usr/lib/python$PYVER/lib-dynload/"{audioop,ossaudiodev,_codecs_}"*"
)
build_monitor() {
  add_user "$1"
  local args=(--keep-package libc6 --keep-package libgcc-s1)  # libgcc_s: dlopen()ed by glibc for pthread_exit
  for p in "${MONITOR_DROP_PACKAGES[@]}"; do args+=(--remove-package "$p"); done
  for p in "${MONITOR_DROP_PATHS[@]}"; do args+=(--remove-path "$p"); done
  "$PY" "$OCI" slim "$1" "${args[@]}"
  run_in "$1" ldconfig
  rm -rf "$1/var/cache/ldconfig"
  log "stage monitor: installing $(grep -v '^#' "$ROOT_DIR/runner-image/monitor-requirements.txt" | xargs)"
  pip_target "$1/$SITE" -c "$WORK/locked.txt" -r "$ROOT_DIR/runner-image/monitor-requirements.txt"
  compile "$1" "/$SITE"
}
monitor_key=$( { stat -c %Y "$BASE/.complete"; cat "$WORK/locked.txt" "$ROOT_DIR/hack/build-image.sh" "$OCI" \
  "$ROOT_DIR/runner-image/monitor-requirements.txt"; } | sha256sum | cut -c1-16)
stage monitor "$monitor_key" build_monitor

# -- scriptrun on hard-linked copies of the stages (it only adds files: the stages stay as they are) --
log "building the scriptrun wheel"
rm -rf "$IMG/dist"  # a fixed path: it is recorded in the installed direct_url.json
"$UV" build --wheel -q -o "$IMG/dist" "$ROOT_DIR"
WHEEL=$(ls "$IMG"/dist/scriptrun-*.whl)
for pair in runner:deps monitor:monitor; do
  tree="$WORK/${pair%%:*}"
  cp -al "$IMG/stage-${pair##*:}" "$tree"
  pip_target "$tree/$SITE" --no-deps "$WHEEL"
  # uv's record of when it installed the wheel: the one thing that differs between two builds
  rm -f "$tree/$SITE"/scriptrun-*.dist-info/uv_cache.json
  sed -i '/uv_cache\.json/d' "$tree/$SITE"/scriptrun-*.dist-info/RECORD
  cat > "$tree/usr/local/bin/scriptrun" <<'PY'
#!/usr/bin/python3
import sys

from scriptrun.cli import main

sys.exit(main())
PY
  chmod 0755 "$tree/usr/local/bin/scriptrun"
  compile "$tree" "/$SITE/scriptrun"
done
for name in deps monitor; do  # a file written through a hard link would have changed the cached stage
  changed=$(find "$IMG/stage-$name" -newer "$IMG/stage-$name.key" ! -type d -print -quit)
  if [[ -n "$changed" ]]; then
    rm -f "$IMG/stage-$name.key"
    log "stage $name was modified through a hard link ($changed): it is rebuilt next time"; exit 1
  fi
done

VERSION=$("$PY" -c 'import scriptrun; print(scriptrun.__version__)')
CLAMP=$(stat -c %Y "$BASE/.complete")
log "assembling the OCI archives"
"$PY" "$OCI" images --version "$VERSION" --clamp-mtime "$CLAMP" \
  --layer-cache "$IMG/layers" --out-dir "$OUT_DIR" \
  --tree base="$BASE" --tree deps="$IMG/stage-deps" --tree runner="$WORK/runner" \
  --tree monitor-deps="$IMG/stage-monitor" --tree monitor="$WORK/monitor"
rm -f "$OUT_DIR/scriptrun-runner.oci.tar"  # the single archive of earlier builds
log "writing the SBOMs"
# the monitor's slimming removed its dpkg database: its packages are read from the base's, which it was cut from
"$PY" "$ROOT_DIR/hack/sbom.py" --out-dir "$OUT_DIR" --timestamp "$CLAMP" \
  --image runner="$WORK/runner" --image operator="$WORK/runner" --image monitor="$WORK/monitor" \
  --dpkg-db monitor="$BASE/var/lib/dpkg"
log "done in $((SECONDS - started)) s"

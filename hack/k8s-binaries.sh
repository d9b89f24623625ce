#!/usr/bin/env bash
# Build (once) and cache the control-plane binaries the test suite runs, from Go modules only.
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy, kwok, helm,
#   and an OpenTelemetry Collector (otelcol: otlp receiver, debug + file exporters) made with the collector builder
# Cache: ${SCRIPTRUN_CACHE:-~/.cache/scriptrun}/bin/<name>-<version>; prints the bin dir on stdout.
# Usage: hack/k8s-binaries.sh [--print-dir]
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.1}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.4}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
OTELCOL_VERSION="${OTELCOL_VERSION:-v0.162.0}"  # builder, core and contrib components (newer ones: proxy 403s)
CACHE="${SCRIPTRUN_CACHE:-$HOME/.cache/scriptrun}"
BIN="$CACHE/bin"
mkdir -p "$BIN"

if [[ "${1:-}" == "--print-dir" ]]; then echo "$BIN"; exit 0; fi

log() { echo "[k8s-binaries] $*" >&2; }
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
command -v go >/dev/null || { log "go is required (Go toolchain not found on PATH)"; exit 1; }

# One build at a time per cache (as hack/build-image.sh): two checkouts' `make test` share $BIN and
# $CACHE/build, so the second waits for the first (then finds everything built) instead of both writing
# the same files. --print-dir (above) never waits. Binaries land under a temp name, then `mv` (atomic):
# a reader never sees half a file, and a killed build leaves no executable that looks finished.
exec 9>"$BIN/.lock"
flock -n 9 || { log "waiting for another build using $BIN (lock $BIN/.lock)"; flock 9; }
rm -f "$BIN"/.*.tmp  # left by a build that was killed

have() { [[ -x "$BIN/$1-$2" ]]; }
# put <file> in place as $BIN/<name>, atomically (a rename within $BIN)
install_bin() { mv "$1" "$BIN/.$2.tmp" && mv "$BIN/.$2.tmp" "$BIN/$2"; }

build_kube() {
  local names=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy) missing=0 n
  for n in "${names[@]}"; do have "$n" "$K8S_VERSION" || missing=1; done
  [[ $missing == 0 ]] && return 0
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local patch="${K8S_VERSION##*.}"
  local staging="v0.${minor}.${patch}"
  local work="$CACHE/build/kube-$K8S_VERSION"
  mkdir -p "$work" && cd "$work"
  if [[ ! -f go.mod ]]; then
    go mod init local/k8sbins >/dev/null 2>&1
    for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
             cluster-bootstrap code-generator component-base component-helpers controller-manager \
             cri-api cri-client csi-translation-lib dynamic-resource-allocation endpointslice \
             externaljwt kms kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl \
             kubelet metrics mount-utils pod-security-admission sample-apiserver; do
      go mod edit -replace="k8s.io/$m=k8s.io/$m@$staging"
    done
    cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
    log "resolving k8s.io/kubernetes@$K8S_VERSION"
    go get "k8s.io/kubernetes@$K8S_VERSION"
    go mod tidy >/dev/null 2>&1 || true
  fi
  local pkg=k8s.io/component-base/version cpkg=k8s.io/client-go/pkg/version d
  d=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ldf="-s -w"
  for p in $pkg $cpkg; do
    ldf+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$d"
  done
  log "building ${names[*]} $K8S_VERSION (slow the first time)"
  mkdir -p out
  # a work dir made by an older version of this script lacks the kubelet/kube-proxy imports
  grep -q cmd/kube-proxy tools.go || { sed -i 's#^)$#\t_ "k8s.io/kubernetes/cmd/kubelet"\n\t_ "k8s.io/kubernetes/cmd/kube-proxy"\n)#' tools.go; go mod tidy >/dev/null 2>&1 || true; }
  go build -trimpath -ldflags "$ldf" -o out/ k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
  for n in "${names[@]}"; do install_bin "out/$n" "$n-$K8S_VERSION"; done
}

build_etcd() {
  have etcd "$ETCD_VERSION" && return 0
  local work="$CACHE/build/etcd-$ETCD_VERSION"
  mkdir -p "$work" && cd "$work"
  if [[ ! -f go.mod ]]; then
    go mod init local/etcdbin >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  fi
  log "building etcd $ETCD_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$BIN/.etcd-$ETCD_VERSION.tmp" go.etcd.io/etcd/server/v3
  mv "$BIN/.etcd-$ETCD_VERSION.tmp" "$BIN/etcd-$ETCD_VERSION"
}

build_kwok() {
  have kwok "$KWOK_VERSION" && return 0
  log "building kwok $KWOK_VERSION"
  GOBIN="$CACHE/build/kwok-$KWOK_VERSION" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  install_bin "$CACHE/build/kwok-$KWOK_VERSION/kwok" "kwok-$KWOK_VERSION"
}

build_helm() {
  have helm "$HELM_VERSION" && return 0
  log "building helm $HELM_VERSION"
  GOBIN="$CACHE/build/helm-$HELM_VERSION" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  install_bin "$CACHE/build/helm-$HELM_VERSION/helm" "helm-$HELM_VERSION"
}

build_otelcol() {
  have otelcol "$OTELCOL_VERSION" && return 0
  local v="$OTELCOL_VERSION" work="$CACHE/build/otelcol-$OTELCOL_VERSION" stable
  local core=go.opentelemetry.io/collector contrib=github.com/open-telemetry/opentelemetry-collector-contrib
  mkdir -p "$work/src" && cd "$work"
  # cmd/otelcorecol cannot be go-installed (local replaces); the builder generates a distribution's sources
  [[ -x builder ]] || GOBIN="$work" go install -trimpath -ldflags "-s -w" "$core/cmd/builder@$v"
  cd src
  # The builder's own `go mod tidy` also fetches the components' test-only dependencies, some of which the
  # module proxy refuses (403); so this go.mod is ours, the builder only writes main.go and components.go.
  [[ -f go.mod ]] || go mod init local/otelcol >/dev/null 2>&1
  go get "$core/otelcol@$v" "$core/service@$v" "$core/receiver/otlpreceiver@$v" \
    "$core/exporter/debugexporter@$v" "$contrib/exporter/fileexporter@$v"
  stable=$(go list -m -f '{{.Version}}' "$core/confmap")  # the v1.x release that goes with $v
  go get "$core/confmap/provider/envprovider@$stable" "$core/confmap/provider/fileprovider@$stable"
  cat > ../manifest.yaml <<YAML
dist:
  name: otelcol
  module: local/otelcol
  description: OpenTelemetry Collector for the scriptrun tests
  version: ${v#v}
  output_path: $work/src
receivers:
  - gomod: $core/receiver/otlpreceiver $v
exporters:
  - gomod: $core/exporter/debugexporter $v
  - gomod: $contrib/exporter/fileexporter $v
providers:
  - gomod: $core/confmap/provider/envprovider $stable
  - gomod: $core/confmap/provider/fileprovider $stable
YAML
  # (the builder also makes an unused temp dir each run: keep it in $work, not /tmp)
  TMPDIR="$work" ../builder --config ../manifest.yaml --skip-get-modules --skip-compilation
  log "building otelcol $v (collector builder sources)"
  go build -trimpath -ldflags "-s -w" -o "$BIN/.otelcol-$v.tmp" .
  mv "$BIN/.otelcol-$v.tmp" "$BIN/otelcol-$v"
}

start=$(date +%s)
build_etcd
build_kwok
build_kube
build_helm
build_otelcol
log "binaries ready in $BIN ($(( $(date +%s) - start ))s)"
# stable names for the test suite
cat > "$BIN/.versions.env.tmp" <<ENV
K8S_VERSION=$K8S_VERSION
ETCD_VERSION=$ETCD_VERSION
KWOK_VERSION=$KWOK_VERSION
HELM_VERSION=$HELM_VERSION
OTELCOL_VERSION=$OTELCOL_VERSION
ENV
mv "$BIN/.versions.env.tmp" "$BIN/versions.env"  # tests of another checkout may be reading it
echo "$BIN"

# scriptrun: `make run` (install + run the example locally) and `make test` (everything CI runs).
# All set-up is cached outside the repo in $(CACHE): the Python venv, uv, and the Kubernetes binaries.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
CACHE ?= $(HOME)/.cache/scriptrun
PYTHON ?= python3
TOOLS := $(CACHE)/tools
UV := $(TOOLS)/bin/uv
UV_VERSION := 0.13.9
# one venv per checkout (the project is installed editable: two clones must not share one)
VENV := $(CACHE)/venv-$(shell printf '%s' '$(CURDIR)' | sha1sum | cut -c1-10)
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_CACHE_DIR := $(CACHE)/uv
export UV_PYTHON_DOWNLOADS := never
export SCRIPTRUN_CACHE := $(CACHE)
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help venv bins crds run test test-unit test-controlplane e2e lint bench bench-monitor bench-dag bench-telemetry bench-load chaos image clean-cache
help:
	@echo "make run    - install and run examples/hello-scriptrun.yaml locally (no cluster)"
	@echo "make test   - lint, type-check, unit, control-plane and real-node tests (builds what is missing)"
	@echo "make crds   - regenerate crds/ from the models"
	@echo "make bins   - build the Kubernetes binaries used by the tests (cached)"
	@echo "make e2e    - the real-node tier only (root): real kubelet, helm install, every example"
	@echo "make image  - build the runner, monitor and operator images as OCI archives (root; no registry)"
	@echo "make bench  - benchmarks (bench-monitor, bench-dag, bench-telemetry, bench-load)"
	@echo "make chaos  - the full chaos test (100 operator kills and every other fault; make test runs 6 kills)"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"

venv: $(UV)
	$(UV) sync --frozen --all-extras --python $(PYTHON) -q

bins:
	bash hack/k8s-binaries.sh >/dev/null

crds: venv
	$(BIN)/scriptrun crds --write crds --write charts/scriptrun/crds
	$(BIN)/python -m scriptrun.telemetry.alerts > charts/scriptrun/files/alerts.yaml
	$(BIN)/python -m scriptrun.telemetry.dashboards charts/scriptrun/files/dashboards

run: venv
	$(BIN)/scriptrun run examples/etl-workflow.yaml

lint: venv
	$(BIN)/ruff check operator tests hack
	$(BIN)/ruff format --check operator tests hack
	$(BIN)/mypy
	MYPYPATH=operator:. $(BIN)/mypy --follow-imports=silent hack/*.py hack/memstats/sitecustomize.py

test-unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-controlplane: venv bins
	$(BIN)/python -m pytest tests/controlplane $(PYTEST_ARGS)

# the real-node tier alone (root): a real kubelet + containerd in a network namespace, helm install
e2e: venv bins image
	$(BIN)/python -m pytest tests/e2e -ra $(PYTEST_ARGS)

# images need root (debootstrap, chroot): as another user they are skipped, and so are their tests
test: venv bins lint
	@if [[ $$(id -u) == 0 ]]; then $(MAKE) --no-print-directory image; \
	else echo "skipped: make image needs root (debootstrap, chroot)"; fi
	$(BIN)/python -m pytest tests -ra $(PYTEST_ARGS)

clean-cache:
	@echo "remove $(CACHE) by hand if you really mean it"

# one OCI archive per image, fixed names, for every test tier: runner.oci.tar, operator.oci.tar,
# monitor.oci.tar and the test-only test-python3.oci.tar (`ctr -n k8s.io images import` tags them)
IMAGE_DIR := $(CACHE)/image
export SCRIPTRUN_IMAGE_DIR := $(IMAGE_DIR)

image: venv
	bash hack/build-image.sh $(IMAGE_DIR)

bench-monitor: venv
	$(BIN)/python hack/bench_monitor.py

bench-dag: venv bins
	$(BIN)/python hack/bench_dag.py

# the operator's CPU with metrics served + scraped and tracing on (a real Collector) vs off
bench-telemetry: venv bins
	$(BIN)/python hack/bench_dag.py --telemetry

# 10,000 ScriptRuns at once, then 100 Workflows of 100 tasks: the operator's RSS, its API request rate
# against its QPS/burst, how long the run created last waits, memory after the runs are deleted
bench-load: venv bins
	$(BIN)/python hack/bench_load.py $(BENCH_ARGS)

bench: bench-monitor bench-dag bench-telemetry bench-load

# the full chaos run (make test runs the bounded one, 6 kills): 100 operator SIGKILLs during 200-task
# Workflows, plus an API server + etcd restart, cut watches, deleted children and pods, a lost node
chaos: venv bins
	SCRIPTRUN_CHAOS_KILLS=100 $(BIN)/python -m pytest tests/controlplane/test_chaos.py -ra -s $(PYTEST_ARGS)

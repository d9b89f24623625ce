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

.PHONY: help venv bins crds run test test-unit test-controlplane lint bench bench-monitor bench-dag image clean-cache
help:
	@echo "make run    - install and run examples/hello-scriptrun.yaml locally (no cluster)"
	@echo "make test   - lint, type-check, unit and control-plane tests (builds what is missing)"
	@echo "make crds   - regenerate crds/ from the models"
	@echo "make bins   - build the Kubernetes binaries used by the tests (cached)"
	@echo "make image  - build the runner image as an OCI archive, without a registry"
	@echo "make bench  - benchmarks (bench-monitor)"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"

venv: $(UV)
	$(UV) sync --frozen --python $(PYTHON) -q

bins:
	bash hack/k8s-binaries.sh >/dev/null

crds: venv
	$(BIN)/scriptrun crds --write crds --write charts/scriptrun/crds

run: venv
	$(BIN)/scriptrun run examples/etl-workflow.yaml

lint: venv
	$(BIN)/ruff check operator tests hack
	$(BIN)/ruff format --check operator tests hack
	$(BIN)/mypy

test-unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-controlplane: venv bins
	$(BIN)/python -m pytest tests/controlplane $(PYTEST_ARGS)

test: venv bins lint image
	SCRIPTRUN_IMAGE_ARCHIVE=$(IMAGE) $(BIN)/python -m pytest tests -ra $(PYTEST_ARGS)

clean-cache:
	@echo "remove $(CACHE) by hand if you really mean it"

IMAGE := $(CACHE)/image/scriptrun-runner.oci.tar

image: venv
	bash hack/build-image.sh $(IMAGE)
	@echo "runner image archive: $(IMAGE)"

bench-monitor: venv
	$(BIN)/python hack/bench_monitor.py

bench-dag: venv bins
	$(BIN)/python hack/bench_dag.py

bench: bench-monitor bench-dag

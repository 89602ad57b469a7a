# Two commands for a newcomer: `make serve` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.serve-installed
# The shipped default model (onnx-int8 only); `make package BUILD=DIR` builds one instead.
PACKAGE ?= models/clinc150-minilm
BACKEND ?= onnx-int8
PRESET ?= quick
REPLICAS ?= 2
# Seconds the Serve controller gives a new proxy to report ready (Ray's 5 s is missed on a busy small node).
PROXY_READY_TIMEOUT_S ?= 60

.PHONY: install system-deps serve serve-ray package test test-fast lint benchmark loadtest bench-serving clean

# PyPI's Linux torch wheel is the CUDA build (several GB): the pinned torch comes from the CPU index first, alone
# (an index out of reach then costs one lookup, and the next step takes torch from the usual index instead).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PIN := $(shell sed -n 's/^ *"\(torch==[^"]*\)",.*/\1/p' pyproject.toml)

# A venv whose pip does not run (python3.11-venv missing when it was made) is made again, not reused.
define make-venv
	@$(PY) -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "cannot create $(VENV) with $(PYTHON): install Python 3.11 with venv (Debian/Ubuntu: python3.11-venv)," \
		"or pass PYTHON=/path/to/python3.11" >&2; exit 1; }; }
endef

$(STAMP): pyproject.toml
	$(make-venv)
	$(PY) -m pip install --quiet --upgrade pip
	-$(PY) -m pip install --quiet --no-deps --extra-index-url $(TORCH_INDEX) '$(TORCH_PIN)'
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $(SERVE_STAMP)

install: $(STAMP)

# Serving alone needs only the core (the ONNX path: no torch): seconds, not minutes.
$(SERVE_STAMP): pyproject.toml
	$(make-venv)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(SERVE_STAMP)

# promtool/prometheus (metrics and scrape tests) and wrk (serving benchmark); skipped when not root.
system-deps:
	@if command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v wrk >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus wrk >/dev/null; \
	else echo "note: install prometheus and wrk for the full test suite and benchmarks"; fi

# `make package PRESET=quick|full|mpnet [BUILD=dir]` trains one locally; serve it with `make serve PACKAGE=dir`.
BUILD ?= artifacts/teacher
package: | $(STAMP)
	$(PY) -m compression build --preset $(PRESET) --output-dir $(BUILD)

serve: $(SERVE_STAMP) | $(PACKAGE)/manifest.json
	INTENT_MODEL_DIR=$(PACKAGE) INTENT_BACKEND=$(BACKEND) $(PY) -m app

$(PACKAGE)/manifest.json:
	@echo "no model package at $(PACKAGE): build one with 'make package BUILD=$(PACKAGE)'" >&2; exit 2

# Ray Serve (extra `ray`): the same app in $(REPLICAS) replicas behind Ray's proxy on :8000; see docs/deployment.md.
serve-ray: $(STAMP) | $(PACKAGE)/manifest.json
	INTENT_MODEL_DIR=$(abspath $(PACKAGE)) INTENT_BACKEND=$(BACKEND) INTENT_NUM_THREADS=1 \
		RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S=$(PROXY_READY_TIMEOUT_S) $(VENV)/bin/serve run app.ray_serve:app_builder num_replicas=$(REPLICAS) num_cpus=1

test: $(STAMP) system-deps
	$(PY) -m pytest -ra --durations=10

test-fast: $(STAMP)
	$(PY) -m pytest -ra -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	bash scripts/lint_deploy.sh

# Every package under artifacts/ (`make package` builds them), into reports/; other packages or folders:
# `python -m compression benchmark --packages DIR ... --output-dir OUT`.
benchmark: $(STAMP)
	$(PY) -m compression benchmark

loadtest: $(STAMP)
	bash scripts/loadtest.sh

bench-serving: $(STAMP) system-deps
	$(PY) scripts/bench_serving.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

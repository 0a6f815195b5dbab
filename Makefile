# The two commands a new user runs: `make up` (everything, with sample traffic) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup up web test test-unit lint bench-mllp bench-dicom bench-replay bench-decide bench-pipeline bench-web soak clean

setup: $(VENV)/.installed deploy/kafka/lib/.fetched

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[train,test]"
	touch $@

deploy/kafka/lib/.fetched: deploy/kafka/pom.xml
	$(BIN)/medroute kafka fetch
	touch $@

up: setup
	$(BIN)/medroute up

web: setup
	$(BIN)/medroute web

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest

test-unit: setup
	$(BIN)/pytest tests/unit

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# Options go in ARGS, e.g. `make bench-pipeline ARGS="--duration 10 --latency-duration 5"`.
bench-mllp: setup
	$(BIN)/python -m tools.benchmarks.mllp $(ARGS)

bench-dicom: setup
	$(BIN)/python -m tools.benchmarks.dicom $(ARGS)

bench-replay: setup
	$(BIN)/python -m tools.benchmarks.replay $(ARGS)

bench-decide: setup
	$(BIN)/python -m tools.benchmarks.decide $(ARGS)

bench-pipeline: setup
	$(BIN)/python -m tools.benchmarks.pipeline $(ARGS)

bench-web: setup
	$(BIN)/python -m tools.benchmarks.web

# Chaos soak (docs/RELIABILITY.md), e.g. `make soak ARGS="--minutes 10"`.
soak: setup
	$(BIN)/python -m tools.soak $(ARGS)

clean:
	-$(BIN)/medroute kafka stop
	rm -rf .medroute

# The two commands a new user runs: `make up` (everything, with sample traffic) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup up test test-unit lint bench-mllp bench-dicom bench-replay bench-forward clean

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

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest

test-unit: setup
	$(BIN)/pytest tests/unit

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench-mllp: setup
	$(BIN)/python -m tools.benchmarks.mllp

bench-dicom: setup
	$(BIN)/python -m tools.benchmarks.dicom

bench-replay: setup
	$(BIN)/python -m tools.benchmarks.replay

bench-forward: setup
	$(BIN)/python -m tools.benchmarks.forward

clean:
	-$(BIN)/medroute kafka stop
	rm -rf .medroute

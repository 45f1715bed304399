# dsforge developer commands. `make demo` sets up and builds the demo; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU build of torch first (trainers in the tests need it); otherwise pip pulls CUDA wheels.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/dsforge build recipes/demo.yaml
	@echo "inspect it with: $(BIN)/dsforge inspect out/demo"

test: setup
	$(BIN)/python -m pytest -q -n 2

lint: setup
	$(BIN)/ruff check dsforge tests bench
	$(BIN)/ruff format --check dsforge tests bench

format: setup
	$(BIN)/ruff format dsforge tests bench
	$(BIN)/ruff check --fix dsforge tests bench

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf out .pytest_cache

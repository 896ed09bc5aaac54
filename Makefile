# Two commands on a fresh machine with Python 3.11:  `make demo`  and  `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := .icp/demo
DEMO_AS_OF := 2026-11-01
ACCOUNTS ?= 5000

.PHONY: setup demo test ui lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: setup  ## write demo data and run the nightly job on it
	$(BIN)/icp demo --out $(DEMO) --accounts $(ACCOUNTS) --as-of $(DEMO_AS_OF)
	$(BIN)/icp run --source-dir $(DEMO) --as-of $(DEMO_AS_OF)

test: setup  ## run every test
	$(BIN)/pytest -q

ui: setup  ## Dagster UI on http://127.0.0.1:3000 with the project loaded
	$(BIN)/icp ui

lint: setup  ## ruff check and format check
	$(BIN)/ruff check icp_pipeline icp_pipeline_tests benchmarks
	$(BIN)/ruff format --check icp_pipeline icp_pipeline_tests benchmarks

bench: setup  ## nightly-run benchmark at 100k and 1M accounts; rewrites the README table
	$(BIN)/python benchmarks/nightly.py --accounts 100000 1000000 --readme

clean:
	rm -rf .icp .dagster

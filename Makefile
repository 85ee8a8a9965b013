# Two commands: `make run` and `make test`. Both create .venv and install what they need.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON ?= python3

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/pilothouse serve --host 127.0.0.1 --port 4000

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

bench: install
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/query.py
	$(PY) benchmarks/sdk_overhead.py

clean:
	rm -rf $(VENV) .pilothouse .mypy_cache .ruff_cache

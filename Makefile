# The README's two commands: `make demo` (main job) and `make test` (the test suite).
# Each creates .venv on first use (CPU torch 2.13.0 plus the project's extras) and then runs.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
DEMO_ARGS ?=

export TRITON_INTERPRET ?= 1
export PYTHONHASHSEED ?= 0

.PHONY: help venv test lint demo bench clean

help:
	@echo "make demo   - short SCAT training run of the reference trainer (writes runs/demo/)"
	@echo "make test   - ruff + the whole test suite"
	@echo "make bench  - CPU benchmarks (writes benchmarks/RESULTS.md)"

$(VENV)/.stamp: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,triton]"
	@touch $@

venv: $(VENV)/.stamp

lint: venv
	$(PY) -m ruff check scatloss tests examples benchmarks
	$(PY) -m mypy

test: venv lint
	$(PY) -m pytest -q -n 2 --dist loadfile

demo: venv
	$(PY) -m examples.aotgan.train --demo $(DEMO_ARGS)

bench: venv
	$(PY) benchmarks/bench_step.py
	$(PY) benchmarks/bench_kernels.py --quick
	$(PY) benchmarks/triton_resources.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis

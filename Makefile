# The README's two commands: `make demo` (main job) and `make test` (the test suite).
# Each creates .venv on first use (CPU torch 2.13.0 plus the project's extras) and then runs.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
DEMO_ARGS ?=

export TRITON_INTERPRET ?= 1
export PYTHONHASHSEED ?= 0

.PHONY: help venv test lint demo bench clean mutate

help:
	@echo "make demo   - SCAT vs baseline from the shipped weights, side by side (writes runs/demo/)"
	@echo "make test   - ruff + the whole test suite"
	@echo "make bench  - CPU benchmarks (writes benchmarks/RESULTS.md)"
	@echo "make mutate - mutation testing with mutmut (hours; MUTANTS='scatloss.criterion*' for one module)"

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
	$(PY) -m examples.aotgan.demo $(DEMO_ARGS)

bench: venv
	$(PY) benchmarks/bench_step.py
	$(PY) benchmarks/bench_kernels.py --quick
	$(PY) benchmarks/triton_resources.py

# Mutation testing (not part of `make test`): mutmut copies the package into mutants/, runs each mutant against the
# unit tests that reach its function (config: [tool.mutmut] in pyproject.toml) and prints the score per module.
# MUTANTS: mutant-name globs, e.g. MUTANTS='scatloss.criterion*'; empty = every configured module (~8,000 mutants).
MUTANTS ?=
MUTATE_JOBS ?= 1
mutate: venv
	OMP_NUM_THREADS=1 HYPOTHESIS_PROFILE=mutate TRITON_INTERPRET=1 PYTHONHASHSEED=0 $(PY) -m mutmut run --max-children $(MUTATE_JOBS) $(foreach m,$(MUTANTS),'$(m)')
	$(PY) benchmarks/mutation/score.py --survivors

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis

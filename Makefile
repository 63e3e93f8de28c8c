# pyqrmi: the two commands a newcomer needs are `make demo` and `make test`.
# Everything lives in .venv; system packages (Slurm, munge) are installed by `make test` when run as root.

SHELL := /bin/bash
PYTHON ?= $(shell command -v /usr/bin/python3.11 || command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.9

.PHONY: demo test venv lint typecheck system-deps shim bench bench-quick clean

demo: $(STAMP)
	$(PY) examples/bell_sampler.py

test: $(STAMP) system-deps lint typecheck
	$(PY) -m pytest

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install -q "uv==$(UV_VERSION)"
	$(UV) pip install -q --python $(PY) --compile-bytecode -r requirements.lock
	$(UV) pip install -q --python $(PY) --compile-bytecode --no-deps -e .
	@touch $@

system-deps:
	@scripts/install-system-deps

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

shim:
	$(MAKE) -C slurm

bench: $(STAMP)
	$(PY) benchmarks/run.py

# About five minutes; fails when a goal of benchmarks/_gate.py is clearly missed. Its report
# goes to benchmarks/results/quick/, not docs/ (not part of `make test`: timings are no tests).
bench-quick: $(STAMP)
	$(PY) benchmarks/run.py --quick --gate --only startup,calls,time_to_result,throughput,emulator \
		--docs-dir benchmarks/results/quick

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache

# Two commands do all the set-up on a fresh machine:
#   make demo   data -> training -> evaluation on the default BabyAI benchmark (runs/babyai-quick)
#   make test   the test suite (unit + integration), ruff and mypy
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PRESET ?= babyai-quick
RUN ?= runs/$(PRESET)
# torch first, from this machine's wheel cache, so no dependency pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= babyai,text,dev

.PHONY: demo test test-fast lint typecheck install clean-runs

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.torch-installed: | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	touch $@

$(VENV)/.deps-installed: pyproject.toml $(VENV)/.torch-installed
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.deps-installed

demo: install
	$(BIN)/vla-align pipeline --preset $(PRESET) --out $(RUN) --overwrite
	@echo "metrics: $(RUN)/metrics.json"

test: install lint typecheck
	$(BIN)/python -m pytest -q --durations=10

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: install
	$(BIN)/mypy

clean-runs:
	rm -rf runs datasets

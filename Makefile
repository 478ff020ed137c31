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
EXTRAS ?= babyai,metaworld,text,dev

# The report test opens report.html in headless Chromium; Debian's package (+ a small CJK font) is
# installed when missing. apt needs root: run `make browser` once with sudo otherwise.
BROWSER_PKGS ?= chromium fonts-wqy-microhei
APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: demo test test-fast lint typecheck install browser clean-runs

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
	@echo "report:  $(RUN)/report.html (open it in a browser)"

browser:
	@command -v chromium >/dev/null && fc-list :lang=zh | grep -q . || \
	  { DEBIAN_FRONTEND=noninteractive $(APT) install -y -q $(BROWSER_PKGS) >/dev/null || \
	    { $(APT) update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $(APT) install -y -q $(BROWSER_PKGS) >/dev/null; }; }

test: install lint typecheck browser
	VLA_ALIGN_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q --durations=10

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: install
	$(BIN)/mypy

clean-runs:
	rm -rf runs datasets

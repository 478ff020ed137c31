# Two commands do all the set-up on a fresh machine:
#   make demo   data -> training -> evaluation on the default BabyAI benchmark (runs/babyai-quick)
#   make test   the test suite (unit + integration), ruff and mypy
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PRESET ?= babyai-quick
RUN ?= runs/$(PRESET)
# Language of the HTML report: zh (the chapter's language, default) or en: `make demo REPORT_LANG=en`.
REPORT_LANG ?= zh
# torch first, so no dependency picks its own build. The default pin is what CI installs; elsewhere:
#   CPU only (Linux):  make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
#   NVIDIA GPU:        make demo TORCH_SPEC=torch   (PyPI's Linux wheel is the CUDA build)
#   your own build:    install it into .venv first, then `touch .venv/.torch-installed`
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
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
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	touch $@

$(VENV)/.deps-installed: pyproject.toml $(VENV)/.torch-installed
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.deps-installed

demo: install
	$(BIN)/vla-align pipeline --preset $(PRESET) --out $(RUN) --overwrite --lang $(REPORT_LANG)
	@echo "metrics: $(RUN)/metrics.json"
	@echo "report:  $(RUN)/report.html ($(REPORT_LANG); open it in a browser; make demo REPORT_LANG=en for English)"

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

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
EXTRAS ?= babyai,metaworld,text,video,dev

# The report test opens report.html in headless Chromium; Debian's package (+ a small CJK font) is
# installed when missing. apt needs root: run `make browser` once with sudo otherwise.
BROWSER_PKGS ?= chromium fonts-wqy-microhei
APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: demo test test-fast lint typecheck install browser clean-runs interop

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

# LeRobot interoperability, proven with LeRobot's own code (not part of `make test`): `make interop`.
# LeRobot is installed in its own virtual environment under .interop/ (reused when present): 0.4.4 on
# Python 3.11 (the default; ~8.3 GB, ~4 min: its torch<2.11 pin pulls CUDA wheels) or
# `make interop LEROBOT_VERSION=0.6.1` on Python 3.12 (~5.4 GB, ~1.5 min). interop/make_fixtures.py
# writes small datasets with LeRobot's writer (INTEROP_UPDATE_FIXTURES=1 copies them over
# tests/fixtures/lerobot/); interop/roundtrip.py reads our datasets with LeRobot, LeRobot's with vla-align
# (and its train / eval / report), runs LeRobot's dataset tools on ours, prints one table and exits
# non-zero on any mismatch. LeRobot's default video decoder, torchcodec, needs FFmpeg's shared libraries
# (Debian: apt-get install ffmpeg); without them that one comparison is skipped and PyAV is used.
LEROBOT_VERSION ?= 0.4.4
LEROBOT_PY ?= $(shell command -v python$(if $(filter 0.4.%,$(LEROBOT_VERSION)),3.11,3.12) || command -v python3)
LEROBOT_VENV ?= .interop/lerobot-$(LEROBOT_VERSION)
# 0.5+ moved the dataset code's dependencies (datasets, pandas, av, torchcodec) into the "dataset" extra
LEROBOT_EXTRAS ?= $(if $(filter 0.4.%,$(LEROBOT_VERSION)),,[dataset])
INTEROP_WORK ?= .interop/work-$(LEROBOT_VERSION)
INTEROP_UPDATE_FIXTURES ?= 0

$(LEROBOT_VENV)/.installed:
	$(LEROBOT_PY) -m venv $(LEROBOT_VENV)
	$(LEROBOT_VENV)/bin/python -m pip install -q --upgrade pip
	$(LEROBOT_VENV)/bin/python -m pip install -q "lerobot$(LEROBOT_EXTRAS)==$(LEROBOT_VERSION)"
	touch $@

interop: install $(LEROBOT_VENV)/.installed
	-HF_HUB_OFFLINE=1 HF_LEROBOT_HOME=$(abspath $(INTEROP_WORK))/hf $(LEROBOT_VENV)/bin/python interop/make_fixtures.py \
	  --out $(INTEROP_WORK)/fixtures $(if $(filter 1,$(INTEROP_UPDATE_FIXTURES)),--copy-to tests/fixtures/lerobot)
	HF_HUB_OFFLINE=1 HF_LEROBOT_HOME=$(abspath $(INTEROP_WORK))/hf $(LEROBOT_VENV)/bin/python interop/roundtrip.py \
	  --vla-align-bin $(BIN) --work $(INTEROP_WORK) --fixtures $(INTEROP_WORK)/fixtures

# Each target sets itself up on a fresh machine: it creates .venv when missing and installs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench experiments setup clean browser

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is installed first and pinned, so pip takes the CPU wheel on disk instead of a CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/crossrec demo --out runs/demo

# The web page's browser test drives Debian's headless Chromium (installed here when missing).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null; }; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -m "not gpu"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu and not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_speed.py
	$(BIN)/python benchmarks/bench_datasets.py
	$(BIN)/python benchmarks/bench_flagship.py
	$(BIN)/python benchmarks/bench_serving.py --users 50000

# The issue-4 experiments on ../shared/data (long: tens of minutes on 2 CPU cores).
experiments: $(STAMP)
	$(BIN)/crossrec experiment configs/experiments/anime-mal.yaml
	$(BIN)/crossrec experiment configs/experiments/amazon-arts-office.yaml

clean:
	rm -rf $(VENV) runs build src/*.egg-info

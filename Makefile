# Each target sets itself up on a fresh machine: it creates .venv when missing and installs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint warm bench experiments setup clean browser docs

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is installed first and pinned, so pip takes the CPU wheel on disk instead of a CUDA build.
# --no-compile: Python writes bytecode for the modules a run imports, on first import, instead of
# pip compiling every file of every package up front (`make setup` 70 s -> 30 s on 2 cores; the
# first run then pays for what it imports).
# Every target writes bytecode as it imports, even where the environment sets PYTHONDONTWRITEBYTECODE
# (some CI images do): otherwise each process of the test suite compiles torch's sources again
# (importing torch, polars and sentence-transformers took 15.7 s instead of 7.2 s on a fresh clone).
unexport PYTHONDONTWRITEBYTECODE

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --no-compile torch==2.13.0
	$(BIN)/pip install -q --no-compile -e '.[all,dev]'  # every extra (pyproject.toml) plus test, docs, lint, bench
	$(BIN)/pip install -q --no-compile --no-deps torchrec==1.8.0  # the sharding extra's engine (pyproject.toml says why --no-deps)
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/crossrec demo --out runs/demo

# The docs site (mkdocs.yml): reference and results pages are generated at build time.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict -d site

# ruff (lint + format check) on the code, mypy on src/crossrec ([tool.ruff], [tool.mypy] in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs && $(BIN)/ruff format --check src tests benchmarks docs && $(BIN)/mypy

# The web page's browser test drives Debian's headless Chromium (installed here when missing).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null; }; }

# Two pytest-xdist workers (one per core of the 2-core CI machine; `make test NPROC=4` elsewhere),
# each module kept on one worker so its trained fixtures are built once (tests/conftest.py).
NPROC ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(NPROC)

# lint (mypy: one core) runs beside warm (the other): warm fills the caches a fresh clone lacks
# (numba's compiled kernels, imported modules' bytecode) once, before the workers start.
test: $(STAMP) browser
	$(MAKE) --no-print-directory -j2 lint docs warm
	$(PYTEST) -m "not gpu"

warm: $(STAMP)
	$(BIN)/python -m tests.warm

test-fast: $(STAMP)
	$(PYTEST) -m "not gpu and not slow and not browser"

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

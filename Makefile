# Set-up and checks on a fresh machine. Everything lives in ./.venv; nothing is installed globally.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEFAULT_MODEL := models/default
MODEL ?= $(DEFAULT_MODEL)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-fast lint bench-train bench-serve clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# pyctcdecode pins numpy<2 but runs on numpy 2: installed without its pins, for the adapter tests
	$(BIN)/pip install --quiet --no-deps pyctcdecode==0.5.0 pygtrie==2.6.2
	# flashlight-text's lexicon decoder, for the flashlight adapter's tests (no dependencies)
	$(BIN)/pip install --quiet flashlight-text==0.0.7
	touch $@

run: $(BIN)/.installed  ## serve MODEL on http://$(HOST):$(PORT); the built-in one is trained first if needed
	@if [ ! -f "$(MODEL)/config.json" ]; then \
	  if [ "$(MODEL)" != "$(DEFAULT_MODEL)" ]; then \
	    echo "make run: $(MODEL) holds no model (no $(MODEL)/config.json); only the built-in $(DEFAULT_MODEL) is trained by make run: check MODEL=, or train yours first with nextword train --out $(MODEL)" >&2; \
	    exit 2; \
	  fi; \
	  $(BIN)/nextword train --preset default --out $(MODEL); \
	fi
	@echo "nextword commands: . $(VENV)/bin/activate (or run $(BIN)/nextword)"
	$(BIN)/nextword serve --model $(MODEL) --host $(HOST) --port $(PORT)

lint: $(BIN)/.installed  ## ruff (lint, formatting) and mypy --strict on model/ and app/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint  ## install into .venv, lint, run the test suite
	$(BIN)/pytest

test-fast: $(BIN)/.installed  ## the tests without real processes, sockets or a browser (no lint)
	$(BIN)/pytest -m "not slow"

bench-train: $(BIN)/.installed  ## training speed beside PyTorch (installs torch==2.13.0, CPU)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/train_speed.py

bench-serve: $(BIN)/.installed  ## serving latency and throughput beside PyTorch, for MODEL=runs/ptb
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/serve_speed.py --model $(MODEL)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

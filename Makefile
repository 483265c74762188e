# Set-up and checks on a fresh machine. Everything lives in ./.venv; nothing is installed globally.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?= models/default
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint bench-train bench-serve clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# pyctcdecode pins numpy<2 but runs on numpy 2: installed without its pins, for the adapter tests
	$(BIN)/pip install --quiet --no-deps pyctcdecode==0.5.0 pygtrie==2.6.2
	# flashlight-text's lexicon decoder, for the flashlight adapter's tests (no dependencies)
	$(BIN)/pip install --quiet flashlight-text==0.0.7
	touch $@

run: $(BIN)/.installed  ## serve the default model on http://$(HOST):$(PORT), training it first if needed
	test -f $(MODEL)/config.json || $(BIN)/nextword train --preset default --out $(MODEL)
	$(BIN)/nextword serve --model $(MODEL) --host $(HOST) --port $(PORT)

lint: $(BIN)/.installed  ## ruff (lint, formatting) and mypy --strict on model/ and app/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint  ## install into .venv, lint, run the test suite
	$(BIN)/pytest

bench-train: $(BIN)/.installed  ## training speed beside PyTorch (installs torch==2.13.0, CPU)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/train_speed.py

bench-serve: $(BIN)/.installed  ## serving latency and throughput beside PyTorch, for MODEL=runs/ptb
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/serve_speed.py --model $(MODEL)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

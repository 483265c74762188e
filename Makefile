# Set-up and checks on a fresh machine. Everything lives in ./.venv; nothing is installed globally.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test lint bench-train clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

lint: $(BIN)/.installed  ## ruff: lint and formatting
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint  ## install into .venv, lint, run the test suite
	$(BIN)/pytest

bench-train: $(BIN)/.installed  ## training speed beside PyTorch (installs torch==2.13.0, CPU)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/train_speed.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

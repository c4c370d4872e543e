# `make run` and `make test` work on a fresh clone with Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
CONFIG ?= etc/trio-broker.toml

.PHONY: run test lint typecheck unit clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "trio-broker needs Python 3.11 or newer (PYTHON=$(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[test]'
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/trio-broker serve --config $(CONFIG)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check broker plugins tests
	$(BIN)/ruff format --check broker plugins tests

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy --strict broker plugins

unit: $(VENV)/.installed-test
	$(BIN)/pytest

test: lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info

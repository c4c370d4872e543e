# `make run` and `make test` work on a fresh clone with Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
CONFIG ?= etc/trio-broker.toml

.PHONY: run test lint typecheck unit services node-packages bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "trio-broker needs Python 3.11 or newer (PYTHON=$(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# The install compiles the hot path (setup.py, mypyc; pyproject.toml lists the modules)
# where a C compiler is found, so it runs again when one of them changes. The speedups
# extra is wheels of compiled code (isal); where none fits, the broker runs without them.
# Either way the broker says in its log what it runs.
COMPILED_SOURCES := $(shell $(PYTHON) -c 'import tomllib; print(" ".join(m.replace(".", "/") + ".py" for m in tomllib.load(open("pyproject.toml", "rb"))["tool"]["trio-broker"]["compiled"]))' 2>/dev/null)

$(VENV)/.installed: pyproject.toml setup.py $(COMPILED_SOURCES) | $(BIN)/python
	$(PIP) install --only-binary isal -e '.[speedups]' || { echo "without the speedups"; $(PIP) install -e .; }
	@touch $@

$(VENV)/.installed-test: pyproject.toml setup.py $(COMPILED_SOURCES) | $(BIN)/python
	$(PIP) install --only-binary isal -e '.[test,speedups]' || { echo "without the speedups"; $(PIP) install -e '.[test]'; }
	@touch $@ $(VENV)/.installed

# The benchmark also needs Node.js, npm and taskset (util-linux); see docs/performance.md.
$(VENV)/.installed-bench: pyproject.toml setup.py $(COMPILED_SOURCES) | $(BIN)/python
	$(PIP) install --only-binary isal -e '.[bench,speedups]' || $(PIP) install -e '.[bench]'
	@touch $@ $(VENV)/.installed

bench/node_modules/.package-lock.json: bench/package.json bench/package-lock.json
	cd bench && npm ci --no-audit --no-fund --loglevel=error

run: $(VENV)/.installed
	$(BIN)/trio-broker serve --config $(CONFIG)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check broker plugins tests bench
	$(BIN)/ruff format --check broker plugins tests bench

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy --strict broker plugins

# The whole suite on the compiled build, then the fast tests again on the same modules
# as Python: the two cannot drift apart.
unit: $(VENV)/.installed-test services node-packages
	$(BIN)/pytest
	TRIO_BROKER_NO_SPEEDUPS=1 $(BIN)/pytest -m "not slow" -q

# What some tests need (Debian package:command). Installed where that is possible (root
# on Debian); elsewhere those tests skip, saying how to install them, unless
# TRIO_BROKER_REQUIRE_SERVICES=1 (.ci/run) makes them fail.
SERVICES := chromium:chromium curl:curl redis-server:redis-server nodejs:node npm:npm

services:
	@missing=""; for entry in $(SERVICES); do \
		command -v "$${entry#*:}" >/dev/null 2>&1 || missing="$$missing $${entry%%:*}"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian packages for the tests:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "not installed:$$missing (needs root on Debian: apt-get install$$missing); their tests skip"; \
	fi

# Node's ws (bench/package.json) for the interoperability tests, and the benchmark.
node-packages: services
	@if command -v npm >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory bench/node_modules/.package-lock.json; \
	else \
		echo "npm not installed: the tests with Node's ws skip"; \
	fi

test: lint typecheck unit

# BENCH_ARGS=--quick for a short run; the full one takes about 20 minutes.
bench: $(VENV)/.installed-bench bench/node_modules/.package-lock.json services
	$(BIN)/python bench/matching.py
	$(BIN)/python bench/recovery.py
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) bench/node_modules .mypy_cache .ruff_cache .pytest_cache *.egg-info

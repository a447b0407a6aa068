# The whole set-up on a fresh machine is one of these two commands: `make demo`, `make test`.
#
# PYTHON is the interpreter .venv is built with. Left unset, tools/find-python picks the
# first of python3, python3.13, python3.12, python3.11 that is 3.11 or newer and has venv.
PYTHON ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := test,lint,web,top,metrics
# what `make suite` runs: every tier but the wheel smoke tests, which `make smoke` runs
TESTS ?= --ignore=tests/smoke

.PHONY: soak demo test suite smoke lint test-fast bench bench-full clean
# `test` runs its parts one after the other, never side by side (timing-sensitive tests)
.NOTPARALLEL:

# Expanded only when .venv has to be created, so that `make clean` needs no Python. When
# there is no suitable interpreter, make stops with find-python's one line.
base_python = $(eval _found := $(shell tools/find-python $(PYTHON)))$(if $(filter 0,$(.SHELLSTATUS)),$(_found),$(error $(_found)))

$(BIN)/python:
	$(base_python) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --config-settings editable_mode=compat -e '.[$(EXTRAS)]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/circusd examples/example.ini

# The test suite, the smoke tests of the built wheel (installed in a fresh venv outside the
# tree), then the lint and type gates.
test: suite smoke lint

suite: $(STAMP)
	$(BIN)/python -m pytest -q $(TESTS)

smoke: $(STAMP)
	$(BIN)/python -m pytest -q tests/smoke

# both gates report, whichever fails
lint: $(STAMP)
	@status=0; \
	echo "$(BIN)/ruff check circus tests"; $(BIN)/ruff check circus tests || status=1; \
	echo "$(BIN)/mypy"; $(BIN)/mypy || status=1; \
	exit $$status

# the containment scenarios, longer: SOAK times the messages, kills and bursts of `make test`
SOAK ?= 20
soak: $(STAMP)
	CIRCUS_SOAK=$(SOAK) $(BIN)/python -m pytest -q --timeout=3600 \
		tests/e2e/test_contain_*.py

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick --json .bench-cache/quick.json

bench-full: $(STAMP)
	$(BIN)/python -m benchmarks.run --full --json .bench-cache/full.json --markdown BENCHMARKS.md

# N = 10,000 for ours, Circus 0.19 and the floor (about 15 minutes); it rewrites only its own
# section of BENCHMARKS.md, which bench-full keeps
.PHONY: bench-scale
bench-scale: $(STAMP)
	$(BIN)/python -m benchmarks.run --scale --json .bench-cache/scale.json --markdown BENCHMARKS.md

# the web console with 1,000 processes (needs /usr/bin/chromium); it rewrites only its own
# section of BENCHMARKS.md, which the other runs keep
.PHONY: bench-web
bench-web: $(STAMP)
	$(BIN)/python -m benchmarks.web --json .bench-cache/web.json --markdown BENCHMARKS.md

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist *.egg-info

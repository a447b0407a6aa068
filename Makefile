# The whole set-up on a fresh machine is one of these two commands.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench bench-full clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --config-settings editable_mode=compat -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/circusd examples/example.ini

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick --json .bench-cache/quick.json

bench-full: $(STAMP)
	$(BIN)/python -m benchmarks.run --full --json .bench-cache/full.json --markdown BENCHMARKS.md

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info

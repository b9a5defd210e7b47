# mersemi: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A test run gets its own Prefect home (embedded server, SQLite) and sends no telemetry.
TEST_ENV := PREFECT_HOME=$(CURDIR)/.prefect-home/test DO_NOT_TRACK=1 \
	PREFECT_SERVER_ANALYTICS_ENABLED=false
# Test processes side by side (pytest-xdist; each has its own Prefect home under the one above).
# `auto`: one per core, at most 4. TEST_WORKERS=0 runs the suite in this one process.
TEST_WORKERS ?= auto

.PHONY: venv demo test lint clean

$(BIN)/mersemi: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/mersemi

demo: venv
	rm -rf demo-corpus demo-workspace
	mkdir -p .prefect-home/demo
	PREFECT_HOME=$(CURDIR)/.prefect-home/demo DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false \
		$(BIN)/mersemi demo --out demo-corpus --workspace demo-workspace

test: venv
	$(BIN)/ruff check .
	mkdir -p .prefect-home/test
	$(TEST_ENV) $(BIN)/python -m pytest -n $(TEST_WORKERS) --maxprocesses 4

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .prefect-home demo-corpus demo-workspace .pytest_cache

# mersemi: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A test run gets its own Prefect home (embedded server, SQLite) and sends no telemetry.
TEST_ENV := PREFECT_HOME=$(CURDIR)/.prefect-home/test DO_NOT_TRACK=1 \
	PREFECT_SERVER_ANALYTICS_ENABLED=false

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
	$(TEST_ENV) $(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .prefect-home demo-corpus demo-workspace .pytest_cache

# Two commands matter: `make run` starts the example app on SQLite, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[postgresql,redis,yaml,metrics,test,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/flask --app example_app:create_app run --port $${PORT:-5000}

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests example_app
	$(BIN)/ruff format --check src tests example_app

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache

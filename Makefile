# Two commands matter: `make run` starts the example app on SQLite, `make test` runs every check
# (ruff, the import contracts of pyproject.toml, mypy, pytest).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[postgresql,redis,yaml,metrics,babel,mailman,flask-mail,test,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/flask --app example_app:create_app run --port $${PORT:-5000}

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests example_app bench
	$(BIN)/ruff format --check src tests example_app bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	$(BIN)/pip install --quiet -r bench/requirements.txt
	touch $(BENCH_STAMP)

# Load tests on loopback (needs wrk, redis-server, the PostgreSQL binaries): docs/performance.md.
# About 20 minutes; `make bench BENCH_ARGS=--quick` for a trial.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache

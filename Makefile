# gengate: `make run` serves the whole system; `make test` installs and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed

.PHONY: run install test test-sqlite test-postgres lint format bench profile worker clean cluster \
	system-packages

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		(echo "gengate needs Python 3.11 or newer" >&2; exit 1)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(RUNTIME_STAMP)

install: $(RUNTIME_STAMP)

run: $(RUNTIME_STAMP)
	$(BIN)/gengate serve

worker: $(RUNTIME_STAMP)
	$(BIN)/gengate worker

# HAProxy, the load balancer of `make cluster` (and of its test), and Chromium, the browser
# of the console tests (Playwright drives the system's, it downloads none), from the
# system's packages.
system-packages:
	@command -v haproxy >/dev/null 2>&1 || apt-get install -y -q haproxy >/dev/null || \
		{ apt-get update -q >/dev/null && apt-get install -y -q haproxy >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || apt-get install -y -q chromium >/dev/null || \
		{ apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }

# Two API processes and two workers behind HAProxy, on the PostgreSQL and Redis named by
# GENGATE_DATABASE_URL and GENGATE_REDIS_URL (see deploy/cluster.py). The dev extra brings
# the S3 server (moto) it starts when no bucket is configured.
cluster: $(DEV_STAMP) system-packages
	$(BIN)/python -m deploy.cluster

# On SQLite by default; on PostgreSQL + Redis when GENGATE_TEST_DATABASE_URL and
# GENGATE_TEST_REDIS_URL are set.
test: $(DEV_STAMP) system-packages
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app mcp_server

format: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(DEV_STAMP)
	$(BIN)/python -m bench

# py-spy profiles of createTask, recordInfo (one task; a stream), and the MCP generate_image and
# get_generation_status tools under wrk load: bench/results/profiles/*.speedscope.json.
profile: $(DEV_STAMP)
	$(BIN)/python -m bench.profile $(PROFILE_ARGS)

.PHONY: gengate docs

# The gengate command without activating the venv: make gengate ARGS="keys list".
gengate: $(RUNTIME_STAMP)
	$(BIN)/gengate $(ARGS)

# Regenerate README's configuration table from app/core/config.py.
docs: $(RUNTIME_STAMP)
	$(BIN)/python -m app.core.settings_doc

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

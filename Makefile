# bulkio - the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STATE ?= $(or $(LOCAL_STATE_DIR),.state)
FUNCTION ?= ApiFunction
EVENT ?= tests/events/health.json
ROWS ?= 10000
SEED ?= 42
SCOPES ?= imports:write imports:read exports:read
SUBJECT ?= local-user
TTL ?= 3600

.PHONY: help system-packages venv run reset token test test-unit lint invoke migrate data bench-import bench-export bench-cli chaos deploy

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt constraints.txt layers/dependencies/requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

system-packages: ## apt-install what this machine lacks (PostgreSQL, venv, Pushgateway, Prometheus); root or sudo
	bash infra/install-system-packages.sh

venv: $(STAMP) ## create the virtualenv with the pinned dependencies

run: $(STAMP) ## start the embedded local stack (PostgreSQL, AWS endpoint on :4566, API on :3000)
	$(PY) -m infra.local.run --state-dir $(STATE)

reset: $(STAMP) ## wipe the local stack's state folder (database, objects, queues)
	$(PY) -m infra.local.reset --state-dir $(STATE)

token: $(STAMP) ## print a bearer token for the local stack (SCOPES="imports:write imports:read exports:read" SUBJECT= TTL=)
	@$(PY) -m infra.tools.token --scopes "$(SCOPES)" --subject "$(SUBJECT)" --ttl $(TTL) --state-dir $(STATE)

test: $(STAMP) ## run the whole test suite (starts its own PostgreSQL and local AWS endpoint)
	$(PY) -m pytest

test-unit: $(STAMP) ## run the unit tests only (no services)
	$(PY) -m pytest tests/unit

lint: $(STAMP) ## ruff and mypy (its settings are in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

invoke: $(STAMP) ## run one function once with an event file: make invoke FUNCTION=ApiFunction EVENT=tests/events/health.json
	$(PY) -m infra.local.invoke $(FUNCTION) $(EVENT)

migrate: $(STAMP) ## apply the SQL migrations to DATABASE_URL
	$(PY) -m infra.migrate

data: $(STAMP) ## generate sample files in the reference shape: make data ROWS=10000 SEED=42
	$(PY) -m infra.tools.datagen all --rows $(ROWS) --seed $(SEED) --out-dir sample-data

bench-import: $(STAMP) ## import ROWS users and articles (default 1,000,000), RUNS times (3); table + bench-results/import.json; BENCH_ARGS=--skip-100k-memory-run
	$(PY) -m infra.bench.import_bench --rows $(if $(filter command line,$(origin ROWS)),$(ROWS),1000000) --runs $(if $(filter command line,$(origin RUNS)),$(RUNS),3) $(BENCH_ARGS)

bench-cli: $(STAMP) ## the bulkio command's peak memory importing and exporting 100,000 and 1,000,000 users; bench-results/cli.json
	$(PY) -m infra.bench.cli_bench $(BENCH_ARGS)

bench-export: $(STAMP) ## stream ROWS users and articles (default 1,000,000 each) vs a bare COPY, RUNS times (3); table + bench-results/export.json
	$(PY) -m infra.bench.export_bench --rows $(if $(filter command line,$(origin ROWS)),$(ROWS),1000000) --runs $(if $(filter command line,$(origin RUNS)),$(RUNS),3) $(BENCH_ARGS)

chaos: $(STAMP) ## fault drills (issue 8) on fresh stacks vs a clean run: ROWS (default 200,000), SCENARIOS=a,c,e, CHAOS_ARGS=--keep-state
	$(PY) -m infra.chaos --rows $(if $(filter command line,$(origin ROWS)),$(ROWS),200000) $(if $(SCENARIOS),--scenarios $(SCENARIOS)) $(CHAOS_ARGS)

deploy: ## build and deploy to AWS with SAM (needs the sam CLI and AWS credentials)
	sam build && sam deploy

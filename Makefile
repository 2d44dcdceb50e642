# Atelier — the commands a developer needs. Every target installs what it needs first.
# uv is the only tool assumed; `make` installs it with pip when it is missing.

UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif

.PHONY: run cluster test test-fast chaos chaos-cluster lint fmt typecheck contracts docs bench deps help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps:  ## install uv (if missing) and every workspace package into .venv
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --all-packages --quiet

run: deps  ## start the whole system locally (NATS, object storage, every service, offline provider)
	$(UV) run atelier-dev run

cluster: deps  ## 3-node NATS cluster, two processes of every service, on PostgreSQL (DATABASE_URL=...)
	$(UV) run atelier-dev cluster

# Two parts. First every test but those that watch timing under load, on two processes (each
# test file on one; they start their own servers on free ports). Then the chaos and other
# timing tests (markers chaos, serial), one at a time on a machine nothing else loads.
# Both parts always run; the target fails if either did.
test: deps lint  ## the lint below, then every test: unit, integration (real nats-server + SeaweedFS) and end-to-end
	@status=0; \
	$(UV) run pytest -n 2 --dist loadfile -m "not chaos and not serial" || status=1; \
	$(UV) run pytest -m "chaos or serial" || status=1; \
	exit $$status

test-fast: deps  ## unit tests only
	$(UV) run pytest -m "not integration and not e2e"

chaos: deps  ## crash every process in turn while 200 jobs run; prints jobs, kills, lost, duplicated
	ATELIER_CHAOS_JOBS=200 $(UV) run pytest -s -m chaos tests/reliability

chaos-cluster: deps  ## 500 jobs on the cluster (make cluster's shape) while a NATS leader, replicas and storage fail; needs ATELIER_TEST_DATABASE_URL or DATABASE_URL (PostgreSQL)
	ATELIER_CHAOS_CLUSTER_JOBS=500 $(UV) run pytest -s tests/reliability/test_chaos_cluster.py

lint: deps  ## ruff lint and format check, the dependency direction (import-linter), dead code (vulture), code written twice (pylint)
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run lint-imports
	$(UV) run python scripts/dead_code.py
	$(UV) run pylint services/*/src/atelier_* libs/*/src/atelier_*

fmt: deps  ## format the code
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

typecheck: deps  ## mypy over libs and services
	$(UV) run mypy libs/*/src services/*/src

# Benchmarks are never timed assertions in tests: they measure and write docs/performance.md.
bench: deps  ## benchmarks on the real stack → bench/results/, docs/performance.md (BENCH_ARGS=--quick)
	$(UV) run python -m bench $(BENCH_ARGS)

contracts: deps  ## write the JSON Schema of every message to docs/contracts/
	$(UV) run python -m atelier_contracts.export docs/contracts

docs: deps  ## regenerate docs/api/ (AsyncAPI per service, OpenAPI of gateway and profiles)
	$(UV) run python scripts/gen_api_docs.py

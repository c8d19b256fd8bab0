# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEV_MONGO_PORT ?= 27018
DEV_PORT ?= 8080

.PHONY: help venv system-deps lint format test run seed bench soak overload chaos clean

help:
	@echo "make run    - SecantusDB under var/, demo data, service on http://127.0.0.1:$(DEV_PORT) (reloads)"
	@echo "make test   - lint (ruff, mypy, hadolint) then the test suite against real servers"
	@echo "make lint   - static checks only"
	@echo "make bench  - benchmark against a bare aiohttp baseline"
	@echo "make chaos  - minutes of retried writes while SecantusDB and Redis fail (README: Faults survived)"

# The venv is (re)built when the package metadata changes.
$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# System packages the suite drives (redis-server, ...): installed when missing and run as root.
system-deps:
	@.ci/install-system-packages .ci/system-packages

test: system-deps lint
	$(BIN)/python -m pytest

# Ctrl-C (or any exit) stops SecantusDB too: the trap kills the process group member we started.
run: venv
	@mkdir -p var/mongo
	@set -euo pipefail; \
	$(BIN)/secantusd-py --host 127.0.0.1 --port $(DEV_MONGO_PORT) --storage-path var/mongo \
	    --log-level WARNING >> var/secantusd.log 2>&1 & mongo_pid=$$!; \
	trap 'kill $$mongo_pid 2>/dev/null; wait $$mongo_pid 2>/dev/null || true' EXIT INT TERM; \
	$(BIN)/python -c "import sys; from tests.servers import wait_for_port; wait_for_port($(DEV_MONGO_PORT))"; \
	SERVICE_ENV=development $(BIN)/python -m service seed --if-empty --users 100 --orders-per-user 5; \
	echo "user-service: http://127.0.0.1:$(DEV_PORT)  (try /users/$$($(BIN)/python -c 'from service.seed import seed_id; print(seed_id("user", 0))'))"; \
	SERVICE_ENV=development $(BIN)/adev runserver service/app.py --host 127.0.0.1 --port $(DEV_PORT)

# Not part of `make test`. bench: about 3 minutes (`make bench ARGS="--workers 1"`);
# soak: 5 minutes of mixed load (`ARGS="--minutes 1"`); overload: about a minute.
bench soak overload: venv
	@command -v wrk >/dev/null || { echo "$@: wrk is missing: sudo apt-get install wrk"; exit 2; }
	$(BIN)/python -m $(if $(filter bench,$@),bench,bench.$@) $(ARGS)

# Not part of `make test` (tests/test_faults.py runs one short cycle): 2 minutes by default,
# `make chaos ARGS="--minutes 5 --clients 8"`; `ARGS=--update-readme` rewrites its table.
chaos: venv
	$(BIN)/python -m bench.chaos $(ARGS)

clean:
	rm -rf var build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache

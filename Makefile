# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.13
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEV_MONGO_PORT ?= 27018
DEV_PORT ?= 8080

.PHONY: help venv lock system-deps lint format test image-test run seed bench soak overload chaos fleet clean

help:
	@echo "make run    - SecantusDB under var/, demo data, service on http://127.0.0.1:$(DEV_PORT) (reloads)"
	@echo "make test   - lint (ruff, mypy, hadolint) then the test suite against real servers"
	@echo "make lint   - static checks only"
	@echo "make bench  - 3 rounds beside bare aiohttp, the plain app, the driver floors (bench/README.md)"
	@echo "make image-test - build the Dockerfile with buildah, run it with podman as the pod does"
	@echo "make lock   - re-pin requirements*.lock (exact versions, hashes) from setup.cfg's ranges"
	@echo "make fleet  - three instances behind HAProxy, rolled twice under load (minutes)"
	@echo "make chaos  - minutes of retried writes while SecantusDB and Redis fail (README: Faults survived)"

# The venv holds exactly the locked versions (hashes checked), then the service itself;
# setup.cfg keeps the ranges, and a range the lock does not satisfy stops here.
# A venv of another Python than .python-version's is made anew.
$(STAMP): setup.cfg pyproject.toml requirements-dev.lock .python-version
	@$(BIN)/python -c 'import sys; v = open(".python-version").read().split(); \
	    sys.exit("%d.%d" % sys.version_info[:2] != v[0])' 2>/dev/null || \
	    { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python .ci/check_lock.py
	@touch $(STAMP)

venv: $(STAMP)

# The public index only (this machine's pip.conf and local wheel dirs would leak into the
# hashes). The runtime lock is the dev lock's versions, restricted to install_requires.
LOCK_PIP := env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null
LOCK_FLAGS := --quiet --generate-hashes --allow-unsafe --strip-extras --upgrade
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/pip-compile || $(BIN)/python -m pip install --quiet 'pip-tools>=7.4,<8'
	$(LOCK_PIP) $(BIN)/pip-compile $(LOCK_FLAGS) --extra dev -o requirements-dev.lock setup.cfg
	$(LOCK_PIP) $(BIN)/pip-compile $(LOCK_FLAGS) -c requirements-dev.lock -o requirements.lock setup.cfg

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python .ci/check_private_api.py service
	$(BIN)/hadolint Dockerfile

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# System packages the suite drives (redis-server, ...): installed when missing and run as root.
system-deps:
	@.ci/install-system-packages .ci/system-packages

# The load tools each bench drives, installed the same way: only that target's.
BENCH_DEPS = .ci/install-system-packages .ci/bench-packages

test: system-deps lint
	$(BIN)/python -m pytest

# Not part of `make test` (.ci/run runs it after): builds the Dockerfile with buildah and runs
# the image with podman under the pod's security context. Root, and a few minutes cold.
image-test: venv
	.ci/image-test

# Ctrl-C (or any exit) stops SecantusDB too: the trap kills the process group member we started.
run: venv
	@mkdir -p var/mongo
	@set -euo pipefail; \
	$(BIN)/secantusd-py --host 127.0.0.1 --port $(DEV_MONGO_PORT) --storage-path var/mongo \
	    --log-level WARNING >> var/secantusd.log 2>&1 & mongo_pid=$$!; \
	trap 'kill $$mongo_pid 2>/dev/null; wait $$mongo_pid 2>/dev/null || true' EXIT INT TERM; \
	$(BIN)/python -c "import sys; from tests.helpers.servers import wait_for_port; wait_for_port($(DEV_MONGO_PORT))"; \
	SERVICE_ENV=development $(BIN)/python -m service seed --if-empty --users 100 --orders-per-user 5; \
	echo "user-service: http://127.0.0.1:$(DEV_PORT)  (try /users/$$($(BIN)/python -c 'from service.seed import seed_id; print(seed_id("user", 0))'))"; \
	SERVICE_ENV=development $(BIN)/adev runserver service/app.py --host 127.0.0.1 --port $(DEV_PORT)

# Not part of `make test`. bench: about 9 minutes, 3 rounds (`ARGS="--quick"`: one short round;
# `ARGS="--before PATH"`: an earlier checkout's service in the same rounds, see bench/README.md);
# soak: 5 minutes of mixed load (`ARGS="--minutes 1"`); overload: about a minute.
bench soak overload: venv
	@$(BENCH_DEPS) wrk redis-server
	$(BIN)/python -m $(if $(filter bench,$@),bench,bench.$@) $(ARGS)

# Not part of `make test` (tests/test_faults.py runs one short cycle): 2 minutes by default,
# `make chaos ARGS="--minutes 5 --clients 8"`; `ARGS=--update-readme` rewrites its table;
# `ARGS=--sentinel`: the cache through Sentinel, failed over and its new primary killed.
chaos: venv
	@$(BENCH_DEPS) redis-server
	$(BIN)/python -m bench.chaos $(ARGS)

# Not part of `make test` (tests/test_fleet.py runs one roll): three gunicorn instances behind
# HAProxy with Prometheus, two rolling restarts under load (`ARGS="--rounds 3"`); a few minutes.
# `ARGS=--sentinel`: the cache through Sentinel.
fleet: venv
	@$(BENCH_DEPS) haproxy prometheus redis-server
	$(BIN)/python -m bench.fleet $(ARGS)

clean:
	rm -rf var build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache

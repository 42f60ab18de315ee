# The two commands of the contract: `make run` and `make test`. Nothing else is needed on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
COSTS_ARGS ?=
JS_SDK := tests/qstash_dev/js

.PHONY: run test retire-legacy-check lint typecheck reliability bench clean postgres chromium js-sdk haproxy costs lock

# Installs exactly the locked versions, each checked against its hash (docs/dependencies.md).
$(STAMP): requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements-dev.lock
	touch $(STAMP)

## lock: re-resolve requirements.txt (+ requirements-dev.txt) into the hashed lock files
LOCK_FLAGS := --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
              --no-emit-find-links --no-emit-trusted-host
lock: $(STAMP)
	$(VENV)/bin/pip-compile $(LOCK_FLAGS) $(LOCK_ARGS) -o requirements.lock requirements.txt
	$(VENV)/bin/pip-compile $(LOCK_FLAGS) $(LOCK_ARGS) -c requirements.lock \
	    -o requirements-dev.lock requirements.txt requirements-dev.txt

## run: the whole local stack in the foreground (app :5000, QStash :8080, AimHarder sandbox, cron pinger)
run: $(STAMP)
	$(PY) -m flask --app wsgi db upgrade
	$(PY) scripts/devstack.py

## postgres: make sure the local PostgreSQL answers (the suite runs DB tests on it too)
postgres:
	@scripts/ensure-postgres.sh

## chromium: make sure headless Chromium is installed (the parity page's browser test)
chromium:
	@scripts/ensure-chromium.sh

## haproxy: make sure HAProxy is installed (the scale-out benchmark and its smoke test)
haproxy:
	@scripts/ensure-haproxy.sh

## js-sdk: install the official JS SDK pinned in tests/qstash_dev/js/package-lock.json (npm ci)
js-sdk: $(JS_SDK)/node_modules/.installed

$(JS_SDK)/node_modules/.installed: $(JS_SDK)/package.json $(JS_SDK)/package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  echo "node and npm are needed for the JS SDK test (tests/qstash_dev): install Node.js 18+" >&2; \
	  exit 1; }
	cd $(JS_SDK) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

## test: the same set-up, then the whole suite; non-zero on any failure
test: $(STAMP) postgres chromium js-sdk haproxy
	$(PY) -m flask --app wsgi db upgrade
	$(PY) -m pytest -m "not reliability" $(PYTEST_ARGS)

## retire-legacy-check: a copy of the tree without legacy_cron/ (and its one line in create_app)
## still passes the QStash-path, migration, parity and reliability tests (CI runs it)
retire-legacy-check: $(STAMP) postgres
	$(PY) scripts/retire_legacy_check.py $(PYTEST_ARGS)

## reliability: the large fault scenarios (docs/reliability.md); not part of `make test`
reliability: $(STAMP) postgres
	$(PY) -m flask --app wsgi db upgrade
	$(PY) -m pytest -m reliability tests/reliability tests/legacy_cron/reliability $(PYTEST_ARGS)

## costs: measure the capacity model's unit costs on this code -> bench/results/costs.json (~3 min; run alone)
costs: $(STAMP) postgres
	$(PY) bench/costs.py $(COSTS_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

clean:
	rm -rf $(VENV) instance/*.db .pytest_cache .mypy_cache .ruff_cache $(JS_SDK)/node_modules

# Two commands a newcomer needs: `make run` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000

# Tests run on PostgreSQL and Redis; override with the environment.
export TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/dosportal
export TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test lint format bench clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed $@

## Serve the portal on http://127.0.0.1:8000 with the embedded defaults (SQLite, in-process limits, dev model).
run: $(VENV)/.installed
	$(PY) manage.py migrate --noinput
	$(VENV)/bin/uvicorn dosportal.asgi:application --host $(HOST) --port $(PORT) --reload --reload-include '*.html' --reload-include '*.css'

## Install what the tests need and run the whole suite on PostgreSQL and Redis.
test: $(VENV)/.dev-installed
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -q chromium >/dev/null; } || echo "chromium missing: browser tests will fail (apt-get install chromium)"
	DATABASE_URL=$${DATABASE_URL:-$$TEST_DATABASE_URL} REDIS_URL=$${REDIS_URL:-$$TEST_REDIS_URL} $(PY) -m pytest

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev-installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## Benchmarks: ratios against a baseline measured in the same run.
bench: $(VENV)/.dev-installed
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -q wrk >/dev/null; } || echo "wrk missing: apt-get install wrk"
	$(PY) bench/gateway.py
	$(PY) bench/scaling.py
	$(PY) bench/steps.py
	$(PY) bench/ratelimit.py
	$(PY) bench/metrics.py

clean:
	rm -rf $(VENV) staticfiles db.sqlite3 test-artifacts

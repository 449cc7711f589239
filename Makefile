# Two commands for a fresh machine: `make run` and `make test`. Only python3 and make needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# several workers share counters and cache only through Redis (gunicorn.conf.py refuses otherwise)
WORKERS ?= $(if $(REDIS_URL),2,1)
FAKE_UPSTREAM_PORT ?= 9100

.PHONY: run serve test test-full lint format bench bench-stream migrate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt constraints.txt $(VENV)/.runtime
	$(BIN)/pip install --quiet -r requirements-dev.txt -c constraints.txt
	touch $@

migrate: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --noinput

## run: the embedded default (SQLite, in-process stores), a fake upstream, a demo key
run: $(VENV)/.runtime
	PORT=$(PORT) FAKE_UPSTREAM_PORT=$(FAKE_UPSTREAM_PORT) scripts/run.sh

## serve: the production shape (gunicorn + uvicorn workers); configure with the environment
serve: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/gunicorn gateway_project.asgi:application -k gateway_project.workers.UvicornWorker \
		--workers $(WORKERS) --bind 0.0.0.0:$(PORT) --graceful-timeout 30 --keep-alive 75

## test: the suite on SQLite and in-process stores (first: Chromium and Node.js, installed
## with apt-get as root; otherwise one line names what to install; SYSTEM_PACKAGES=skip skips the check)
test: $(VENV)/.dev
	@[ "$(SYSTEM_PACKAGES)" = skip ] || $(BIN)/python -m tests.system_packages
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## test-full: the same suite on PostgreSQL and Redis started in a temporary directory
test-full: $(VENV)/.dev
	@[ "$(SYSTEM_PACKAGES)" = skip ] || $(BIN)/python -m tests.system_packages
	RELAY_FUZZ_EXAMPLES=10000 scripts/with-services.sh $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.dev
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## bench-stream: 10,000 concurrent slow streams through the gateway and the passthrough
## (results/stream.json; the kernel limits it needs are checked, and raised when root)
bench-stream: $(VENV)/.dev
	$(BIN)/python bench/run.py --stream-only --streams 10000 $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var

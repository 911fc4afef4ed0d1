# journey-streams: the two set-up commands are `make demo` and `make test` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
STACK := deploy/stack.sh
# Seconds of generated traffic the demo sends through Kafka into the worker.
DEMO_SECONDS ?= 60
DEMO_RATE ?= 2000
# The suite's 25 slowest tests are listed at the end (it must stay under 20 minutes).
PYTEST_ARGS ?= --durations=25
# The broker's extra SASL_SSL listener (deploy/stack.sh, KAFKA_SECURE): the Kafka security
# tests need it, so `make up` and `make test` start it; KAFKA_SECURE=0 leaves it out.
KAFKA_SECURE ?= 1
export KAFKA_SECURE
# ClickHouse's TLS native port and password user (deploy/stack.sh, CLICKHOUSE_SECURE): the
# ClickHouse TLS tests need them, so `make up` and `make test` start them; 0 leaves them out.
CLICKHOUSE_SECURE ?= 1
export CLICKHOUSE_SECURE

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: help venv up down status lint test test-deps demo clean

help:
	@echo "make demo    run generated traffic through Kafka, the worker and ClickHouse; print live figures"
	@echo "make test    install, start the services, run lint + type checks + the whole suite, stop"
	@echo "make up | down | status    the local stack (Kafka, ClickHouse server, Prometheus, Alertmanager)"
	@echo "make venv    create .venv and install journey-streams with its test extra"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "journey-streams needs Python >= 3.11; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	@# -qq: setuptools warns at every editable install ("be careful with folders ... with the
	@# same name as your package"), in each of its editable modes; errors still show.
	$(PY) -m pip install -qq -e '.[test]'
	@touch $@

venv: $(STAMP)

# Debian packages the tests need beyond the services (stack.sh installs those): Chromium
# renders the journey report in headless mode.
test-deps:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian package chromium (report rendering tests)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium >/dev/null; }

up: venv
	$(STACK) up

down:
	$(STACK) down

status:
	$(STACK) status

lint: venv
	$(VENV)/bin/ruff check streams tests deploy benchmarks
	$(VENV)/bin/ruff format --check streams tests deploy benchmarks
	$(VENV)/bin/mypy

# Starts the stack, runs everything, always stops the stack, exits with the suite's status.
test: venv test-deps
	@status=0; lint=0; \
	$(STACK) up || status=$$?; \
	if [ $$status -eq 0 ]; then \
		$(MAKE) --no-print-directory lint || lint=$$?; \
		$(VENV)/bin/pytest $(PYTEST_ARGS) || status=$$?; \
		if [ $$status -eq 0 ] && [ $$lint -ne 0 ]; then echo "make test: lint or type check failed"; status=$$lint; fi; \
	fi; \
	$(STACK) down || true; \
	exit $$status

demo: venv
	KAFKA_SECURE=0 STACK_SERVICES="kafka prometheus" $(STACK) up
	$(VENV)/bin/journey demo --seconds $(DEMO_SECONDS) --rate $(DEMO_RATE)

clean: down
	rm -rf .stack .journey

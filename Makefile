# The two commands of the README: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PACKAGES := gateway middleware flags config
# The folders install as asgi_gateway.<folder> through the editable install's import hook, which mypy cannot
# follow: it reads them through these links instead (mypy_path in pyproject.toml). Links to whole folders, so a
# new module is seen without reinstalling.
TYPING := build/typing/asgi_gateway
TYPING_LINKS := $(addprefix $(TYPING)/,$(PACKAGES))

.PHONY: run test lint typecheck unit test-tools schema bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

$(TYPING_LINKS):
	mkdir -p $(TYPING)
	ln -sfn ../../../$(@F) $@

run: $(VENV)/.installed-run
	$(BIN)/python examples/demo.py

lint: $(VENV)/.installed-test
	$(BIN)/lint-imports
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile

typecheck: $(VENV)/.installed-test $(TYPING_LINKS)
	$(BIN)/mypy $(TYPING) tests examples

# The dashboard's browser test needs Chromium, deploy/'s alert rules promtool: Debian's packages, when missing.
test-tools:
	@command -v chromium >/dev/null && command -v promtool >/dev/null || { \
		sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$sudo apt-get install -y --no-install-recommends chromium prometheus \
		|| { $$sudo apt-get update && $$sudo apt-get install -y --no-install-recommends chromium prometheus; }; }

unit: $(VENV)/.installed-test $(TYPING_LINKS) test-tools
	$(BIN)/python -m pytest --cov --cov-report=term-missing:skip-covered

test: lint typecheck unit

# The route files' JSON Schema, generated from config/routes.py; a test fails while the committed one is stale.
schema: $(VENV)/.installed-run
	$(BIN)/python -m asgi_gateway.gateway schema > config/routes.schema.json

# `make bench` (about 11 minutes) or `make bench-quick` (about 2); `make bench ARGS="--rounds 5"` passes options to
# bench/run.py. nginx and wrk come from Debian's packages when missing; results land in bench/results/ and BENCHMARKS.md.
$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@ $(VENV)/.installed-run

bench: $(VENV)/.installed-bench
	@PATH="$$PATH:/usr/sbin" command -v nginx >/dev/null && command -v wrk >/dev/null || { \
		sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$sudo apt-get install -y --no-install-recommends nginx-light wrk \
		|| { $$sudo apt-get update && $$sudo apt-get install -y --no-install-recommends nginx-light wrk; }; }
	PATH="$$PATH:/usr/sbin" $(BIN)/python bench/run.py $(ARGS)
	$(BIN)/python bench/websocket_check.py  # WebSocket messages/s vs direct, RSS with 1,000 idle sessions
	$(BIN)/python bench/micro_edge.py  # CPU per request of JWT-verified and Redis rate-limited misses vs a plain miss

bench-quick: override ARGS += --quick  # kept when ARGS is also given on the command line
bench-quick: bench

clean:
	rm -rf $(VENV) $(TYPING) .mypy_cache .ruff_cache .pytest_cache .coverage tests/artifacts

# Everything CI and a new user need, starting from nothing but python3 and the package
# registries: each target creates .venv if missing and (re)installs the project only when
# pyproject.toml is newer than the stamp .venv/.installed.

PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= dev,chart
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# The suite runs in parallel processes (pytest-xdist): most of its time is spent waiting on
# workers, emulators and subprocesses, not computing, so 4 processes on 2 cores pay off.
# Every test has its own Redis key prefix, database file or PostgreSQL database and ports.
TEST_WORKERS ?= 4
# Benchmark entry points: the scripts in bench/ that run as programs.
BENCH_SCRIPTS ?= $(shell grep -l '__name__ == "__main__"' bench/*.py 2>/dev/null)

.PHONY: install test demo lint samples bench clean-venv browser redis-ha

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

# pytest exits 5 when it collects no tests; an empty selection is not a failure here.
# The import layers (pyproject.toml, [tool.importlinter]) are checked first.
# The tests start hundreds of `pipeline` processes: the checkout is byte-compiled first, so
# none of them compiles the project again (an environment with PYTHONDONTWRITEBYTECODE set
# would otherwise have every process compile it from source).
test: $(STAMP) browser redis-ha
	$(BIN)/lint-imports
	$(BIN)/python -m compileall -q pipeline tasks tests >/dev/null
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS); \
	status=$$?; if [ $$status -eq 5 ]; then exit 0; fi; exit $$status

# The dashboard's browser test drives Debian's chromium. Installed here, announced, as root
# with apt-get; anywhere else the test skips and names this target.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "make: installing Debian's chromium for the dashboard's browser test (apt-get)"; \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
			echo "make: could not install chromium; the browser test will skip"; \
		else echo "make: no /usr/bin/chromium and no root apt-get; the browser test will skip"; fi; \
	fi

# The Sentinel and Cluster scenarios (tests/scenarios/) start real redis-server processes (a
# sentinel is `redis-server --sentinel`) and redis-cli. Installed here when missing, as root
# with apt-get (Debian: redis-server, redis-tools); anywhere else those tests skip and name
# this target.
redis-ha:
	@if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "make: installing redis-server and redis-tools for the HA scenarios (apt-get)"; \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null || \
			echo "make: could not install them; the Sentinel/Cluster scenarios use what exists or skip"; \
		else echo "make: redis-server/redis-cli missing and no root apt-get; the HA scenarios may skip"; fi; \
	fi

# The commands the demo's hints name (`pipeline status`, `pipeline redis stop`) are in the venv.
demo: $(STAMP)
	$(BIN)/pipeline run examples/docs/*.pdf
	@echo "make: the pipeline command is in $(BIN): \`. $(BIN)/activate\` first to type \`pipeline ...\` as above"

lint: $(STAMP)
	$(BIN)/ruff check pipeline tasks tests examples bench
	$(BIN)/mypy pipeline tasks
	$(BIN)/lint-imports

samples: $(STAMP)
	$(BIN)/python examples/make_samples.py
	$(BIN)/python tests/fixtures/make_fixtures.py

bench: $(STAMP)
	@test -n "$(BENCH_SCRIPTS)" || { echo "no benchmark scripts in bench/" >&2; exit 1; }
	@for script in $(BENCH_SCRIPTS); do \
		echo "== $$script"; $(BIN)/python $$script || exit $$?; \
	done

clean-venv:
	rm -rf $(VENV)

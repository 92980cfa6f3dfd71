# loadtester: two commands take a fresh machine (Python 3.11 + gcc) to working:
#   make demo    build, start the local target, blast it, store and show the run
#   make test    build, run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
ENGINE_SOURCES := $(wildcard engine/*.pyx engine/*.pxd engine/vendor/llhttp/*.h)
ENGINE_SO = $(wildcard loadtester/_engine*.so)
# Debian packages the test suite needs; installed when missing (CI runs as root).
TEST_DEB_PACKAGES := chromium chromium-driver poppler-utils fonts-dejavu-core buildah debootstrap
DEMO_PORT ?= 18089
BENCH_ARGS ?=

.PHONY: help demo test lint bench bench-peers build debug clean system-deps

help:  ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): setup.py pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check "setuptools>=68" wheel "Cython>=3.0"
	$(BIN)/pip install -q --disable-pip-version-check --no-build-isolation -e '.[test]'
	touch $@

loadtester/.built: $(INSTALLED) $(ENGINE_SOURCES) setup.py
	$(BIN)/python setup.py -q build_ext --inplace
	touch $@

build: loadtester/.built  ## create .venv and build the Cython engine

debug: $(INSTALLED)  ## build the engine with -O0 -g and bounds checks
	LOADTESTER_DEBUG_BUILD=1 $(BIN)/python setup.py -q build_ext --inplace --force
	rm -f loadtester/.built

system-deps:
	@missing=""; for p in $(TEST_DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) \
	  || { echo "cannot install$$missing (run as root)"; exit 1; }; fi

demo: build  ## start the local target, blast it, store the run in ./data/loadtest.db, show it
	@$(BIN)/loadtester target --port $(DEMO_PORT) --lifetime 120s > /dev/null & pid=$$!; \
	$(BIN)/python -c "from loadtester.run.proc import wait_ready; wait_ready('http://127.0.0.1:$(DEMO_PORT)/')" && \
	$(BIN)/loadtester blast http://127.0.0.1:$(DEMO_PORT)/ -c 50 -d 5s --label demo; rc=$$?; \
	kill $$pid 2>/dev/null; wait $$pid 2>/dev/null; \
	[ $$rc -eq 0 ] && echo && $(BIN)/loadtester runs --limit 5 && echo && $(BIN)/loadtester show last --no-windows; exit $$rc

lint: $(INSTALLED)  ## ruff and mypy (settings in pyproject.toml); make test runs it first
	$(BIN)/ruff check loadtester tests bench
	$(BIN)/mypy

test: lint build system-deps  ## lint, then run the whole test suite
	$(BIN)/python -m pytest -q tests

bench: build  ## peers vs loadtester, side by side on pinned cores (see bench/README.md)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-peers:  ## install the benchmark peers this machine can get (wrk, hey, ab, nginx)
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk hey apache2-utils nginx-light

clean:  ## remove build outputs (keeps data/)
	rm -rf build $(VENV) loadtester/_engine*.so engine/_engine.c loadtester/.built *.egg-info

.PHONY: test-container
test-container: build system-deps  ## the real image, built and run with buildah (as root; no Docker)
	$(BIN)/python -m pytest -q tests/test_container.py tests/test_deploy.py tests/test_deploy_schemas.py

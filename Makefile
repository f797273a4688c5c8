# hubsvc — the README's two commands are `make run` and `make test`.
# Each installs what it needs first (as root on Debian 12: apt packages, .venv, CHP).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SYS_PYTHON := /usr/bin/python3
APT_PACKAGES := python3-venv python3-dev gcc pkg-config libsystemd-dev nodejs npm \
	systemd-container debootstrap rpm rpmlint iproute2 procps util-linux \
	chromium chromium-driver pebble
PYTEST_ARGS ?=

.PHONY: all setup apt run test test-unit test-integration test-slurm lint bench clean
all: setup

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  if command -v node >/dev/null && command -v npm >/dev/null; then missing=$$(echo $$missing | tr ' ' '\n' | grep -vx -e nodejs -e npm | tr '\n' ' '); fi; \
	  [ -z "$${missing// }" ] || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; }; \
	fi

$(VENV)/.installed: pyproject.toml | apt
	[ -x $(PY) ] || $(SYS_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json | apt
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: apt $(VENV)/.installed node_modules/.installed

run: setup
	@echo
	@echo "  hubsvc demo: open http://127.0.0.1:8000/ and log in with any user name,"
	@echo "  password 'demo' (user 'admin' is an admin). Ctrl-C stops everything."
	@echo "  State lives in ./demo-state (git-ignored); status: .venv/bin/hubsvc status --config etc/hubsvc/demo.toml"
	@echo
	exec $(VENV)/bin/hubsvc run --config etc/hubsvc/demo.toml

lint: setup
	$(VENV)/bin/ruff check hubsvc tests bench

test-unit: setup
	$(VENV)/bin/pytest -m unit $(PYTEST_ARGS)

test-integration: setup
	$(VENV)/bin/pytest -m integration $(PYTEST_ARGS)

test-slurm: setup
	$(VENV)/bin/pytest -m slurm $(PYTEST_ARGS)

# Every test: unit, integration (real CHP + JupyterHub), system (real systemd in a container).
# The systemd root comes first: integration tests of doctor boot it too.
test: setup lint system-root
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: setup
	$(PY) bench/startup.py
	$(PY) bench/redirect_verdict.py
	$(PY) bench/slurm_spawn.py
	$(PY) bench/scale.py
	$(PY) bench/doctor_time.py

clean:
	rm -rf demo-state build dist *.egg-info .pytest_cache

-include Makefile.system

# atoms-appliance: the two set-up commands are `make demo` and `make test`.
# Each installs what it needs (Debian packages, a .venv, the project) and then runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEB_PACKAGES := python3-venv python3-dev gcc libasound2-dev alsa-utils espeak-ng sox systemd shellcheck
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-faults test-hardware bench lint deps venv clean soak

deps: .stamp-deps
.stamp-deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

$(BIN)/atoms-appliance: pyproject.toml .stamp-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

venv: $(BIN)/atoms-appliance

demo: deps venv
	$(BIN)/atoms-appliance demo

test: deps venv
	$(BIN)/python -m pytest -q

# The full fault-injection suite (more repetitions, longer faults), then docs/reliability.md
# (tools/fault_report.py). Programs that are not tests live in tools/ (tools/__init__.py lists them).
test-faults: deps venv
	ATOMS_FAULTS_FULL=1 $(BIN)/python -m pytest -q tests/faults; status=$$?; \
	$(BIN)/python -m tools.fault_report; exit $$status

# On a device only (plays sound): the ALSA backend and the echo canceller on the real sound card.
# The devices come from ATOMS_CAPTURE_DEVICE / ATOMS_PLAYBACK_DEVICE (default: `default`).
test-hardware: deps venv
	ATOMS_TEST_HARDWARE=1 $(BIN)/python -m pytest -q tests/hardware

# Not in CI: 30 real minutes by default (SOAK_ARGS=--quick for 2, or --unpaced --audio-hours 2).
soak: deps venv
	$(BIN)/python -m tools.soak $(SOAK_ARGS)

bench: deps venv
	$(BIN)/python -m tools.bench

lint: venv
	$(BIN)/ruff check device hw tools tests
	$(BIN)/mypy device hw tools

clean:
	rm -rf $(VENV) .stamp-deps demo-out bench-out

# atoms-appliance: the two set-up commands are `make demo` and `make test`.
# Each installs what it needs (Debian packages, a .venv, the project) and then runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEB_PACKAGES := python3-venv python3-dev gcc libasound2-dev alsa-utils espeak-ng sox systemd shellcheck
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The system test (tests/system/): Debian guests built with mmdebstrap, booted under QEMU.
SYSTEM_DEB_PACKAGES := qemu-system-x86 qemu-utils mmdebstrap openssh-client e2fsprogs
# Both releases by default; CI picks one (see .ci/run). Images and wheels are cached here.
SYSTEM_RELEASES ?= bookworm trixie
SYSTEM_CACHE ?= $(HOME)/.cache/atoms-appliance-system

.PHONY: demo test test-faults test-hardware test-system bench lint deps system-deps venv clean soak \
	platform-check arm-estimate arm-deps

# Before anything is installed: 64-bit Raspberry Pi OS / Debian arm64 or amd64 only (the list and
# the reason are in device/platform_support.py; deploy/install.sh asks the same file).
platform-check:
	@$(PYTHON) device/platform_support.py "$$(uname -m)" "$$(dpkg --print-architecture 2>/dev/null)"

# install-debs PACKAGES...: install those of PACKAGES that are missing.
define install-debs
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps: platform-check .stamp-deps
.stamp-deps: | platform-check
	$(call install-debs,$(DEB_PACKAGES))
	@touch $@

system-deps: .stamp-system-deps
.stamp-system-deps:
	$(call install-debs,$(SYSTEM_DEB_PACKAGES))
	@touch $@

$(BIN)/atoms-appliance: pyproject.toml .stamp-deps | platform-check
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	@touch $@

venv: platform-check $(BIN)/atoms-appliance

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

# Boots each Debian release of SYSTEM_RELEASES in QEMU (KVM when it works, else software
# emulation), installs the checkout with deploy/install.sh and runs tests/system/ inside it.
test-system: deps venv system-deps
	ATOMS_TEST_SYSTEM=1 ATOMS_SYSTEM_RELEASES="$(SYSTEM_RELEASES)" ATOMS_SYSTEM_CACHE="$(SYSTEM_CACHE)" \
	  $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=2400 tests/system $(SYSTEM_ARGS)

# Not in CI: 30 real minutes by default (SOAK_ARGS=--quick for 2, or --unpaced --audio-hours 2).
soak: deps venv
	$(BIN)/python -m tools.soak $(SOAK_ARGS)

# The audio pipeline's figures, then the wake word detector's (both write docs/benchmarks.md), then
# the room matrix (docs/echo.md, ~15 min; BENCH_ROOM_ARGS=--quick for its test slice, or
# --cells a,b --no-docs --json FILE), then the echo control stages' CPU as a ratio to the capture
# DSP (docs/echo-edge.md).
bench: deps venv
	$(BIN)/python -m tools.bench; status=$$?; \
	$(BIN)/python -m tools.bench_wake || status=1; \
	$(BIN)/python -m tools.bench_room $(BENCH_ROOM_ARGS) || status=1; \
	$(BIN)/python -m tools.bench_echo_control || status=1; exit $$status

# A Pi Zero 2 W CPU figure from instructions counted under aarch64 emulation (docs/benchmarks.md):
# qemu-user runs the aarch64 build, built once into ARM_CACHE (tools/arm_estimate/environment.py).
ARM_DEB_PACKAGES := qemu-user mmdebstrap dpkg-dev xz-utils gcc
ARM_CACHE ?= $(HOME)/.cache/atoms-appliance-arm

arm-deps: .stamp-arm-deps
.stamp-arm-deps:
	$(call install-debs,$(ARM_DEB_PACKAGES))
	@touch $@

arm-estimate: deps venv arm-deps
	ARM_ESTIMATE_CACHE=$(ARM_CACHE) $(BIN)/python -m tools.arm_estimate $(ARM_ARGS)

lint: venv
	$(BIN)/ruff check device hw tools tests
	$(BIN)/mypy device hw tools

clean:
	rm -rf $(VENV) .stamp-deps .stamp-system-deps .stamp-arm-deps demo-out bench-out

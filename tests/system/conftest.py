"""System test fixtures: one guest per Debian release, built, booted and installed once per run.

Only `make test-system` (ATOMS_TEST_SYSTEM=1) runs these; plain `make test` skips them. The
releases come from ATOMS_SYSTEM_RELEASES (default both). Timings (image and wheelhouse build,
boot, install, every scenario) and the guest's measurements go to the terminal summary and to
<cache>/runs/report.json.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.appliance import Appliance
from tests.system.guest import Guest, accelerator
from tests.system.images import RELEASES, cache_dir, ensure_image, ensure_wheelhouse

ENABLED = os.environ.get("ATOMS_TEST_SYSTEM") == "1"
SKIP_REASON = ("system test: boots Debian guests under QEMU and installs the service in them "
               "(about 15 minutes a release under emulation); run it with `make test-system`")


def selected_releases() -> list[str]:
    names = os.environ.get("ATOMS_SYSTEM_RELEASES", "bookworm trixie").replace(",", " ").split()
    unknown = [n for n in names if n not in RELEASES]
    if unknown:
        raise pytest.UsageError(f"ATOMS_SYSTEM_RELEASES: unknown release(s) {unknown}; choose from {sorted(RELEASES)}")
    return names


class Report:
    """Timings and measurements of one run, per release (the test thread only)."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def add(self, release: str, key: str, value: Any) -> None:
        self.data.setdefault(release, {})[key] = value

    def write(self) -> Path:
        path = cache_dir() / "runs" / "report.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        return path


def pytest_configure(config: pytest.Config) -> None:
    config.stash[REPORT] = Report()


REPORT = pytest.StashKey[Report]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents or Path(item.fspath).parent == here:
            item.add_marker(pytest.mark.system)
            if not ENABLED:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and "tests/system/" in report.nodeid and ENABLED:
        _REPORT_DURATIONS.append((report.nodeid, report.outcome, round(report.duration, 1)))


_REPORT_DURATIONS: list[tuple[str, str, float]] = []


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not ENABLED:
        return
    report = config.stash[REPORT]
    report.add("scenarios", "durations", _REPORT_DURATIONS)
    path = report.write()
    terminalreporter.section("system test: timings and measurements")
    for release, values in report.data.items():
        if release == "scenarios":
            continue
        terminalreporter.write_line(f"[{release}] " + ", ".join(f"{k}={v}" for k, v in values.items()))
    for nodeid, outcome, seconds in _REPORT_DURATIONS:
        terminalreporter.write_line(f"{seconds:7.1f} s  {outcome:7}  {nodeid.split('::', 1)[-1]}")
    terminalreporter.write_line(f"(also in {path})")


@pytest.fixture(scope="session")
def report(request: pytest.FixtureRequest) -> Report:
    return request.config.stash[REPORT]


@pytest.fixture(scope="session", params=selected_releases() if ENABLED else ["bookworm"])
def appliance(request: pytest.FixtureRequest, report: Report) -> Iterator[Appliance]:
    """A guest of the release, booted, with the checkout installed by deploy/install.sh."""
    name = request.param
    release = RELEASES[name]
    runs = cache_dir() / "runs" / name
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    image = ensure_image(release, runs / "image-build.log")
    report.add(name, "image_build_s", round(image.built_seconds, 1) if image.built_seconds else "cached")
    wheels = ensure_wheelhouse(image, runs / "wheelhouse-build.log")
    report.add(name, "wheelhouse_build_s", round(wheels.built_seconds, 1) if wheels.built_seconds else "cached")
    guest = Guest(image, wheels.directory, runs, accelerator(image))
    report.add(name, "accel", guest.accel)
    guest.create_disk()
    try:
        report.add(name, "boot_to_ssh_s", round(guest.boot(), 1))
        app = Appliance(guest)
        app.copy_checkout()
        app.install()
        report.add(name, "install_s", round(app.install_seconds or 0, 1))
        (runs / "install.log").write_text(app.install_output)
        yield app
    finally:
        try:
            if guest.process is not None and guest.process.poll() is None:
                (runs / "journal.txt").write_text(guest.run("journalctl --no-pager -o short-monotonic",
                                                            check=False, timeout=120).stdout)
        except Exception:  # noqa: BLE001 - the journal is a courtesy; stopping the guest is not
            pass
        start = time.monotonic()
        # The overlay is thrown away: no need for an orderly shutdown (the reboot scenario has one).
        guest.power_cut()
        report.add(name, "boots_s", [round(b, 1) for b in guest.boots])
        report.add(name, "shutdown_s", round(time.monotonic() - start, 1))

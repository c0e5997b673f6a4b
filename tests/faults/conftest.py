"""Fixtures of the fault suite: the simulator and the service process, and the recovery-time record.

Each fault test calls `record_fault(key, recovery_s, **details)` once it has verified the
behaviour; the results of the session are written to `build/faults/results.json` when the session
ends, and to `docs/reliability.md` as well when `ATOMS_FAULTS_REPORT=1` (or afterwards by
`python -m tools.fault_report`, which is what `make test-faults` runs).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults import BACKOFF_INITIAL, BACKOFF_MAX, FULL, unique_tmp
from tools.fault_report import RESULTS_FILE, Measurement, save_results, write_faults_section
from tools.fault_service import FaultService

_RESULTS: list[Measurement] = []


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., FaultService]]:
    """Start the real service as a child process (`FaultService`); killed at the end if alive."""
    services: list[FaultService] = []

    def start(url: str, **settings: Any) -> FaultService:
        settings.setdefault("backoff_initial", BACKOFF_INITIAL)
        settings.setdefault("backoff_max", BACKOFF_MAX)
        service = FaultService(unique_tmp(tmp_path, "svc"), url, **settings)
        services.append(service)
        service.start()
        return service

    yield start
    for service in services:
        service.close()


@pytest.fixture
def record_fault(request: pytest.FixtureRequest) -> Callable[..., None]:
    """`record_fault(key, recovery_s, **details)`: keep one measured fault for the report.

    `recovery_s` is one time or a list (one per repetition), in seconds; `details` are small
    JSON values shown in the report (counts, RSS growth...).
    """

    def record(key: str, recovery_s: float | list[float] | None, **details: Any) -> None:
        times = [] if recovery_s is None else [recovery_s] if isinstance(recovery_s, (int, float)) \
            else list(recovery_s)
        _RESULTS.append(Measurement(key=key, test=request.node.nodeid, recovery_s=[round(t, 3) for t in times],
                                    details=details))

    return record


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A measurement recorded by a test that then failed is kept, but marked failed."""
    report = yield
    if report.failed:
        for measurement in _RESULTS:
            if measurement.test == item.nodeid:
                measurement.outcome = "failed"
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _RESULTS:
        return
    form = "full" if FULL else "short"
    save_results(_RESULTS, form, RESULTS_FILE)
    if os.environ.get("ATOMS_FAULTS_REPORT", "") not in ("", "0"):
        write_faults_section(_RESULTS, form)

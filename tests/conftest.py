"""Fixtures shared by the test folders: the local agent simulator on loopback, and the process-wide
state every test gets back as it found it (gpiozero's pin factory, the root log level)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest

from device.sim.server import SimOptions, Simulator
from tests.pin_factory import preserved_pin_factory
from tools.service_process import TEST_KEY


class ThreadOwner(Protocol):
    """Anything that owns threads the house way: `stop()` asks, `join(timeout)` says whether they ended."""

    def stop(self) -> None: ...

    def join(self, timeout: float) -> bool: ...


@pytest.fixture(autouse=True)
def gpiozero_pin_factory() -> Iterator[None]:
    """gpiozero's global `Device.pin_factory` saved before every test and restored after it
    (tests/pin_factory.py says why)."""
    with preserved_pin_factory():
        yield


@pytest.fixture(autouse=True)
def root_log_level() -> Iterator[None]:
    """The root logger's level put back after every test: a test that calls `setup_logging("ERROR")`
    must not silence the warnings a later test asserts on with `caplog`."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


@pytest.fixture
def started() -> Iterator[list[ThreadOwner]]:
    """Append what a test starts (a pipeline, a dump thread...): all stopped, then joined, after it."""
    owners: list[ThreadOwner] = []
    yield owners
    for owner in owners:
        owner.stop()
    for owner in owners:
        assert owner.join(5), f"{owner!r} did not stop"


@pytest.fixture
def sim_api_key() -> str:
    """The key the simulator accepts (a folder's conftest may override it)."""
    return TEST_KEY   # the key the service harness hands the service (tools.service_process)


@pytest.fixture
def start_sim(sim_api_key: str) -> Iterator[Callable[..., Simulator]]:
    """Start simulators (any `SimOptions`; port 0 unless given); all stopped at the end."""
    sims: list[Simulator] = []

    def start(**options: Any) -> Simulator:
        options.setdefault("api_key", sim_api_key)
        options.setdefault("port", 0)
        sim = Simulator(SimOptions(**options))
        sims.append(sim)
        sim.start()
        return sim

    yield start
    for sim in sims:
        sim.stop()
    for sim in sims:
        sim.join(5)

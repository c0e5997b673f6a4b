"""Fixtures shared by the test folders: the local agent simulator on loopback."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest

from device.sim.server import SimOptions, Simulator
from tests.pin_factory import preserved_pin_factory

# Distinctive, so that "the key never appears" can be checked by searching for it.
DEFAULT_TEST_KEY = "sk-test-SECRET-4242-do-not-log"


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
    return DEFAULT_TEST_KEY


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

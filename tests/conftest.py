"""Fixtures shared by the test folders: the local agent simulator on loopback."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from device.sim.server import SimOptions, Simulator

# Distinctive, so that "the key never appears" can be checked by searching for it.
DEFAULT_TEST_KEY = "sk-test-SECRET-4242-do-not-log"


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

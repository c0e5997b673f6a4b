from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from device.sim.server import SimOptions, Simulator
from tests.e2e.harness import TEST_KEY, ServiceProcess


@pytest.fixture
def start_sim() -> Iterator[Callable[..., Simulator]]:
    sims: list[Simulator] = []

    def start(**options: Any) -> Simulator:
        options.setdefault("api_key", TEST_KEY)
        sim = Simulator(SimOptions(port=0, **options))
        sim.start()
        sims.append(sim)
        return sim

    yield start
    for sim in sims:
        sim.stop()
        sim.join(5)


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    services: list[ServiceProcess] = []

    def start(url: str, **settings: Any) -> ServiceProcess:
        service = ServiceProcess(tmp_path, url, **settings)
        services.append(service)
        return service.start()

    yield start
    for service in services:
        service.close()

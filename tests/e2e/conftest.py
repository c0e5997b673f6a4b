from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tools.service_process import ServiceProcess


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    services: list[ServiceProcess] = []

    def start(url: str, *run_args: str, **settings: Any) -> ServiceProcess:
        service = ServiceProcess(tmp_path, url, **settings)
        services.append(service)
        return service.start(*run_args)

    yield start
    for service in services:
        service.close()

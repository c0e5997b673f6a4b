"""The service in this process (its main loop on a thread), for tests that hold hardware fakes:
gpiozero's MockFactory pins and the fake audio pair live here, so a test can press a pin and read
an LED while the real service runs. State waits are on the observer's Condition; conditions no
event announces (counters, pins) are waited on with `tools.polling.wait_until`; all bounded."""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from device.service.settings import load_settings
from device.service.supervisor import ApplianceService
from hw.controls import Controls
from hw.fake_audio import FakeAudioBackend
from tools.service_process import TEST_KEY


class InProcessService:
    """Runs `ApplianceService.run()` on a thread; `state` is the last published state."""

    def __init__(self, tmp: Path, url: str, controls: Controls, backend: FakeAudioBackend,
                 **overrides: Any) -> None:
        overrides.setdefault("state_dir", tmp / "state")
        settings = load_settings(
            api_key=TEST_KEY, agent_id="sim-agent", url=url, audio_backend="fake", gpio_backend="mock",
            control_socket=tmp / "control.sock", earcons=False, backoff_initial=0.2, backoff_max=2.0,
            **overrides)
        self.controls = controls
        self.backend = backend
        self.state: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.service = ApplianceService(settings, backend=backend, controls=controls,
                                        observer=self._observe, install_signals=False)
        self._thread = threading.Thread(target=self.service.run, name="service-main", daemon=True)

    def _observe(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "state":
            with self._cond:
                self.state = data
                self.history.append(data)
                self._cond.notify_all()

    def start(self) -> InProcessService:
        self._thread.start()
        return self

    def wait_state(self, timeout: float = 10.0, **expected: Any) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: all(self.state.get(k) == v for k, v in expected.items()), timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self.service.request_stop()
        self._thread.join(10)
        assert not self._thread.is_alive(), "service did not stop"


class InProcessServices:
    """The services one test starts (each in its own directory under `tmp`, with controls from
    `controls`), every one still running stopped at the end: the tests' `run_service` fixtures."""

    def __init__(self, tmp: Path, controls: Callable[[], Controls]) -> None:
        self._tmp = tmp
        self._controls = controls
        self._started: list[InProcessService] = []

    def start(self, url: str, backend: FakeAudioBackend | None = None, *,
              before_start: Callable[[InProcessService], None] | None = None,
              **overrides: Any) -> InProcessService:
        """A started service on `backend` (a fresh fake pair on the real clock by default);
        `before_start` adjusts it before its thread runs."""
        directory = self._tmp / f"svc{len(self._started)}"
        directory.mkdir(parents=True, exist_ok=True)
        svc = InProcessService(directory, url, self._controls(),
                               backend or FakeAudioBackend(), **overrides)
        self._started.append(svc)
        if before_start is not None:
            before_start(svc)
        return svc.start()

    def __enter__(self) -> InProcessServices:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for svc in self._started:
            if svc.alive:
                svc.stop()

"""The service talks to systemd: READY once audio and controls are up (no network needed),
STATUS with the call state, WATCHDOG only while the audio threads make progress, STOPPING."""
from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.service.sdnotify import SystemdNotifier
from device.service.settings import load_settings
from device.service.supervisor import ApplianceService
from hw.audio import AudioCapture
from hw.clock import RealClock
from hw.controls import NoControls
from hw.fake_audio import FakeAudioBackend


class StickyBackend(FakeAudioBackend):
    """Fake audio whose mic read can be made to hang (a wedged driver), for the watchdog test."""

    def __init__(self) -> None:
        super().__init__(clock_factory=RealClock)
        self.stuck = threading.Event()
        self.release = threading.Event()

    def capture(self, sample_rate: int, period_frames: int) -> AudioCapture:
        inner = super().capture(sample_rate, period_frames)
        backend = self
        original = inner.read

        def read() -> bytes:
            if backend.stuck.is_set():
                backend.release.wait(30)
            return original()

        inner.read = read  # type: ignore[method-assign]
        return inner


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def receive_until(sock: socket.socket, wanted: str, limit: int = 500) -> list[str]:
    seen: list[str] = []
    for _ in range(limit):
        message = sock.recv(4096).decode()
        seen.append(message)
        if wanted in message:
            return seen
    raise AssertionError(f"{wanted!r} not among {seen[-10:]}")


def test_ready_status_watchdog_stopping_and_stuck_thread(notify_socket, tmp_path: Path) -> None:
    sock, path = notify_socket
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}, pid=os.getpid())
    settings = load_settings(
        api_key="k", agent_id="a", url="ws://127.0.0.1:9/atoms/v1/agent/connect",  # nothing listens
        audio_backend="fake", gpio_backend="none", call_mode="always", control_socket=tmp_path / "c.sock",
        state_dir=tmp_path / "state", earcons=False, backoff_initial=0.5, backoff_max=1.0)
    backend = StickyBackend()
    service = ApplianceService(settings, backend=backend, controls=NoControls(), install_signals=False,
                               notifier=notifier, watchdog_stale=0.5)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        receive_until(sock, "READY=1")  # without any network: nothing listens at the URL
        assert any("connecting" in m for m in receive_until(sock, "STATUS=connecting"))
        receive_until(sock, "WATCHDOG=1")
        receive_until(sock, "WATCHDOG=1")
        backend.stuck.set()  # the capture thread wedges in read()
        # Pings (every 0.1 s so far) stop once the heartbeat is 0.5 s stale: a whole second
        # without a ping must follow (other messages, e.g. STATUS, may still come).
        sock.settimeout(1.0)
        quiet = False
        for _ in range(100):
            try:
                message = sock.recv(4096).decode()
            except TimeoutError:
                quiet = True
                break
            if "WATCHDOG=1" not in message:
                continue
        assert quiet and service.watchdog_withheld > 0
    finally:
        backend.release.set()
        service.request_stop()
        thread.join(10)
    sock.settimeout(5)
    receive_until(sock, "STOPPING=1")
    assert not thread.is_alive()

"""GPIO that cannot be opened does not take the service down: audio and the control socket run,
the fault is in the status (and the journal), and systemd still gets READY=1."""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from device.service import supervisor
from device.service.control import send_command
from device.service.sdnotify import SystemdNotifier
from device.service.settings import Settings, load_settings
from device.service.supervisor import ApplianceService
from hw.errors import DeviceUnavailable
from hw.fake_audio import FakeAudioBackend
from tests.test_service_systemd import receive_until


def test_service_runs_without_gpio_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    def no_gpio(settings: Settings) -> None:
        raise DeviceUnavailable("/dev/gpiochip0", "lgpio.error: can not open gpiochip")

    monkeypatch.setattr(supervisor, "controls_from_settings", no_gpio)
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(5)
    settings = load_settings(
        api_key="k", agent_id="a", url="ws://127.0.0.1:9/atoms/v1/agent/connect", audio_backend="fake",
        gpio_backend="gpiozero", control_socket=tmp_path / "c.sock", state_dir=tmp_path / "state", earcons=False)
    service = ApplianceService(settings, backend=FakeAudioBackend(), install_signals=False,
                               notifier=SystemdNotifier(environ={"NOTIFY_SOCKET": str(notify)}, pid=os.getpid()))
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        seen = receive_until(sock, "READY=1")
        seen += receive_until(sock, "gpio lost")
        assert any("STATUS=idle, gpio lost" in m for m in seen), seen
        status = send_command(settings.control_socket, "status")["status"]
        assert status["hardware_faults"] == ["gpio"]
        assert status["devices"]["gpio"]["fault"] == "/dev/gpiochip0: lgpio.error: can not open gpiochip"
        assert "can not open gpiochip" in status["last_error"]
        # The control socket drives calls as before.
        assert send_command(settings.control_socket, "mute")["ok"]
    finally:
        service.request_stop()
        thread.join(10)
        sock.close()
    assert not thread.is_alive()
    assert any("GPIO unavailable, running without buttons and LEDs" in r.getMessage() for r in caplog.records)

"""doctor while the service runs: it asks the service over the control socket about the devices
the service holds, and finds the key where the unit gets it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from device.doctor import service
from device.doctor.checks import gpio_fix
from device.doctor.core import Status
from device.service.credentials import SUDO_HINT, unit_key


def status(captured: int = 100, played: int = 50, faults: tuple[str, ...] = (), gpio_fault: str | None = None,
           last_error: str = "") -> dict[str, Any]:
    return {"pid": 4242, "hardware_faults": list(faults), "last_error": last_error,
            "counters": {"frames_captured": captured, "periods_played": played},
            "devices": {"microphone": "plughw:CARD=Mic", "speaker": "plughw:CARD=Spk",
                        "gpio": {"backend": "gpiozero", "factory": "LGPIOFactory", "pins": {"call": 17},
                                 "fault": gpio_fault}}}


def test_devices_in_use_and_moving_pass() -> None:
    result = service.check_device_in_service("microphone", "capture", status(100), status(160))
    assert result.status is Status.PASS
    assert "held by the running service (pid 4242)" in result.detail and "capturing (60" in result.detail
    speaker = service.check_device_in_service("speaker", "playback", status(played=1), status(played=31))
    assert speaker.status is Status.PASS and "'plughw:CARD=Spk'" in speaker.detail


def test_a_lost_device_fails_and_a_stalled_one_warns() -> None:
    lost = service.check_device_in_service("microphone", "capture", status(),
                                           status(faults=("capture",), last_error="capture lost: EIO"))
    assert lost.status is Status.FAIL and "capture lost: EIO" in lost.detail and lost.fix
    stalled = service.check_device_in_service("speaker", "playback", status(played=5), status(played=5))
    assert stalled.status is Status.WARN


def test_gpio_as_the_service_holds_it() -> None:
    held = service.check_gpio_in_service(status(), gpio_fix)
    assert held.status is Status.PASS and "call GPIO17" in held.detail
    fault = service.check_gpio_in_service(status(gpio_fault="/dev/gpiochip0: can not open gpiochip"), gpio_fix)
    assert fault.status is Status.FAIL and "udev rule" in fault.fix


def test_two_snapshots_or_none() -> None:
    answers = iter([status(1), status(2)])
    slept: list[float] = []
    got = service.service_snapshots(Path("/x"), lambda _p: next(answers), slept.append)
    assert got is not None and got[1]["counters"]["frames_captured"] == 2
    assert slept == [service.PROGRESS_WAIT]
    assert service.service_snapshots(Path("/x"), lambda _p: None, slept.append) is None


def test_read_status_without_a_service_is_none(tmp_path: Path) -> None:
    assert service.read_status(tmp_path / "nothing.sock") is None


def test_unit_key_from_the_plain_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "atoms_api_key").write_text("sk-plain-key\n")
    assert unit_key(creds).key == "sk-plain-key"


def test_unit_key_inside_the_unit_is_left_to_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "atoms_api_key").write_text("sk-not-read-twice")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    found = unit_key(tmp_path)
    assert found.key is None and found.problem is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unit_key_unreadable_says_how_to_run_doctor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "atoms_api_key").write_text("k")
    creds.chmod(0)
    try:
        assert unit_key(creds).problem == SUDO_HINT
    finally:
        creds.chmod(0o700)


def test_unit_key_encrypted_is_decrypted_by_systemd_creds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "atoms_api_key.cred").write_text("ciphertext")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemd-creds"
    fake.write_text('#!/bin/sh\n[ "$1 $2" = "decrypt --name=atoms_api_key" ] && [ "$4" = "-" ] && echo sk-decrypted\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert unit_key(creds).key == "sk-decrypted"

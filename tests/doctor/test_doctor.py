"""The checklist runner with every dependency injected: order, skips, redaction, terminal output."""
from __future__ import annotations

import dataclasses
import io
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from device.doctor.core import Status
from device.doctor.meter import LiveLine
from device.doctor.runner import DoctorEnv, run_doctor
from device.service.settings import Settings, load_settings
from device.session.connection import MIN_SANE_TIME
from hw.fake_audio import FakeAudioBackend

from . import TEST_KEY, isolate_settings

pytestmark = pytest.mark.timeout(30)


def ok_probe(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    out = '{"step": "aec", "state": "ok", "version": "1"}\n{"step": "noise", "state": "ok", "version": "1"}\n'
    return subprocess.CompletedProcess(argv, 0, out, "")


def env(tmp_path: Path, **changes: Any) -> DoctorEnv:
    def settings() -> Settings:
        return load_settings(api_key=TEST_KEY, agent_id="sim-agent", url="wss://api.example.test/atoms/v1/agent/connect",
                             audio_backend="fake", gpio_backend="mock")

    def resolve(host: str, port: int, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", port))]

    def connect(address: tuple[str, int], timeout: float) -> socket.socket:
        raise TimeoutError(f"timed out with {TEST_KEY}")

    base = DoctorEnv(load_settings=settings, config_warnings=list, now=lambda: MIN_SANE_TIME + 1e7,
                     build_time=lambda: MIN_SANE_TIME, synchronized=lambda: True, resolve=resolve,
                     connect=connect, audio_backend=lambda s: FakeAudioBackend(), probe=ok_probe,
                     proc_root=tmp_path)
    return dataclasses.replace(base, **changes)


def test_a_silent_endpoint_fails_tls_and_skips_the_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_settings(monkeypatch, tmp_path)
    out = io.StringIO()
    results, _ = run_doctor(env(tmp_path), LiveLine(out, tty=True))
    status = {r.name: r.status for r in results}
    assert status == {"settings": Status.PASS, "clock": Status.PASS, "dns": Status.PASS, "tls": Status.FAIL,
                      "agent": Status.SKIP, "microphone": Status.PASS, "speaker": Status.PASS,
                      "gpio": Status.PASS, "dsp": Status.PASS}
    tls = next(r for r in results if r.name == "tls")
    assert "no answer from api.example.test:443" in tls.detail and "port 443" in tls.fix
    text = out.getvalue()
    assert "\r....  tls             connecting to api.example.test..." in text   # the live line
    assert "FAIL  tls" in text and TEST_KEY not in text


def test_a_check_that_crashes_is_a_fail_line_and_the_rest_still_runs(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_settings(monkeypatch, tmp_path)

    def broken_backend(settings: Settings) -> FakeAudioBackend:
        raise RuntimeError(f"backend exploded ({TEST_KEY})")

    results, _ = run_doctor(env(tmp_path, audio_backend=broken_backend), LiveLine(io.StringIO(), tty=False))
    mic = next(r for r in results if r.name == "microphone")
    assert mic.status is Status.FAIL and "RuntimeError: backend exploded (***)" in mic.detail
    assert [r.name for r in results][-2:] == ["gpio", "dsp"]


def test_invalid_settings_skip_what_needs_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_settings(monkeypatch, tmp_path)
    monkeypatch.setenv("ATOMS_SAMPLE_RATE", "1234")
    results, _ = run_doctor(env(tmp_path, load_settings=load_settings), LiveLine(io.StringIO(), enabled=False))
    status = {r.name: r.status for r in results}
    assert status["settings"] is Status.FAIL and status["clock"] is Status.PASS
    assert all(status[n] is Status.SKIP for n in ("dns", "tls", "agent", "microphone", "speaker", "gpio"))
    assert status["dsp"] is Status.PASS

"""The one injection point: each backend builds itself from settings through hw/registry.py.

The names a setting accepts are the registry's names; the fields the backends read
(`hw.settings.HwSettings`) are settings fields (mypy checks the types, this checks the names
at test time too); each backend reads exactly its fields.
"""
from __future__ import annotations

import os
import queue
import typing
import wave
from pathlib import Path

import numpy as np
import pytest

from device.audio.formats import DSP_RATE
from device.service.settings import Settings, load_settings
from hw.clock import RealClock, UnpacedClock
from hw.controls import ButtonName, ButtonPressed, LedState, NoControls
from hw.fake_audio import ROOM_MIC_RATE, FakeAudioBackend
from hw.gpio import MockGpioControls
from hw.keyboard import KeyboardControls
from hw.registry import AUDIO_BACKENDS, CONTROL_BACKENDS, audio_backend_from_settings, controls_from_settings
from hw.settings import AlsaSettings, FakeAudioSettings, GpioSettings, HwSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("ATOMS_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("ATOMS_CONFIG", str(tmp_path / "config.toml"))
    (tmp_path / "config.toml").write_text("")


def _members(protocol: type) -> set[str]:
    return {name for name, value in vars(protocol).items() if isinstance(value, property)}


def test_the_backend_settings_accept_exactly_the_registered_names() -> None:
    assert set(typing.get_args(Settings.model_fields["audio_backend"].annotation)) == set(AUDIO_BACKENDS)
    assert set(typing.get_args(Settings.model_fields["gpio_backend"].annotation)) == set(CONTROL_BACKENDS)


def test_every_field_the_backends_read_is_a_setting() -> None:
    read = set().union(*(_members(p) for p in (AlsaSettings, FakeAudioSettings, GpioSettings, HwSettings)))
    # 19 + four volume pins + fake_capture_start, fake_playback_max_silence_seconds + gpio_chip,
    # gpio_board + the room's drift, speaker clipping and noise
    assert len(read) == 30
    assert read <= set(Settings.model_fields)


def test_the_room_is_built_at_the_rate_the_application_captures_at() -> None:
    assert ROOM_MIC_RATE == DSP_RATE


def test_the_fake_pair_builds_itself_from_the_fake_settings(tmp_path: Path) -> None:
    mic = tmp_path / "mic.wav"
    with wave.open(str(mic), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.full(160, 1000, "<i2").tobytes())
    settings = load_settings(audio_backend="fake", fake_capture_file=mic,
                             fake_playback_file=tmp_path / "out.wav", fake_realtime=False)
    backend = audio_backend_from_settings(settings)
    assert isinstance(backend, FakeAudioBackend)
    assert backend.room is None                       # no echo setting: no room
    assert backend.clock_factory is UnpacedClock
    assert (backend.capture_file, backend.playback_file) == (mic, tmp_path / "out.wav")
    assert not backend.keep_history                   # a service runs for days: nothing kept in memory
    with backend.capture(16000, 160) as capture:
        assert capture.read() == np.full(160, 1000, "<i2").tobytes()
    backend.close()
    backend.close()   # idempotent


@pytest.mark.parametrize(("gain_db", "expected_gain_db"), [(-12.0, -12.0), (None, -6.0)])
def test_the_fake_room_comes_from_the_echo_settings(tmp_path: Path, gain_db: float | None,
                                                    expected_gain_db: float) -> None:
    ir = tmp_path / "ir.wav"
    with wave.open(str(ir), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.array([16384, 0, 8192], "<i2").tobytes())
    settings = load_settings(audio_backend="fake", fake_echo_delay_ms=25, fake_echo_gain_db=gain_db,
                             fake_echo_ir_file=ir)
    backend = audio_backend_from_settings(settings)
    assert isinstance(backend, FakeAudioBackend) and backend.room is not None
    assert backend.clock_factory is RealClock          # fake_realtime defaults to true
    room = backend.room
    assert room.mic_rate == ROOM_MIC_RATE
    assert room.gain == pytest.approx(10 ** (expected_gain_db / 20))
    # 25 ms of delay line, then the impulse response (normalised to peak 1) scaled by the gain.
    room.speaker_played(np.array([10000] + [0] * 799, "<i2").tobytes(), 16000)
    echo = room.mic_echo(800)
    assert np.flatnonzero(np.abs(echo) > 1).tolist() == [400, 402]
    assert echo[400] == pytest.approx(10000 * room.gain) and echo[402] == pytest.approx(5000 * room.gain)


def test_mock_controls_build_themselves_from_the_pin_settings() -> None:
    settings = load_settings(gpio_backend="mock", call_pin=5, mute_pin=None, status_led_pin=6,
                             mute_led_pin=None, speaking_led_pin=13, long_press_seconds=30.0,
                             button_bounce_ms=50)
    controls = controls_from_settings(settings)
    try:
        assert isinstance(controls, MockGpioControls)
        assert controls.pins == {"call": 5, "status_led": 6, "speaking_led": 13}
        assert controls.pin("call").bounce == pytest.approx(0.05)      # button_bounce_ms
        assert [b.hold_time for b in controls._buttons] == [30.0]       # long_press_seconds
        events: list[object] = []
        controls.start(events.append)
        controls.press(ButtonName.CALL)
        assert events == [ButtonPressed(ButtonName.CALL)]
    finally:
        controls.close()


def test_none_controls_from_settings() -> None:
    controls = controls_from_settings(load_settings(gpio_backend="none"))
    assert isinstance(controls, NoControls)
    controls.show(LedState(mute=True))
    assert controls.history == [LedState(mute=True)]


def test_keyboard_controls_from_settings_read_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    try:
        with os.fdopen(read_end, "r", closefd=False) as stdin:
            monkeypatch.setattr("sys.stdin", stdin)
            controls = controls_from_settings(load_settings(gpio_backend="keyboard"))
        assert isinstance(controls, KeyboardControls)
        try:
            controls.start(events.put)
            os.write(write_end, b"m")          # the key `run --keys` documents for mute
            assert events.get(timeout=5) == ButtonPressed(ButtonName.MUTE)
        finally:
            controls.close()
    finally:
        os.close(read_end)
        os.close(write_end)

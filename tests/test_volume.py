"""The volume curve and software gain (device/audio/volume.py), the controller that owns the
level (device/service/volume.py) and its persistence."""
from __future__ import annotations

import math

import numpy as np
import pytest

from device.audio.volume import SoftwareGain, clamp_level, level_db, level_gain
from device.service.persist import PersistentState
from device.service.volume import TONE_INTERVAL, VolumeController
from hw.clock import UnpacedClock
from hw.errors import DeviceUnavailable
from hw.fake_audio import FakeVolumeControl


def test_curve_is_even_in_db_from_the_floor_to_unity() -> None:
    assert level_db(100) == 0.0 and level_db(1) == -30.0 and level_db(0) == -math.inf
    steps = np.diff([level_db(v) for v in range(1, 101)])
    assert np.allclose(steps, steps[0]) and steps[0] > 0
    assert level_db(1, floor_db=-20.0) == -20.0
    assert level_gain(0) == 0.0 and level_gain(100) == 1.0
    assert level_gain(50) == pytest.approx(10 ** (-30 * 50 / 99 / 20))
    assert level_db(150) == 0.0 and clamp_level(-5) == 0 and clamp_level(130) == 100


def test_software_gain_scales_and_clips() -> None:
    pcm = np.array([1000, -1000, 32767, -32768], "<i2").tobytes()
    gain = SoftwareGain()
    assert gain.apply(pcm) is pcm  # unity: untouched, no copy
    gain.gain = 0.5
    assert np.frombuffer(gain.apply(pcm), "<i2").tolist() == [500, -500, 16384, -16384]
    gain.gain = 2.0
    assert np.frombuffer(gain.apply(pcm), "<i2").tolist() == [2000, -2000, 32767, -32768]
    gain.gain = 0.0
    assert gain.apply(pcm) == bytes(len(pcm))


# -- the controller (device/service/volume.py) ------------------------------------------------------


def _controller(level: int = 100, mixer: FakeVolumeControl | None = None):  # type: ignore[no-untyped-def]
    saved: list[int] = []
    tones: list[float] = []
    clock = UnpacedClock()
    gain = SoftwareGain()
    ctl = VolumeController(level, -30.0, 10, gain, mixer, saved.append,
                           lambda: tones.append(clock.monotonic()), clock)
    return ctl, gain, saved, tones, clock


def test_software_volume_sets_the_gain_persists_and_confirms() -> None:
    ctl, gain, saved, tones, clock = _controller(level=80)
    assert gain.gain == pytest.approx(level_gain(80)) and saved == [] and tones == []  # start: no tone
    assert ctl.step(-1) == 70 and gain.gain == pytest.approx(level_gain(70))
    assert saved == [70] and tones == [0.0]
    clock.advance(TONE_INTERVAL / 2)
    assert ctl.step(-1) == 60 and saved == [70, 60] and len(tones) == 1  # a fast spin: one tone
    clock.advance(TONE_INTERVAL)
    assert ctl.set(250) == 100 and gain.gain == 1.0 and len(tones) == 2
    assert ctl.set(100) == 100 and saved == [70, 60, 100]  # no change: nothing saved or played
    assert ctl.set(0) == 0 and gain.gain == 0.0 and len(tones) == 2  # silence needs no tone
    assert ctl.step(-3) == 0 and ctl.changes == 4


def test_hardware_volume_keeps_the_software_gain_at_unity() -> None:
    mixer = FakeVolumeControl("PCM")
    ctl, gain, _, _, _ = _controller(level=50, mixer=mixer)
    assert gain.gain == 1.0 and mixer.db == pytest.approx(level_db(50))
    ctl.set(100)
    ctl.set(0)
    assert mixer.history[-2:] == [0.0, -math.inf] and mixer.gain == 0.0 and gain.gain == 1.0


def test_a_failing_mixer_falls_back_to_the_software_gain() -> None:
    mixer = FakeVolumeControl("PCM")
    ctl, gain, _, _, _ = _controller(level=100, mixer=mixer)
    mixer.close()  # set_db raises DeviceUnavailable from now on
    assert ctl.set(40) == 40
    assert gain.gain == pytest.approx(level_gain(40)) and ctl.mixer_errors == 1
    with pytest.raises(DeviceUnavailable):
        mixer.set_db(0.0)


def test_volume_and_mute_persist_together(tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = PersistentState(tmp_path)
    assert state.load_muted() is False and state.load_volume() is None
    state.save_volume(30)
    state.save_muted(True)
    again = PersistentState(tmp_path)
    assert again.load_muted() is True and again.load_volume() == 30
    (tmp_path / "state.json").write_text("{broken")
    broken = PersistentState(tmp_path)
    assert broken.load_muted() is True and broken.load_volume() is None
    broken.save_volume(60)  # must not lose the privacy default while saving the volume
    assert PersistentState(tmp_path).load_muted() is True
    (tmp_path / "state.json").write_text('{"muted": false, "volume": 101}')
    assert PersistentState(tmp_path).load_volume() is None

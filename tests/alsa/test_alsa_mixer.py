"""The hardware volume (hw/alsa.py AlsaVolumeControl): dB relative to the control's maximum, the
mute switch at the bottom, and driver errors as DeviceUnavailable. The mixer is a recording
stand-in for `alsaaudio.Mixer` (there is no sound card here), except in the last test, which
asks the real alsa-lib for a control that does not exist."""
from __future__ import annotations

import math
from typing import Any

import alsaaudio
import pytest

from hw.alsa import AlsaVolumeControl
from hw.errors import DeviceUnavailable


class RecordingMixer:
    """Speaks `alsaaudio.Mixer`'s API for one stereo playback control of -51.0..0.0 dB in 0.5 dB steps."""

    def __init__(self, control: str, device: str, switch: bool = True, fail: bool = False) -> None:
        self.control, self.device = control, device
        self.calls: list[tuple[Any, ...]] = []
        self.centi_db = 0
        self.switch = switch
        self.fail = fail
        self.closed = False

    def getrange(self, pcmtype: int = 0, units: int = 0) -> list[int]:
        assert (pcmtype, units) == (alsaaudio.PCM_PLAYBACK, alsaaudio.VOLUME_UNITS_DB)
        return [-5100, 0]

    def switchcap(self) -> list[str]:
        return ["Playback Mute", "Joined Playback Mute"] if self.switch else []

    def setvolume(self, volume: int, pcmtype: int = 0, units: int = 0, channel: int | None = None) -> None:
        if self.fail:
            raise alsaaudio.ALSAAudioError("No such device [hw:1]")
        assert units == alsaaudio.VOLUME_UNITS_DB
        self.centi_db = max(-5100, min(0, round(volume / 50) * 50))  # the control's 0.5 dB steps
        self.calls.append(("setvolume", volume))

    def getvolume(self, pcmtype: int = 0, units: int = 0) -> list[int]:
        return [self.centi_db, self.centi_db]

    def setmute(self, mute: bool, channel: int | None = None) -> None:
        self.calls.append(("setmute", mute))

    def close(self) -> None:
        self.closed = True


def _control(**options: Any) -> tuple[AlsaVolumeControl, RecordingMixer]:
    made: list[RecordingMixer] = []

    def factory(control: str, device: str) -> RecordingMixer:
        made.append(RecordingMixer(control, device, **options))
        return made[-1]

    control = AlsaVolumeControl("Speaker", "hw:CARD=Device", mixer_factory=factory)
    return control, made[0]


def test_levels_in_db_below_the_maximum_and_muted_at_the_bottom() -> None:
    control, mixer = _control()
    assert (control.min_db, control.max_db) == (-51.0, 0.0)
    assert (mixer.control, mixer.device) == ("Speaker", "hw:CARD=Device")
    assert control.set_db(-12.3) == pytest.approx(-12.5)  # the control's nearest step, read back
    assert control.set_db(0.0) == 0.0
    assert control.set_db(-math.inf) == -51.0 and control.muted
    assert control.set_db(-70.0) == -51.0  # below the range: as quiet as it goes, muted
    assert control.set_db(-6.0) == -6.0 and not control.muted
    assert mixer.calls == [("setvolume", -1230), ("setvolume", 0), ("setvolume", -5100), ("setmute", True),
                           ("setvolume", -5100), ("setvolume", -600), ("setmute", False)]
    control.close()
    control.close()
    assert mixer.closed
    with pytest.raises(DeviceUnavailable, match="closed"):
        control.set_db(0.0)


def test_without_a_switch_the_bottom_is_the_minimum() -> None:
    control, mixer = _control(switch=False)
    control.set_db(-math.inf)
    assert mixer.calls == [("setvolume", -5100)] and not control.muted


def test_driver_errors_become_device_unavailable() -> None:
    control, _ = _control(fail=True)
    with pytest.raises(DeviceUnavailable, match="mixer 'Speaker' on hw:CARD=Device.*setting the volume"):
        control.set_db(-3.0)


def test_a_missing_control_on_real_alsa_lib_is_device_unavailable() -> None:
    with pytest.raises(DeviceUnavailable, match="mixer 'NoSuchControl' on default.*opening the mixer"):
        AlsaVolumeControl("NoSuchControl", "default")

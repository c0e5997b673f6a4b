"""Earcons: short, quiet, click-free, whole 10 ms periods long, at every rate the device plays."""
from __future__ import annotations

import numpy as np
import pytest

from device.audio.earcons import EARCON_NAMES, earcon_pcm
from device.core.events import EarconName

RATES = (8000, 16000, 24000, 48000)


def samples(name: EarconName, rate: int) -> np.ndarray:
    return np.frombuffer(earcon_pcm(name, rate), dtype="<i2").astype(np.float64)


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=1 << 16))
    return float(np.argmax(spectrum) * rate / (1 << 16))


def test_every_event_name_has_an_earcon() -> None:
    assert set(EARCON_NAMES) == {"connected", "ended", "muted", "unmuted", "error", "warning", "volume", "wake"}


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("name", EARCON_NAMES)
def test_earcon_shape(name: EarconName, rate: int) -> None:
    pcm = earcon_pcm(name, rate)
    x = samples(name, rate)
    period_bytes = rate // 100 * 2
    assert len(pcm) % period_bytes == 0  # whole 10 ms periods
    assert 0 < len(x) / rate <= 0.350
    peak = np.max(np.abs(x))
    peak_dbfs = 20 * np.log10(peak / 32768)
    assert -13.0 <= peak_dbfs <= -11.0
    # Fades: the ends sit near zero, and the first and last millisecond stay well below the peak.
    ms = rate // 1000
    assert abs(x[0]) <= 0.02 * peak and abs(x[-1]) <= 0.02 * peak
    assert np.max(np.abs(x[:ms])) <= 0.3 * peak and np.max(np.abs(x[-ms:])) <= 0.3 * peak


@pytest.mark.parametrize("rate", RATES)
def test_two_tones_rise_and_fall(rate: int) -> None:
    tenth = rate // 10
    up, down = samples("connected", rate), samples("ended", rate)
    assert dominant_hz(up[:tenth], rate) < dominant_hz(up[-tenth:], rate)
    assert dominant_hz(down[:tenth], rate) > dominant_hz(down[-tenth:], rate)
    assert dominant_hz(samples("muted", rate), rate) < dominant_hz(samples("unmuted", rate), rate)


def test_error_is_three_beeps() -> None:
    rate = 16000
    x = np.abs(samples("error", rate))
    envelope = np.array([x[i : i + 160].max() for i in range(0, len(x), 160)])  # per 10 ms
    loud = envelope > 0.1 * envelope.max()
    starts = np.count_nonzero(loud[1:] & ~loud[:-1]) + int(loud[0])
    assert starts == 3


def test_earcons_are_distinct_and_cached() -> None:
    sounds = {earcon_pcm(name, 16000) for name in EARCON_NAMES}
    assert len(sounds) == len(EARCON_NAMES)
    assert earcon_pcm("connected", 16000) is earcon_pcm("connected", 16000)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown earcon"):
        earcon_pcm("ding", 16000)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="10 ms"):
        earcon_pcm("connected", 22050)

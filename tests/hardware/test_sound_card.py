"""The ALSA backend and the echo canceller on the device's own sound card (see conftest.py).

What only real hardware shows: the card paces reads and writes in real time at the rates we ask
for, without overruns or underruns; `drop()` silences the speaker at once; and the speaker's
echo, as the mic really hears it, is found and cancelled.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from device.audio.formats import DSP_RATE
from device.doctor.echo import ChirpPlan, analyse, record_echo
from hw.alsa import AlsaAudioBackend

pytestmark = pytest.mark.hardware

SECONDS = 2.0


def test_capture_is_paced_by_the_card_without_overruns(backend: AlsaAudioBackend) -> None:
    mic = backend.capture(DSP_RATE, DSP_RATE // 100)
    fmt = mic.open()
    try:
        assert fmt.sample_rate == DSP_RATE
        mic.read()   # the first period may be waiting already
        start = time.monotonic()
        periods = [mic.read() for _ in range(int(SECONDS * 100))]
        elapsed = time.monotonic() - start
    finally:
        mic.close()
    assert all(len(p) == DSP_RATE // 100 * 2 for p in periods)
    assert SECONDS * 0.9 <= elapsed <= SECONDS * 1.2, f"{SECONDS} s of audio took {elapsed:.2f} s"
    assert mic.overruns == 0
    samples = np.frombuffer(b"".join(periods), dtype="<i2")
    assert samples.std() > 0, "the mic delivered a constant signal: is it connected and unmuted?"


@pytest.mark.parametrize("rate", [16000, 24000, 48000])
def test_playback_is_paced_by_the_card_and_drop_is_immediate(backend: AlsaAudioBackend, rate: int) -> None:
    period = rate // 100
    t = np.arange(int(SECONDS * rate)) / rate
    tone = (np.sin(2 * np.pi * 440 * t) * 1000).astype("<i2").tobytes()   # -30 dBFS
    speaker = backend.playback(rate, period, 3)
    fmt = speaker.open()
    try:
        assert fmt.sample_rate == rate
        for _ in range(3):
            speaker.write(bytes(period * 2))   # fill the buffer: from here on, writes wait for the card
        start = time.monotonic()
        for i in range(0, len(tone), period * 2):
            speaker.write(tone[i:i + period * 2])
        elapsed = time.monotonic() - start
        dropped_at = time.monotonic()
        speaker.drop()
        drop_seconds = time.monotonic() - dropped_at
    finally:
        speaker.close()
    assert SECONDS * 0.9 <= elapsed <= SECONDS * 1.2, f"{SECONDS} s of audio took {elapsed:.2f} s"
    assert speaker.underruns == 0
    assert drop_seconds < 0.01


def test_the_speakers_echo_is_found_and_cancelled(backend: AlsaAudioBackend) -> None:
    """The doctor's chirp test on the real devices (audible): the canceller takes >= 20 dB off."""
    plan = ChirpPlan()
    recording = record_echo(backend, 16000, plan, period_ms=10, buffer_periods=3)
    measurement = analyse(recording, plan)
    if not measurement.found:
        pytest.skip("the mic does not hear the speaker (no echo path to cancel)")
    assert measurement.delay_ms is not None and 0 < measurement.delay_ms < 500
    assert measurement.erle_db is not None
    assert measurement.erle_db >= 20.0 or measurement.erle_limited, measurement

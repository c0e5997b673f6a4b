"""Speaker volume: the perceptual curve and the software gain the playback thread applies.

The level is 0-100 %. Loudness is heard in decibels, so the steps are equal in dB: 100 % is
unity gain (0 dB), 1 % is `floor_db` (e.g. -30 dB: still audible in a quiet room, which a
linear 1 % at -40 dB is not) and the steps between are spread evenly; 0 % is silence.

The software gain scales every period the playback thread writes (agent audio and earcons alike)
*before* it is written and handed to the echo canceller as its reference, so the reference is
still exactly what was played and the echo path the canceller learned does not change with the
volume. A hardware mixer (`hw.audio.VolumeControl`) instead changes the level after the
reference tap: the echo gets louder or quieter while the reference does not, so the canceller
has to re-converge after each step (measured in tests/dsp/test_volume_echo.py).
"""
from __future__ import annotations

import math
from typing import Final

import numpy as np

MAX_LEVEL: Final = 100
DEFAULT_FLOOR_DB: Final = -30.0


def level_db(level: int, floor_db: float = DEFAULT_FLOOR_DB) -> float:
    """The gain in dB for `level` % (-inf for 0)."""
    if level <= 0:
        return -math.inf
    level = min(level, MAX_LEVEL)
    return floor_db * (MAX_LEVEL - level) / (MAX_LEVEL - 1)


def level_gain(level: int, floor_db: float = DEFAULT_FLOOR_DB) -> float:
    """The linear amplitude factor for `level` % (0.0 for 0, 1.0 for 100)."""
    db = level_db(level, floor_db)
    return 0.0 if db == -math.inf else float(10 ** (db / 20))


def clamp_level(level: int) -> int:
    return max(0, min(MAX_LEVEL, level))


class SoftwareGain:
    """The gain applied to every period before the speaker and the reference tap.

    `gain` is written by the thread that changes the volume (one float assignment, atomic in
    CPython) and read by the playback thread in `apply`, which leaves the bytes untouched at
    unity (no cost at 100 %, the default with a hardware mixer).
    """

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = gain
        # The event stream's speaker meter: while `measure` is set (by the service, when a
        # subscriber asked for levels), the playback thread stores each period's level here.
        self.measure = False
        self.level_dbfs = -120.0

    def apply(self, pcm: bytes) -> bytes:
        gain = self.gain
        if gain == 1.0:
            return pcm
        if gain == 0.0:
            return bytes(len(pcm))
        scaled = np.frombuffer(pcm, "<i2").astype(np.float32) * gain
        return np.clip(np.round(scaled), -32768, 32767).astype("<i2").tobytes()

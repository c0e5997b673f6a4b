"""Earcons: the short sounds that tell a person what happened without looking at the LEDs.

Synthesized with numpy on first use (no asset files to ship or lose) and cached per
(name, sample rate). Each is PCM16 LE mono, at most 350 ms, peaking at -12 dBFS so it never
startles next to the agent's voice, with 5 ms fades at both ends so the speaker does not click,
and a whole number of 10 ms periods long, because the playback thread writes 10 ms periods and
a partial last period would have to be padded (or would trip the AEC's 10 ms frame guard).

| name      | sound                                   | meaning                          |
| --------- | --------------------------------------- | -------------------------------- |
| connected | rising two-tone, D5 then A5 (300 ms)    | the agent is on the line         |
| ended     | falling two-tone, A5 then D5 (300 ms)   | the call ended                   |
| muted     | one low blip, A4 (150 ms)               | the mic is closed                |
| unmuted   | one high blip, A5 (150 ms)              | the mic is open again            |
| error     | three short low beeps, E4 (300 ms)      | something failed (see the LEDs)  |
| warning   | two soft beeps, G5 G5 (300 ms)          | a call limit is near: speak up   |
| volume    | one short blip, D5 (80 ms)              | the new speaker level (played at it) |
| wake      | quick rising three notes, D5 G5 A5 (200 ms) | the wake word was heard: go on speaking |

Every partial stays below 4 kHz (the Nyquist limit at 8 kHz), and the tones carry a few
harmonics so that they stay audible on small kiosk speakers that reproduce little below 500 Hz.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final, get_args

import numpy as np

from device.core.events import EarconName

EARCON_NAMES: Final[tuple[EarconName, ...]] = get_args(EarconName)
PEAK_DBFS: Final = -12.0
FADE_SECONDS: Final = 0.005
PERIOD_SECONDS: Final = 0.010
MAX_SECONDS: Final = 0.350

_SOFT: Final = (1.0, 0.25, 0.08)           # harmonic amplitudes: a mellow, bell-like tone
_BUZZY: Final = (1.0, 0.0, 0.35, 0.0, 0.15)  # odd harmonics: a squarer, more urgent error tone
_D5, _A4, _A5, _E4, _G5 = 587.33, 440.0, 880.0, 329.63, 783.99


@dataclass(frozen=True)
class _Note:
    start: float      # seconds from the beginning
    length: float     # seconds
    freq: float       # Hz, fundamental
    harmonics: tuple[float, ...] = _SOFT


_EARCONS: Final[dict[str, tuple[float, tuple[_Note, ...]]]] = {
    # name: (total seconds, notes); the notes of a two-tone overlap a little so it sounds legato
    "connected": (0.30, (_Note(0.0, 0.13, _D5), _Note(0.11, 0.19, _A5))),
    "ended": (0.30, (_Note(0.0, 0.13, _A5), _Note(0.11, 0.19, _D5))),
    "muted": (0.15, (_Note(0.0, 0.14, _A4),)),
    "unmuted": (0.15, (_Note(0.0, 0.14, _A5),)),
    "error": (0.30, tuple(_Note(start, 0.07, _E4, _BUZZY) for start in (0.0, 0.11, 0.22))),
    # Two identical soft notes: a "still there?" nudge, neither the error's buzz nor a chime that
    # could be taken for the call's end.
    "warning": (0.30, (_Note(0.0, 0.12, _G5), _Note(0.16, 0.13, _G5))),
    "volume": (0.08, (_Note(0.0, 0.075, _D5),)),
    # Short and rising, unlike "connected": an instant "I heard you" while the call still connects.
    "wake": (0.20, (_Note(0.0, 0.07, _D5), _Note(0.06, 0.07, _G5), _Note(0.12, 0.08, _A5))),
}


def _note(note: _Note, sample_rate: int) -> np.ndarray:
    n = round(note.length * sample_rate)
    t = np.arange(n) / sample_rate
    wave = sum(
        (amp * np.sin(2 * np.pi * note.freq * (k + 1) * t) for k, amp in enumerate(note.harmonics) if amp),
        start=np.zeros(n),
    )
    # A soft bell envelope: a 5 ms attack, an exponential decay, and a 15 ms release to zero so a
    # note that ends before the buffer does cannot click either.
    attack = np.clip(t / FADE_SECONDS, 0.0, 1.0)
    decay = np.exp(-t / (note.length * 0.6))
    release = np.clip((note.length - t) / 0.015, 0.0, 1.0)
    result: np.ndarray = wave * attack * decay * release
    return result


def earcon_pcm(name: EarconName, sample_rate: int) -> bytes:
    """The earcon `name` as PCM16 LE mono at `sample_rate` Hz (any thread; cached, immutable).

    `sample_rate` must hold a whole number of samples per 10 ms (8000, 16000, 24000, 44100, 48000...).
    Raises ValueError for an unknown name or such a rate.
    """
    return _synthesize(name, sample_rate)


# The cache sits behind a typed wrapper because lru_cache erases the signature for type checkers.
@functools.lru_cache(maxsize=32)
def _synthesize(name: str, sample_rate: int) -> bytes:
    if name not in _EARCONS:
        raise ValueError(f"unknown earcon {name!r}; choose one of {sorted(_EARCONS)}")
    if sample_rate <= 0 or sample_rate % 100:
        raise ValueError(f"sample rate {sample_rate} Hz has no whole number of samples per 10 ms")
    seconds, notes = _EARCONS[name]
    period = sample_rate // 100
    total = round(seconds / PERIOD_SECONDS) * period
    signal = np.zeros(total)
    for note in notes:
        start = round(note.start * sample_rate)
        tone = _note(note, sample_rate)[: total - start]
        signal[start : start + len(tone)] += tone
    fade = max(1, round(FADE_SECONDS * sample_rate))
    ramp = np.linspace(0.0, 1.0, fade)
    signal[:fade] *= ramp
    signal[-fade:] *= ramp[::-1]
    peak = float(np.max(np.abs(signal)))
    if peak > 0:
        signal *= (10 ** (PEAK_DBFS / 20)) * 32767 / peak
    return np.round(signal).astype("<i2").tobytes()

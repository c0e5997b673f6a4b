"""The shape of the echo path, from the doctor's first test chirp: the measured impulse response,
its reverberation time and the speaker's harmonic distortion (numpy only).

The impulse response is the recording around chirp A divided by the chirp in the frequency domain
(inside the chirp's band). An exponential sweep has a property this uses (Farina's method): the
k-th harmonic a distorting speaker adds lands in the deconvolved response *before* the linear
response, by `chirp_seconds * ln(k) / ln(high / low)` (~115 ms for the 2nd, ~185 ms for the 3rd
harmonic of the default plan). So one division gives both:

- **decay time**: the level of the response's tail (from 10 ms after the direct sound) in 10 ms
  bins, a line fitted from there down to where the noise begins (at most 25 dB down),
  extrapolated to 60 dB (an RT60; a dry kiosk shows 0.1-0.3 s, a hall-like room 0.6 s and more);
- **distortion**: the energy in the harmonic window before the linear response over the linear
  response's, in dB (a clean speaker is below -40 dB; a small one driven into clipping -25 dB
  and louder). Noise also lands there, so the same window's energy from a noise-only stretch is
  taken off first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

PRE_SECONDS: Final = 0.3           # room before the write time for the harmonic responses
DECAY_BOTTOM_DB: Final = -25.0
NOISE_MARGIN_DB: Final = 10.0      # the fit stops this far above the response's noise floor
LINEAR_GUARD_S: Final = 0.01       # the linear response starts this much before its peak
HARMONIC_WINDOW: Final = (0.25, 0.02)   # seconds before the peak: where harmonics 2-4 land


@dataclass(frozen=True)
class EchoPathShape:
    """What the impulse response says (None where it could not be told; an immutable value)."""

    decay_ms: float | None           # RT60 extrapolated from the measured decay
    direct_to_reverb_db: float | None
    distortion_db: float | None      # harmonic energy over linear energy


def impulse_response(rec: np.ndarray, template: np.ndarray, start: int, length: int, rate: int,
                     band: tuple[float, float]) -> np.ndarray:
    """The response from `PRE_SECONDS` before sample `start` for `length` samples, by division
    by the template's spectrum within `band` (Hz); outside it the response is left at zero."""
    first = max(0, start - int(PRE_SECONDS * rate))
    segment = rec[first:first + length]
    size = 1 << (len(segment) + len(template)).bit_length()
    y = np.fft.rfft(segment, size)
    x = np.fft.rfft(template, size)
    freqs = np.fft.rfftfreq(size, 1 / rate)
    inside = (freqs >= band[0] * 1.1) & (freqs <= band[1] * 0.9)
    h = np.zeros_like(y)
    h[inside] = y[inside] / x[inside]
    return np.fft.irfft(h, size)[:length]


def _decay_ms(energy: np.ndarray, rate: int, floor: float) -> float | None:
    """RT60 from the decay of `energy` (the squared response's tail): its level in 10 ms bins, in
    dB, fitted by a line from the first bin down to where it comes within `NOISE_MARGIN_DB` of
    the noise floor (or `DECAY_BOTTOM_DB` under the first bin), extrapolated to 60 dB."""
    step = int(0.01 * rate)
    bins = len(energy) // step
    if bins < 3:
        return None
    level = 10 * np.log10(np.maximum(energy[:bins * step].reshape(bins, step).mean(axis=1), 1e-30))
    stop_at = max(float(level[0]) + DECAY_BOTTOM_DB, 10 * math.log10(max(floor, 1e-30)) + NOISE_MARGIN_DB)
    below = np.nonzero(level < stop_at)[0]
    last = int(below[0]) if len(below) else bins
    if last < 3 or float(level[0]) - stop_at < 10:
        return None   # too little decay over the noise to fit
    t = np.arange(last) * 0.01
    slope = np.polyfit(t, level[:last], 1)[0]   # dB per second, negative
    return None if slope >= 0 else 1000 * -60.0 / slope


def analyse_path(rec: np.ndarray, template: np.ndarray, start: int, noise: slice, rate: int,
                 band: tuple[float, float], max_delay_s: float) -> EchoPathShape:
    """The shape of the echo of the chirp written at sample `start` (`noise`: a quiet stretch)."""
    length = int((PRE_SECONDS + max_delay_s) * rate)
    ir = impulse_response(rec, template, start, length, rate, band)
    pre = int(PRE_SECONDS * rate)
    peak = pre + int(np.argmax(np.abs(ir[pre:]))) if len(ir) > pre else 0
    if peak <= pre and not np.any(ir):
        return EchoPathShape(None, None, None)
    guard = int(LINEAR_GUARD_S * rate)
    linear = ir[max(0, peak - guard):] ** 2
    # The response of the noise alone, as deconvolved the same way: its level is the floor.
    quiet = rec[noise]
    noise_ir = impulse_response(quiet, template, len(quiet) // 2, min(length, len(quiet) // 2), rate, band) \
        if len(quiet) > len(template) else np.zeros(1)
    floor = float(np.mean(noise_ir ** 2)) if len(noise_ir) else 0.0
    # The decay of the tail, after the direct sound (which would make a dry near mic look dead).
    decay = _decay_ms(linear[2 * guard:], rate, max(floor, 1e-30))
    direct = float(np.sum(linear[:2 * guard]))
    reverb = float(np.sum(linear[2 * guard:])) - floor * max(len(linear) - 2 * guard, 0)
    d2r = 10 * math.log10(direct / reverb) if reverb > 0 and direct > 0 else None
    a, b = (peak - int(HARMONIC_WINDOW[0] * rate), peak - int(HARMONIC_WINDOW[1] * rate))
    distortion = None
    if a >= 0 and b > a:
        harmonic = float(np.sum(ir[a:b] ** 2)) - floor * (b - a)
        total = float(np.sum(linear))
        if total > 0:
            distortion = 10 * math.log10(max(harmonic, total * 1e-7) / total)
    return EchoPathShape(decay, d2r, distortion)

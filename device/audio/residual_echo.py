"""Residual echo control after AEC3: a spectral suppressor for the echo its linear filter leaves.

AEC3's linear filter spans ~50 ms at 16 kHz and models a linear path: a reverberant far-field
room (RT60 0.6-0.9 s) or a small speaker driven into distortion leaves echo it cannot subtract.
This stage estimates, in 32 bands of 250 Hz, how much power of the far-end reference comes back
*after* AEC3, at each lag up to `LAGS` frames (a power-domain echo path: the reverberant tail and
the distortion products both show up there, since both follow the reference's energy), and turns
each band down where that estimate dominates what is left of the mic signal:

    reference frame -> band powers X(b, t)   (playback thread: `ReferenceSpectra.push`)
    AEC3 output     -> STFT -> Y(b, t) -> gain G(b, t) = max(floor, 1 - over * R(b, t) / Y(b, t))
                       with R(b, t) = sum_k H(b, k) X(b, t - k)   (capture thread: `process`)

H is learned by a normalised LMS on powers, only from frames where the output is not much
louder than the estimate (so a near-end talker, who makes it louder, barely moves it), with the
background noise (a slow minimum tracker) taken off first. Where R is small, G stays 1: a dry
room that AEC3 handles is left alone, and a near-end talker in double talk keeps his level (the
gain is driven by the estimate relative to what the mic hears, and a talker dominates it).

Hand-written (numpy) rather than a library: no maintained Python package offers a residual echo
suppressor fed by an external canceller's output; speexdsp's preprocessor has one, but it needs
speex's own echo canceller state, not AEC3's. Cost: one 320-point real FFT pair per frame plus a
(32 x LAGS) multiply-add: 2.1x the capture DSP itself (`python -m tools.bench_echo_control`), for
2-4 dB; off by default (docs/echo-edge.md).

Latency: one frame (10 ms), the overlap-add of 20 ms sqrt-Hann windows at a 10 ms hop.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Final

import numpy as np

from device.audio.formats import DSP_RATE, FRAME_SAMPLES

BANDS: Final = 32                    # 250 Hz each at the 16 kHz capture rate
BAND_HZ: Final = DSP_RATE / 2 / BANDS
LAGS: Final = 64                     # 640 ms of reference history per band (delay + tail)
WINDOW: Final = 2 * FRAME_SAMPLES    # 20 ms analysis window, 10 ms hop
FLOOR_DB: Final = -30.0              # the deepest a band is turned down
OVER_SUBTRACTION: Final = 2.0        # the estimate is scaled up this much before it is taken off
STEP: Final = 0.1                    # NLMS step on the power-domain echo path
ADAPT_MARGIN: Final = 4.0            # learn at full speed where the output is within 6 dB of the estimate
SLOW_STEP: Final = 0.05              # elsewhere (a talker, or an estimate still far too low) this much of it
# A signal of mean square P gives band powers summing to P * WINDOW**2 / 4 (Parseval, one-sided
# spectrum, sqrt-Hann window whose squares sum to WINDOW / 2).
BAND_POWER_PER_MEAN_SQUARE: Final = WINDOW ** 2 / 4
PENDING_LIMIT: Final = 50            # reference frames held for the capture thread at most (0.5 s)
_EPS: Final = 1e-12
_NO_POWERS: Final = np.zeros(BANDS)


def _sqrt_hann(n: int) -> np.ndarray:
    """A periodic sqrt-Hann window: analysis and synthesis with it at 50 % overlap sum to one."""
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n))


def band_starts(window: int, rate: int) -> np.ndarray:
    """The first rfft bin of each of the 32 bands of 0-8 kHz, for `np.add.reduceat`, plus the end
    (bins above 8 kHz, at a 24 or 48 kHz reference, are left out)."""
    freqs = np.fft.rfftfreq(window, 1 / rate)
    index = (freqs / BAND_HZ).astype(int)
    starts = np.searchsorted(index, np.arange(BANDS + 1))
    return starts.astype(np.intp)


def band_powers(spectrum: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Power per band of an rfft spectrum (`band_starts` gives `starts`)."""
    power = spectrum.real ** 2 + spectrum.imag ** 2
    return np.add.reduceat(power[:starts[-1]], starts[:-1])


class ReferenceSpectra:
    """The far-end reference as per-frame band powers, from the playback thread to the capture thread.

    `push` (playback thread) takes each 10 ms reference frame at its rate; `take` (capture thread)
    returns the band powers of everything pushed since the last call and its mean square (zeros
    when nothing came: the speaker is silent). A lock guards the hand-over; both sides hold it for a few list operations.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[tuple[np.ndarray, float]] = deque(maxlen=PENDING_LIMIT)
        self._rate = 0
        self._history = np.zeros(0)
        self._window = np.zeros(0)
        self._starts = np.zeros(BANDS + 1, dtype=np.intp)
        self._scale = 1.0

    def push(self, frame: np.ndarray, rate: int) -> None:
        """One 10 ms reference frame (float, PCM16 units) at `rate` (playback thread)."""
        if rate != self._rate:
            self._rate = rate
            self._history = np.zeros(len(frame))
            self._window = _sqrt_hann(2 * len(frame))
            self._starts = band_starts(2 * len(frame), rate)
            # Scaled to the 16 kHz analysis: the same sound gives the same band power at any rate.
            self._scale = (DSP_RATE / rate) ** 2
        spectrum = np.fft.rfft(np.concatenate([self._history, frame]) * self._window)
        self._history = frame
        powers = band_powers(spectrum, self._starts) * self._scale
        mean_square = float(np.dot(frame, frame)) / len(frame)
        with self._lock:
            self._pending.append((powers, mean_square))

    def push_level(self, mean_square: float) -> None:
        """One reference frame's level only (playback thread; when no suppressor needs spectra)."""
        with self._lock:
            self._pending.append((_NO_POWERS, mean_square))

    def take(self) -> tuple[np.ndarray, float]:
        """The band powers pushed since the last call, summed, and the largest frame mean square
        among them (capture thread)."""
        with self._lock:
            if not self._pending:
                return np.zeros(BANDS), 0.0
            total = sum((p for p, _ in self._pending), np.zeros(BANDS))
            loudest = max(m for _, m in self._pending)
            self._pending.clear()
        return total, loudest

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()


class ResidualEchoSuppressor:
    """The spectral residual echo suppressor on the AEC3 output (capture thread only).

    `process(frame, reference_powers)` takes one 10 ms frame (float, PCM16 units) and the reference
    band powers of the same period (`ReferenceSpectra.take`) and returns the suppressed frame, one
    frame late (overlap-add). `residual_ratio` says how much of the output is estimated echo.
    """

    def __init__(self, floor_db: float = FLOOR_DB, over: float = OVER_SUBTRACTION) -> None:
        self.floor = float(10 ** (floor_db / 20))
        self.over = over
        self._window = _sqrt_hann(WINDOW)
        self._starts = band_starts(WINDOW, DSP_RATE)
        self._band_of_bin = np.minimum((np.fft.rfftfreq(WINDOW, 1 / DSP_RATE) / BAND_HZ).astype(int), BANDS - 1)
        self._input = np.zeros(FRAME_SAMPLES)    # the previous input frame (first half of the window)
        self._overlap = np.zeros(FRAME_SAMPLES)  # the second half of the last synthesis
        # Reference band powers in a doubled ring: columns [p, p + LAGS) are lags 0..LAGS-1 (no copy
        # per frame); `_energy` is the running sum of their squares per band.
        self._ring = np.zeros((BANDS, 2 * LAGS))
        self._p = 0
        self._energy = np.zeros(BANDS)
        self._h = np.zeros((BANDS, LAGS))        # power-domain echo path after AEC3
        self._noise = np.full(BANDS, np.inf)     # background power per band (minimum tracker)
        self._gain = np.ones(BANDS)
        self.frames = 0
        self.suppressed_frames = 0               # frames where some band went below -6 dB
        self.last_echo_power = 0.0               # estimated residual echo in the last frame
        self.last_output_power = 0.0             # what the AEC3 output held (noise excluded)

    def process(self, frame: np.ndarray, reference_powers: np.ndarray) -> np.ndarray:
        self.frames += 1
        x = self._shift_in(reference_powers)
        block = np.concatenate([self._input, frame])
        self._input = frame
        spectrum = np.fft.rfft(block * self._window)
        y = band_powers(spectrum, self._starts)
        self._track_noise(y)
        target = np.maximum(y - self._noise, 0.0)
        estimate = (self._h * x).sum(axis=1)
        self._adapt(x, target, estimate)
        gain = np.clip(1.0 - self.over * estimate / np.maximum(y, _EPS), self.floor, 1.0)
        # Fast attack, slower release: a band that was echo opens over ~30 ms, not in one frame.
        gain = np.where(gain < self._gain, gain, 0.7 * self._gain + 0.3 * gain)
        self._gain = gain
        self.last_echo_power = float(np.sum(estimate))
        self.last_output_power = float(np.sum(target))
        if float(np.min(gain)) < 0.5:
            self.suppressed_frames += 1
        out = np.fft.irfft(spectrum * gain[self._band_of_bin], WINDOW) * self._window
        result = self._overlap + out[:FRAME_SAMPLES]
        self._overlap = out[FRAME_SAMPLES:]
        return result

    def _track_noise(self, y: np.ndarray) -> None:
        # Down at once, up by ~3 dB a second: the floor of the band, never a talker's level.
        self._noise = np.where(y < self._noise, y, self._noise * 1.007)

    def _shift_in(self, powers: np.ndarray) -> np.ndarray:
        """Add this frame's reference powers as lag 0; returns the (BANDS, LAGS) view, lag 0 first."""
        p = (self._p - 1) % LAGS
        oldest = self._ring[:, p]   # lag LAGS - 1 of the last frame: drops out now
        self._energy += powers * powers - oldest * oldest
        if self.frames % 1000 == 0:   # float error of the running sum, once in 10 s
            self._energy = np.sum(self._ring[:, self._p:self._p + LAGS] ** 2, axis=1) - oldest * oldest \
                + powers * powers
        np.maximum(self._energy, 0.0, out=self._energy)
        self._ring[:, p] = powers
        self._ring[:, p + LAGS] = powers
        self._p = p
        return self._ring[:, p:p + LAGS]

    def _adapt(self, x: np.ndarray, target: np.ndarray, estimate: np.ndarray) -> None:
        energy = self._energy
        active = energy > _EPS
        if not np.any(active):
            return
        # A near-end talker makes the output much louder than the echo estimate: those bands learn
        # at a crawl (an estimate that is still too low gets there, a talker barely moves it).
        step = np.where(target <= ADAPT_MARGIN * estimate, STEP, STEP * SLOW_STEP)
        error = np.where(active, target - estimate, 0.0)
        self._h += (step * error / np.maximum(energy, _EPS))[:, None] * x
        np.maximum(self._h, 0.0, out=self._h)

    @property
    def last_echo_mean_square(self) -> float:
        """The residual echo estimate of the last frame as a mean square (PCM16 units squared)."""
        return self.last_echo_power / BAND_POWER_PER_MEAN_SQUARE

    @property
    def residual_ratio(self) -> float:
        """Estimated residual echo over the output's power (noise excluded) in the last frame."""
        return self.last_echo_power / max(self.last_output_power, _EPS)

    def reset(self) -> None:
        """Forget the learned path (a new device pair), keep nothing of the old signal."""
        self._ring[:] = 0
        self._energy[:] = 0
        self._h[:] = 0
        self._gain[:] = 1
        self._noise[:] = np.inf
        self._input[:] = 0
        self._overlap[:] = 0

"""Clock drift compensation: the echo canceller's reference, kept on the mic's clock.

Two sound cards on separate crystals (a USB mic and a USB speaker) run tens to hundreds of ppm
apart: the echo of reference sample k reaches the mic at k * (1 + ppm * 1e-6) plus the bulk
delay, so the delay AEC3 has to track keeps moving (150 ppm: 9 ms a minute). AEC3 follows it,
but its linear filter keeps re-converging on a moving target (measured: 3-6 dB of echo reduction
lost at +-150 ppm in a dry room, more at 500 ppm). `DriftCompensator` stretches the reference
by the same factor before the canceller sees it, so the echo delay stays put.

The resampler is hand-written (numpy, a 32-tap Kaiser-windowed sinc at each output sample's own
fractional position, from a table of 512 phases blended linearly) because the ratio must be able to change while streaming without
a step: soxr's `ResampleStream` takes one fixed ratio, and a new stream per change would restart
its filter (a click and a delay jump in the reference, which AEC3 would have to re-find). At a
ratio of exactly 1 (`ppm == 0`, the default) it is a plain pass-through.

Sign: `ppm` is the doctor's (`device/doctor/echo.py`): positive when the echo delay grows over time
(the mic's clock is faster than the speaker's), so the reference gets 1 + ppm * 1e-6 samples per
sample. Playback thread only (it sits on the reference path).
"""
from __future__ import annotations

from typing import Final

import numpy as np

HALF_TAPS: Final = 16            # taps each side of the interpolation point
KAISER_BETA: Final = 8.0         # ~ -80 dB side lobes
PHASES: Final = 512              # fractional positions tabulated (blended linearly in between)
MAX_PPM: Final = 2000.0          # beyond this it is not two crystals but a wrong rate setting


class DriftCompensator:
    """Streaming fractional resampler by 1 + ppm * 1e-6 on PCM16 samples (playback thread only).

    `process` takes any number of samples (float or int16) and returns the resampled ones as
    float64; the output lags the input by `HALF_TAPS` samples (1 ms at 16 kHz). `set_ppm` changes
    the ratio from the next sample on, without a discontinuity.
    """

    def __init__(self, ppm: float = 0.0) -> None:
        self.ppm = 0.0
        self._step = 1.0                          # input samples per output sample
        self._buffer = np.zeros(2 * HALF_TAPS - 1)  # input history: a left half, then what is pending
        self._position = float(HALF_TAPS - 1)       # where in it the next output sample is read
        self._offsets = np.arange(-HALF_TAPS + 1, HALF_TAPS + 1)
        # Windowed-sinc weights at PHASES + 1 fractional positions in [0, 1], once (np.i0 per
        # sample would cost ~8x the capture DSP itself).
        frac = np.arange(PHASES + 1)[:, None] / PHASES
        distance = frac - self._offsets[None, :]
        window = np.i0(KAISER_BETA * np.sqrt(np.clip(1 - (distance / HALF_TAPS) ** 2, 0, 1))) / np.i0(KAISER_BETA)
        self._table = np.sinc(distance) * window
        self.samples_in = 0
        self.samples_out = 0
        self.set_ppm(ppm)

    def set_ppm(self, ppm: float) -> None:
        if not -MAX_PPM <= ppm <= MAX_PPM:
            raise ValueError(f"clock drift must be within +-{MAX_PPM:g} ppm, not {ppm:g}")
        self.ppm = float(ppm)
        self._step = 1.0 / (1.0 + self.ppm * 1e-6)

    @property
    def active(self) -> bool:
        return self.ppm != 0.0

    def process(self, samples: np.ndarray) -> np.ndarray:
        self.samples_in += len(samples)
        if not self.active and self._position == HALF_TAPS - 1:
            # Exactly on the grid: the output is the input, one filter half late (what the sinc
            # would give at integer positions, without computing it).
            joined = np.concatenate([self._buffer, np.asarray(samples, dtype=np.float64)])
            out = joined[HALF_TAPS - 1:HALF_TAPS - 1 + len(samples)]
            self._buffer = joined[len(samples):]
            self.samples_out += len(out)
            return out
        self._buffer = np.concatenate([self._buffer, np.asarray(samples, dtype=np.float64)])
        last = len(self._buffer) - HALF_TAPS - 1   # the last position with a full right half
        count = int(np.floor((last - self._position) / self._step)) + 1 if last >= self._position else 0
        if count <= 0:
            return np.zeros(0)
        positions = self._position + self._step * np.arange(count)
        base = np.floor(positions).astype(np.int64)
        frac = positions - base
        taps = base[:, None] + self._offsets[None, :]
        scaled = frac * PHASES
        row = np.minimum(scaled.astype(np.int64), PHASES - 1)
        blend = (scaled - row)[:, None]
        weights = self._table[row] * (1 - blend) + self._table[row + 1] * blend
        out = np.einsum("nk,nk->n", self._buffer[np.clip(taps, 0, len(self._buffer) - 1)], weights)
        self._position += self._step * count
        # Keep what the next outputs still need (their left half), re-based to index 0.
        drop = max(0, int(np.floor(self._position)) - HALF_TAPS + 1)
        self._buffer = self._buffer[drop:]
        self._position -= drop
        self.samples_out += count
        return out

    def reset(self) -> None:
        """Forget the stream (a rate change or a reopened speaker); the ratio stays."""
        self._buffer = np.zeros(2 * HALF_TAPS - 1)
        self._position = float(HALF_TAPS - 1)

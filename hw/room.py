"""The fake room: the acoustic path from the fake speaker to the fake mic, as real kiosks have it.

`FakeRoom` carries the speaker's output back into the microphone with a bulk delay, a gain and an
impulse response (reverberation), and, each off by default, what real rooms add:

- clock drift: the speaker and the mic are two devices with their own crystals, so the echo is
  the speaker signal resampled continuously by 1 + ppm/1e6 (`DriftingLine`), and its alignment
  with the reference walks by `drift_ppm` microseconds every second;
- loudspeaker nonlinearity: a small speaker driven hard saturates, adding harmonics that grow
  with level (`SpeakerNonlinearity`), which no linear echo canceller can model;
- ambient noise at a set RMS level in dBFS (`AmbientNoise`).

`FakeAudioBackend` (hw.fake_audio) owns one and feeds it from the speaker and mic threads;
`FakeRoom.from_settings` builds it from the `fake_*` settings (`hw.settings.FakeAudioSettings`).
Samples are float64 in PCM16 units (32768 = full scale) throughout.
"""
from __future__ import annotations

import functools
import math
import threading
from collections import deque
from pathlib import Path
from typing import Final

import numpy as np
import soxr

from hw.settings import FakeAudioSettings
from hw.wavio import read_wav_mono16

DEFAULT_ECHO_GAIN_DB: Final = -6.0   # the room's echo gain when only an impulse response is set
PCM16_FULL_SCALE: Final = 32768.0


class SpeakerNonlinearity:
    """A small loudspeaker near its limits (pure function of its input; the speaker thread).

    Soft clipping: `ceiling * tanh(x / ceiling)` with the ceiling `clip_dbfs` below full scale,
    so a quiet signal passes almost unchanged (the third harmonic of a sine of peak A is about
    (A / ceiling)^2 / 12 of it) and a loud one is compressed towards the ceiling: the harmonic
    distortion grows with level, as a kiosk speaker's does at high volume.
    """

    def __init__(self, clip_dbfs: float) -> None:
        self.clip_dbfs = clip_dbfs
        self.ceiling = PCM16_FULL_SCALE * 10 ** (clip_dbfs / 20)

    def apply(self, samples: np.ndarray) -> np.ndarray:
        return self.ceiling * np.tanh(samples / self.ceiling)


class AmbientNoise:
    """Room noise at the mic: seeded pink noise (1/f power, rolled off below 40 Hz) at `level_dbfs`
    RMS, read in order by the mic thread. One period of `PERIOD_SECONDS` is made once by spectral
    shaping and played in a loop, so each read costs a copy (noise by FFT, not a filter per
    sample: numpy has no stateful IIR filter and this needs none)."""

    PERIOD_SECONDS: Final = 16.0

    def __init__(self, level_dbfs: float, rate: int, seed: int = 0) -> None:
        self.level_dbfs = level_dbfs
        n = int(self.PERIOD_SECONDS * rate)
        rng = np.random.default_rng(seed)
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / rate)
        shape = np.zeros_like(freqs)
        audible = freqs > 0
        shape[audible] = 1 / np.sqrt(freqs[audible]) / np.sqrt(1 + (40.0 / freqs[audible]) ** 4)
        noise = np.fft.irfft(spectrum * shape, n)
        rms = float(np.sqrt(np.mean(np.square(noise))))
        self._loop = noise / rms * PCM16_FULL_SCALE * 10 ** (level_dbfs / 20)
        self._pos = 0

    def read(self, frames: int) -> np.ndarray:
        idx = (self._pos + np.arange(frames)) % len(self._loop)
        self._pos = (self._pos + frames) % len(self._loop)
        return self._loop[idx]


class DriftingLine:
    """Reads a sample FIFO at a rate slightly off 1:1: the speaker's clock against the mic's.

    Each mic sample takes the line at a fractional position that advances by
    `1 + (drift_ppm + wander_ppm * sin(2 pi t / wander_period_s)) / 1e6` line samples, with a
    windowed-sinc interpolator (`HALF_TAPS` each side, Kaiser window), so the echo is resampled
    continuously, never in steps. Positive ppm: the speaker's clock runs fast, the line drains
    and the echo comes earlier against the reference by ppm microseconds per second. Hand-written
    because soxr streams have a fixed ratio and hold back ~25 ms of samples (which would add to
    the echo delay), and python-soxr does not expose soxr's variable-ratio mode. Not thread-safe:
    `FakeRoom` calls it under its lock.
    """

    HALF_TAPS: Final = 16
    CUTOFF: Final = 0.95      # of Nyquist: the interpolator's low-pass
    KAISER_BETA: Final = 8.0
    PHASES: Final = 1024      # fractional positions tabulated (blended linearly in between)

    def __init__(self, rate: int, drift_ppm: float, wander_ppm: float = 0.0,
                 wander_period_s: float = 60.0) -> None:
        self.rate = rate
        self.drift_ppm = drift_ppm
        self.wander_ppm = wander_ppm
        self.wander_period_s = wander_period_s
        self._buf = np.zeros(self.HALF_TAPS)   # line samples from absolute index `_base` on
        self._base = -self.HALF_TAPS           # (zeros before the line's start)
        self._pos = 0.0                        # line position of the next mic sample
        self._mic_samples = 0                  # mic samples produced (the wander's time)
        self.underrun_samples = 0              # line samples that were missing and read as silence

    @property
    def position(self) -> float:
        """Line samples consumed so far (fractional)."""
        return self._pos

    @functools.cached_property
    def _table(self) -> np.ndarray:
        """Interpolation weights for `PHASES + 1` fractional positions in [0, 1], `2 * HALF_TAPS` each."""
        h = self.HALF_TAPS
        frac = np.linspace(0.0, 1.0, self.PHASES + 1)
        x = np.arange(-h + 1, h + 1)[None, :] - frac[:, None]   # tap distance, in samples
        window = np.i0(self.KAISER_BETA * np.sqrt(np.clip(1 - (x / h) ** 2, 0, None))) / np.i0(self.KAISER_BETA)
        weights = np.sinc(self.CUTOFF * x) * window
        return weights / weights.sum(axis=1, keepdims=True)   # unity gain at DC

    def _weights(self, frac: np.ndarray) -> np.ndarray:
        """Weights for each fractional position: the table's two nearest phases, blended linearly."""
        scaled = frac * self.PHASES
        lower = np.minimum(scaled.astype(np.int64), self.PHASES - 1)
        blend = (scaled - lower)[:, None]
        table = self._table
        return table[lower] * (1 - blend) + table[lower + 1] * blend

    def _steps(self, frames: int) -> np.ndarray:
        ppm = np.full(frames, self.drift_ppm)
        if self.wander_ppm:
            t = (self._mic_samples + np.arange(frames)) / self.rate
            ppm = ppm + self.wander_ppm * np.sin(2 * np.pi * t / self.wander_period_s)
        return 1.0 + ppm * 1e-6

    def read(self, frames: int, line: deque[np.ndarray]) -> tuple[np.ndarray, int]:
        """The next `frames` mic samples, pulling what they need from `line` (left end first).
        Returns the samples and how many line samples were pulled."""
        h = self.HALF_TAPS
        steps = self._steps(frames)
        positions = self._pos + np.concatenate(([0.0], np.cumsum(steps[:-1])))
        need_end = math.floor(positions[-1]) + h + 1   # absolute index one past the last tap
        pulled: list[np.ndarray] = [self._buf]
        have_end = self._base + len(self._buf)
        taken = 0
        while have_end < need_end and line:
            chunk = line.popleft()
            pulled.append(chunk)
            have_end += len(chunk)
            taken += len(chunk)
        if have_end < need_end:
            self.underrun_samples += need_end - have_end
            pulled.append(np.zeros(need_end - have_end))
        buf = np.concatenate(pulled) if len(pulled) > 1 else self._buf
        whole = np.floor(positions).astype(np.int64)
        weights = self._weights(positions - whole)
        offsets = np.arange(-h + 1, h + 1)
        taps = buf[(whole - self._base)[:, None] + offsets[None, :]]
        out = np.sum(taps * weights, axis=1)
        self._pos = float(positions[-1] + steps[-1])
        self._mic_samples += frames
        keep_from = math.floor(self._pos) - h + 1            # the oldest tap the next read uses
        cut = max(0, keep_from - self._base)
        self._buf = buf[cut:]
        self._base += cut
        # Pulled samples beyond what we keep for the next read stay in `_buf`, not in `line`.
        return out, taken


class FakeRoom:
    """Acoustic path from the fake speaker to the fake mic (thread-safe: speaker and mic threads).

    The speaker's samples go through the speaker's nonlinearity (if set), enter a delay line at
    the mic rate (resampled with a soxr stream when the rates differ); each mic period takes the
    next samples out, at the mic's clock (`DriftingLine` when the clocks drift), convolved with
    the impulse response and scaled by the gain; `mic_sound` adds the ambient noise. The line is
    consumed at the mic's pace, so the echo delay is the bulk delay plus whatever the speaker has
    queued ahead, as on real hardware. With every option at its default the room is exactly
    today's delay, gain and impulse response.
    """

    MAX_BACKLOG_SECONDS = 2.0
    DIRECT_TAPS = 512   # impulse responses up to this long are convolved directly (exact)

    def __init__(
        self,
        mic_rate: int,
        delay_ms: float = 0.0,
        gain_db: float = DEFAULT_ECHO_GAIN_DB,
        impulse_response: np.ndarray | None = None,
        *,
        drift_ppm: float = 0.0,
        drift_wander_ppm: float = 0.0,
        drift_wander_period_s: float = 60.0,
        speaker_clip_dbfs: float | None = None,
        noise_dbfs: float | None = None,
        noise_seed: int = 0,
    ) -> None:
        self.mic_rate = mic_rate
        self.gain = float(10 ** (gain_db / 20)) if gain_db != -math.inf else 0.0
        ir = np.array([1.0]) if impulse_response is None else np.asarray(impulse_response, dtype=np.float64)
        self._ir = ir * self.gain
        self._tail = np.zeros(max(len(self._ir) - 1, 0))
        self._ir_spectrum: np.ndarray | None = None
        self._line: deque[np.ndarray] = deque()
        self._line_frames = 0
        self._lock = threading.Lock()
        self._resampler: soxr.ResampleStream | None = None
        self._speaker_rate: int | None = None
        self.dropped_frames = 0
        self.drift: DriftingLine | None = None
        if drift_ppm or drift_wander_ppm:
            self.drift = DriftingLine(mic_rate, drift_ppm, drift_wander_ppm, drift_wander_period_s)
        self.speaker = SpeakerNonlinearity(speaker_clip_dbfs) if speaker_clip_dbfs is not None else None
        self.noise = AmbientNoise(noise_dbfs, mic_rate, noise_seed) if noise_dbfs is not None else None
        delay_frames = round(delay_ms * mic_rate / 1000)
        if delay_frames:
            self._push(np.zeros(delay_frames))

    @classmethod
    def from_files(cls, mic_rate: int, delay_ms: float, gain_db: float, ir_file: str | Path | None,
                   **effects: float | None) -> FakeRoom:
        """A room whose impulse response is a WAV file (peak-normalised, then scaled by the gain);
        `effects` are the keyword options of `FakeRoom` (drift, speaker clipping, noise)."""
        ir = None
        if ir_file:
            ir = np.frombuffer(read_wav_mono16(ir_file, mic_rate), dtype="<i2").astype(np.float64) / 32768.0
            peak = np.max(np.abs(ir)) if ir.size else 0.0
            ir = ir / peak if peak > 0 else np.array([1.0])
        return cls(mic_rate, delay_ms, gain_db, ir, **effects)  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, settings: FakeAudioSettings, mic_rate: int) -> FakeRoom | None:
        """The room the `fake_*` settings describe, or None: a room exists when an echo gain, an
        impulse response or ambient noise is set (noise alone: a room with no echo)."""
        has_echo = settings.fake_echo_gain_db is not None or settings.fake_echo_ir_file is not None
        if not has_echo and settings.fake_noise_dbfs is None:
            return None
        gain_db = settings.fake_echo_gain_db
        if gain_db is None:
            gain_db = DEFAULT_ECHO_GAIN_DB if has_echo else -math.inf
        return cls.from_files(mic_rate, settings.fake_echo_delay_ms, gain_db, settings.fake_echo_ir_file,
                              drift_ppm=settings.fake_echo_drift_ppm,
                              speaker_clip_dbfs=settings.fake_speaker_clip_dbfs,
                              noise_dbfs=settings.fake_noise_dbfs)

    def _push(self, samples: np.ndarray) -> None:
        self._line.append(samples)
        self._line_frames += len(samples)
        limit = int(self.MAX_BACKLOG_SECONDS * self.mic_rate)
        while self._line_frames > limit and self._line:
            old = self._line.popleft()
            self._line_frames -= len(old)
            self.dropped_frames += len(old)

    def speaker_played(self, pcm: bytes, rate: int) -> None:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        with self._lock:
            if self.speaker is not None:
                samples = self.speaker.apply(samples)
            if rate != self.mic_rate:
                if self._resampler is None or self._speaker_rate != rate:
                    self._resampler = soxr.ResampleStream(rate, self.mic_rate, 1, dtype="float64")
                    self._speaker_rate = rate
                samples = self._resampler.resample_chunk(samples)
            if len(samples):
                self._push(samples)

    def _take_line(self, frames: int) -> np.ndarray:
        """The next `frames` line samples at the mic's clock (lock held)."""
        if self.drift is not None:
            out, taken = self.drift.read(frames, self._line)
            self._line_frames -= taken
            return out
        out = np.zeros(frames)
        filled = 0
        while filled < frames and self._line:
            head = self._line[0]
            take = min(frames - filled, len(head))
            out[filled:filled + take] = head[:take]
            if take == len(head):
                self._line.popleft()
            else:
                self._line[0] = head[take:]
            self._line_frames -= take
            filled += take
        return out

    def mic_echo(self, frames: int) -> np.ndarray:
        """The next `frames` echo samples (float, PCM16 scale) for the mic."""
        with self._lock:
            out = self._take_line(frames)
            if len(self._ir) == 1:
                return out * self._ir[0]
            full = self._convolve(out)
            full[: len(self._tail)] += self._tail
            self._tail = full[frames:].copy()
            return full[:frames]

    def _convolve(self, x: np.ndarray) -> np.ndarray:
        """The full linear convolution of `x` with the impulse response (lock held). Long
        responses (a reverberant room's 0.5-1 s) by FFT, with the response's spectrum kept for
        the period length: direct convolution of 160 samples with 16000 taps costs ~40x more."""
        if len(self._ir) <= self.DIRECT_TAPS:
            return np.convolve(x, self._ir)
        n_out = len(x) + len(self._ir) - 1
        size = 1 << (n_out - 1).bit_length()
        if self._ir_spectrum is None or len(self._ir_spectrum) != size // 2 + 1:
            self._ir_spectrum = np.fft.rfft(self._ir, size)
        return np.fft.irfft(np.fft.rfft(x, size) * self._ir_spectrum, size)[:n_out]

    def ambient(self, frames: int) -> np.ndarray:
        """The next `frames` samples of ambient noise (zeros without noise)."""
        with self._lock:
            return self.noise.read(frames) if self.noise is not None else np.zeros(frames)

    def mic_sound(self, frames: int) -> np.ndarray:
        """What the room puts into the mic over the next `frames`: the echo plus the ambient noise."""
        echo = self.mic_echo(frames)
        return echo + self.ambient(frames) if self.noise is not None else echo

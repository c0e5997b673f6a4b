"""Levels and progress for a person at a terminal: mic level meter, level bars, live status lines.

Levels are in dBFS of PCM16 (0 dBFS = full scale 32768): `peak` is the largest sample, `rms` the
root mean square (a full-scale sine reads -3 dBFS RMS). A sample at either rail (-32768 or
+32767) counts as clipped: the converter could not represent what the mic heard.

`LiveLine` is how every long operation of `doctor` shows progress: redrawn in place on a terminal,
plain lines (or nothing) when the output is a file or a pipe, so logs and scripts stay clean.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TextIO

import numpy as np

from hw.audio import AudioCapture

log = logging.getLogger(__name__)

FULL_SCALE: Final = 32768.0
SILENCE_DBFS: Final = -120.0       # what digital silence reads (instead of -inf)
BAR_FLOOR_DBFS: Final = -60.0      # the left edge of a level bar
BLOCK_SECONDS: Final = 0.1         # one meter reading per 100 ms: fast enough to follow speech
CLIP_LIMIT: Final = 32767          # |sample| at or above this is at a rail


def to_dbfs(amplitude: float) -> float:
    """An amplitude in PCM16 units as dBFS (SILENCE_DBFS for zero)."""
    if amplitude <= 0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20 * math.log10(amplitude / FULL_SCALE))


@dataclass(frozen=True)
class LevelReading:
    """The level of one block of audio (an immutable value; any thread)."""

    peak_dbfs: float
    rms_dbfs: float
    clipped: int          # samples at a rail

    @property
    def clipping(self) -> bool:
        return self.clipped > 0


def measure_levels(samples: np.ndarray) -> LevelReading:
    """Peak, RMS and clipped samples of PCM16 samples (any integer or float array in PCM16 units)."""
    if samples.size == 0:
        return LevelReading(SILENCE_DBFS, SILENCE_DBFS, 0)
    x = samples.astype(np.float64, copy=False)
    peak = float(np.max(np.abs(x)))
    rms = float(np.sqrt(np.mean(np.square(x))))
    clipped = int(np.count_nonzero((x >= CLIP_LIMIT) | (x <= -FULL_SCALE)))
    return LevelReading(to_dbfs(peak), to_dbfs(rms), clipped)


def pcm_samples(pcm: bytes) -> np.ndarray:
    """PCM16 LE mono bytes as an int16 array (no copy)."""
    return np.frombuffer(pcm, dtype="<i2")


def level_bar(reading: LevelReading, width: int = 40) -> str:
    """`[#########-----|      ]`: `#` up to the RMS, `|` at the peak, from -60 to 0 dBFS."""
    def cell(db: float) -> int:
        return round((min(max(db, BAR_FLOOR_DBFS), 0.0) - BAR_FLOOR_DBFS) / -BAR_FLOOR_DBFS * width)

    rms, peak = cell(reading.rms_dbfs), cell(reading.peak_dbfs)
    cells = ["#" if i < rms else " " for i in range(width)]
    if reading.peak_dbfs > BAR_FLOOR_DBFS:
        cells[min(max(peak - 1, 0), width - 1)] = "|"
    return "[" + "".join(cells) + "]"


def format_reading(reading: LevelReading, width: int = 40) -> str:
    """One meter line: the bar, RMS and peak in dBFS, and CLIP when a sample hit a rail."""
    clip = "  CLIP" if reading.clipping else ""
    return (f"mic {level_bar(reading, width)} rms {reading.rms_dbfs:6.1f}  "
            f"peak {reading.peak_dbfs:6.1f} dBFS{clip}")


def progress_bar(fraction: float, width: int = 24) -> str:
    """`[#######.........]  30%`."""
    fraction = min(max(fraction, 0.0), 1.0)
    done = round(fraction * width)
    return f"[{'#' * done}{'.' * (width - done)}] {fraction * 100:3.0f}%"


class LiveLine:
    """One status line redrawn in place on a terminal; on anything else, plain lines or nothing.

    Used by one thread (the CLI's main thread). `update` redraws the line on a terminal and is
    ignored elsewhere (a log file wants no carriage returns); `note` prints a line everywhere;
    `finish` replaces the live line with a final one. `enabled` False silences it entirely
    (`--json` keeps stdout for the JSON document).
    """

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None, enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty()) if tty is None and callable(isatty) else bool(tty)
        self.enabled = enabled
        self._shown = 0   # width of the live line on screen, to blank what a shorter one leaves

    def update(self, text: str) -> None:
        if not (self.enabled and self.tty):
            return
        pad = max(0, self._shown - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._shown = len(text)

    def clear(self) -> None:
        if self.enabled and self.tty and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
        self._shown = 0

    def note(self, text: str) -> None:
        """A line that stays (on a terminal, printed above a live line that is then redrawn)."""
        if not self.enabled:
            return
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, text: str) -> None:
        self.note(text)


@dataclass(frozen=True)
class MeterResult:
    """What the mic heard during `run_meter` (an immutable value)."""

    seconds: float
    peak_dbfs: float          # the loudest sample
    rms_dbfs: float           # over the whole run
    loudest_rms_dbfs: float   # the loudest 100 ms block (speech, if someone talked)
    floor_dbfs: float         # the 10th percentile of 100 ms blocks: the background noise
    clipped: int              # samples at a rail
    readings: int             # 100 ms blocks

    def to_json(self) -> dict[str, float | int]:
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def run_meter(
    capture: AudioCapture,
    seconds: float,
    on_reading: Callable[[LevelReading, float], None] = lambda reading, fraction: None,
    stop: Callable[[], bool] = lambda: False,
) -> MeterResult:
    """Read an open 16-bit mono mic for `seconds` (of audio, not wall time) and measure it.

    `on_reading(reading, fraction_done)` gets each 100 ms block (the live bar draws it); it runs
    on the calling thread, between reads, so it must be quick. `stop()` ends the run early.
    The device must be open; its period decides the block size (rounded to whole periods).
    """
    fmt = getattr(capture, "format", None)
    rate = int(getattr(fmt, "sample_rate", 16000))
    total = max(1, int(seconds * rate))
    block = max(1, int(BLOCK_SECONDS * rate))
    pending: list[np.ndarray] = []
    pending_frames = 0
    got = 0
    blocks: list[LevelReading] = []
    sum_sq = 0.0
    peak = 0.0
    clipped = 0
    started = time.monotonic()
    while got < total and not stop():
        samples = pcm_samples(capture.read())
        got += len(samples)
        pending.append(samples)
        pending_frames += len(samples)
        if pending_frames >= block or got >= total:
            joined = np.concatenate(pending).astype(np.float64)
            pending, pending_frames = [], 0
            reading = measure_levels(joined)
            blocks.append(reading)
            sum_sq += float(np.sum(np.square(joined)))
            peak = max(peak, float(np.max(np.abs(joined))) if joined.size else 0.0)
            clipped += reading.clipped
            on_reading(reading, min(got / total, 1.0))
    log.debug("meter: %d samples in %.2f s", got, time.monotonic() - started)
    rms_values = sorted(r.rms_dbfs for r in blocks) or [SILENCE_DBFS]
    return MeterResult(
        seconds=got / rate,
        peak_dbfs=to_dbfs(peak),
        rms_dbfs=to_dbfs(math.sqrt(sum_sq / got)) if got else SILENCE_DBFS,
        loudest_rms_dbfs=rms_values[-1],
        floor_dbfs=rms_values[len(rms_values) // 10],
        clipped=clipped,
        readings=len(blocks),
    )

"""Flight recorder for the capture DSP: the last N seconds of raw mic, processed mic and reference.

When echo cancellation misbehaves in the field, the three streams side by side say why (a late
reference, a clipping mic, a speaker louder than the canceller can follow). Enabled by the
ATOMS_DEBUG_RECORD_DIR setting; `dump` (on a signal, a control command, or at exit) writes the
three WAV files there. Memory is fixed: one ring per stream, `seconds * rate` 16-bit samples each
(30 s at 16 + 16 + 48 kHz is ~4.8 MB).
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Final

import numpy as np

from hw.wavio import write_wav_mono16

log = logging.getLogger(__name__)

DEFAULT_RATE: Final = 16000   # the rate of an empty file, for a stream that never saw audio
RAW_FILE: Final = "mic-raw.wav"
PROCESSED_FILE: Final = "mic-processed.wav"
REFERENCE_FILE: Final = "reference.wav"


class _Ring:
    """A fixed-size ring of PCM16 samples at one rate (one writer thread, any reader thread)."""

    def __init__(self, name: str, seconds: float) -> None:
        self.name = name
        self._seconds = seconds
        self._lock = threading.Lock()
        self._buf = np.zeros(0, dtype="<i2")
        self._rate = 0
        self._pos = 0      # next write index
        self._filled = 0   # valid samples, up to len(_buf)

    def write(self, pcm: bytes, rate: int) -> None:
        samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2)
        with self._lock:
            if rate != self._rate:
                if self._rate:
                    # A WAV file has one rate: keep only the audio at the new one.
                    log.info("debug recorder %s: rate %d -> %d Hz, restarting the ring",
                             self.name, self._rate, rate)
                self._buf = np.zeros(max(1, round(self._seconds * rate)), dtype="<i2")
                self._rate = rate
                self._pos = self._filled = 0
            buf = self._buf
            cap = len(buf)
            n = len(samples)
            if n >= cap:
                buf[:] = samples[n - cap:]
                self._pos, self._filled = 0, cap
                return
            end = self._pos + n
            if end <= cap:
                buf[self._pos:end] = samples
            else:
                first = cap - self._pos
                buf[self._pos:] = samples[:first]
                buf[:n - first] = samples[first:]
            self._pos = end % cap
            self._filled = min(cap, self._filled + n)

    def snapshot(self) -> tuple[bytes, int]:
        """The buffered audio, oldest first, and its rate (0 if nothing was written)."""
        with self._lock:
            if self._filled < len(self._buf):
                data = self._buf[:self._filled].tobytes()   # not wrapped yet: it starts at 0
            else:
                data = self._buf[self._pos:].tobytes() + self._buf[:self._pos].tobytes()
            return data, self._rate


class DebugRecorder:
    """Keeps the last `seconds` of raw mic, processed mic and speaker reference; dumps them as WAVs.

    `raw` and `processed` are called by the capture thread (through the capture DSP), `reference` by
    the playback thread; `dump` by any thread, while the others keep writing. Each stream has its own
    lock, held only for a copy into the ring.
    """

    def __init__(self, directory: Path, seconds: float = 30.0) -> None:
        if seconds <= 0:
            raise ValueError(f"debug recording length must be positive, not {seconds}")
        self.directory = Path(directory)
        self.seconds = seconds
        self._raw = _Ring("raw", seconds)
        self._processed = _Ring("processed", seconds)
        self._reference = _Ring("reference", seconds)
        self._dump_lock = threading.Lock()

    def raw(self, pcm: bytes, rate: int) -> None:
        """The mic as captured (capture thread)."""
        self._raw.write(pcm, rate)

    def processed(self, pcm: bytes, rate: int) -> None:
        """The mic after AEC/NS/AGC (capture thread)."""
        self._processed.write(pcm, rate)

    def reference(self, pcm: bytes, rate: int) -> None:
        """What the speaker was given (playback thread)."""
        self._reference.write(pcm, rate)

    def dump(self) -> list[Path]:
        """Write mic-raw.wav, mic-processed.wav and reference.wav (16-bit mono) into `directory`.

        Each file is written under a temporary name and renamed, so a reader never sees half a file.
        A stream that never saw audio gives an empty WAV. Returns the paths written.
        """
        with self._dump_lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            paths = []
            for ring, name in ((self._raw, RAW_FILE), (self._processed, PROCESSED_FILE),
                               (self._reference, REFERENCE_FILE)):
                data, rate = ring.snapshot()
                path = self.directory / name
                fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.directory)
                os.close(fd)
                try:
                    write_wav_mono16(tmp, data, rate or DEFAULT_RATE)
                    os.replace(tmp, path)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
                paths.append(path)
            log.info("debug recording written to %s (%s)", self.directory,
                     ", ".join(f"{p.name} {p.stat().st_size} B" for p in paths))
            return paths

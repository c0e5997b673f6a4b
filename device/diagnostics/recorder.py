"""Flight recorder for the capture DSP: the last N seconds of raw mic, processed mic and reference.

When echo cancellation misbehaves in the field, the three streams side by side say why (a late
reference, a clipping mic, a speaker louder than the canceller can follow). Enabled by the
ATOMS_DEBUG_RECORD_DIR setting; `dump` writes the three WAV files there: at exit (the service
itself), and on SIGUSR1, `ctl dump-audio` or a lost device through `device.diagnostics.dumper.DebugDumper`,
which does it off the main thread. Memory is fixed: one ring per stream, `seconds * rate` 16-bit
samples each (30 s at 16 + 16 + 48 kHz is ~4.8 MB; dumping that takes ~4 ms on an x86 host).
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from device.audio.formats import BYTES_PER_SAMPLE
from hw.wavio import write_wav_mono16

log = logging.getLogger(__name__)

DEFAULT_RATE: Final = 16000   # the rate of an empty file, for a stream that never saw audio
RAW_FILE: Final = "mic-raw.wav"
PROCESSED_FILE: Final = "mic-processed.wav"
REFERENCE_FILE: Final = "reference.wav"


@dataclass(frozen=True)
class DumpedFile:
    """One WAV file a dump wrote: which stream, where, and how much audio it holds."""

    stream: str        # "raw", "processed" or "reference"
    path: Path
    sample_rate: int
    samples: int

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate

    def as_dict(self) -> dict[str, Any]:
        """For JSON (the `ctl dump-audio` reply)."""
        return {"stream": self.stream, "path": str(self.path), "seconds": round(self.seconds, 3),
                "sample_rate": self.sample_rate}


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
        samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // BYTES_PER_SAMPLE)
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

    def snapshot(self) -> tuple[np.ndarray, int]:
        """A copy of the buffered audio, oldest first, and its rate (0 if nothing was written)."""
        with self._lock:
            # One copy while the writer waits: ~0.2 ms for 30 s at 48 kHz, ~8 ms for 600 s.
            if self._filled < len(self._buf):
                return self._buf[:self._filled].copy(), self._rate   # not wrapped yet: starts at 0
            return np.concatenate((self._buf[self._pos:], self._buf[:self._pos])), self._rate

    def held_seconds(self) -> float:
        with self._lock:
            return self._filled / self._rate if self._rate else 0.0


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

    def held_seconds(self) -> float:
        """Seconds of audio in the longest stream (any thread)."""
        return max(ring.held_seconds() for ring in (self._raw, self._processed, self._reference))

    def dump(self, directory: Path | None = None, reason: str = "") -> list[DumpedFile]:
        """Write mic-raw.wav, mic-processed.wav and reference.wav (16-bit mono) into `directory`
        (default: the recorder's own); `reason` only goes into the log line.

        Any thread, while the audio threads keep writing: the three rings are copied back to back
        first (so the streams end within a millisecond of each other, as the echo canceller saw
        them), then written. Each file is written under a temporary name in the same directory and
        renamed, so a reader never sees half a file. Dumps are serialised. A stream that never saw
        audio gives an empty WAV. Raises OSError if the directory cannot be written.
        """
        directory = self.directory if directory is None else Path(directory)
        with self._dump_lock:
            snapshots = [(ring.name, name, *ring.snapshot()) for ring, name in (
                (self._raw, RAW_FILE), (self._processed, PROCESSED_FILE), (self._reference, REFERENCE_FILE))]
            directory.mkdir(parents=True, exist_ok=True)
            written = []
            for stream, name, data, rate in snapshots:
                for stale in directory.glob(f".{name}.*"):   # left by a process killed mid-dump
                    stale.unlink(missing_ok=True)
                path = directory / name
                fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
                os.close(fd)
                try:
                    write_wav_mono16(tmp, data.data.cast("B"), rate or DEFAULT_RATE)
                    os.replace(tmp, path)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
                written.append(DumpedFile(stream, path, rate or DEFAULT_RATE, len(data)))
            log.info("debug recording%s written to %s: %s", f" ({reason})" if reason else "", directory,
                     ", ".join(f"{f.path.name} {f.seconds:.1f} s" for f in written))
            return written

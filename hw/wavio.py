"""Small WAV helpers on the standard library `wave` module (PCM16 mono only)."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import soxr


def read_wav_mono16(path: str | Path, target_rate: int) -> bytes:
    """Read a PCM16 WAV, mix to mono and resample to `target_rate`. Returns PCM16 LE bytes."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        channels = wav.getnchannels()
        rate = wav.getframerate()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if rate != target_rate and data.size:
        # One-shot resampling is fine here: the whole file is converted at once, no chunk edges.
        data = soxr.resample(data, rate, target_rate)
    return np.asarray(data, dtype="<i2").tobytes()


def write_wav_mono16(path: str | Path, pcm: bytes | bytearray | memoryview, sample_rate: int) -> None:
    """Write PCM16 LE mono bytes (or a byte view of them: no copy) as a WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)


class WavRecorder:
    """Appends PCM16 mono to a WAV file as it comes; the header is fixed up on `close`.

    `max_silence_seconds` bounds the file in a long run: of a run of digital silence (all-zero
    periods, what the fake speaker plays when nothing is queued) only the first that many seconds
    are written, so an idle day costs nothing instead of ~115 MB an hour at 16 kHz; pauses
    within speech (shorter) are kept exactly. None records everything.

    Owned by one thread (the fake speaker's playback thread). `close` is idempotent.
    """

    def __init__(self, path: str | Path, sample_rate: int, max_silence_seconds: float | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sample_rate = sample_rate
        self._max_silence_bytes = None if max_silence_seconds is None else int(max_silence_seconds * sample_rate) * 2
        self._silence_run = 0          # bytes of the current run of silence
        self.skipped_bytes = 0         # silence left out of the file
        self._wav: wave.Wave_write | None = wave.open(str(self.path), "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(sample_rate)

    @property
    def skipped_seconds(self) -> float:
        return self.skipped_bytes / (2 * self.sample_rate)

    def write(self, pcm: bytes) -> None:
        if self._wav is None:
            return
        if self._max_silence_bytes is not None:
            if pcm.count(0) == len(pcm):   # all-zero bytes: digital silence (a C-speed check)
                keep = max(0, min(len(pcm), self._max_silence_bytes - self._silence_run))
                keep -= keep % 2
                self._silence_run += len(pcm)
                self.skipped_bytes += len(pcm) - keep
                pcm = pcm[:keep]
                if not pcm:
                    return
            else:
                self._silence_run = 0
        # writeframes also patches the header's length fields, so the file is valid at all times.
        self._wav.writeframes(pcm)

    def close(self) -> None:
        wav, self._wav = self._wav, None
        if wav is not None:
            wav.close()


def wav_problem(path: str | Path) -> str | None:
    """Why `path` cannot be played by `read_wav_mono16`, or None when it can (checked at start,
    so a bad file is a config error, not a crashed capture thread later)."""
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2:
                return f"it is {wav.getsampwidth() * 8}-bit; only 16-bit PCM WAV files are supported"
            if wav.getnframes() == 0:
                return "it holds no audio (0 frames)"
            if wav.getframerate() <= 0 or wav.getnchannels() <= 0:
                return "its header is invalid (no rate or channels)"
    except FileNotFoundError:
        return "it does not exist"
    except IsADirectoryError:
        return "it is a directory"
    except PermissionError:
        return "it is not readable by this user"
    except (wave.Error, EOFError) as exc:
        # wave.Error "unknown format: 3" is a float WAV; "file does not start with RIFF id": not a WAV.
        reason = str(exc)
        if "unknown format: 3" in reason:
            return "it is a floating-point WAV; only 16-bit PCM WAV files are supported"
        return f"it is not a usable WAV file ({reason or 'truncated'}); only 16-bit PCM WAV files are supported"
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    return None

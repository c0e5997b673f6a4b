"""The agent's voice: PCM16 mono of a reply at the negotiated rate, from espeak-ng or a tone sequence.

espeak-ng is a Debian package, not a Python one; when it is missing (or fails) the simulator still
talks, in syllable-like tone bursts, so the demo and the tests never depend on it.
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import tempfile
import wave
from typing import Final

import numpy as np
import soxr

from device.sim.options import TtsEngine

log = logging.getLogger(__name__)

ESPEAK: Final = "espeak-ng"
_ESPEAK_TIMEOUT_S: Final = 20.0
_TONE_LEVEL: Final = 0.25  # about -12 dBFS peak: clearly audible, never clipping after resampling
_SYLLABLE_S: Final = 0.16
_GAP_S: Final = 0.06


class VoiceError(RuntimeError):
    """espeak-ng was asked for explicitly and could not produce audio (raised in the calling thread,
    an executor thread of the simulator's loop)."""


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


def _to_pcm16(samples: np.ndarray) -> bytes:
    clipped = np.clip(samples, -1.0, 1.0)
    return (clipped * 32767.0).astype("<i2").tobytes()


def espeak_speech(text: str, rate: int) -> bytes:
    """Speak `text` with espeak-ng; PCM16 mono at `rate`. Raises `VoiceError` on any failure."""
    exe = shutil.which(ESPEAK)
    if exe is None:
        raise VoiceError(f"{ESPEAK} is not installed")
    fd, path = tempfile.mkstemp(prefix="atoms-sim-", suffix=".wav")
    os.close(fd)
    try:
        # Text goes in on stdin so a reply starting with "-" can never be taken for an option.
        subprocess.run([exe, "-w", path], input=text.encode("utf-8"), capture_output=True,
                       timeout=_ESPEAK_TIMEOUT_S, check=True)
        with wave.open(path, "rb") as wav:
            if wav.getsampwidth() != 2:
                raise VoiceError(f"{ESPEAK} wrote {wav.getsampwidth() * 8}-bit audio")
            src_rate, channels = wav.getframerate(), wav.getnchannels()
            raw = wav.readframes(wav.getnframes())
    except (OSError, subprocess.SubprocessError, wave.Error, EOFError) as exc:
        raise VoiceError(f"{ESPEAK} failed: {exc}") from exc
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    if samples.size == 0:
        raise VoiceError(f"{ESPEAK} produced no audio")
    if src_rate != rate:
        # One-shot resampling is fine here: a whole utterance, no chunk boundaries to click at.
        samples = soxr.resample(samples, src_rate, rate, quality="HQ")
    return _to_pcm16(samples)


def tone_speech(text: str, rate: int) -> bytes:
    """Syllable-like harmonic bursts, about one per four characters (at least 1 s, at most 8 s)."""
    syllables = max(5, min(36, len(text) // 4))
    n_syl, n_gap = int(_SYLLABLE_S * rate), int(_GAP_S * rate)
    t = np.arange(n_syl, dtype=np.float64) / rate
    envelope = np.hanning(n_syl)
    parts: list[np.ndarray] = []
    for i in range(syllables):
        f0 = 160.0 + 20.0 * ((i * 7) % 5)  # a little melody so it is not one flat beep
        burst = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3, 4))
        parts.append(_TONE_LEVEL * envelope * burst / 2.1)
        parts.append(np.zeros(n_gap))
    return _to_pcm16(np.concatenate(parts))


@functools.lru_cache(maxsize=32)
def synthesize(text: str, rate: int, engine: TtsEngine = "auto") -> bytes:
    """The reply as PCM16 LE mono at `rate`; cached, since every turn says the same thing.

    Called from executor threads (espeak-ng takes ~0.1-1 s); thread-safe.
    """
    if engine == "tone":
        return tone_speech(text, rate)
    try:
        return espeak_speech(text, rate)
    except VoiceError as exc:
        if engine == "espeak":
            raise
        log.warning("%s; speaking in tones instead", exc)
        return tone_speech(text, rate)

"""Wake word test audio: spoken wake words (espeak-ng, and the real recordings in tests/data/wake/),
the negative audio the false-accept benchmark listens to, and a helper that runs a detector over a
recording. Shared by tests/wake (the detector's tests), the wake word call mode's end-to-end test
and `tools.bench_wake`.

All audio is 16 kHz mono PCM16 (`bytes`), what `WakeWordDetector.process` takes. espeak-ng output
is fixed for a given text, voice, speed and pitch, so everything here is deterministic.

The phrase that reliably wakes `okay_nabu` (all of these score >= 0.96 at the default cutoff of
0.85, measured by `tools.bench_wake`): `wake_phrase("okay_nabu")`, i.e. espeak-ng's en-us voice at
160 words a minute, pitch 30. `recording("okay_nabu", 1)` is a real (non-espeak) sample.
"""
from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import soxr

from device.audio.formats import DSP_RATE, FRAME_BYTES
from device.wake.detector import WakeWordDetector
from tools import REPO

RECORDINGS_DIR: Final = REPO / "tests" / "data" / "wake"
RECORDINGS_PER_MODEL: Final = 3
# How each builtin model's wake word is written for espeak-ng (spellings that keep its stress right).
PHRASES: Final[dict[str, tuple[str, ...]]] = {
    "okay_nabu": ("okay nabu", "ok nah boo"),
    "hey_jarvis": ("hey jarvis", "hey jaarvis"),
    "alexa": ("alexa", "uh lexa"),
    "hey_mycroft": ("hey mycroft", "hey my croft"),
}
# espeak-ng voices (language + variant) that differ in sex, accent and synthesis method.
VOICES: Final = ("en-us", "en", "en-gb-x-rp", "en+f3", "en-us+m3", "en+f5", "en-gb-scotland", "en+klatt2")
SPEEDS: Final = (120, 160, 200)          # words per minute
PITCHES: Final = (30, 60)                # espeak's 0-99 pitch


class EspeakMissing(RuntimeError):
    """espeak-ng is not installed (it is in the Makefile's DEB_PACKAGES)."""


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


@functools.lru_cache(maxsize=512)
def espeak(text: str, voice: str = "en-us", words_per_minute: int = 160, pitch: int = 50) -> bytes:
    """`text` spoken by espeak-ng, as 16 kHz mono PCM16. Raises `EspeakMissing` without espeak-ng."""
    if not espeak_available():
        raise EspeakMissing("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-p", str(pitch),
                        "-w", str(path), "--", text], check=True, capture_output=True, timeout=60)
        with wave.open(str(path), "rb") as wav:
            rate = wav.getframerate()
            data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float32)
    # One-shot resampling: the whole utterance at once, no chunk edges.
    out = soxr.resample(data, rate, DSP_RATE) if rate != DSP_RATE else data
    return np.clip(np.round(out), -32768, 32767).astype("<i2").tobytes()


def wake_phrase(model: str = "okay_nabu", voice: str = "en-us", words_per_minute: int = 160,
                pitch: int = 30, variant: int = 0) -> bytes:
    """The wake word of builtin `model` spoken by espeak-ng (defaults: the reliable one)."""
    return espeak(PHRASES[model][variant], voice, words_per_minute, pitch)


def recording(model: str, number: int) -> bytes:
    """Real recording `number` (1-3) of builtin `model`'s wake word (tests/data/wake/README.md)."""
    with wave.open(str(RECORDINGS_DIR / model / f"{number}.wav"), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, DSP_RATE)
        return wav.readframes(wav.getnframes())


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * DSP_RATE) * 2)


def pad(pcm: bytes, before_s: float = 0.5, after_s: float = 1.0) -> bytes:
    """`pcm` with silence around it: the model needs audio after the word to reach its peak."""
    return silence(before_s) + pcm + silence(after_s)


def scale_db(pcm: bytes, gain_db: float) -> bytes:
    x = np.frombuffer(pcm, "<i2").astype(np.float64) * 10 ** (gain_db / 20)
    return np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()


def add_noise(pcm: bytes, level_dbfs: float, seed: int) -> bytes:
    """`pcm` plus white noise of RMS `level_dbfs` (seeded)."""
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    x = x + np.random.default_rng(seed).standard_normal(len(x)) * 32768 * 10 ** (level_dbfs / 20)
    return np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()


@dataclass(frozen=True)
class Scan:
    """What a detector made of one recording: the detections (with the time of the frame that
    returned each, in s from the start) and the highest averaged probability seen."""

    detections: tuple[tuple[float, float], ...]   # (seconds, score)
    peak: float


def scan(detector: WakeWordDetector, pcm: bytes, start: float = 0.0, chunk_bytes: int = FRAME_BYTES) -> Scan:
    """Feed `pcm` to `detector` in `chunk_bytes` pieces with `now` on the audio's clock from `start`;
    the peak is the detector's `last_score` after each piece (per window at the default 10 ms)."""
    detections: list[tuple[float, float]] = []
    peak = 0.0
    for i in range(0, len(pcm), chunk_bytes):
        piece = pcm[i:i + chunk_bytes]
        now = start + (i + len(piece)) / (2 * DSP_RATE)
        found = detector.process(piece, now)
        peak = max(peak, detector.last_score)
        if found is not None:
            detections.append((now - start, found.score))
    return Scan(tuple(detections), peak)

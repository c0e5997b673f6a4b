"""Negative audio for the wake word false-accept benchmark (`tools.bench_wake`): an hour or more of
sound that is not a wake word, made here and deterministic (seeded; espeak-ng is fixed for a text).

Three kinds, streamed as `Segment`s so the hour never has to be in memory at once:
- speech: espeak-ng reading English prose (the licence texts every Debian system ships in
  /usr/share/common-licenses, else this repository's documentation) paragraph by paragraph,
  rotating voices, speeds and pitches, at talking levels, in a small room with background noise;
  sentences naming one of the builtin wake words are left out (they are positives);
- music-like tones: seeded melodies and chords of harmonic notes with vibrato and envelopes, and
  drum-like noise bursts;
- noise: white, pink and brown noise at several levels, mains hum with harmonics, and clicks.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from device.audio.formats import DSP_RATE
from tools import REPO, signals, wake_audio

PROSE_DIRS: Final = (Path("/usr/share/common-licenses"),)
WAKE_WORDS: Final = re.compile(r"nabu|jarvis|alexa|mycroft", re.IGNORECASE)
SPEECH_LEVELS_DBFS: Final = (-20.0, -26.0, -32.0)
ROOM_NOISE_DBFS: Final = -55.0


@dataclass(frozen=True)
class Segment:
    """A piece of negative audio: its kind ("speech", "music", "noise"), what it is, 16 kHz PCM16."""

    kind: str
    label: str
    pcm: bytes

    @property
    def seconds(self) -> float:
        return len(self.pcm) / (2 * DSP_RATE)


def _to_pcm(x: np.ndarray) -> bytes:
    return signals.to_pcm16(x)


def prose_paragraphs() -> list[str]:
    """Paragraphs of English prose, in a fixed order, without any naming a wake word."""
    files: list[Path] = []
    for folder in PROSE_DIRS:
        if folder.is_dir():
            # Resolved and de-duplicated: GPL, LGPL, GFDL are links to a versioned file.
            files += sorted({p.resolve() for p in folder.iterdir() if p.is_file()})
    if not files:
        files = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
    paragraphs: list[str] = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for block in re.split(r"\n\s*\n", text):
            words = re.sub(r"[^A-Za-z0-9.,;:?!'() -]+", " ", block).split()
            if len(words) >= 8 and not WAKE_WORDS.search(block):
                paragraphs.append(" ".join(words[:120]))
    return paragraphs


def speech_segments(seconds: float, seed: int = 11) -> Iterator[Segment]:
    """About `seconds` of prose read by espeak-ng in rotating voices, through a small room."""
    rng = np.random.default_rng(seed)
    ir = signals.room_impulse_response(DSP_RATE, rt60_s=0.3, seed=seed)
    made = 0.0
    for i, paragraph in enumerate(prose_paragraphs()):
        if made >= seconds:
            return
        voice = wake_audio.VOICES[i % len(wake_audio.VOICES)]
        speed = (130, 160, 190, 220)[i % 4]
        pitch = (25, 45, 65)[i % 3]
        dry = signals.from_pcm16(wake_audio.espeak(paragraph, voice, speed, pitch))
        level = SPEECH_LEVELS_DBFS[i % len(SPEECH_LEVELS_DBFS)]
        wet = np.convolve(signals.set_active_level(dry, level), ir)[: len(dry) + len(ir)]
        gap = np.zeros(int(rng.uniform(0.3, 1.5) * DSP_RATE))
        x = np.concatenate([wet, gap])
        x = x + signals.white_noise(len(x), ROOM_NOISE_DBFS, seed=seed + i)
        made += len(x) / DSP_RATE
        yield Segment("speech", f"{voice} {speed} wpm p{pitch} {level:g} dBFS: {paragraph[:40]}", _to_pcm(x))
    if made < seconds:
        raise RuntimeError(f"only {made:.0f} s of prose found, {seconds:.0f} s asked for")


def _note(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * DSP_RATE)) / DSP_RATE
    vibrato = 1 + 0.004 * np.sin(2 * np.pi * rng.uniform(4, 6) * t)
    harmonics = int(rng.integers(1, 7))
    tone = sum(np.sin(2 * np.pi * freq * k * np.cumsum(vibrato) / DSP_RATE) / k ** rng.uniform(0.8, 2.0)
               for k in range(1, harmonics + 1))
    attack = min(len(t), int(0.02 * DSP_RATE))
    envelope = np.exp(-t * rng.uniform(0.5, 4.0))
    envelope[:attack] *= np.linspace(0, 1, attack)
    return np.asarray(tone * envelope)


def music_segments(seconds: float, seed: int = 23) -> Iterator[Segment]:
    """Seeded 20 s pieces: a melody over chords in a random key and tempo, some with drum bursts."""
    rng = np.random.default_rng(seed)
    made, piece = 0.0, 0
    while made < seconds:
        length = 20.0
        out = np.zeros(int(length * DSP_RATE))
        root = 110 * 2 ** (rng.integers(0, 12) / 12)
        scale = np.array([0, 2, 4, 5, 7, 9, 11, 12])
        beat = 60 / rng.uniform(70, 160)
        t = 0.0
        while t < length - 1:
            start = int(t * DSP_RATE)
            chord = np.mean([_note(root * 2 ** (s / 12), beat * 4, rng) for s in (0, 4, 7)], axis=0)
            melody = _note(root * 4 * 2 ** (rng.choice(scale) / 12), beat * rng.choice([0.5, 1, 2]), rng)
            for part, gain in ((chord, 0.3), (melody, 0.5)):
                end = min(len(out), start + len(part))
                out[start:end] += gain * part[: end - start]
            if piece % 2:   # drums: short low-passed noise bursts on the beat
                burst = np.cumsum(rng.standard_normal(int(0.08 * DSP_RATE))) * np.exp(-np.arange(1280) / 200)
                end = min(len(out), start + len(burst))
                out[start:end] += 0.02 * burst[: end - start]
            t += beat
        level = (-18.0, -26.0, -34.0)[piece % 3]
        x = signals.set_active_level(out, level) + signals.white_noise(len(out), ROOM_NOISE_DBFS, seed + piece)
        made += length
        yield Segment("music", f"piece {piece} root {root:.0f} Hz {level:g} dBFS", _to_pcm(x))
        piece += 1


def _colored(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power ~ 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / DSP_RATE)
    spectrum[1:] /= freqs[1:] ** (exponent / 2)
    spectrum[0] = 0
    x = np.fft.irfft(spectrum, n)
    return np.asarray(x / np.sqrt(np.mean(x ** 2)))


def noise_segments(seconds: float, seed: int = 37) -> Iterator[Segment]:
    """Seeded 30 s pieces cycling white / pink / brown noise, hum, and clicks, at several levels."""
    rng = np.random.default_rng(seed)
    made, piece = 0.0, 0
    n = 30 * DSP_RATE
    kinds = ("white", "pink", "brown", "hum", "clicks")
    while made < seconds:
        kind = kinds[piece % len(kinds)]
        level = (-25.0, -35.0, -45.0)[(piece // len(kinds)) % 3]
        if kind == "hum":
            t = np.arange(n) / DSP_RATE
            mains = rng.choice([50.0, 60.0])
            x = sum(np.sin(2 * np.pi * mains * k * t) / k for k in range(1, 12)) + 0.1 * _colored(n, 1, rng)
        elif kind == "clicks":
            x = 0.05 * _colored(n, 1, rng)
            for at in rng.integers(0, n - 400, size=40):
                x[at:at + 400] += rng.uniform(2, 10) * np.exp(-np.arange(400) / 40) * rng.standard_normal(400)
        else:
            x = _colored(n, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind], rng)
        x = np.asarray(x) * 10 ** (level / 20) / np.sqrt(np.mean(np.square(x)))
        made += n / DSP_RATE
        yield Segment("noise", f"{kind} {level:g} dBFS", _to_pcm(x))
        piece += 1

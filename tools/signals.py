"""Test signals for the capture DSP: speech, a room with a speaker, noise, and level measurements.

Shared by the DSP tests (tests/dsp), the benchmark (`tools.bench`) and the echo figure
(`tools.plot_echo_reduction`). Signals are float64 arrays in full-scale units (1.0 = PCM16 full
scale); levels are RMS in dBFS relative to that (a full-scale square wave is 0 dBFS, a full-scale
sine -3 dBFS). Everything is deterministic: espeak-ng output is fixed for a given text and
voice, and all randomness is seeded.
"""
from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import soxr

from device.audio.formats import DSP_RATE, FRAME_BYTES, FRAME_SAMPLES
from hw.fake_audio import FakeRoom

FULL_SCALE = 32768.0
FAR_TEXT = ("Hello, thanks for calling. I can help you book a table, check your order, or answer "
            "questions about our opening hours. What would you like to do today?")
NEAR_TEXT = ("Yes, I would like to book a table for four people tomorrow evening, around seven "
             "thirty if possible, near the window please.")

# The echo-cancellation scene tests/dsp/test_aec.py asserts on and docs/echo-reduction.svg draws:
# 0 dB echo path, and mic noise ~50 dB under the echo so ERLE reads the canceller, not the noise.
AEC_SCENE_ECHO_GAIN_DB: Final = 0.0
AEC_SCENE_NOISE_DBFS: Final = -70.0
MIN_ERLE_DB: Final = 25.0   # echo reduction the test requires after 1 s (the figure's threshold line)


def ramp(start: int, n: int) -> np.ndarray:
    """Distinct, recognisable PCM16 samples: a counter folded into the PCM16 range (no zero among
    them for start in 1..29999 and short n), for sample-exact checks of recordings."""
    return ((np.arange(start, start + n) % 60000) - 30000).astype("<i2")


def read_wav(path: Path | str) -> tuple[np.ndarray, int]:
    """A mono PCM16 WAV file's samples and rate, as written (no resampling)."""
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2"), wav.getframerate()


def level_dbfs(x: np.ndarray) -> float:
    """RMS level in dBFS (-200 for silence)."""
    power = float(np.mean(np.square(x))) if len(x) else 0.0
    return 10 * np.log10(power) if power > 0 else -200.0


def to_pcm16(x: np.ndarray) -> bytes:
    return np.clip(np.round(x * FULL_SCALE), -32768, 32767).astype("<i2").tobytes()


def from_pcm16(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64) / FULL_SCALE


def frame_powers(x: np.ndarray, samples: int = FRAME_SAMPLES) -> np.ndarray:
    """Mean power of each whole frame of `samples`."""
    n = len(x) // samples
    return np.mean(np.square(x[:n * samples].reshape(n, samples)), axis=1)


def active_frames(x: np.ndarray, below_peak_db: float = 30.0, samples: int = FRAME_SAMPLES) -> np.ndarray:
    """Boolean mask of frames within `below_peak_db` of the loudest frame (where speech is)."""
    p = frame_powers(x, samples)
    return p > p.max() * 10 ** (-below_peak_db / 10)


def band_limit(x: np.ndarray, rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Zero-phase brick-wall band-pass by FFT (for measurements only, never for processing)."""
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0
    return np.fft.irfft(spectrum, len(x))


def set_active_level(x: np.ndarray, level: float, samples: int = FRAME_SAMPLES) -> np.ndarray:
    """Scale `x` so its speech-active frames have RMS `level` dBFS."""
    mask = active_frames(x, samples=samples)
    current = 10 * np.log10(np.mean(frame_powers(x, samples)[mask]))
    return x * 10 ** ((level - current) / 20)


def white_noise(n: int, level: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n) * 10 ** (level / 20)


# -- speech ----------------------------------------------------------------------------------------
def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


@functools.lru_cache(maxsize=16)
def _espeak(text: str, voice: str, words_per_minute: int) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(path), text],
                       check=True, capture_output=True, timeout=30)
        with wave.open(str(path), "rb") as wav:
            rate = wav.getframerate()
            data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return data.astype(np.float64) / FULL_SCALE, rate


def synthetic_speech(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Speech-like audio without a synthesizer: voiced syllables and unvoiced bursts with pauses.

    Voiced parts are harmonics of a gliding pitch (90-220 Hz) under a ~1/k spectral tilt and a
    syllable envelope; unvoiced parts are 2-6 kHz noise bursts; 50-400 ms pauses between words.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out = np.zeros(n)
    pos = int(0.1 * rate)
    while pos < n:
        length = int(rng.uniform(0.12, 0.3) * rate)
        t = np.arange(length) / rate
        f0 = rng.uniform(90, 220) * (1 + rng.uniform(-0.2, 0.2) * t / t[-1])
        phase = 2 * np.pi * np.cumsum(f0) / rate
        voiced = sum(np.sin(k * phase) / k for k in range(1, int(3800 / f0.max())))
        syllable = voiced * np.hanning(length)
        if rng.random() < 0.4:
            burst = int(rng.uniform(0.04, 0.1) * rate)
            spectrum = np.fft.rfft(rng.standard_normal(burst))
            freqs = np.fft.rfftfreq(burst, 1 / rate)
            spectrum[(freqs < 2000) | (freqs > 6000)] = 0
            noise = np.fft.irfft(spectrum, burst) * np.hanning(burst) * 2
            syllable = np.concatenate([noise, syllable])
        end = min(n, pos + len(syllable))
        out[pos:end] += syllable[:end - pos]
        pos = end + int(rng.choice([0.03, 0.05, 0.15, 0.4]) * rate)
    return out


def speech(text: str, rate: int, *, voice: str = "en-us", level: float = -20.0,
           words_per_minute: int = 160, seed: int = 0) -> np.ndarray:
    """Speech at `rate` with its active level at `level` dBFS: espeak-ng if present, else synthetic."""
    if espeak_available():
        data, source_rate = _espeak(text, voice, words_per_minute)
        # One-shot resampling is right here: the whole signal at once, no chunk edges.
        x = soxr.resample(data, source_rate, rate) if source_rate != rate else data.copy()
    else:
        x = synthetic_speech(len(text) / 14.0, rate, seed)   # espeak says ~14 characters a second
    return set_active_level(x, level, samples=rate // 100)


def with_pauses(parts: list[np.ndarray], rate: int, pause_s: float) -> np.ndarray:
    """`parts` joined with `pause_s` of silence before, between and after them."""
    gap = np.zeros(int(pause_s * rate))
    out = [gap]
    for part in parts:
        out += [part, gap]
    return np.concatenate(out)


# -- room ------------------------------------------------------------------------------------------
def room_impulse_response(rate: int, rt60_s: float = 0.2, seed: int = 1,
                          direct_to_reverb_db: float = 3.0) -> np.ndarray:
    """A small room seen from a mic near the speaker: a direct tap, a few early reflections in the
    first 20 ms, then a diffuse tail of seeded Gaussian taps decaying 60 dB in `rt60_s`.
    No bulk delay (the `FakeRoom` adds that); peak 1.
    """
    rng = np.random.default_rng(seed)
    n = int(rt60_s * rate)
    t = np.arange(n) / rate
    tail = rng.standard_normal(n) * np.exp(-6.908 * t / rt60_s)
    tail[: int(0.005 * rate)] = 0
    tail *= np.sqrt(10 ** (-direct_to_reverb_db / 10) / np.sum(np.square(tail)))
    ir = tail
    ir[0] = 1.0
    for _ in range(4):
        tap = int(rng.uniform(0.002, 0.02) * rate)
        ir[tap] += rng.choice([-1, 1]) * rng.uniform(0.2, 0.5)
    return ir / np.max(np.abs(ir))


def soft_clip(x: np.ndarray, ceiling_dbfs: float = -6.0) -> np.ndarray:
    """A small speaker driven hard: linear when quiet, compressing peaks towards `ceiling_dbfs`."""
    c = 10 ** (ceiling_dbfs / 20)
    return c * np.tanh(x / c)


# -- the echo scene --------------------------------------------------------------------------------
@dataclass
class EchoRun:
    """One run of a capture DSP over a simulated call, all at the 16 kHz capture rate."""

    echo: np.ndarray   # the echo part of the mic signal
    near: np.ndarray   # the near-end talker part of the mic signal
    mic: np.ndarray    # what the DSP was given (echo + near + noise, quantised)
    out: np.ndarray    # what the DSP returned


def run_echo_scene(
    process: Callable[[bytes], bytes],
    reference: Callable[[bytes, int], None],
    far: np.ndarray,
    far_rate: int,
    near: np.ndarray | None = None,
    *,
    delay_ms: float = 40.0,
    gain_db: float = -6.0,
    ir: np.ndarray | None = None,
    noise_dbfs: float = -60.0,
    seed: int = 7,
    speaker_gain: np.ndarray | None = None,
) -> EchoRun:
    """Play `far` (at `far_rate`) through a speaker into a `FakeRoom` and run the DSP frame by frame,
    as the audio threads do: each 10 ms the playback thread writes a frame to the speaker and hands
    the same frame to `reference`, then the capture thread reads a mic frame and calls `process`.
    So every reference frame reaches the canceller before the mic frame holding its echo.
    The speaker soft-clips (the reference is the clean signal it was given, as on a real device).
    `speaker_gain` (per sample of `far`) is a hardware volume: it scales what the speaker plays
    after the reference tap, before the amplifier's clipping.
    """
    ref_samples = far_rate // 100
    frames = len(far) // ref_samples
    room = FakeRoom(DSP_RATE, delay_ms=delay_ms, gain_db=gain_db,
                    impulse_response=room_impulse_response(DSP_RATE) if ir is None else ir)
    near16 = np.zeros(frames * FRAME_SAMPLES)
    if near is not None:
        near16[:len(near)] = near[:len(near16)]
    noise = white_noise(frames * FRAME_SAMPLES, noise_dbfs, seed)
    echo = np.zeros(frames * FRAME_SAMPLES)
    mic = np.zeros(frames * FRAME_SAMPLES)
    out = np.zeros(frames * FRAME_SAMPLES)
    speaker = soft_clip(far if speaker_gain is None else far * speaker_gain[:len(far)])
    for i in range(frames):
        ref = slice(i * ref_samples, (i + 1) * ref_samples)
        reference(to_pcm16(far[ref]), far_rate)
        room.speaker_played(to_pcm16(speaker[ref]), far_rate)
        cap = slice(i * FRAME_SAMPLES, (i + 1) * FRAME_SAMPLES)
        echo[cap] = room.mic_echo(FRAME_SAMPLES) / FULL_SCALE
        pcm = to_pcm16(echo[cap] + near16[cap] + noise[cap])
        assert len(pcm) == FRAME_BYTES
        mic[cap] = from_pcm16(pcm)
        out[cap] = from_pcm16(process(pcm))
    return EchoRun(echo=echo, near=near16, mic=mic, out=out)


def erle_db(run: EchoRun, start_s: float = 0.0, end_s: float | None = None) -> float:
    """Echo return loss enhancement: echo power at the mic over output power, in dB, on the frames
    of [start_s, end_s) where the echo is active (within 30 dB of its loudest frame)."""
    first = int(start_s * 100)
    last = len(run.echo) // FRAME_SAMPLES if end_s is None else int(end_s * 100)
    mask = active_frames(run.echo)[first:last]
    echo = frame_powers(run.echo)[first:last][mask]
    out = frame_powers(run.out)[first:last][mask]
    return 10 * np.log10(np.sum(echo) / max(np.sum(out), 1e-20))


def erle_windows(run: EchoRun, window_s: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """ERLE per window (NaN where the echo is silent): window start times (s) and values (dB)."""
    per = round(window_s * 100)
    mask = active_frames(run.echo)
    echo, out = frame_powers(run.echo), frame_powers(run.out)
    starts, values = [], []
    for first in range(0, len(mask) - per + 1, per):
        m = mask[first:first + per]
        starts.append(first / 100)
        if m.sum() < per / 2:
            values.append(np.nan)
        else:
            e, o = echo[first:first + per][m].sum(), out[first:first + per][m].sum()
            values.append(10 * np.log10(e / max(o, 1e-20)))
    return np.array(starts), np.array(values)

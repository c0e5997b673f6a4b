"""Reverberant impulse responses of a kiosk's room, from pyroomacoustics (image source model).

A shoebox room 6 x 4.5 x 2.8 m whose wall absorption gives the asked reverberation time (Sabine's
formula, `pyroomacoustics.inverse_sabine`); the speaker 1.2 m up near one end of the room, the
mic `distance_m` from it. The response keeps its physical scale (the direct sound is
1 / (4 pi r)), so a far mic hears both less echo and a larger share of reverberation; callers
scale it to their echo path. Made once per (rt60, distance, rate, seed) and cached in memory.
Used by the room tests (tests/dsp/test_room_effects.py) and the room matrix (tools/bench_room.py).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

import numpy as np

ROOM_DIM_M: Final = (6.0, 4.5, 2.8)
SPEAKER_AT_M: Final = (1.5, 2.2, 1.2)
MAX_IMAGE_ORDER: Final = 12   # beyond this the late tail comes from the stochastic extension


@dataclass(frozen=True)
class RoomIrInfo:
    """What a generated response is: the asked RT60, the mic distance, and its measured shape."""

    rt60_s: float
    distance_m: float
    direct_delay_ms: float      # where the direct sound lands (propagation + the simulator's filter)
    direct_to_reverb_db: float  # energy of the first 5 ms after the direct sound vs the rest
    peak: float                 # largest tap (physical scale)


@functools.lru_cache(maxsize=32)
def _cached(rt60_s: float, distance_m: float, rate: int, seed: int) -> tuple[np.ndarray, RoomIrInfo]:
    import pyroomacoustics as pra

    absorption, order = pra.inverse_sabine(rt60_s, list(ROOM_DIM_M))
    room = pra.ShoeBox(list(ROOM_DIM_M), fs=rate, materials=pra.Material(absorption),
                       max_order=min(order, MAX_IMAGE_ORDER), air_absorption=True)
    room.add_source(list(SPEAKER_AT_M))
    mic = np.array(SPEAKER_AT_M) + np.array([distance_m * 0.8, distance_m * 0.6, 0.0])
    room.add_microphone(mic)
    room.compute_rir()
    ir = np.asarray(room.rir[0][0], dtype=np.float64)
    if order > MAX_IMAGE_ORDER:
        ir = _extend_tail(ir, rt60_s, rate, seed)
    direct = int(np.argmax(np.abs(ir)))
    split = direct + int(0.005 * rate)
    e_direct = float(np.sum(np.square(ir[:split])))
    e_reverb = float(np.sum(np.square(ir[split:])))
    info = RoomIrInfo(rt60_s, distance_m, 1000 * direct / rate,
                      10 * np.log10(e_direct / max(e_reverb, 1e-30)), float(np.max(np.abs(ir))))
    return ir, info


def _extend_tail(ir: np.ndarray, rt60_s: float, rate: int, seed: int) -> np.ndarray:
    """Continue a truncated image-source response with exponentially decaying noise of the same
    level where the images thin out, to 1.2 x RT60 (the decay the room's absorption implies)."""
    n = int(1.2 * rt60_s * rate)
    if len(ir) >= n:
        return ir
    out = np.zeros(n)
    out[:len(ir)] = ir
    decay = np.exp(-6.908 * np.arange(n) / (rt60_s * rate))   # amplitude: 60 dB down at rt60
    # Match the tail level over the last 20 ms the image model resolved well (its middle third).
    a, b = len(ir) // 3, 2 * len(ir) // 3
    level = np.sqrt(np.mean(np.square(ir[a:b])) / np.mean(np.square(decay[a:b])))
    noise = np.random.default_rng(seed).standard_normal(n) * decay * level
    fade = np.clip((np.arange(n) - b) / max(len(ir) - b, 1), 0, 1)
    return out * (1 - fade) + noise * fade


def reverberant_ir(rt60_s: float, distance_m: float, rate: int, seed: int = 1) -> tuple[np.ndarray, RoomIrInfo]:
    """The impulse response from the speaker to a mic `distance_m` away in a room of `rt60_s`."""
    ir, info = _cached(float(rt60_s), float(distance_m), int(rate), int(seed))
    return ir.copy(), info

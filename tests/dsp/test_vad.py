"""The local speech decision behind the idle limit: speech in noise counts, noise and clicks do
not, with the DSP's own flag (noise suppression on) and with the energy fallback (off)."""
from __future__ import annotations

import numpy as np
import pytest

from device.audio.dsp import FRAME_BYTES, make_capture_dsp
from device.audio.vad import MIN_SPEECH_FRAMES, WINDOW_FRAMES, SpeechDetector, frame_dbfs
from tools.signals import speech, to_pcm16, white_noise

RATE = 16000


def _run(noise_suppression: int, x: np.ndarray) -> list[bool]:
    """Decisions per frame through the real capture chain, as the capture thread makes them."""
    dsp = make_capture_dsp("off", noise_suppression, 0)
    vad = SpeechDetector(dsp_flag=(lambda: dsp.last_is_speech) if noise_suppression else None)
    pcm = to_pcm16(x)
    active = []
    for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
        vad.observe(dsp.process(pcm[i:i + FRAME_BYTES]))
        active.append(vad.active)
    dsp.close()
    assert vad.speech_frames == sum(active)
    return active


@pytest.mark.parametrize("noise_suppression", [2, 0], ids=["webrtc-flag", "energy"])
def test_speech_in_room_noise_is_heard_and_the_noise_alone_is_not(noise_suppression: int) -> None:
    noise_only = white_noise(3 * RATE, -50.0, seed=1)
    said = speech("Is anybody there? I would like some help.", RATE, level=-26.0)
    x = np.concatenate([noise_only, said + white_noise(len(said), -50.0, seed=2), noise_only])
    active = np.array(_run(noise_suppression, x))
    first, second = 3 * 100, 3 * 100 + len(said) // 160
    assert not active[50:first].any()           # 2.5 s of steady noise: nobody there
    assert active[first:second + 30].mean() > 0.5  # most of the sentence is speech
    assert not active[second + 60:].any()       # the room is quiet again


def test_a_click_is_not_a_person() -> None:
    x = np.zeros(2 * RATE)
    x[RATE:RATE + 80] = 0.8  # 5 ms at -2 dBFS
    assert not any(_run(0, x))


def test_debounce_needs_enough_speech_frames_in_the_window() -> None:
    flags = iter([True] * (MIN_SPEECH_FRAMES - 1) + [False] * WINDOW_FRAMES + [True] * MIN_SPEECH_FRAMES)
    vad = SpeechDetector(dsp_flag=lambda: next(flags))
    seen = []
    for _ in range(MIN_SPEECH_FRAMES - 1 + WINDOW_FRAMES + MIN_SPEECH_FRAMES):
        vad.observe(bytes(FRAME_BYTES))
        seen.append(vad.active)
    assert seen.index(True) == MIN_SPEECH_FRAMES - 1 + WINDOW_FRAMES + MIN_SPEECH_FRAMES - 1
    assert vad.speech_frames == 1


def test_frame_level() -> None:
    assert frame_dbfs(bytes(FRAME_BYTES)) == -120.0
    full = np.full(160, 32767, "<i2").tobytes()
    assert abs(frame_dbfs(full)) < 0.01

"""The first words: what a person says right after pressing call, while the session is still being
set up, reaches the agent first and in order. The real service process against a simulator that
takes 4 s to send session.created; the fake mic says five tones (300-1100 Hz, 200 ms each) 3 s
after it opens, i.e. while the call is connecting."""
from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

RATE = 16000
TONES = (300, 500, 700, 900, 1100)
TONE_S = 0.2
LEAD_S = 3.0


def _mic(path: Path) -> Path:
    t = np.arange(int(TONE_S * RATE)) / RATE
    tones = np.concatenate([0.1 * np.sin(2 * np.pi * f * t) for f in TONES])
    x = np.concatenate([np.zeros(int(LEAD_S * RATE)), tones, np.zeros(8 * RATE)])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.round(x * 32767).astype("<i2").tobytes())
    return path


def _tones_heard(pcm: bytes) -> tuple[float | None, list[int]]:
    """Where the tones start in `pcm` (seconds) and the dominant frequency of each 200 ms after it."""
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    loud = np.flatnonzero(np.abs(x) > 1000)
    if not len(loud):
        return None, []
    onset = int(loud[0])
    heard = []
    for i in range(len(TONES)):
        seg = x[onset + int((i + 0.25) * TONE_S * RATE): onset + int((i + 0.75) * TONE_S * RATE)]
        spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
        heard.append(int(round(np.argmax(spectrum) * RATE / len(seg) / 100) * 100))
    return onset / RATE, heard


@pytest.mark.parametrize("first_words_seconds", [3.0, 0.0], ids=["kept", "off"])
def test_words_spoken_while_connecting_reach_the_agent_first_and_in_order(
        start_sim, start_service, tmp_path: Path, first_words_seconds: float) -> None:
    sim = start_sim(created_delay=4.0, keep_audio_seconds=10.0, vad_threshold_dbfs=0.0)
    service = start_service(sim.url, call_mode="button", fake_capture_file=_mic(tmp_path / "mic.wav"),
                            aec="off", noise_suppression=0, first_words_seconds=first_words_seconds)
    assert service.ctl("call")["ok"]  # at once: the mic's tones come 3 s after it opened
    created = sim.wait_for_event("created", 10)
    assert created is not None
    assert sim.wait_for(lambda: len(sim.audio_of(created["session_id"])) >= 4 * RATE * 2, 15), sim.events
    onset, heard = _tones_heard(sim.audio_of(created["session_id"]))
    status = service.status()
    assert service.stop() == 0
    counters = json.loads(service.stats_file.read_text())["counters"]
    if first_words_seconds == 0.0:
        assert onset is None and counters["first_words_frames_sent"] == 0  # lost: said too early
        return
    print(f"tones at {onset:.2f} s of the session audio, heard {heard}; first words sent "
          f"{counters['first_words_frames_sent']} frames, dropped {counters['first_words_frames_dropped']}")
    assert heard == list(TONES), heard  # all five, in the order spoken
    # They came first: at most 3 s of held audio precede them (the silence before the tones).
    assert onset is not None and 0.5 <= onset <= first_words_seconds, onset
    # The hold lasted ~4 s from the press, so the oldest ~1 s of silence was dropped, and counted.
    assert counters["first_words_frames_dropped"] > 0
    assert counters["first_words_frames_sent"] >= int(first_words_seconds * 100) - 5
    assert counters["uplink_dropped_chunks"] == 0  # the burst was paced into the queue, not dropped
    assert status["sample_rate"] == 16000

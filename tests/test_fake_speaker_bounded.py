"""The fake speaker's recording stays bounded in a long run (issue 13, item 8): runs of digital
silence beyond `max_silence_seconds` are left out; sound and shorter pauses are kept exactly."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from hw.fake_audio import FakeAudioBackend
from hw.wavio import WavRecorder

RATE = 16000
PERIOD = bytes(RATE // 100 * 2)   # 10 ms of silence


def tone(seconds: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (3000 * np.sin(2 * np.pi * 440 * t) + 1).astype("<i2").tobytes()


def frames(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        return w.readframes(w.getnframes())


def test_an_idle_hour_costs_two_seconds_of_file(tmp_path: Path) -> None:
    rec = WavRecorder(tmp_path / "out.wav", RATE, max_silence_seconds=2.0)
    for _ in range(3600 * 100):          # one hour of 10 ms silence periods
        rec.write(PERIOD)
    rec.close()
    size = (tmp_path / "out.wav").stat().st_size
    assert size < 2.0 * RATE * 2 + 100   # 64 KB, not 115 MB
    assert round(rec.skipped_seconds) == 3598


def test_sound_and_short_pauses_are_kept_long_silences_cut(tmp_path: Path) -> None:
    rec = WavRecorder(tmp_path / "out.wav", RATE, max_silence_seconds=2.0)
    speech = tone(0.5)
    stream = [speech, PERIOD * 150, speech, PERIOD * 1000, speech]   # 1.5 s pause, then 10 s
    for part in stream:
        for i in range(0, len(part), len(PERIOD)):
            rec.write(part[i:i + len(PERIOD)])
    rec.close()
    expected = speech + PERIOD * 150 + speech + PERIOD * 200 + speech   # the 10 s gap kept as 2 s
    assert frames(tmp_path / "out.wav") == expected


def test_none_records_everything(tmp_path: Path) -> None:
    rec = WavRecorder(tmp_path / "out.wav", RATE)
    for _ in range(500):
        rec.write(PERIOD)
    rec.close()
    assert len(frames(tmp_path / "out.wav")) == 500 * len(PERIOD)


def test_the_backend_passes_the_bound_and_says_what_it_left_out(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    backend = FakeAudioBackend(playback_file=tmp_path / "agent.wav", keep_history=False, record_max_silence=1.0)
    for _ in range(300):
        backend.record_played(PERIOD, RATE)
    with caplog.at_level(logging.INFO, logger="hw.fake_audio"):
        backend.close()
    assert len(frames(tmp_path / "agent.wav")) == RATE * 2
    assert "2 s of silence left out" in caplog.text

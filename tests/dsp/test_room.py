"""The fake room (hw.fake_audio.FakeRoom) that the echo tests and the demo rely on: exact delay and
gain, impulse responses from a file, and speaker/mic rate conversion that keeps the level."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hw.fake_audio import FakeRoom
from hw.wavio import write_wav_mono16
from tools.signals import level_dbfs, to_pcm16


def _play_and_listen(room: FakeRoom, speaker: np.ndarray, speaker_rate: int, speaker_period: int,
                     mic_rate: int) -> np.ndarray:
    """Write one speaker period, then read 10 ms of mic, as the two audio threads take turns.
    `speaker` is in PCM16 units; the result is the echo in PCM16 units at `mic_rate`."""
    mic_period = mic_rate // 100
    out = []
    for start in range(0, len(speaker), speaker_period):
        chunk = np.round(speaker[start:start + speaker_period]).astype("<i2").tobytes()
        room.speaker_played(chunk, speaker_rate)
        out.append(room.mic_echo(mic_period))
    tail = int(len(speaker) / speaker_rate * mic_rate) - sum(len(o) for o in out)
    while tail > 0:
        out.append(room.mic_echo(min(mic_period, tail)))
        tail -= mic_period
    return np.concatenate(out)


@pytest.mark.parametrize("delay_ms", [0.0, 12.5, 37.5, 140.0])
@pytest.mark.parametrize("gain_db", [0.0, -6.0, -20.0])
def test_single_tap_room_delays_and_scales_exactly(delay_ms: float, gain_db: float) -> None:
    room = FakeRoom(16000, delay_ms=delay_ms, gain_db=gain_db)
    speaker = np.zeros(16000)
    speaker[1000] = 16000
    echo = _play_and_listen(room, speaker, 16000, 160, 16000)
    expected_at = 1000 + int(delay_ms * 16)
    assert int(np.argmax(np.abs(echo))) == expected_at
    assert echo[expected_at] == pytest.approx(16000 * 10 ** (gain_db / 20), rel=1e-12)
    echo[expected_at] = 0
    assert not echo.any()


def test_speaker_periods_need_not_match_mic_periods() -> None:
    """ALSA periods differ between devices (here 256 vs 160 frames): the line is a FIFO of samples."""
    room = FakeRoom(16000, delay_ms=20.0, gain_db=-6.0)
    rng = np.random.default_rng(11)
    speaker = np.round(rng.uniform(-8000, 8000, 256 * 40))
    echo = _play_and_listen(room, speaker, 16000, 256, 16000)
    expected = np.concatenate([np.zeros(320), speaker])[:len(echo)] * 10 ** (-6 / 20)
    np.testing.assert_allclose(echo, expected, atol=1e-9)


def test_impulse_response_from_a_file(tmp_path: Path) -> None:
    """The IR file is peak-normalised, then scaled by the gain; a tail longer than a mic period is
    carried across reads."""
    taps = np.zeros(480)
    taps[0], taps[80], taps[400] = 0.5, -0.25, 0.125
    ir_file = tmp_path / "ir.wav"
    write_wav_mono16(ir_file, to_pcm16(taps), 16000)
    room = FakeRoom.from_files(16000, delay_ms=10.0, gain_db=-6.0, ir_file=ir_file)
    speaker = np.zeros(8000)
    speaker[100] = 10000
    echo = _play_and_listen(room, speaker, 16000, 160, 16000)
    gain = 10 ** (-6 / 20)
    for offset, tap in ((0, 1.0), (80, -0.5), (400, 0.25)):
        assert echo[100 + 160 + offset] == pytest.approx(10000 * gain * tap, rel=1e-3)
    assert np.count_nonzero(np.abs(echo) > 1) == 3


def test_no_impulse_response_file_means_a_single_tap(tmp_path: Path) -> None:
    room = FakeRoom.from_files(16000, delay_ms=5.0, gain_db=0.0, ir_file=None)
    speaker = np.zeros(1600)
    speaker[10] = 1234
    echo = _play_and_listen(room, speaker, 16000, 160, 16000)
    assert echo[10 + 80] == 1234
    assert np.count_nonzero(echo) == 1


@pytest.mark.parametrize("frequency", [300.0, 1000.0, 3000.0, 6000.0])
def test_24k_speaker_into_16k_mic_keeps_the_level(frequency: float) -> None:
    room = FakeRoom(16000, delay_ms=30.0, gain_db=-6.0)
    t = np.arange(48000) / 24000
    speaker = np.sin(2 * np.pi * frequency * t) * 10 ** (-9 / 20) * 32767   # -12 dBFS RMS
    echo = _play_and_listen(room, speaker, 24000, 240, 16000) / 32768
    steady = echo[int(0.2 * 16000):int(1.8 * 16000)]   # past the bulk delay and resampler start
    assert level_dbfs(steady) == pytest.approx(-12.0 - 6.0, abs=0.5)


def test_delay_is_exact_across_rates() -> None:
    """A 24 kHz speaker into a 16 kHz mic: the band-limited impulse peaks delay_ms later."""
    room = FakeRoom(16000, delay_ms=50.0, gain_db=0.0)
    speaker = np.zeros(24000)
    speaker[2400] = 16000   # 100 ms
    echo = _play_and_listen(room, speaker, 24000, 240, 16000)
    assert abs(int(np.argmax(np.abs(echo))) - (1600 + 800)) <= 1


def test_fake_mic_plays_its_wav_sample_exactly_with_and_without_injected_audio(tmp_path: Path) -> None:
    """The fake mic's int16 fast path (nothing mixed in) and its float path (injected audio) give
    the same samples and keep one position in the WAV; the end is padded with silence."""
    from hw.clock import UnpacedClock
    from hw.fake_audio import FakeAudioBackend

    rng = np.random.default_rng(4)
    source = rng.integers(-32768, 32767, 16000 // 100 * 7 + 50, dtype=np.int16)
    wav = tmp_path / "mic.wav"
    write_wav_mono16(wav, source.astype("<i2").tobytes(), 16000)
    backend = FakeAudioBackend(capture_file=wav, clock_factory=UnpacedClock)
    mic = backend.capture(16000, 160)
    mic.open()
    burst = np.full(160, 1000, dtype="<i2")
    got = [mic.read(), mic.read()]
    backend.inject(burst.tobytes())
    got += [mic.read() for _ in range(6)]
    mic.close()
    samples = np.frombuffer(b"".join(got), dtype="<i2").astype(np.int32)
    expected = np.zeros(160 * 8, dtype=np.int32)
    expected[:len(source)] = source
    expected[320:480] = np.clip(expected[320:480] + 1000, -32768, 32767)
    assert np.array_equal(samples, expected)
    assert backend.mic_exhausted.is_set()

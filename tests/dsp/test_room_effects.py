"""What the fake room adds to a delay and a gain, as real rooms do (hw/room.py): clock drift between
speaker and mic, a speaker that distorts at high level, ambient noise, reverberant impulse
responses from pyroomacoustics; each off by default, leaving today's room exactly as it was."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.service.settings import load_settings
from hw.clock import UnpacedClock
from hw.fake_audio import FakeAudioBackend
from hw.room import FakeRoom, SpeakerNonlinearity
from hw.wavio import write_wav_mono16
from tools.room_ir import reverberant_ir
from tools.signals import level_dbfs, to_pcm16

RATE = 16000


def _run(room: FakeRoom, speaker: np.ndarray, period: int = 160, rate: int = RATE) -> np.ndarray:
    """Speaker and mic take turns, one 10 ms period each (PCM16 units in and out)."""
    out = []
    for start in range(0, len(speaker) - period + 1, period):
        room.speaker_played(np.round(speaker[start:start + period]).astype("<i2").tobytes(), rate)
        out.append(room.mic_echo(RATE // 100))
    return np.concatenate(out)


def _delay_samples(reference: np.ndarray, echo: np.ndarray, max_lag: int) -> float:
    """The lag (in samples) of `echo` behind `reference`: the whole lag from the cross-correlation
    peak, the fraction from the slope of the cross-spectrum's phase below 5.6 kHz (unbiased for
    a pure delay, unlike a parabola through the peak)."""
    n = 2 * len(reference)
    spectrum = np.fft.rfft(echo, n) * np.conj(np.fft.rfft(reference, n))
    k = int(np.argmax(np.fft.irfft(spectrum, n)[:max_lag]))
    omega = 2 * np.pi * np.fft.rfftfreq(n)           # radians per sample
    band = (omega > 0) & (omega < 0.7 * np.pi)
    phase = np.angle(spectrum[band] * np.exp(1j * omega[band] * k))
    weight = np.abs(spectrum[band])
    return k - float(np.sum(weight * phase * omega[band]) / np.sum(weight * omega[band] ** 2))


def _noise(seconds: float, seed: int = 3, level: float = 8000.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(seconds * RATE)) * level


@pytest.mark.parametrize("ppm", [150.0, 50.0, -50.0, -150.0])
def test_drift_moves_the_echo_against_the_reference_continuously_at_the_set_rate(ppm: float) -> None:
    seconds = 12
    speaker = _noise(seconds)
    echo = _run(FakeRoom(RATE, delay_ms=40.0, gain_db=0.0, drift_ppm=ppm), speaker)
    starts = np.arange(1, seconds - 1, 1.0)
    window = RATE // 2   # 0.5 s windows, every second
    delays = np.array([_delay_samples(speaker[int(s * RATE):int(s * RATE) + window],
                                      echo[int(s * RATE):int(s * RATE) + window], 2000) for s in starts])
    centres = starts + 0.25
    slope, intercept = np.polyfit(centres, delays, 1)
    # Positive ppm: the speaker's clock runs fast, the echo comes earlier by ppm us per second.
    assert slope == pytest.approx(-ppm * 1e-6 * RATE, rel=0.03)
    assert intercept == pytest.approx(640, abs=0.2)   # 40 ms at the start
    # A straight line, not steps (a resampler dropping or repeating a whole sample every
    # 1 / (ppm * rate) s would be off it by up to half a sample): every window within 0.1 sample.
    assert np.max(np.abs(delays - (slope * centres + intercept))) < 0.1
    # And the echo keeps its level (only time-warped; the interpolator's low-pass above 7.6 kHz
    # takes ~0.4 dB of white noise, nothing of speech).
    assert level_dbfs(echo[RATE:]) == pytest.approx(level_dbfs(speaker[RATE:]), abs=0.6)


def test_drift_can_wander_slowly_around_its_mean() -> None:
    room = FakeRoom(RATE, delay_ms=40.0, gain_db=0.0, drift_ppm=0.0, drift_wander_ppm=100.0,
                    drift_wander_period_s=8.0)
    speaker = _noise(8.5)
    echo = _run(room, speaker)
    at = [_delay_samples(speaker[s * RATE // 2:s * RATE // 2 + RATE // 2],
                         echo[s * RATE // 2:s * RATE // 2 + RATE // 2], 2000) for s in range(16)]
    # ppm(t) = 100 sin(2 pi t / 8): the lag falls for the first half period and recovers after.
    assert at[8] < at[0] - 3 and abs(at[15] - at[0]) < 1.0


def test_no_drift_is_todays_room_sample_for_sample() -> None:
    speaker = _noise(2)
    plain = _run(FakeRoom(RATE, delay_ms=25.0, gain_db=-6.0), speaker)
    explicit = _run(FakeRoom(RATE, delay_ms=25.0, gain_db=-6.0, drift_ppm=0.0, speaker_clip_dbfs=None,
                             noise_dbfs=None), speaker)
    assert np.array_equal(plain, explicit)
    expected = np.concatenate([np.zeros(400), np.round(speaker)])[:len(plain)] * 10 ** (-6 / 20)
    np.testing.assert_allclose(plain, expected, atol=1e-9)


def _harmonic_ratios_db(room_clip: float | None, level_dbfs_peak: float) -> tuple[float, float]:
    """A 500 Hz sine of the given peak through a speaker clipping at `room_clip`: the 3rd and 5th
    harmonic powers relative to the fundamental (dB)."""
    t = np.arange(RATE) / RATE
    sine = np.sin(2 * np.pi * 500 * t) * 32767 * 10 ** (level_dbfs_peak / 20)
    room = FakeRoom(RATE, gain_db=0.0, speaker_clip_dbfs=room_clip)
    echo = _run(room, sine)
    spectrum = np.abs(np.fft.rfft(echo[:RATE // 2] * np.hanning(RATE // 2)))   # 2 Hz bins
    def power(hz: int) -> float:
        return float(np.sum(spectrum[hz // 2 - 2:hz // 2 + 3] ** 2))
    fundamental = power(500)
    return 10 * np.log10(power(1500) / fundamental), 10 * np.log10(power(2500) / fundamental)


def test_speaker_distortion_adds_harmonics_that_grow_with_level() -> None:
    third = [_harmonic_ratios_db(-12.0, level)[0] for level in (-36.0, -24.0, -12.0, -6.0, 0.0)]
    assert third == sorted(third), third
    assert third[0] < -60 and third[-1] > -25, third     # clean when quiet, distorted when loud
    fifth_loud = _harmonic_ratios_db(-12.0, 0.0)[1]
    assert fifth_loud > -45                              # soft clipping: a series of odd harmonics
    # A stronger speaker limit (lower clip level) distorts the same signal more.
    assert _harmonic_ratios_db(-20.0, -12.0)[0] > _harmonic_ratios_db(-6.0, -12.0)[0] + 10
    # And the linear speaker (the default) adds none.
    assert _harmonic_ratios_db(None, 0.0)[0] < -100


def test_speaker_nonlinearity_is_linear_when_quiet_and_bounded_when_loud() -> None:
    speaker = SpeakerNonlinearity(-12.0)
    quiet = np.array([10.0, -10.0, 100.0])
    np.testing.assert_allclose(speaker.apply(quiet), quiet, rtol=1e-4)
    loud = speaker.apply(np.array([32767.0, -32768.0]))
    assert np.all(np.abs(loud) < speaker.ceiling) and np.all(np.abs(loud) > 0.95 * speaker.ceiling)


@pytest.mark.parametrize("level", [-65.0, -55.0, -45.0])
def test_ambient_noise_has_the_set_level(level: float) -> None:
    room = FakeRoom(RATE, gain_db=-6.0, noise_dbfs=level)
    heard = np.concatenate([room.mic_sound(160) for _ in range(300)]) / 32768   # 3 s, speaker silent
    assert level_dbfs(heard) == pytest.approx(level, abs=0.5)
    # Room noise, not a hiss: most of its power below 1 kHz, and not a repeating period.
    spectrum = np.abs(np.fft.rfft(heard)) ** 2
    freqs = np.fft.rfftfreq(len(heard), 1 / RATE)
    assert spectrum[freqs < 1000].sum() > 0.6 * spectrum.sum()
    assert not np.allclose(heard[:RATE], heard[RATE:2 * RATE])


def test_no_noise_by_default_and_echo_unchanged_by_noise() -> None:
    speaker = _noise(1)
    quiet_room = FakeRoom(RATE, delay_ms=10.0, gain_db=-6.0)
    assert not np.concatenate([quiet_room.mic_sound(160) for _ in range(10)]).any()
    noisy = FakeRoom(RATE, delay_ms=10.0, gain_db=-6.0, noise_dbfs=-50.0)
    np.testing.assert_array_equal(_run(noisy, speaker), _run(FakeRoom(RATE, delay_ms=10.0, gain_db=-6.0), speaker))


@pytest.mark.parametrize("rt60, distance", [(0.3, 0.1), (0.8, 2.0)])
def test_pyroomacoustics_rooms_reverberate_for_their_rt60(tmp_path: Path, rt60: float, distance: float) -> None:
    """The bench's reverberant rooms, through the room's IR file: the energy decay of the echo
    of an impulse falls 60 dB in about RT60, and a far mic hears less of the direct sound."""
    ir, _ = reverberant_ir(rt60, distance, RATE)
    ir_file = tmp_path / "ir.wav"
    write_wav_mono16(ir_file, to_pcm16(ir / np.max(np.abs(ir))), RATE)
    room = FakeRoom.from_files(RATE, delay_ms=0.0, gain_db=0.0, ir_file=ir_file)
    speaker = np.zeros(int(1.5 * RATE) // 160 * 160)
    speaker[160] = 30000
    echo = _run(room, speaker)[160:]
    arrival = int(np.argmax(np.abs(echo)))
    direct = float(np.sum(np.square(echo[:arrival + int(0.005 * RATE)])))
    tail = echo[arrival + int(0.005 * RATE):]                   # the reverberation after the direct sound
    energy = np.cumsum(np.square(tail)[::-1])[::-1]             # Schroeder backward integration
    decay_db = 10 * np.log10(energy / energy[0] + 1e-30)
    t5, t25 = np.argmax(decay_db < -5), np.argmax(decay_db < -25)
    measured = 3 * (t25 - t5) / RATE                            # T20 extrapolated to 60 dB
    assert measured == pytest.approx(rt60, rel=0.35)
    direct_to_reverb_db = 10 * np.log10(direct / energy[0])
    assert direct_to_reverb_db > 10 if distance < 0.2 else direct_to_reverb_db < -3


def test_settings_build_the_room_with_its_effects(tmp_path: Path) -> None:
    settings = load_settings(audio_backend="fake", fake_echo_delay_ms=30, fake_echo_gain_db=-6,
                             fake_echo_drift_ppm=-50, fake_speaker_clip_dbfs=-10, fake_noise_dbfs=-55)
    backend = FakeAudioBackend.from_settings(settings)
    room = backend.room
    assert room is not None and room.drift is not None and room.drift.drift_ppm == -50
    assert room.speaker is not None and room.speaker.clip_dbfs == -10
    assert room.noise is not None and room.noise.level_dbfs == -55
    # Noise alone is a room with no echo; nothing set is no room at all (today's default).
    only_noise = FakeAudioBackend.from_settings(load_settings(audio_backend="fake", fake_noise_dbfs=-60))
    assert only_noise.room is not None and only_noise.room.gain == 0.0
    assert FakeAudioBackend.from_settings(load_settings(audio_backend="fake")).room is None
    plain = FakeAudioBackend.from_settings(load_settings(audio_backend="fake", fake_echo_gain_db=-6)).room
    assert plain is not None and plain.drift is None and plain.speaker is None and plain.noise is None


def test_the_fake_mic_hears_the_room_noise() -> None:
    backend = FakeAudioBackend(clock_factory=UnpacedClock, room=FakeRoom(RATE, gain_db=-6.0, noise_dbfs=-50.0))
    mic = backend.capture(RATE, 160)
    mic.open()
    heard = np.frombuffer(b"".join(mic.read() for _ in range(200)), "<i2").astype(np.float64) / 32768
    mic.close()
    assert level_dbfs(heard) == pytest.approx(-50.0, abs=0.5)

"""The residual echo suppressor after AEC3: synthetic residual echo, synthetic talkers, no timing."""
from __future__ import annotations

import numpy as np

from device.audio.formats import FRAME_SAMPLES
from device.audio.residual_echo import BANDS, ReferenceSpectra, ResidualEchoSuppressor
from tools.signals import synthetic_speech

RATE = 16000
FULL = 32768.0


def _frames(x: np.ndarray) -> list[np.ndarray]:
    return [x[i:i + FRAME_SAMPLES] for i in range(0, len(x) - FRAME_SAMPLES + 1, FRAME_SAMPLES)]


def _residual_echo(far: np.ndarray, gain_db: float, delay_frames: int = 3, rt60_s: float = 0.5) -> np.ndarray:
    """What AEC3 leaves of a reverberant echo: the far signal, delayed, through a decaying noise tail."""
    rng = np.random.default_rng(5)
    n = int(rt60_s * RATE)
    tail = rng.standard_normal(n) * np.exp(-6.908 * np.arange(n) / n)
    tail /= np.sqrt(np.sum(tail ** 2))
    echo = np.convolve(far, tail)[:len(far)] * 10 ** (gain_db / 20)
    return np.concatenate([np.zeros(delay_frames * FRAME_SAMPLES), echo])[:len(far)]


def _run(mic: np.ndarray, far: np.ndarray, suppressor: ResidualEchoSuppressor) -> np.ndarray:
    spectra = ReferenceSpectra()
    out = []
    for m, f in zip(_frames(mic), _frames(far)):
        spectra.push(f, RATE)
        powers, _ = spectra.take()
        out.append(suppressor.process(m, powers))
    return np.concatenate(out)


def _power(x: np.ndarray) -> float:
    return float(np.mean(x ** 2))


def test_without_a_reference_the_signal_passes_one_frame_late() -> None:
    near = synthetic_speech(2.0, RATE, seed=3) * FULL * 0.05
    out = _run(near, np.zeros_like(near), ResidualEchoSuppressor())
    n = len(out)
    assert np.allclose(out[FRAME_SAMPLES:], near[:n - FRAME_SAMPLES], atol=1e-6)


def test_a_residual_echo_is_turned_down() -> None:
    far = synthetic_speech(12.0, RATE, seed=1) * FULL * 0.1
    residual = _residual_echo(far, -25.0)
    noise = np.random.default_rng(2).standard_normal(len(far)) * FULL * 10 ** (-75 / 20)
    suppressor = ResidualEchoSuppressor()
    out = _run(residual + noise, far, suppressor)
    late = slice(6 * RATE, len(out) - FRAME_SAMPLES)
    shifted = (residual + noise)[late.start - FRAME_SAMPLES:late.stop - FRAME_SAMPLES]
    reduction = 10 * np.log10(_power(shifted) / _power(out[late]))
    assert reduction >= 10, reduction
    assert suppressor.suppressed_frames > 0
    assert suppressor.last_echo_mean_square >= 0


def test_a_near_end_talker_keeps_his_level_in_double_talk() -> None:
    seconds = 14.0
    far = synthetic_speech(seconds, RATE, seed=1) * FULL * 0.1
    residual = _residual_echo(far, -30.0)
    near = np.zeros_like(far)
    talk = synthetic_speech(4.0, RATE, seed=9) * FULL * 0.05
    start = 8 * RATE
    near[start:start + len(talk)] = talk
    suppressor = ResidualEchoSuppressor()
    with_talker = _run(residual + near, far, suppressor)
    without = _run(residual, far, ResidualEchoSuppressor())
    seg = slice(start + FRAME_SAMPLES, start + len(talk))
    talker_out = with_talker[seg] - without[seg]
    loss = 10 * np.log10(_power(talk[:seg.stop - seg.start]) / _power(talker_out))
    assert loss <= 3.0, loss


def test_reference_band_powers_do_not_depend_on_the_speaker_rate() -> None:
    powers = []
    for rate in (16000, 24000, 48000):
        t = np.arange(rate) / rate
        tone = 8000 * np.sin(2 * np.pi * 1000 * t)
        spectra = ReferenceSpectra()
        frame = rate // 100
        for i in range(0, rate, frame):
            spectra.push(tone[i:i + frame], rate)
            p, mean_square = spectra.take()
        powers.append(p)
        assert abs(mean_square - 8000 ** 2 / 2) / (8000 ** 2 / 2) < 0.05
    for p in powers[1:]:
        assert p.shape == (BANDS,)
        band = int(np.argmax(powers[0]))
        assert int(np.argmax(p)) == band
        assert abs(10 * np.log10(p[band] / powers[0][band])) < 1.0


def test_nothing_pushed_means_a_silent_reference() -> None:
    spectra = ReferenceSpectra()
    powers, mean_square = spectra.take()
    assert not powers.any() and mean_square == 0.0

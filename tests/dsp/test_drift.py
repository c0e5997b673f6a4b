"""The drift compensator: the echo reference stretched by 1 + ppm * 1e-6, continuously."""
from __future__ import annotations

import numpy as np
import pytest
import soxr

from device.audio.drift import HALF_TAPS, DriftCompensator

RATE = 16000


def _tones(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return 8000 * np.sin(2 * np.pi * 440 * t) + 4000 * np.sin(2 * np.pi * 3100 * t + 1.0)


def _run(comp: DriftCompensator, x: np.ndarray, chunk: int) -> np.ndarray:
    return np.concatenate([comp.process(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def test_zero_ppm_is_the_input_one_filter_half_late() -> None:
    x = np.arange(1, 1601, dtype=np.float64)
    out = _run(DriftCompensator(0.0), x, 160)
    assert len(out) == len(x)
    assert np.array_equal(out[:HALF_TAPS], np.zeros(HALF_TAPS))
    assert np.array_equal(out[HALF_TAPS:], x[:-HALF_TAPS])


@pytest.mark.parametrize("ppm", [150.0, -150.0, 50.0, 1000.0])
def test_output_count_follows_the_ratio(ppm: float) -> None:
    x = _tones(4.0)
    comp = DriftCompensator(ppm)
    out = _run(comp, x, 160)
    expected = len(x) * (1 + ppm * 1e-6)   # HALF_TAPS of lead-in out, HALF_TAPS held back
    assert abs(len(out) - expected) <= 2
    assert comp.samples_in == len(x) and comp.samples_out == len(out)


@pytest.mark.parametrize("ppm", [150.0, -150.0])
def test_matches_a_reference_resampler(ppm: float) -> None:
    x = _tones(4.0)
    out = _run(DriftCompensator(ppm), x, 160)[HALF_TAPS:]
    ref = soxr.resample(x, RATE, RATE * (1 + ppm * 1e-6), quality="VHQ")
    n = min(len(out), len(ref)) - 400
    err = out[400:n] - ref[400:n]
    assert 10 * np.log10(np.mean(err ** 2) / np.mean(ref[400:n] ** 2)) < -45


def test_chunk_size_does_not_change_the_output() -> None:
    x = _tones(1.0)
    a = _run(DriftCompensator(300.0), x, 160)
    b = _run(DriftCompensator(300.0), x, 7)
    n = min(len(a), len(b))
    assert abs(len(a) - len(b)) <= 1
    assert np.allclose(a[:n], b[:n], atol=1e-6)


def test_changing_the_ratio_mid_stream_has_no_step() -> None:
    t = np.arange(2 * RATE) / RATE
    x = 10000 * np.sin(2 * np.pi * 200 * t)
    comp = DriftCompensator(0.0)
    first = _run(comp, x[:RATE], 160)
    comp.set_ppm(500.0)
    second = _run(comp, x[RATE:], 160)
    out = np.concatenate([first, second])
    # A 200 Hz sine at 10000 moves at most ~790 per sample; a jump would show far more.
    assert np.max(np.abs(np.diff(out[HALF_TAPS + 10:]))) < 800


def test_out_of_range_drift_is_refused() -> None:
    with pytest.raises(ValueError, match="ppm"):
        DriftCompensator(5000.0)

"""The audio format facts: sizes derived from rates, and the per-session StreamFormat."""
from __future__ import annotations

import pytest

from device.audio.formats import (
    FRAME_BYTES,
    SESSION_RATES,
    StreamFormat,
    bytes_for,
    bytes_for_seconds,
    duration_seconds,
    samples_for,
)


def test_sizes() -> None:
    assert FRAME_BYTES == 320
    assert bytes_for(24000, 20) == 960
    assert bytes_for(48000, 10) == 960
    assert samples_for(8000, 10) == 80
    assert bytes_for_seconds(16000, 0.5) == 16000
    assert duration_seconds(32000, 16000) == 1.0


def test_partial_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="whole number"):
        samples_for(44100, 10.5)
    with pytest.raises(ValueError):
        bytes_for(16000, 0)


@pytest.mark.parametrize("rate", SESSION_RATES)
def test_stream_format_sizes(rate: int) -> None:
    fmt = StreamFormat(rate)
    assert fmt.chunk_bytes == rate // 50 * 2
    assert fmt.frame_bytes == rate // 100 * 2
    assert fmt.period_bytes(20) == fmt.chunk_bytes


def test_stream_format_generations_and_rates() -> None:
    first = StreamFormat()
    second = first.next(24000)
    assert (first.generation, second.generation, second.rate) == (0, 1, 24000)
    with pytest.raises(ValueError, match="not one of"):
        StreamFormat(22050)

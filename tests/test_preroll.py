"""The first-words buffer (device/audio/preroll.py): bounded, oldest dropped first and counted,
taken in order, and a clear (mute, hang-up) refuses frames of the generation before it."""
from __future__ import annotations

from device.audio.preroll import Preroll


def test_bounded_in_order_and_counted() -> None:
    held = Preroll(max_frames=3)
    gen = held.generation
    for i in range(5):
        assert held.push(bytes([i]), gen)
    assert len(held) == 3 and held.dropped_frames == 2 and held.held_frames == 5
    assert held.take(2) == [b"\x02", b"\x03"] and held.take(5) == [b"\x04"] and held.take(1) == []
    assert held.sent_frames == 3


def test_clear_discards_and_refuses_the_previous_generation() -> None:
    held = Preroll(max_frames=10)
    gen = held.generation
    held.push(b"a", gen)
    assert held.clear() == 1 and len(held) == 0
    assert not held.push(b"b", gen)  # processed before the mute, arriving after it: refused
    assert held.push(b"c", held.generation) and held.take(10) == [b"c"]


def test_zero_frames_is_off() -> None:
    held = Preroll(max_frames=0)
    assert not held.push(b"a", held.generation) and len(held) == 0

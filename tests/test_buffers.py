"""Bounded buffers and backoff: bounds hold, losses are counted, delays follow full jitter."""
from __future__ import annotations

import random

from device.audio.buffers import JitterBuffer, LatencyWindow, LocalSoundQueue, UplinkChunk, UplinkQueue
from device.core.backoff import Backoff


def test_uplink_queue_drops_the_oldest_and_counts() -> None:
    q = UplinkQueue(max_chunks=3)
    for i in range(5):
        q.put(UplinkChunk(bytes([i]) * 4, float(i)))
    assert len(q) == 3 and q.dropped_chunks == 2 and q.dropped_bytes == 8
    got = [q.get(0) for _ in range(3)]
    assert [c.captured_at for c in got if c] == [2.0, 3.0, 4.0]
    assert q.get(0) is None


def test_uplink_clear_reports_what_it_discarded() -> None:
    q = UplinkQueue(10)
    q.put(UplinkChunk(b"ab", 0))
    q.put(UplinkChunk(b"cd", 0))
    assert q.clear() == 2 and len(q) == 0


def test_jitter_buffer_pops_periods_and_pads_the_tail() -> None:
    jb = JitterBuffer(max_bytes=100)
    jb.push(b"\x01\x00" * 15)
    assert jb.pop(20) == b"\x01\x00" * 10
    assert jb.pop(20) == b"\x01\x00" * 5 + bytes(10)
    assert jb.pop(20) is None


def test_jitter_buffer_is_bounded_and_counts_overflow() -> None:
    jb = JitterBuffer(max_bytes=100)
    assert jb.push(bytes(80))
    assert not jb.push(bytes(50))
    assert len(jb) == 100 and jb.overflow_bytes == 30 and jb.overflow_events == 1
    for _ in range(1000):  # a flood stays bounded
        jb.push(bytes(4800))
    assert len(jb) == 100


def test_jitter_buffer_clear_is_immediate() -> None:
    jb = JitterBuffer(1000)
    jb.push(bytes(600))
    assert jb.clear() == 600 and jb.pop(10) is None and jb.flushed_bytes == 600


def test_latency_percentiles() -> None:
    w = LatencyWindow(size=1000)
    assert w.percentiles_ms(0.5) == {"p50": None}
    for i in range(1, 101):
        w.add(i / 1000)
    p = w.percentiles_ms(0.5, 0.99)
    assert p["p50"] is not None and 49 <= p["p50"] <= 51
    assert p["p99"] is not None and 98 <= p["p99"] <= 100


def test_latency_window_keeps_the_last_samples_only() -> None:
    w = LatencyWindow(size=3)
    for seconds in (0.9, 0.5, 0.001, 0.002, 0.003):   # 0.9 and 0.5 leave first: the oldest, not the largest
        w.add(seconds)
    assert len(w) == 3
    assert w.percentiles_ms(0.0, 0.5, 1.0) == {"p0": 1.0, "p50": 2.0, "p100": 3.0}


def test_full_jitter_backoff_doubles_to_the_cap() -> None:
    b = Backoff(initial=1.0, cap=30.0, rng=random.Random(7))
    ceilings = []
    for _ in range(8):
        ceilings.append(b.ceiling())
        delay = b.next_delay()
        assert 0 <= delay <= ceilings[-1]
    assert ceilings == [1, 2, 4, 8, 16, 30, 30, 30]
    b.reset()
    assert b.ceiling() == 1


def test_backoff_keeps_its_cap_after_any_number_of_attempts() -> None:
    """An always-on device reconnecting for days (or a reopen loop on an unpaced test clock) makes
    thousands of attempts: the delay stays at the cap instead of overflowing."""
    b = Backoff(initial=1.0, cap=30.0, rng=random.Random(2))
    for _ in range(5000):
        assert 0 <= b.next_delay() <= 30.0
    assert b.ceiling() == 30.0


def test_backoff_without_jitter_waits_each_ceiling() -> None:
    """The device reopen loop's delays: deterministic, 0.5 s doubling to 5 s (no random draw)."""
    rng = random.Random(3)
    state = rng.getstate()
    b = Backoff(initial=0.5, cap=5.0, rng=rng, jitter=False)
    assert [b.next_delay() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert rng.getstate() == state
    b.reset()
    assert b.next_delay() == 0.5


def test_local_sounds_keep_one_rate_and_a_bound() -> None:
    q = LocalSoundQueue(16000, max_bytes=640)
    assert q.push(b"\x01\x00" * 200, 16000)   # 400 bytes: below the bound, accepted whole
    assert q.push(b"\x02\x00" * 200, 16000)   # starts below the bound: accepted whole too
    assert not q.push(b"\x03\x00", 16000)      # the bound reached: refused, counted
    assert not q.push(b"\x04\x00", 24000)      # made for another rate: refused, counted
    assert q.refused_sounds == 2 and len(q) == 800
    assert q.pop(320) == b"\x01\x00" * 160
    assert q.pop(640) == b"\x01\x00" * 40 + b"\x02\x00" * 200 + bytes(160)   # the tail padded
    assert q.pop(320) is None
    q.push(b"\x05\x00" * 10, 16000)
    q.reset(24000, 960)   # renegotiated: what was queued at 16 kHz goes
    assert len(q) == 0 and not q.push(b"\x06\x00", 16000) and q.push(b"\x06\x00", 24000)


def test_retry_after_is_a_floor() -> None:
    b = Backoff(initial=1.0, cap=30.0, rng=random.Random(1))
    assert b.next_delay(retry_after=5) >= 5
    assert b.next_delay(retry_after=10_000) == 300.0

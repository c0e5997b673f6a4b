"""The audio pipeline on the fake devices: chunking, gates, barge-in, device loss, rate changes."""
from __future__ import annotations

import queue

import numpy as np
import pytest

from device.audio.buffers import JitterBuffer, UplinkQueue
from device.audio.dsp import make_capture_dsp
from device.audio.pipeline import AudioPipeline
from device.core.events import Event, HardwareBack, HardwareLost
from hw.clock import ManualClock, UnpacedClock
from hw.fake_audio import FakeAudioBackend, FakePlayback, SpeakerOp
from tools.polling import wait_until

AGENT_LEVEL = 8000


def is_agent_write(op: SpeakerOp) -> bool:
    return op.kind == "write" and max(np.frombuffer(op.pcm, "<i2"), default=0) >= AGENT_LEVEL


@pytest.fixture
def events() -> queue.SimpleQueue[Event]:
    return queue.SimpleQueue()


def make_pipeline(backend: FakeAudioBackend, events: queue.SimpleQueue[Event], rate: int = 16000,
                  ) -> AudioPipeline:
    return AudioPipeline(backend, make_capture_dsp("off", 0, 0), UplinkQueue(1000), JitterBuffer(10 * rate * 2),
                         events.put, session_rate=rate, clock=UnpacedClock())


def step_until(clock: ManualClock, predicate, steps: int = 1000) -> bool:  # type: ignore[no-untyped-def]
    """Advance a manual clock 10 ms at a time, each time once both audio threads wait on it."""
    for _ in range(steps):
        if predicate():
            return True
        assert clock.wait_for_sleepers(2, 5)
        clock.advance(0.01)
    return bool(predicate())


def stop_stepped(p: AudioPipeline, clock: ManualClock) -> None:
    """Stop a pipeline on a manual clock: the fakes wait for it without an interrupt, so keep time going."""
    p.stop()
    for _ in range(500):
        clock.advance(0.01)
        if p.join(0.01):
            return
    raise AssertionError("the audio threads did not stop")


def test_uplink_carries_20ms_chunks_only_while_the_gate_is_open(events, started) -> None:
    backend = FakeAudioBackend(clock_factory=UnpacedClock)
    p = make_pipeline(backend, events, rate=24000)
    started.append(p)
    p.start()
    assert wait_until(lambda: p.counters.frames_captured > 50)
    assert len(p.uplink) == 0 and p.counters.frames_gated > 0  # gate closed at start
    p.set_mic_gate(True)
    assert wait_until(lambda: len(p.uplink) >= 20)
    chunk = p.uplink.get(1)
    assert chunk is not None and len(chunk.pcm) == 24000 * 20 // 1000 * 2  # 20 ms at the session rate
    p.set_mic_gate(False)
    assert len(p.uplink) == 0  # privacy: nothing captured before the close is left to send
    queued = p.counters.chunks_queued
    seen = p.counters.frames_captured
    assert wait_until(lambda: p.counters.frames_captured > seen + 50)
    assert p.counters.chunks_queued <= queued + 1  # at most the chunk in flight at the close


def test_interruption_no_agent_sample_after_the_next_period(events, started) -> None:
    """Barge-in on a speaker stepped by a manual clock: `flush` asked while the playback thread is
    blocked in a write lets at most that one agent period through, then the speaker is dropped and
    only silence follows (read from the fake speaker's own log of writes and drops)."""
    clock = ManualClock()
    backend = FakeAudioBackend(clock_factory=lambda: clock)
    p = AudioPipeline(backend, make_capture_dsp("off", 0, 0), UplinkQueue(1000), JitterBuffer(10 * 16000 * 2),
                      events.put, session_rate=16000, clock=clock)
    started.append(p)
    p.start()
    p.jitter.push(np.full(16000 * 5, AGENT_LEVEL, "<i2").tobytes())  # 5 s of agent audio
    assert step_until(clock, lambda: any(is_agent_write(op) for op in backend.speaker_history()))
    assert clock.wait_for_sleepers(2, 5)   # both threads blocked on the clock: nothing in between
    at_flush = backend.speaker_ops
    p.flush()
    assert step_until(clock, p.flushed_event.is_set)
    assert step_until(clock, lambda: backend.speaker_ops > at_flush + 20)
    after = backend.speaker_history(since=at_flush)
    agent_writes = [i for i, op in enumerate(after) if is_agent_write(op)]
    drops = [i for i, op in enumerate(after) if op.kind == "drop"]
    assert len(drops) == 1 and after[drops[0]].discarded_frames > 0, after[:5]
    assert all(i < drops[0] for i in agent_writes) and len(agent_writes) <= 1, agent_writes
    assert len(p.jitter) == 0 and p.counters.flushes == 1
    stop_stepped(p, clock)


def test_playback_writes_silence_when_idle_and_feeds_the_reference(events, started) -> None:
    backend = FakeAudioBackend(clock_factory=UnpacedClock)
    p = make_pipeline(backend, events)
    fed: list[int] = []
    real_reference = p.dsp.reference
    p.dsp.reference = lambda pcm, rate: (fed.append(len(pcm)), real_reference(pcm, rate))  # type: ignore[method-assign]
    started.append(p)
    p.start()
    assert wait_until(lambda: p.counters.periods_played > 30)
    assert p.counters.silence_periods > 0 and set(fed) == {320}  # every period, silence included


def test_capture_device_lost_and_back(events, started) -> None:
    backend = FakeAudioBackend(clock_factory=UnpacedClock)
    p = make_pipeline(backend, events)
    started.append(p)
    p.set_mic_gate(True)
    p.start()
    assert wait_until(lambda: p.counters.chunks_queued > 10)
    backend.capture_plug.unplug()
    assert events.get(timeout=5) == HardwareLost("capture", "device unplugged")
    backend.capture_plug.replug()
    assert events.get(timeout=10) == HardwareBack("capture")
    queued = p.counters.chunks_queued
    assert wait_until(lambda: p.counters.chunks_queued > queued + 10)  # the call goes on
    assert p.capture.alive and p.counters.capture_reopens == 2


def test_playback_device_lost_and_back(events, started) -> None:
    backend = FakeAudioBackend(clock_factory=UnpacedClock)
    p = make_pipeline(backend, events)
    started.append(p)
    p.start()
    assert wait_until(lambda: p.counters.periods_played > 10)
    backend.playback_plug.unplug()
    assert events.get(timeout=5) == HardwareLost("playback", "device unplugged")
    backend.playback_plug.replug()
    assert events.get(timeout=10) == HardwareBack("playback")
    played = p.counters.periods_played
    assert wait_until(lambda: p.counters.periods_played > played + 10)


def test_missing_device_at_start_is_retried(events, started) -> None:
    backend = FakeAudioBackend(clock_factory=UnpacedClock)
    backend.capture_plug.unplug()  # a USB mic not yet enumerated at boot
    p = make_pipeline(backend, events)
    started.append(p)
    p.start()
    assert events.get(timeout=5) == HardwareLost("capture", "device unplugged")
    backend.capture_plug.replug()
    assert events.get(timeout=10) == HardwareBack("capture")
    assert wait_until(lambda: p.counters.frames_captured > 10)


def test_renegotiated_rate_reopens_playback_and_rechunks_uplink(events, started) -> None:
    backend = FakeAudioBackend(clock_factory=UnpacedClock)
    p = make_pipeline(backend, events, rate=16000)
    started.append(p)
    p.set_mic_gate(True)
    p.start()
    assert wait_until(lambda: p.counters.periods_played > 5)
    p.set_session_rate(48000)
    assert wait_until(lambda: p.playback.rate == 48000 and p.counters.playback_reopens == 2)
    p.uplink.clear()
    assert wait_until(lambda: len(p.uplink) > 5)
    # A chunk resampled for 16 kHz just before the switch may follow the clear; it says so, and
    # the sender drops it (tests/test_session.py).
    chunks = [p.uplink.get(1) for _ in range(5)]
    assert all(c is not None and len(c.pcm) == c.rate * 20 // 1000 * 2 for c in chunks)
    chunk = chunks[-1]
    assert chunk is not None and chunk.rate == 48000 and len(chunk.pcm) == 48000 * 20 // 1000 * 2


def test_capture_periods_that_are_not_whole_10ms_frames(events, started) -> None:
    """ALSA may grant 341-frame periods: every sample still reaches the uplink, in order.

    Paced by a manual clock: unpaced, the mic would overrun the bounded uplink queue (which drops
    the oldest audio) before the test could read it."""
    clock = ManualClock()
    backend = FakeAudioBackend(clock_factory=lambda: clock)
    original = backend.capture
    backend.capture = lambda rate, period: original(rate, 341)  # type: ignore[method-assign]
    ramp = (np.arange(16000 * 2) % 30000).astype("<i2")
    backend.inject(ramp.tobytes())
    p = make_pipeline(backend, events)
    p.set_mic_gate(True)
    p.start()
    try:
        assert step_until(clock, lambda: len(p.uplink) >= 100)
    finally:
        stop_stepped(p, clock)
    got = b"".join(c.pcm for c in (p.uplink.get(0) for _ in range(100)) if c is not None)
    assert len(got) == 100 * 640
    assert np.array_equal(np.frombuffer(got, "<i2"), ramp[: len(got) // 2])


def test_earcons_play_through_the_speaker_and_reach_the_echo_canceller(events, started) -> None:
    from device.audio.earcons import earcon_pcm

    backend = FakeAudioBackend(clock_factory=UnpacedClock)
    p = make_pipeline(backend, events)
    referenced = bytearray()
    real_reference = p.dsp.reference
    p.dsp.reference = lambda pcm, rate: (referenced.extend(pcm), real_reference(pcm, rate))  # type: ignore[method-assign]
    started.append(p)
    p.start()
    chime = earcon_pcm("connected", 16000)
    p.play_local(chime)
    assert wait_until(lambda: chime in bytes(referenced))  # the canceller saw exactly the chime
    assert wait_until(lambda: chime in bytes(backend.played))  # and the speaker played it


def test_two_periods_stay_queued_in_the_speaker_when_idle(events, started) -> None:
    """Stepped one period at a time by a manual clock: after the prefill, every write finds exactly
    two periods still queued (the speaker never gets closer to started dry), silence included."""
    clock = ManualClock()
    backend = FakeAudioBackend(clock_factory=lambda: clock)
    p = AudioPipeline(backend, make_capture_dsp("off", 0, 0), UplinkQueue(1000), JitterBuffer(320_000),
                      events.put, session_rate=16000, clock=clock)  # the default buffer: 3 periods
    started.append(p)
    p.start()
    for _ in range(30):
        assert clock.wait_for_sleepers(2, 5)   # capture and playback both blocked on the next period
        clock.advance(0.01)
        if _ == 10:
            p.jitter.push(np.full(160 * 5, AGENT_LEVEL, "<i2").tobytes())   # 50 ms of agent audio
    assert clock.wait_for_sleepers(2, 5)
    speaker = p.playback.device
    assert isinstance(speaker, FakePlayback) and speaker.format.buffer_frames == 3 * 160
    period = 160
    # The prefill's two writes found 0 and 1 periods queued, then the first loop write 2 periods.
    depths = dict(speaker.depth_at_write)
    assert depths.pop(0) == 1 and depths.pop(period) == 1
    assert depths == {2 * period: p.counters.periods_played - 2}
    assert p.counters.agent_periods_played == 5 and speaker.underruns == 0
    stop_stepped(p, clock)

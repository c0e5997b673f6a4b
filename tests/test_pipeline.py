"""The audio pipeline on the fake devices: chunking, gates, barge-in, device loss, rate changes."""
from __future__ import annotations

import queue

import numpy as np
import pytest

from device.audio.buffers import JitterBuffer, UplinkQueue
from device.audio.dsp import CaptureDsp, make_capture_dsp
from device.audio.earcons import earcon_pcm
from device.audio.formats import bytes_for
from device.audio.pipeline import AudioPipeline
from device.audio.reopen import REOPEN_INITIAL, REOPEN_MAX
from device.core.events import Event, HardwareBack, HardwareLost
from hw.audio import AudioCapture, AudioPlayback
from hw.clock import Clock, ManualClock, UnpacedClock
from hw.fake_audio import FakeAudioBackend, FakePlayback, SpeakerOp
from tools.polling import wait_until

AGENT_LEVEL = 8000


def is_agent_write(op: SpeakerOp) -> bool:
    return op.kind == "write" and max(np.frombuffer(op.pcm, "<i2"), default=0) >= AGENT_LEVEL


@pytest.fixture
def events() -> queue.SimpleQueue[Event]:
    return queue.SimpleQueue()


class ReferenceSpy:
    """The passthrough capture chain, keeping every echo reference it is given, in order (the
    playback thread appends, a test reads)."""

    def __init__(self) -> None:
        self._inner = make_capture_dsp("off", 0, 0)
        self.last_is_speech = False
        self.referenced = bytearray()
        self.sizes: set[int] = set()
        self.rates: set[int] = set()

    def process(self, frame: bytes) -> bytes:
        return self._inner.process(frame)

    def reference(self, pcm: bytes, sample_rate: int) -> None:
        self.referenced += pcm
        self.sizes.add(len(pcm))
        self.rates.add(sample_rate)
        self._inner.reference(pcm, sample_rate)

    def stats(self) -> dict[str, int]:
        return self._inner.stats()

    def close(self) -> None:
        self._inner.close()


def make_pipeline(backend: FakeAudioBackend, events: queue.SimpleQueue[Event], rate: int = 16000,
                  dsp: CaptureDsp | None = None, clock: Clock | None = None) -> AudioPipeline:
    return AudioPipeline(backend, dsp or make_capture_dsp("off", 0, 0), UplinkQueue(1000),
                         JitterBuffer(bytes_for(rate, 10_000)), events.put, session_rate=rate,
                         clock=clock or UnpacedClock())


def drain(events: queue.SimpleQueue[Event]) -> list[Event]:
    out: list[Event] = []
    while not events.empty():
        out.append(events.get_nowait())
    return out


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
    assert wait_until(lambda: p.counters()["frames_captured"] > 50)
    assert len(p.uplink) == 0 and p.counters()["frames_gated"] > 0  # gate closed at start
    p.set_mic_gate(True)
    assert wait_until(lambda: len(p.uplink) >= 20)
    chunk = p.uplink.get(1)
    assert chunk is not None and len(chunk.pcm) == 24000 * 20 // 1000 * 2  # 20 ms at the session rate
    assert chunk.generation == 0   # no session yet: the initial format
    p.set_mic_gate(False)
    assert len(p.uplink) == 0  # privacy: nothing captured before the close is left to send
    queued = p.counters()["chunks_queued"]
    seen = p.counters()["frames_captured"]
    assert wait_until(lambda: p.counters()["frames_captured"] > seen + 50)
    assert p.counters()["chunks_queued"] <= queued + 1  # at most the chunk in flight at the close


def test_interruption_no_agent_sample_after_the_next_period(events, started) -> None:
    """Barge-in on a speaker stepped by a manual clock: `flush` asked while the playback thread is
    blocked in a write lets at most that one agent period through, then the speaker is dropped and
    only silence follows (read from the fake speaker's own log of writes and drops)."""
    clock = ManualClock()
    backend = FakeAudioBackend(clock_factory=lambda: clock)
    p = make_pipeline(backend, events, clock=clock)
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
    assert len(p.jitter) == 0 and p.counters()["flushes"] == 1
    stop_stepped(p, clock)


def test_playback_writes_silence_when_idle_and_feeds_the_reference(events, started) -> None:
    backend = FakeAudioBackend(clock_factory=UnpacedClock)
    spy = ReferenceSpy()
    p = make_pipeline(backend, events, dsp=spy)
    started.append(p)
    p.start()
    assert wait_until(lambda: p.counters()["periods_played"] > 30)
    assert p.counters()["silence_periods"] > 0 and spy.sizes == {320}  # every period, silence included
    assert spy.rates == {16000} and not any(spy.referenced)


def test_capture_device_lost_and_back(events, started) -> None:
    backend = FakeAudioBackend(clock_factory=UnpacedClock)
    p = make_pipeline(backend, events)
    started.append(p)
    p.set_mic_gate(True)
    p.start()
    assert wait_until(lambda: p.counters()["chunks_queued"] > 10)
    backend.capture_plug.unplug()
    assert events.get(timeout=5) == HardwareLost("capture", "device unplugged")
    backend.capture_plug.replug()
    assert events.get(timeout=10) == HardwareBack("capture")
    queued = p.counters()["chunks_queued"]
    assert wait_until(lambda: p.counters()["chunks_queued"] > queued + 10)  # the call goes on
    assert p.capture.alive and p.counters()["capture_reopens"] == 2
    assert [e for e in drain(events) if isinstance(e, HardwareLost | HardwareBack)] == []   # once each


def test_playback_device_lost_and_back(events, started) -> None:
    backend = FakeAudioBackend(clock_factory=UnpacedClock)
    p = make_pipeline(backend, events)
    started.append(p)
    p.start()
    assert wait_until(lambda: p.counters()["periods_played"] > 10)
    backend.playback_plug.unplug()
    assert events.get(timeout=5) == HardwareLost("playback", "device unplugged")
    backend.playback_plug.replug()
    assert events.get(timeout=10) == HardwareBack("playback")
    played = p.counters()["periods_played"]
    assert wait_until(lambda: p.counters()["periods_played"] > played + 10)


def test_missing_device_at_start_is_retried(events, started) -> None:
    backend = FakeAudioBackend(clock_factory=UnpacedClock)
    backend.capture_plug.unplug()  # a USB mic not yet enumerated at boot
    p = make_pipeline(backend, events)
    started.append(p)
    p.start()
    assert events.get(timeout=5) == HardwareLost("capture", "device unplugged")
    backend.capture_plug.replug()
    assert events.get(timeout=10) == HardwareBack("capture")
    assert wait_until(lambda: p.counters()["frames_captured"] > 10)


def test_renegotiated_rate_reopens_playback_and_rechunks_uplink(events, started) -> None:
    backend = FakeAudioBackend(clock_factory=UnpacedClock)
    spy = ReferenceSpy()
    p = make_pipeline(backend, events, rate=16000, dsp=spy)
    started.append(p)
    p.set_mic_gate(True)
    p.start()
    assert wait_until(lambda: p.counters()["periods_played"] > 5)
    first = p.stream_format.next(16000)   # a session at the same rate: a new generation, no reopen
    p.set_stream_format(first)
    p.uplink.clear()
    assert wait_until(lambda: len(p.uplink) > 5)
    assert p.counters()["playback_reopens"] == 1
    second = first.next(48000)
    p.set_stream_format(second)
    assert wait_until(lambda: p.playback.format == second and p.counters()["playback_reopens"] == 2)
    assert wait_until(lambda: 48000 in spy.rates)   # the echo reference follows the speaker's rate
    p.uplink.clear()
    assert wait_until(lambda: len(p.uplink) > 5)
    # A chunk resampled for 16 kHz just before the switch may follow the clear; its generation
    # says so, and the sender drops it (tests/test_session.py). Every chunk is 20 ms at the rate
    # of the generation it carries, and none of an older generation follows a newer one.
    chunks = [p.uplink.get(1) for _ in range(5)]
    sizes = {first.generation: first.chunk_bytes, second.generation: second.chunk_bytes}
    assert all(c is not None and len(c.pcm) == sizes[c.generation] for c in chunks)
    generations = [c.generation for c in chunks if c is not None]
    assert generations == sorted(generations) and generations[-1] == second.generation
    assert len(chunks[-1].pcm) == 48000 * 20 // 1000 * 2  # type: ignore[union-attr]


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


@pytest.mark.parametrize("rate", [16000, 24000])
def test_earcons_play_through_the_speaker_and_reach_the_echo_canceller(events, started, rate: int) -> None:
    """Earcons are made at the current stream format's rate (here after a renegotiation to it)."""
    backend = FakeAudioBackend(clock_factory=UnpacedClock)
    spy = ReferenceSpy()
    p = make_pipeline(backend, events, dsp=spy)
    p.set_stream_format(p.stream_format.next(rate))
    started.append(p)
    p.start()
    assert wait_until(lambda: p.counters()["playback_reopens"] == 1)
    assert p.play_earcon("connected")
    chime = earcon_pcm("connected", rate)
    assert wait_until(lambda: chime in bytes(spy.referenced))  # the canceller saw exactly the chime
    assert wait_until(lambda: chime in bytes(backend.played))  # and the speaker played it
    assert spy.rates == {rate}


def test_an_earcon_made_for_the_previous_rate_is_refused_and_counted(events) -> None:
    p = make_pipeline(FakeAudioBackend(clock_factory=UnpacedClock), events)
    old = earcon_pcm("muted", 16000)
    p.set_stream_format(p.stream_format.next(24000))
    assert not p.play_local(old, 16000)   # made before the switch: would play at the wrong speed
    assert p.play_local(earcon_pcm("muted", 24000), 24000)
    assert len(p.local) == len(earcon_pcm("muted", 24000)) and p.counters()["local_sounds_refused"] == 1


def test_two_periods_stay_queued_in_the_speaker_when_idle(events, started) -> None:
    """Stepped one period at a time by a manual clock: after the prefill, every write finds exactly
    two periods still queued (the speaker never gets closer to started dry), silence included."""
    clock = ManualClock()
    backend = FakeAudioBackend(clock_factory=lambda: clock)
    p = make_pipeline(backend, events, clock=clock)  # the default buffer: 3 periods
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
    assert depths == {2 * period: p.counters()["periods_played"] - 2}
    assert p.counters()["agent_periods_played"] == 5 and speaker.underruns == 0
    stop_stepped(p, clock)


def test_missing_devices_are_retried_on_the_pipeline_clock_with_backoff(events) -> None:
    """Both devices absent at boot: each thread retries at 0.5 s, then doubling to 5 s, waiting on
    the injected clock (stepped here, so not one real second passes), and says so once each."""
    clock = ManualClock()
    backend = FakeAudioBackend(clock_factory=lambda: clock)
    attempts: dict[str, list[float]] = {"capture": [], "playback": []}
    open_capture, open_playback = backend.capture, backend.playback

    def counted_capture(rate: int, period: int) -> AudioCapture:
        attempts["capture"].append(clock.monotonic())
        return open_capture(rate, period)

    def counted_playback(rate: int, period: int, buffer_periods: int = 4) -> AudioPlayback:
        attempts["playback"].append(clock.monotonic())
        return open_playback(rate, period, buffer_periods)

    backend.capture = counted_capture  # type: ignore[method-assign]
    backend.playback = counted_playback  # type: ignore[method-assign]
    backend.capture_plug.unplug()
    backend.playback_plug.unplug()
    p = make_pipeline(backend, events, clock=clock)
    p.start()
    try:
        expected = [0.0]
        delay = REOPEN_INITIAL
        while expected[-1] < 20:
            assert clock.wait_for_sleepers(2, 5)   # both threads wait for their next attempt
            assert attempts == {"capture": expected, "playback": expected}
            clock.advance(delay - 0.001)
            assert clock.wait_for_sleepers(2, 5)
            assert attempts == {"capture": expected, "playback": expected}   # not a moment early
            clock.advance(0.001)
            expected = [*expected, expected[-1] + delay]
            delay = min(delay * 2, REOPEN_MAX)
        assert clock.wait_for_sleepers(2, 5)
        assert expected[:7] == [0.0, 0.5, 1.5, 3.5, 7.5, 12.5, 17.5]
        lost = [HardwareLost("capture", "device unplugged"), HardwareLost("playback", "device unplugged")]
        assert sorted(map(repr, drain(events))) == sorted(map(repr, lost))   # once each, however long
        backend.capture_plug.replug()
        backend.playback_plug.replug()
        clock.advance(REOPEN_MAX)
        back = [events.get(timeout=5), events.get(timeout=5)]
        assert sorted(map(repr, back)) == [repr(HardwareBack("capture")), repr(HardwareBack("playback"))]
        assert p.counters()["capture_reopens"] == 1 and p.counters()["playback_reopens"] == 1
    finally:
        stop_stepped(p, clock)


def test_device_counters_survive_a_reopen(events) -> None:
    """The pipeline's snapshot counts the underruns of every speaker it opened, not only the
    current one's: a starved speaker that is then replugged keeps its underruns on the record."""
    clock = ManualClock()
    backend = FakeAudioBackend(clock_factory=lambda: clock)
    p = make_pipeline(backend, events, clock=clock)
    p.start()
    try:
        assert step_until(clock, lambda: p.counters()["periods_played"] > 5)
        assert clock.wait_for_sleepers(2, 5)
        clock.advance(0.1)   # the playback thread wakes ten periods late: the speaker ran dry
        assert step_until(clock, lambda: p.counters()["playback_underruns"] > 0)
        underruns = p.counters()["playback_underruns"]
        first = p.playback.device
        backend.playback_plug.unplug()
        assert step_until(clock, lambda: not events.empty())
        assert events.get_nowait() == HardwareLost("playback", "device unplugged")
        backend.playback_plug.replug()
        assert step_until(clock, lambda: p.counters()["playback_reopens"] == 2)
        assert p.playback.device is not first and p.playback.device is not None
        assert p.playback.device.underruns == 0
        assert p.counters()["playback_underruns"] == underruns
        assert events.get(timeout=5) == HardwareBack("playback")
    finally:
        stop_stepped(p, clock)

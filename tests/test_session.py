"""The session client on its own, against the local simulator: clock gate, hang-up, commits."""
from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest

from device.audio.buffers import UplinkChunk, UplinkQueue
from device.core.events import Event, SessionConnecting, SessionEnded, SessionStarted
from device.session.client import MIN_SANE_TIME, SessionClient, SessionConfig
from device.sim.server import SimOptions, Simulator


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator(SimOptions(port=0))
    s.start()
    yield s
    s.stop()
    s.join(5)


def client_for(sim: Simulator, events: queue.SimpleQueue[Event], **kw: object) -> SessionClient:
    config = SessionConfig(url=sim.url, api_key="sim-key", agent_id="sim-agent", backoff_initial=0.1,
                           backoff_max=0.5)
    return SessionClient(config, UplinkQueue(100), events.put, lambda pcm: None, **kw)  # type: ignore[arg-type]


def next_of(events: queue.SimpleQueue[Event], kind: type, timeout: float = 5.0) -> Event:
    while True:
        event = events.get(timeout=timeout)
        if isinstance(event, kind):
            return event


def test_waits_for_a_sane_clock_before_tls(sim: Simulator) -> None:
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    now = [MIN_SANE_TIME - 86400 * 365]  # a Pi without an RTC, booted in the past
    config = SessionConfig(url="wss://127.0.0.1:1/atoms/v1/agent/connect", api_key="k", agent_id="a")
    client = SessionClient(config, UplinkQueue(10), events.put, lambda pcm: None, wall_clock=lambda: now[0])
    client.start()
    try:
        client.connect()
        with pytest.raises(queue.Empty):
            events.get(timeout=1.5)  # no attempt while the clock is wrong
        assert client.waiting_for_clock and client.counters.connects == 0
        now[0] = MIN_SANE_TIME + 1  # time sync arrived
        assert isinstance(events.get(timeout=5), SessionConnecting)
    finally:
        client.stop()
        assert client.join(5)


def test_hangup_sends_session_close_and_ends(sim: Simulator) -> None:
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    client = client_for(sim, events)
    client.start()
    try:
        client.connect()
        started = next_of(events, SessionStarted)
        assert isinstance(started, SessionStarted) and started.sample_rate == 16000
        client.disconnect()
        assert sim.wait_for(lambda: sim.session_closes == 1, 5)
        ended = next_of(events, SessionEnded)
        assert isinstance(ended, SessionEnded) and ended.reason == "client_requested"
        assert client.wait_closed(3)
        assert not sim.wait_for(lambda: len(sim.connections) > 1, 1.0)  # no reconnect after hang-up
    finally:
        client.stop()
        assert client.join(5)


def test_audio_made_for_another_session_is_dropped_and_counted(sim: Simulator) -> None:
    """After a new session.created, chunks the capture thread made for the previous session's
    stream format (maybe at another rate) may still be queued: they are counted and never sent
    (20 ms at the wrong speed on the server)."""
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    client = client_for(sim, events)
    client.start()
    try:
        client.connect()
        started = next_of(events, SessionStarted)   # 16000 Hz
        assert isinstance(started, SessionStarted) and started.format.generation == 1   # the first session of this client
        for stale in (0, started.format.generation - 1, started.format.generation + 1):
            client.uplink.put(UplinkChunk(bytes(960), 0.0, generation=stale))   # another session's
        for _ in range(5):
            client.uplink.put(UplinkChunk(bytes(640), 0.0, generation=started.format.generation))
        client.send_commit()
        commit = sim.wait_for_event("commit", 5)
        assert commit is not None and commit["audio_bytes"] == 5 * 640
        assert client.counters.stale_rate_chunks == 3 and client.counters.chunks_sent == 5
    finally:
        client.stop()
        assert client.join(5)


def test_commit_follows_the_audio_queued_before_it(sim: Simulator) -> None:
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    client = client_for(sim, events)
    client.start()
    try:
        client.connect()
        started = next_of(events, SessionStarted)
        assert isinstance(started, SessionStarted)
        for _ in range(10):
            client.uplink.put(UplinkChunk(bytes(640), 0.0, generation=started.format.generation))
        client.send_commit()
        commit = sim.wait_for_event("commit", 5)
        assert commit is not None and commit["audio_bytes"] == 6400
        # The sender counts after send() returns, which may be just after the server saw it.
        assert sim.wait_for(lambda: client.counters.commits == 1, 5)
    finally:
        client.stop()
        assert client.join(5)

"""The session client on its own: against the local simulator, and against a scripted socket.

Every wait that matters (backoff, Retry-After, the close wait, the session.created deadline, the
keepalive, the wall-clock re-check) runs on an injected `ManualClock`, so "nothing happens for
N seconds" is shown by stepping the clock, never by waiting wall time: a test that sees no thread
waiting for a moment (`wait_for_sleepers`) knows that time alone can change nothing.
"""
from __future__ import annotations

import json
import queue
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websocket

from device.audio.buffers import UplinkChunk, UplinkQueue
from device.audio.formats import StreamFormat
from device.core.backoff import Backoff
from device.core.events import (
    AuthRejected,
    ConnectionLost,
    Event,
    SessionConnecting,
    SessionEnded,
    SessionStarted,
)
from device.session.client import SessionClient
from device.session.config import SessionConfig
from device.session.connection import CLOSE_WAIT, MIN_SANE_TIME, ConnectionThread
from device.session.counters import ConnectionCounters
from device.session.link import Link, LinkState
from device.session.protocol import ServerMessageDecoder
from device.session.transport import open_websocket
from device.sim.server import SimOptions, Simulator
from hw.clock import ManualClock
from tools.polling import wait_until

CREATED = {"type": "session.created", "session_id": "scripted-1", "call_id": "CALL-1", "sample_rate": 16000}


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[Simulator]:
    options: dict[str, Any] = getattr(request, "param", {})
    s = Simulator(SimOptions(port=0, **options))
    s.start()
    yield s
    s.stop()
    s.join(5)


class Events:
    """The client's events, as the main thread's queue would get them."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.seen: list[Event] = []

    def put(self, event: Event) -> None:
        self.queue.put(event)

    def next_of(self, kind: type, timeout: float = 5.0) -> Any:
        while True:
            event = self.queue.get(timeout=timeout)
            self.seen.append(event)
            if isinstance(event, kind):
                return event

    def drain(self) -> list[Event]:
        out = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except queue.Empty:
                self.seen += out
                return out


class RecordingBackoff(Backoff):
    """A Backoff that records which thread used it (it has one owner: the connection thread)."""

    def __init__(self, initial: float, cap: float, seed: int = 1) -> None:
        super().__init__(initial, cap, random.Random(seed))
        self.threads: list[tuple[str, str]] = []

    def next_delay(self, retry_after: float | None = None) -> float:
        self.threads.append(("next_delay", threading.current_thread().name))
        return super().next_delay(retry_after)

    def reset(self) -> None:
        self.threads.append(("reset", threading.current_thread().name))
        super().reset()


class Session:
    """A started client on a ManualClock, with its events and uplink queue; stopped at the end."""

    def __init__(self, config: SessionConfig, **kw: Any) -> None:
        self.events = Events()
        self.uplink = UplinkQueue(100)
        self.clock: ManualClock = kw.pop("clock", ManualClock())
        self.client = SessionClient(config, self.uplink, self.events.put, lambda pcm: None,
                                    clock=self.clock, **kw)
        self.client.start()

    def in_state(self, state: LinkState) -> bool:
        return wait_until(lambda: self.client.state is state)

    def nothing_waits_for_time(self) -> bool:
        """True if no session thread waits for a moment on the clock (time alone changes nothing)."""
        return not self.clock.wait_for_sleepers(1, 0)

    def close(self) -> None:
        self.client.stop()
        assert self.client.join(5)


@pytest.fixture
def sessions() -> Iterator[Callable[..., Session]]:
    made: list[Session] = []

    def make(config: SessionConfig, **kw: Any) -> Session:
        made.append(Session(config, **kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def sim_config(sim: Simulator, **kw: Any) -> SessionConfig:
    kw.setdefault("backoff_initial", 0.1)
    kw.setdefault("backoff_max", 0.5)
    return SessionConfig(url=sim.url, api_key="sim-key", agent_id="sim-agent", **kw)


# -- against the simulator ------------------------------------------------------------------------
def test_waits_for_a_sane_clock_before_tls(sessions: Callable[..., Session]) -> None:
    now = [MIN_SANE_TIME - 86400 * 365]  # a Pi without an RTC, booted in the past
    looks = [0]

    def wall() -> float:
        looks[0] += 1
        return now[0]

    config = SessionConfig(url="wss://127.0.0.1:1/atoms/v1/agent/connect", api_key="k", agent_id="a")
    s = sessions(config, wall_clock=wall)
    s.client.connect()
    assert s.clock.wait_for_sleepers(1, 2)     # waiting for the clock, one second at a time
    assert s.client.waiting_for_clock and s.client.state is LinkState.WAITING_FOR_CLOCK
    assert s.events.drain() == [] and s.client.counters().connects == 0   # no attempt at all
    before = looks[0]
    s.clock.advance(1.0)                        # still wrong a second later: looks again, waits again
    assert s.clock.wait_for_sleepers(1, 2)
    assert looks[0] > before and s.client.counters().connects == 0 and s.events.drain() == []
    now[0] = MIN_SANE_TIME + 1  # time sync arrived
    s.clock.advance(1.0)
    assert s.events.next_of(SessionConnecting).attempt == 1
    assert not s.client.waiting_for_clock


def test_hangup_sends_session_close_and_ends(sim: Simulator, sessions: Callable[..., Session]) -> None:
    s = sessions(sim_config(sim))
    s.client.connect()
    started = s.events.next_of(SessionStarted)
    assert started.format == StreamFormat(16000, 1) and s.client.live
    s.client.disconnect()
    assert sim.wait_for(lambda: sim.session_closes == 1, 5)
    ended = s.events.next_of(SessionEnded)
    assert ended.reason == "client_requested"
    assert s.client.wait_closed(3) and s.client.state is LinkState.IDLE
    # No reconnect after a hang-up, however long: no thread waits for a moment, so stepping the
    # clock an hour on changes nothing (the old test waited a wall second for this).
    s.clock.advance(3600)
    assert s.nothing_waits_for_time() and s.client.state is LinkState.IDLE
    assert len(sim.connections) == 1 and s.events.drain() == []
    assert s.client.call_id == started.call_id and s.client.session_id is None


def test_audio_made_for_another_session_is_dropped_and_counted(sim: Simulator,
                                                               sessions: Callable[..., Session]) -> None:
    """Chunks made for an earlier session (another generation) may still be queued when a new one
    starts: they are counted and never sent (at another rate they would play at the wrong speed)."""
    s = sessions(sim_config(sim))
    s.client.connect()
    generation = s.events.next_of(SessionStarted).format.generation
    assert generation == 1   # the first session of this client
    for stale in (0, generation - 1, generation + 1):   # before any session, an earlier one, a later one
        s.uplink.put(UplinkChunk(bytes(960), 0.0, generation=stale))
    for _ in range(5):
        s.uplink.put(UplinkChunk(bytes(640), 0.0, generation=generation))
    s.client.send_commit()
    commit = sim.wait_for_event("commit", 5)
    assert commit is not None and commit["audio_bytes"] == 5 * 640
    counters = s.client.counters()
    assert counters.stale_chunks == 3 and counters.chunks_sent == 5 and counters.bytes_up == 5 * 640


def test_commit_follows_the_audio_queued_before_it(sim: Simulator, sessions: Callable[..., Session]) -> None:
    s = sessions(sim_config(sim))
    s.client.connect()
    generation = s.events.next_of(SessionStarted).format.generation
    for _ in range(10):
        s.uplink.put(UplinkChunk(bytes(640), 0.0, generation=generation))
    s.client.send_commit()
    commit = sim.wait_for_event("commit", 5)
    assert commit is not None and commit["audio_bytes"] == 6400
    # The sender counts after send() returns, which may be just after the server saw it.
    assert wait_until(lambda: s.client.counters().commits == 1)


def test_send_text_reaches_the_agent_only_while_live(sim: Simulator, sessions: Callable[..., Session]) -> None:
    s = sessions(sim_config(sim))
    assert s.client.send_text("too early") is False
    s.client.connect()
    s.events.next_of(SessionStarted)
    assert s.client.send_text("what are your opening hours?") is True
    said = sim.wait_for_event("utterance", 5)
    assert said is not None and said["source"] == "text" and said["text"] == "what are your opening hours?"
    assert s.client.counters().texts_sent == 1


@pytest.mark.parametrize("sim", [{"reject_status": 401}], indirect=True)
def test_401_is_not_retried_until_connect(sim: Simulator, sessions: Callable[..., Session]) -> None:
    s = sessions(sim_config(sim))
    s.client.connect()
    assert s.events.next_of(AuthRejected).reason == "HTTP 401"
    assert s.in_state(LinkState.IDLE)
    s.clock.advance(3600)   # an hour, far past any backoff: nothing waits for time, nothing retries
    assert s.nothing_waits_for_time() and s.client.state is LinkState.IDLE
    assert len(sim.connections) == 1 and s.client.counters().connects == 1
    assert s.client.counters().auth_rejections == 1 and s.client.last_error == "HTTP 401"
    s.client.connect()   # a button press or SIGHUP: exactly one new attempt
    assert s.events.next_of(SessionConnecting).attempt == 1
    assert s.events.next_of(AuthRejected).reason == "HTTP 401"
    assert s.in_state(LinkState.IDLE) and len(sim.connections) == 2


@pytest.mark.parametrize("sim", [{"reject_status": 503, "reject_count": 1}], indirect=True)
def test_a_retry_happens_when_the_injected_clock_passes_the_backoff(sim: Simulator,
                                                                    sessions: Callable[..., Session]) -> None:
    """A one-minute backoff, stepped past by the test: the retry comes with no wall wait at all."""
    backoff = RecordingBackoff(60.0, 60.0, seed=3)
    expected_delay = Backoff(60.0, 60.0, random.Random(3)).next_delay()
    s = sessions(sim_config(sim), backoff=backoff)
    s.client.connect()
    lost = s.events.next_of(ConnectionLost)
    assert lost.reason == "HTTP 503" and lost.retry_in == pytest.approx(expected_delay)
    assert s.clock.wait_for_sleepers(1, 2) and s.client.state is LinkState.BACKOFF
    s.clock.advance(expected_delay - 0.001)
    assert s.clock.wait_for_sleepers(1, 2)   # woken, a millisecond short: waits on
    assert len(sim.connections) == 1 and s.client.state is LinkState.BACKOFF
    s.clock.advance(0.001)
    assert s.events.next_of(SessionConnecting).attempt == 2
    assert s.events.next_of(SessionStarted, timeout=5)
    counters = s.client.counters()
    assert counters.connects == 2 and counters.reconnects == 1 and counters.sessions == 1


@pytest.mark.parametrize("sim", [{"reject_status": 503, "reject_count": 1, "retry_after": 120}], indirect=True)
def test_retry_after_is_a_floor_on_the_injected_clock(sim: Simulator, sessions: Callable[..., Session]) -> None:
    s = sessions(sim_config(sim, backoff_initial=0.001, backoff_max=0.001))
    s.client.connect()
    assert s.events.next_of(ConnectionLost).retry_in == 120.0
    assert s.clock.wait_for_sleepers(1, 2)
    s.clock.advance(119.9)
    assert s.clock.wait_for_sleepers(1, 2) and len(sim.connections) == 1
    s.clock.advance(0.1)
    assert s.events.next_of(SessionStarted)


@pytest.mark.parametrize("sim", [{"reject_status": 503, "reject_count": 1}], indirect=True)
def test_only_the_connection_thread_touches_the_backoff(sim: Simulator, sessions: Callable[..., Session]) -> None:
    """connect() asks for a reset through the link (a new call); the thread does it."""
    backoff = RecordingBackoff(0.5, 0.5)
    s = sessions(sim_config(sim), backoff=backoff)
    s.client.connect()
    s.events.next_of(ConnectionLost)
    assert s.clock.wait_for_sleepers(1, 2)
    s.clock.advance(0.5)
    s.events.next_of(SessionStarted)
    s.client.disconnect()
    s.events.next_of(SessionEnded)
    assert s.client.wait_closed(3)
    s.client.connect()
    s.events.next_of(SessionStarted)
    calls = [call for call, _ in backoff.threads]
    # A reset per new call (2) and per session.created (2), one delay for the 503.
    assert calls.count("reset") == 4 and calls.count("next_delay") == 1
    assert {thread for _, thread in backoff.threads} == {"session-connection"}


# -- against a scripted socket --------------------------------------------------------------------
class ScriptedSocket:
    """A stand-in for websocket-client's socket: the test queues frames, reads what was sent.

    `recv_data_frame` waits a hundredth of a wall second for a frame (like the real socket's
    receive timeout, but shorter) and raises the timeout exception when none came.
    """

    def __init__(self) -> None:
        self.frames: queue.SimpleQueue[tuple[int, websocket.ABNF] | BaseException] = queue.SimpleQueue()
        self.sent: list[str] = []
        self.pings = 0
        self.reads = 0
        self.closed = threading.Event()

    def settimeout(self, timeout: float | None) -> None:
        pass

    def text(self, message: dict[str, Any]) -> None:
        self.frames.put((websocket.ABNF.OPCODE_TEXT, websocket.ABNF(1, 0, 0, 0, websocket.ABNF.OPCODE_TEXT, 0,
                                                                    json.dumps(message).encode())))

    def close_frame(self, code: int, reason: str = "") -> None:
        payload = code.to_bytes(2, "big") + reason.encode()
        self.frames.put((websocket.ABNF.OPCODE_CLOSE,
                         websocket.ABNF(1, 0, 0, 0, websocket.ABNF.OPCODE_CLOSE, 0, payload)))

    def recv_data_frame(self, control_frame: bool = False) -> tuple[int, websocket.ABNF]:
        self.reads += 1
        try:
            item = self.frames.get(timeout=0.01)
        except queue.Empty:
            raise websocket.WebSocketTimeoutException("no frame") from None
        if isinstance(item, BaseException):
            raise item
        return item

    def ping(self, payload: str = "") -> None:
        self.pings += 1

    def send(self, payload: str) -> int:
        self.sent.append(payload)
        return len(payload)

    def close(self, timeout: float | None = None) -> None:
        self.closed.set()

    def looked(self, times: int = 3) -> bool:
        """Wait (bounded) until the receive loop has gone round `times` more times."""
        start = self.reads
        return wait_until(lambda: self.reads >= start + times)


class Sockets:
    """The connect function: hands out scripted sockets, one per attempt."""

    def __init__(self) -> None:
        self.made: queue.SimpleQueue[ScriptedSocket] = queue.SimpleQueue()
        self.count = 0

    def __call__(self) -> Any:
        self.count += 1
        sock = ScriptedSocket()
        self.made.put(sock)
        return sock

    def next(self) -> ScriptedSocket:
        return self.made.get(timeout=5)


def scripted(sessions: Callable[..., Session], **config: Any) -> tuple[Session, Sockets]:
    socks = Sockets()
    cfg = SessionConfig(url="ws://scripted.invalid/atoms/v1/agent/connect", api_key="k", agent_id="a",
                        **config)
    return sessions(cfg, connect_ws=socks, backoff=Backoff(1.0, 1.0, random.Random(5))), socks


def live_session(s: Session, socks: Sockets) -> ScriptedSocket:
    s.client.connect()
    sock = socks.next()
    sock.text(CREATED)
    s.events.next_of(SessionStarted)
    assert s.client.live
    return sock


def test_pings_and_the_keepalive_timeout_run_on_the_injected_clock(sessions: Callable[..., Session]) -> None:
    s, socks = scripted(sessions, ping_interval=20.0, ping_timeout=10.0)
    sock = live_session(s, socks)
    assert sock.looked() and sock.pings == 0
    s.clock.advance(20.0)
    assert wait_until(lambda: sock.pings == 1)       # a ping at the interval
    sock.frames.put((websocket.ABNF.OPCODE_PONG, websocket.ABNF(1, 0, 0, 0, websocket.ABNF.OPCODE_PONG, 0, b"")))
    assert sock.looked()
    s.clock.advance(29.0)   # 29 s since the pong: within interval + timeout (30 s)
    assert sock.looked() and s.client.live and sock.pings == 2
    s.clock.advance(1.5)    # 30.5 s of silence: the connection is dead
    lost = s.events.next_of(ConnectionLost)
    assert lost.reason == "no data or pong for 30 s" and sock.closed.is_set()


def test_an_upgrade_without_session_created_is_retried_after_the_deadline(sessions: Callable[..., Session]) -> None:
    s, socks = scripted(sessions, connect_timeout=10.0)
    s.client.connect()
    sock = socks.next()
    assert sock.looked()
    s.clock.advance(9.99)
    assert sock.looked() and s.client.state is LinkState.CONNECTING
    s.clock.advance(0.01)
    lost = s.events.next_of(ConnectionLost)
    assert lost.reason == "no valid session.created within 10 s" and sock.closed.is_set()
    assert s.client.state is LinkState.BACKOFF and socks.count == 1


def test_the_close_waits_one_second_of_the_injected_clock_for_session_closed(
        sessions: Callable[..., Session]) -> None:
    s, socks = scripted(sessions)
    sock = live_session(s, socks)
    s.client.disconnect()
    assert sock.sent == ['{"type":"session.close"}'] and s.client.state is LinkState.CLOSING
    assert sock.looked()
    s.clock.advance(CLOSE_WAIT - 0.01)   # no session.closed yet: still waiting for it
    assert sock.looked() and not sock.closed.is_set() and s.client.state is LinkState.CLOSING
    s.clock.advance(0.01)
    assert s.events.next_of(SessionEnded).reason == "client_requested"
    assert sock.closed.is_set() and s.client.wait_closed(1) and s.client.state is LinkState.IDLE
    assert s.nothing_waits_for_time() and socks.count == 1


def test_session_closed_ends_the_close_at_once(sessions: Callable[..., Session]) -> None:
    s, socks = scripted(sessions)
    sock = live_session(s, socks)
    s.client.disconnect()
    sock.text({"type": "session.closed", "reason": "client_requested"})
    assert s.events.next_of(SessionEnded).reason == "client_requested"
    assert sock.closed.is_set() and s.client.state is LinkState.IDLE


@pytest.mark.parametrize("code", [4401, 4403])
def test_auth_close_codes_are_not_retried_until_connect(code: int, sessions: Callable[..., Session]) -> None:
    s, socks = scripted(sessions)
    sock = live_session(s, socks)
    sock.close_frame(code, "unauthorised")
    assert s.events.next_of(AuthRejected).reason == f"close code {code} unauthorised"
    assert s.in_state(LinkState.IDLE)
    s.clock.advance(3600)
    assert s.nothing_waits_for_time() and socks.count == 1 and s.client.state is LinkState.IDLE
    s.client.connect()
    assert socks.next() is not sock and socks.count == 2


def test_a_server_close_is_retried_with_backoff(sessions: Callable[..., Session]) -> None:
    s, socks = scripted(sessions)
    sock = live_session(s, socks)
    sock.close_frame(1011, "overloaded")
    lost = s.events.next_of(ConnectionLost)
    assert lost.reason == "server closed the connection (code 1011 overloaded)"
    assert 0 <= lost.retry_in <= 1.0 and s.clock.wait_for_sleepers(1, 2)
    s.clock.advance(lost.retry_in)
    assert s.events.next_of(SessionConnecting).attempt == 2
    assert socks.next() is not sock


def test_hang_up_and_call_back_while_closing_places_a_new_call(sessions: Callable[..., Session]) -> None:
    s, socks = scripted(sessions)
    first = live_session(s, socks)
    s.client.disconnect()
    s.client.connect()                 # pressed again before session.closed came back
    assert s.client.state is LinkState.CLOSING_REDIAL
    first.text({"type": "session.closed", "reason": "client_requested"})
    second = socks.next()              # the new call, at once (no backoff)
    assert s.events.next_of(SessionConnecting).attempt == 1   # a new call: its first attempt
    assert not any(isinstance(e, SessionEnded) for e in s.events.seen)   # the old end is not reported
    second.text(CREATED)
    started = s.events.next_of(SessionStarted)
    assert started.format.generation == 2 and first.sent == ['{"type":"session.close"}'] and second.sent == []


def test_hang_up_during_the_backoff_ends_the_call(sessions: Callable[..., Session]) -> None:
    s, socks = scripted(sessions)
    sock = live_session(s, socks)
    sock.frames.put(websocket.WebSocketConnectionClosedException("reset by peer"))
    s.events.next_of(ConnectionLost)
    assert s.clock.wait_for_sleepers(1, 2)
    s.client.disconnect()
    assert s.events.next_of(SessionEnded).reason == "client_requested"
    s.clock.advance(3600)
    assert s.nothing_waits_for_time() and socks.count == 1 and s.client.state is LinkState.IDLE


def test_hang_up_before_session_created_closes_at_once(sessions: Callable[..., Session]) -> None:
    s, socks = scripted(sessions)
    s.client.connect()
    sock = socks.next()
    s.client.disconnect()
    assert s.events.next_of(SessionEnded).reason == "client_requested"   # nothing live: closed at once
    assert sock.closed.is_set() and sock.sent == []   # no session to close


def test_session_created_after_a_hang_up_gets_its_session_close() -> None:
    """The hang-up came while connecting, so `hang_up` had no live session to send session.close
    on; the receiver sends it when session.created comes (exactly once between the two)."""
    events: list[Event] = []
    link = Link(ManualClock())
    thread = ConnectionThread(link, SessionConfig(url="ws://x.invalid/", api_key="k", agent_id="a"),
                              lambda: None, ServerMessageDecoder(), Backoff(), ManualClock(),
                              lambda: MIN_SANE_TIME, threading.Event(), ConnectionCounters(),
                              events.append, lambda pcm: None, lambda role, text: None)
    link.want()
    assert link.take_call() and link.clock_right()
    assert link.hang_up() is None and link.state is LinkState.CLOSING
    sock = ScriptedSocket()
    assert thread.handle(sock, json.dumps(CREATED)) is None
    assert sock.sent == ['{"type":"session.close"}'] and link.state is LinkState.CLOSING
    assert [type(e) for e in events] == [SessionStarted]


def test_stop_ends_both_threads_from_every_state(sessions: Callable[..., Session]) -> None:
    s, socks = scripted(sessions)
    sock = live_session(s, socks)
    s.client.stop()
    assert s.client.join(3) and not s.client.alive
    assert s.client.state is LinkState.STOPPED and sock.closed.is_set()


def test_the_bearer_header_and_the_url(sim: Simulator) -> None:
    config = sim_config(sim)
    assert config.headers() == ["Authorization: Bearer sim-key"]
    assert "sim-key" not in config.connect_url() and config.log_url() == config.connect_url()
    query = sim_config(sim, auth="query")
    assert query.headers() == [] and "token=sim-key" in query.connect_url()
    assert "sim-key" not in query.log_url() and "token=***" in query.log_url()
    ws = open_websocket(config)   # the simulator checks the header: a wrong one is a 401
    try:
        assert json.loads(ws.recv())["type"] == "session.created"
    finally:
        ws.close()


@pytest.mark.parametrize("call_again", [False, True])
def test_hang_up_after_the_call_was_taken_but_before_the_socket(call_again: bool,
                                                                sessions: Callable[..., Session]) -> None:
    """The hang-up lands after the thread took the call (CONNECTING) and before it opened a
    socket: the link says CLOSING with no socket; the attempt ends before it began (or, hung up
    and called again, the new call is placed)."""
    socks = Sockets()
    box: list[SessionClient] = []
    looks = [0]

    def wall() -> float:   # called by the connection thread between taking the call and connecting
        looks[0] += 1
        if looks[0] == 1:
            box[0].disconnect()
            if call_again:
                box[0].connect()
        return MIN_SANE_TIME + 1

    config = SessionConfig(url="wss://scripted.invalid/atoms/v1/agent/connect", api_key="k", agent_id="a")
    s = sessions(config, connect_ws=socks, wall_clock=wall)
    box.append(s.client)
    s.client.connect()
    if call_again:
        sock = socks.next()
        assert s.events.next_of(SessionConnecting).attempt == 1
        sock.text(CREATED)
        assert s.events.next_of(SessionStarted)
        assert not any(isinstance(e, SessionEnded) for e in s.events.seen)
    else:
        assert s.events.next_of(SessionEnded).reason == "client_requested"
        assert s.in_state(LinkState.IDLE) and socks.count == 0
        assert not any(isinstance(e, SessionConnecting) for e in s.events.seen)
    assert s.client.alive

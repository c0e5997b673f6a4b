"""The Atoms session client on websocket-client: connect, receive, send, reconnect.

Threads (both owned by `SessionClient`):
- the connection thread: connects, then is the receiver (reads frames, decodes them, hands audio
  to the jitter buffer and everything else to `on_event`); on a network error or HTTP 503 it
  reconnects with full-jitter backoff; after HTTP 401 or close code 4401/4403 it waits for a new
  `connect()` (a user action or SIGHUP) and never retries by itself.
- the sender thread (`UplinkSender`): pops mic chunks and sends `input_audio_buffer.append`.

Why our own loop and not `WebSocketApp.run_forever(reconnect=N)`: it retries a 401 forever, loses
close codes 4401/4403, and takes its connect timeout only from the process-wide
`websocket.setdefaulttimeout`. The plain `websocket.WebSocket` gives us a per-connection timeout,
the close code of every close, and one thread we own.
"""
from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import websocket

from device.audio.buffers import LatencyWindow, UplinkChunk, UplinkQueue
from device.audio.formats import StreamFormat
from device.core.backoff import Backoff
from device.core.events import (
    AgentInterrupted,
    AgentStartedTalking,
    AgentStoppedTalking,
    AuthRejected,
    ConnectionLost,
    Event,
    SessionConnecting,
    SessionEnded,
    SessionStarted,
)
from device.core.threads import OwnedThread
from device.session.protocol import (
    AgentStartTalking,
    AgentStopTalking,
    AudioDelta,
    InputAudioCommit,
    InputTextSend,
    Interruption,
    ServerError,
    ServerMessageDecoder,
    SessionClose,
    SessionClosed,
    SessionCreated,
    Transcript,
    encode,
    encode_audio,
)
from hw.clock import Clock, RealClock

log = logging.getLogger(__name__)

AUTH_CLOSE_CODES: Final = frozenset({4401, 4403})
RECEIVE_TICK: Final = 0.1      # seconds between checks of stop/close/keepalive while receiving
CLOSE_WAIT: Final = 1.0        # seconds to wait for session.closed after session.close
COMMIT_TEXT: Final = encode(InputAudioCommit())
# A Pi without an RTC boots with a stale clock, and TLS then finds every certificate "not yet
# valid": before this moment (2026-01-01 UTC) the clock cannot be right, so wait for time sync.
MIN_SANE_TIME: Final = 1767225600.0


@dataclass(frozen=True)
class SessionConfig:
    """What the client needs from settings (kept small so tests can build it directly)."""

    url: str
    api_key: str
    agent_id: str
    sample_rate: int = 16000
    variables: dict[str, Any] = field(default_factory=dict)
    auth: str = "header"  # "header" | "query"
    connect_timeout: float = 10.0
    ping_interval: float = 20.0
    ping_timeout: float = 10.0
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    max_message_bytes: int = 1 << 20

    def connect_url(self) -> str:
        """The URL with query parameters; the key is in it only when `auth == "query"`."""
        params: dict[str, str] = {"agent_id": self.agent_id, "mode": "webcall",
                                  "sample_rate": str(self.sample_rate)}
        if self.variables:
            params["variables"] = json.dumps(self.variables, separators=(",", ":"))
        if self.auth == "query":
            params["token"] = self.api_key
        sep = "&" if "?" in self.url else "?"
        return self.url + sep + urllib.parse.urlencode(params)

    def log_url(self) -> str:
        """The URL as it may appear in logs: the token, if any, replaced."""
        return self.connect_url().replace(urllib.parse.quote_plus(self.api_key), "***") \
            if self.auth == "query" else self.connect_url()

    def headers(self) -> list[str]:
        return [f"Authorization: Bearer {self.api_key}"] if self.auth == "header" else []


@dataclass
class SessionCounters:
    """Counters of the session client (written by its threads, read by any: plain ints)."""

    connects: int = 0          # attempts
    sessions: int = 0          # session.created received
    reconnects: int = 0        # attempts after a lost connection
    bytes_up: int = 0
    bytes_down: int = 0
    chunks_sent: int = 0
    send_errors: int = 0
    auth_rejections: int = 0
    server_errors: int = 0
    discarded_audio_bytes: int = 0  # agent audio discarded while the downlink gate was closed
    commits: int = 0
    stale_rate_chunks: int = 0  # mic chunks made for another session's stream format, dropped unsent


class _Outcome:
    """How one connection ended, decided by the connection thread."""

    def __init__(self, kind: str, reason: str, retry_after: float | None = None) -> None:
        self.kind = kind              # "ended" | "auth" | "retry" | "stopped"
        self.reason = reason
        self.retry_after = retry_after


class SessionClient:
    """A session with the Atoms agent. `connect`/`disconnect` from the main thread, any time.

    `on_event` receives state-machine events (called on the connection thread: it must only
    enqueue); `on_audio` receives decoded agent PCM (called on the connection thread);
    `on_transcript(role, text)` is told each transcript.
    """

    def __init__(
        self,
        config: SessionConfig,
        uplink: UplinkQueue,
        on_event: Callable[[Event], None],
        on_audio: Callable[[bytes], object],
        on_transcript: Callable[[str, str], None] = lambda role, text: None,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        connect_ws: Callable[..., websocket.WebSocket] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.uplink = uplink
        self.on_event = on_event
        self.on_audio = on_audio
        self.on_transcript = on_transcript
        self.clock = clock or RealClock()
        self.backoff = backoff or Backoff(config.backoff_initial, config.backoff_max)
        self._connect_ws = connect_ws or self._default_connect
        self.wall_clock = wall_clock
        self.waiting_for_clock = False
        self.decoder = ServerMessageDecoder(config.max_message_bytes)
        self.counters = SessionCounters()
        self.latency = LatencyWindow()
        self.session_id: str | None = None
        self.call_id: str | None = None
        self.negotiated_rate: int | None = None
        self.last_error: str | None = None
        self.downlink_open = True
        self._wanted = threading.Event()       # a session is wanted (connect() called)
        self._wake = threading.Event()         # interrupts a backoff wait
        self._close_requested = threading.Event()
        self._session_closed = threading.Event()
        self._ws: websocket.WebSocket | None = None
        self._live = threading.Event()         # session.created seen on the current socket
        self._lock = threading.Lock()
        self._generation = 0   # bumped by connect() after a hang-up: a new call, not the old one
        self._connection = _ConnectionThread(self)
        self._sender = UplinkSender(self)

    # -- control (main thread) -----------------------------------------------------------------
    def start(self) -> None:
        self._connection.start()
        self._sender.start()

    def connect(self) -> None:
        """Want a session: connect if not connected; a no-op while one is up or coming.

        After a hang-up whose close is still in progress, this wants a *new* call: the closing
        session finishes its close and a new one follows (`_generation` tells them apart)."""
        with self._lock:
            if self._close_requested.is_set() or not self._wanted.is_set():
                self._generation += 1
            self._close_requested.clear()
            if not self._wanted.is_set():
                self.backoff.reset()
            self._wanted.set()
        self._wake.set()

    def disconnect(self) -> None:
        """Hang up: send `session.close`; the connection thread waits up to 1 s for
        `session.closed`, then closes the socket. Never reconnects until `connect()`."""
        with self._lock:
            self._wanted.clear()
            self._close_requested.set()
        self._wake.set()
        ws = self._ws
        if ws is not None and self._live.is_set():
            self._send_text(ws, encode(SessionClose()))

    def send_commit(self) -> None:
        """Queue `input_audio_buffer.commit` behind the audio already queued (push-to-talk)."""
        if self._live.is_set():
            self.uplink.put(UplinkChunk(b"", self.clock.monotonic(), commit=True))

    def send_text(self, text: str) -> None:
        ws = self._ws
        if ws is not None and self._live.is_set():
            self._send_text(ws, encode(InputTextSend(text=text)))

    def stop(self) -> None:
        self._wanted.clear()
        self._close_requested.set()
        self._connection.stop()
        self._sender.stop()
        self._wake.set()
        self.uplink.wake()

    def join(self, timeout: float = 3.0) -> bool:
        a = self._connection.join(timeout)
        b = self._sender.join(timeout)
        return a and b

    @property
    def alive(self) -> bool:
        return self._connection.alive and self._sender.alive

    @property
    def live(self) -> bool:
        return self._live.is_set()

    def wait_closed(self, timeout: float) -> bool:
        """Wait until the current socket is gone (after `disconnect`/`stop`)."""
        deadline = time.monotonic() + timeout
        while self._ws is not None and time.monotonic() < deadline:
            self._session_closed.wait(0.05)
        return self._ws is None

    # -- used by the threads ----------------------------------------------------------------------
    def _send_text(self, ws: websocket.WebSocket, text: str) -> bool:
        try:
            ws.send(text)
            return True
        except (websocket.WebSocketException, OSError, ssl.SSLError) as exc:
            # send() can race a closing socket (websocket-client issue 1045): count, don't crash.
            self.counters.send_errors += 1
            log.debug("send failed: %s", exc)
            return False

    def _default_connect(self) -> websocket.WebSocket:
        # UTF-8 is checked by our own decode (errors="replace" + JSON); websocket-client's
        # validator is a pure-Python loop over every byte of every audio delta.
        ws = websocket.WebSocket(enable_multithread=True, skip_utf8_validation=True)
        ws.settimeout(self.config.connect_timeout)
        ws.connect(self.config.connect_url(), header=self.config.headers(),
                   suppress_origin=True)
        return ws


class _ConnectionThread(OwnedThread):
    """Connects, receives, and reconnects with backoff (the receiver thread of the design)."""

    def __init__(self, client: SessionClient) -> None:
        super().__init__("session-connection")
        self.c = client

    def run(self) -> None:
        c = self.c
        attempt = 0
        while not self.stopping.is_set():
            if not c._wanted.is_set():
                c._wake.wait(0.5)
                c._wake.clear()
                attempt = 0
                continue
            if not self._clock_sane():
                continue
            attempt += 1
            c.counters.connects += 1
            if attempt > 1:
                c.counters.reconnects += 1
            c.on_event(SessionConnecting(attempt))
            generation = c._generation
            outcome = self._one_connection()
            if outcome.kind == "stopped":
                continue
            if outcome.kind == "ended" and c._generation != generation and c._wanted.is_set():
                # The user hung up and called again while this session was closing: the old
                # session's end is not the new call's end. Connect the new one at once.
                attempt = 0
                continue
            if outcome.kind == "auth":
                c.counters.auth_rejections += 1
                c.last_error = outcome.reason
                c._wanted.clear()
                log.error("the agent refused the credentials (%s); not retrying until a button press "
                          "or SIGHUP", outcome.reason)
                c.on_event(AuthRejected(outcome.reason))
                continue
            if outcome.kind == "ended" or not c._wanted.is_set():
                c._wanted.clear()
                c.on_event(SessionEnded(outcome.reason))
                continue
            delay = c.backoff.next_delay(outcome.retry_after)
            c.last_error = outcome.reason
            log.warning("connection lost (%s); retrying in %.1f s", outcome.reason, delay)
            c.on_event(ConnectionLost(outcome.reason, delay))
            c._wake.clear()
            deadline = time.monotonic() + delay
            while not self.stopping.is_set() and c._wanted.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                c._wake.wait(min(remaining, 0.5))
                c._wake.clear()
                if c._close_requested.is_set():
                    break
            if not c._wanted.is_set() and not self.stopping.is_set():
                c.on_event(SessionEnded("client_requested"))

    def _clock_sane(self) -> bool:
        """Wait (up to a second per call) while the wall clock is obviously wrong before TLS."""
        c = self.c
        if not c.config.url.startswith("wss://") or c.wall_clock() >= MIN_SANE_TIME:
            if c.waiting_for_clock:
                log.info("the system clock is set; connecting")
                c.waiting_for_clock = False
            return True
        if not c.waiting_for_clock:
            log.warning("the system clock says %s, before any valid certificate; waiting for time "
                        "sync (no RTC?) before connecting", time.strftime("%Y-%m-%d", time.gmtime(c.wall_clock())))
            c.waiting_for_clock = True
        self.stopping.wait(1.0)
        return False

    def _one_connection(self) -> _Outcome:
        c = self.c
        try:
            ws = c._connect_ws()
        except websocket.WebSocketBadStatusException as exc:
            status = getattr(exc, "status_code", 0)
            if status in (401, 403):
                return _Outcome("auth", f"HTTP {status}")
            retry_after = _retry_after(getattr(exc, "resp_headers", None))
            return _Outcome("retry", f"HTTP {status}", retry_after)
        except (websocket.WebSocketException, OSError, ssl.SSLError, ValueError) as exc:
            return _Outcome("retry", _describe_error(exc))
        log.info("connected to %s", c.config.log_url())
        c._ws = ws
        c._session_closed.clear()
        try:
            return self._receive(ws)
        finally:
            c._live.clear()
            c._ws = None
            try:
                ws.close(timeout=0.5)
            except Exception:  # noqa: BLE001 - best effort on a socket that may be dead
                pass
            c.session_id = None
            c._session_closed.set()

    def _receive(self, ws: websocket.WebSocket) -> _Outcome:
        c = self.c
        cfg = c.config
        ws.settimeout(RECEIVE_TICK)
        last_rx = time.monotonic()
        last_ping = last_rx
        close_deadline: float | None = None
        session_deadline = last_rx + cfg.connect_timeout
        while True:
            now = time.monotonic()
            if close_deadline is None and (self.stopping.is_set() or c._close_requested.is_set()):
                close_deadline = now + CLOSE_WAIT
                if not c._live.is_set():
                    return _Outcome("ended", "client_requested")
            # Once a close has started it finishes, whatever connect() does meanwhile.
            if close_deadline is not None and now >= close_deadline:
                log.info("no session.closed within %.1f s; closing the socket", CLOSE_WAIT)
                return _Outcome("ended", "client_requested")
            if not c._live.is_set() and now >= session_deadline:
                # Upgraded but never a (valid) session.created: e.g. a rate we cannot play.
                return _Outcome("retry", f"no valid session.created within {cfg.connect_timeout:.0f} s")
            if now - last_ping >= cfg.ping_interval:
                try:
                    ws.ping()
                except (websocket.WebSocketException, OSError) as exc:
                    return _Outcome("retry", _describe_error(exc))
                last_ping = now
            if now - last_rx > cfg.ping_interval + cfg.ping_timeout:
                return _Outcome("retry", f"no data or pong for {now - last_rx:.0f} s")
            try:
                opcode, frame = ws.recv_data_frame(True)
            except websocket.WebSocketTimeoutException:
                continue
            except websocket.WebSocketConnectionClosedException as exc:
                return _Outcome("retry", _describe_error(exc))
            except (TimeoutError, websocket.WebSocketException, OSError, ssl.SSLError) as exc:
                return _Outcome("retry", _describe_error(exc))
            last_rx = time.monotonic()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code, reason = _close_code(frame.data)
                if code in AUTH_CLOSE_CODES:
                    return _Outcome("auth", f"close code {code} {reason}".strip())
                if close_deadline is not None:
                    return _Outcome("ended", "client_requested")
                return _Outcome("retry", f"server closed the connection (code {code} {reason})".strip())
            if opcode in (websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG):
                continue
            data: str | bytes = frame.data
            if opcode == websocket.ABNF.OPCODE_TEXT and isinstance(data, bytes):
                data = data.decode("utf-8", errors="replace")
            c.counters.bytes_down += len(frame.data)
            ended = self._handle(data)
            if ended is not None:
                return ended

    def _handle(self, frame: str | bytes) -> _Outcome | None:
        c = self.c
        message = c.decoder.decode(frame)
        if message is None:
            return None
        if isinstance(message, AudioDelta):
            if c.downlink_open:
                c.on_audio(message.pcm)
            else:
                c.counters.discarded_audio_bytes += len(message.pcm)
        elif isinstance(message, SessionCreated):
            c.session_id, c.call_id, c.negotiated_rate = message.session_id, message.call_id, message.sample_rate
            c.counters.sessions += 1
            c.backoff.reset()
            c.uplink.clear()  # audio from before this session is stale
            c._live.set()
            log.info("session %s started (call %s, %d Hz)", message.session_id, message.call_id,
                     message.sample_rate)
            # The generation counts sessions: a mic chunk made for an earlier one is told apart by it.
            c.on_event(SessionStarted(message.session_id, message.call_id,
                                      StreamFormat(message.sample_rate, c.counters.sessions)))
            if c._close_requested.is_set() and c._ws is not None:
                c._send_text(c._ws, encode(SessionClose()))  # hung up while connecting
        elif isinstance(message, SessionClosed):
            log.info("session closed by the server: %s", message.reason)
            return _Outcome("ended", message.reason)
        elif isinstance(message, Transcript):
            c.on_transcript(message.role, message.text)
        elif isinstance(message, AgentStartTalking):
            c.on_event(AgentStartedTalking())
        elif isinstance(message, AgentStopTalking):
            c.on_event(AgentStoppedTalking())
        elif isinstance(message, Interruption):
            c.on_event(AgentInterrupted())
        elif isinstance(message, ServerError):
            c.counters.server_errors += 1
            c.last_error = f"server error {message.code}: {message.message}"[:200]
            log.warning("server error %s: %s", message.code, message.message[:200])
        return None


class UplinkSender(OwnedThread):
    """Pops mic chunks and sends them while a session is live (the sender thread)."""

    def __init__(self, client: SessionClient) -> None:
        super().__init__("session-sender")
        self.c = client

    def run(self) -> None:
        c = self.c
        while not self.stopping.is_set():
            if not c._live.wait(0.2):
                continue
            chunk = c.uplink.get(0.2)
            if chunk is None:
                continue
            ws = c._ws
            if ws is None or not c._live.is_set():
                continue  # the session ended between get() and now: the chunk is stale
            if chunk.commit:
                if c._send_text(ws, COMMIT_TEXT):
                    c.counters.commits += 1
                continue
            if chunk.generation != c.counters.sessions:   # the live session's generation
                # Made for another session's stream format in the moment before the pipeline
                # switched: at another rate, sending it would play 20 ms at the wrong speed.
                c.counters.stale_rate_chunks += 1
                if c.counters.stale_rate_chunks == 1:
                    log.info("dropping mic audio made for another session (generation %d, live: %d)",
                             chunk.generation, c.counters.sessions)
                continue
            if c._send_text(ws, encode_audio(chunk.pcm)):
                c.counters.chunks_sent += 1
                c.counters.bytes_up += len(chunk.pcm)
                c.latency.add(c.clock.monotonic() - chunk.captured_at)


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    value = None
    for key, val in dict(headers).items():
        if str(key).lower() == "retry-after":
            value = val
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _close_code(data: bytes) -> tuple[int | None, str]:
    if len(data) < 2:
        return None, ""
    return int.from_bytes(data[:2], "big"), data[2:].decode("utf-8", errors="replace")[:120]


def _describe_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:200]

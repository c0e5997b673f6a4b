"""The connection thread: connects, is the receiver while connected, and reconnects with backoff.

One dispatch loop over the link's state (`device.session.link`): a new call is taken (the
backoff is reset), the wall clock is checked before TLS, an attempt connects and then receives
until the connection ends, and the ending decides what follows: a backoff wait (network error,
HTTP 503), or nothing until the next `connect()` (the session ended; the credentials were
refused: HTTP 401/403, close code 4401/4403, never retried by itself).

While connected it is the receiver: it reads frames, decodes them, hands agent audio to
`on_audio` and everything else to `on_event` / `on_transcript` (callbacks that only enqueue),
pings, and ends the connection when the owner asked (session.close, then up to `CLOSE_WAIT` for
session.closed), when no session.created comes in time, or when the server goes quiet.

Every deadline is on the injected clock; only the socket's receive timeout (`RECEIVE_TICK`, the
pace at which the loop looks at its state and deadlines) is wall time, as it is real I/O.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import websocket

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
from device.session.config import SessionConfig
from device.session.counters import ConnectionCounters
from device.session.link import CLOSE_REQUESTED, Link, LinkError, LinkState, LiveSession, Outcome, SessionInfo
from device.session.protocol import (
    AUTH_CLOSE_CODES,
    AgentStartTalking,
    AgentStopTalking,
    AudioDelta,
    Interruption,
    ServerError,
    ServerMessageDecoder,
    SessionClose,
    SessionClosed,
    SessionCreated,
    Transcript,
    encode,
)
from device.session.transport import (
    SOCKET_ERRORS,
    TextSocket,
    close_code,
    describe_error,
    retry_after,
    send_text,
)
from hw.clock import Clock

log = logging.getLogger(__name__)

RECEIVE_TICK: Final = 0.25     # wall seconds per socket read: how often the loop looks at its state
# (0.25, not 0.1: 4 idle wake-ups a second; a stop or a close deadline is seen within it)
CLOSE_WAIT: Final = 1.0        # seconds to wait for session.closed after session.close
CLOCK_RECHECK: Final = 1.0     # seconds between looks at a wall clock that is still wrong
# A Pi without an RTC boots with a stale clock, and TLS then finds every certificate "not yet
# valid": before this moment (2026-01-01 UTC) the clock cannot be right, so wait for time sync.
MIN_SANE_TIME: Final = 1767225600.0
SESSION_CLOSE_TEXT: Final = encode(SessionClose())
CLIENT_REQUESTED: Final = "client_requested"


@dataclass(frozen=True, slots=True)
class Ending:
    """How one connection ended: the outcome, a reason for logs and events, a server's Retry-After."""

    outcome: Outcome
    reason: str
    retry_after: float | None = None


class ConnectionThread(OwnedThread):
    """The receiver thread of the design: connects, receives, reconnects. Ends when the link stops.

    Given exactly what it uses: the link (state, shared with the owner and the sender), the
    config, a `connect()` that returns an upgraded socket, the decoder, its backoff (only this
    thread touches it), the injected clock and wall clock, the downlink gate (an Event the owner
    sets while agent audio is wanted), its counters, and three callbacks (called on this thread:
    they must only enqueue). `last_error` is the last failure, for status (written here only).
    """

    def __init__(
        self,
        link: Link,
        config: SessionConfig,
        connect: Callable[[], websocket.WebSocket],
        decoder: ServerMessageDecoder,
        backoff: Backoff,
        clock: Clock,
        wall_clock: Callable[[], float],
        downlink: threading.Event,
        counters: ConnectionCounters,
        on_event: Callable[[Event], None],
        on_audio: Callable[[bytes], object],
        on_transcript: Callable[[str, str], None],
    ) -> None:
        super().__init__("session-connection")
        self.link = link
        self.config = config
        self.connect = connect
        self.decoder = decoder
        self.backoff = backoff
        self.clock = clock
        self.wall_clock = wall_clock
        self.downlink = downlink
        self.counters = counters
        self.on_event = on_event
        self.on_audio = on_audio
        self.on_transcript = on_transcript
        self.last_error: str | None = None
        self._attempt = 0                 # attempts in the current call
        self._clock_warned = False        # the wrong wall clock was logged (once per episode)
        self._live = False                # session.created came on the current socket

    # -- the dispatch loop ----------------------------------------------------------------------
    def run(self) -> None:
        link = self.link
        while True:
            state = link.state
            if state is LinkState.STOPPED:
                return
            if state is LinkState.IDLE:
                link.wait_while(LinkState.IDLE)
            elif state is LinkState.DIALING:
                if link.take_call():
                    self.backoff.reset()
                    self._attempt = 0
            elif state in (LinkState.CONNECTING, LinkState.WAITING_FOR_CLOCK):
                self._check_clock_and_connect()
            elif state is LinkState.BACKOFF:
                after = link.wait_while(LinkState.BACKOFF, link.retry_at)
                if after is LinkState.BACKOFF:
                    link.backoff_elapsed()
                elif after is LinkState.IDLE:
                    self.on_event(SessionEnded(CLIENT_REQUESTED))   # hung up during the backoff
            elif state in (LinkState.CLOSING, LinkState.CLOSING_REDIAL):
                # Hung up after the attempt was taken but before its socket was opened (the link
                # cannot tell): the attempt ends before it began.
                self._finish(Ending(Outcome.ENDED, CLIENT_REQUESTED))
            else:
                raise LinkError(f"the connection thread holds no socket in state {state.name}")

    def _check_clock_and_connect(self) -> None:
        if not self._clock_sane():
            if self.link.clock_wrong():
                after = self.link.wait_while(LinkState.WAITING_FOR_CLOCK,
                                             self.clock.monotonic() + CLOCK_RECHECK)
                if after is LinkState.IDLE:
                    self.on_event(SessionEnded(CLIENT_REQUESTED))   # hung up while waiting
            return
        if not self.link.clock_right():
            return   # hung up or stopped meanwhile
        self._attempt += 1
        self.counters.connects += 1
        if self._attempt > 1:
            self.counters.reconnects += 1
        self.on_event(SessionConnecting(self._attempt))
        self._finish(self._one_connection())

    def _clock_sane(self) -> bool:
        """TLS needs a wall clock after MIN_SANE_TIME (a plain ws:// URL does not care)."""
        if not self.config.tls or self.wall_clock() >= MIN_SANE_TIME:
            if self._clock_warned:
                log.info("the system clock is set; connecting")
                self._clock_warned = False
            return True
        if not self._clock_warned:
            log.warning("the system clock says %s, before any valid certificate; waiting for time "
                        "sync (no RTC?) before connecting",
                        time.strftime("%Y-%m-%d", time.gmtime(self.wall_clock())))
            self._clock_warned = True
        return False

    def _finish(self, ending: Ending) -> None:
        """Report the ending to the link and tell the state machine what it means."""
        retry_at = delay = None
        if ending.outcome is Outcome.LOST:
            delay = self.backoff.next_delay(ending.retry_after)
            retry_at = self.clock.monotonic() + delay
        after = self.link.ended(ending.outcome, retry_at)
        if after is LinkState.STOPPED:
            return
        if ending.outcome is Outcome.REJECTED:
            self.counters.auth_rejections += 1
            self.last_error = ending.reason
            log.error("the agent refused the credentials (%s); not retrying until a button press "
                      "or SIGHUP", ending.reason)
            self.on_event(AuthRejected(ending.reason))
        elif after is LinkState.BACKOFF:
            assert delay is not None
            self.last_error = ending.reason
            log.warning("connection lost (%s); retrying in %.1f s", ending.reason, delay)
            self.on_event(ConnectionLost(ending.reason, delay))
        elif after is LinkState.IDLE:
            self.on_event(SessionEnded(ending.reason))
        else:
            # DIALING: hung up and called again while the close was in progress. The old
            # session's end is not the new call's end: nothing to report, the new call follows.
            log.info("the previous session ended (%s); placing the new call", ending.reason)

    # -- one connection -------------------------------------------------------------------------
    def _one_connection(self) -> Ending:
        try:
            ws = self.connect()
        except websocket.WebSocketBadStatusException as exc:
            status = getattr(exc, "status_code", 0)
            if status in (401, 403):
                return Ending(Outcome.REJECTED, f"HTTP {status}")
            return Ending(Outcome.LOST, f"HTTP {status}", retry_after(getattr(exc, "resp_headers", None)))
        except (*SOCKET_ERRORS, ValueError) as exc:
            return Ending(Outcome.LOST, describe_error(exc))
        log.info("connected to %s", self.config.log_url())
        self._live = False
        try:
            return self._receive(ws)
        finally:
            self._live = False
            try:
                ws.close(timeout=0.5)
            except Exception:  # noqa: BLE001 - best effort on a socket that may be dead
                pass

    def _receive(self, ws: websocket.WebSocket) -> Ending:
        cfg = self.config
        ws.settimeout(RECEIVE_TICK)
        last_rx = last_ping = self.clock.monotonic()
        close_deadline: float | None = None
        session_deadline = last_rx + cfg.connect_timeout
        while True:
            now = self.clock.monotonic()
            state = self.link.state
            if state is LinkState.STOPPED:
                # Stopping ends the connection now; an owner that wants the polite close hangs
                # up first and waits for it (`SessionClient.wait_closed`), as the service does.
                return Ending(Outcome.ENDED, CLIENT_REQUESTED)
            if close_deadline is None and state in CLOSE_REQUESTED:
                close_deadline = now + CLOSE_WAIT
                if not self._live:
                    return Ending(Outcome.ENDED, CLIENT_REQUESTED)
            # Once a close has started it finishes, whatever connect() does meanwhile.
            if close_deadline is not None and now >= close_deadline:
                log.info("no session.closed within %.1f s; closing the socket", CLOSE_WAIT)
                return Ending(Outcome.ENDED, CLIENT_REQUESTED)
            if not self._live and now >= session_deadline:
                # Upgraded but never a (valid) session.created: e.g. a rate we cannot play.
                return Ending(Outcome.LOST, f"no valid session.created within {cfg.connect_timeout:.0f} s")
            if now - last_ping >= cfg.ping_interval:
                try:
                    ws.ping()
                except SOCKET_ERRORS as exc:
                    return Ending(Outcome.LOST, describe_error(exc))
                last_ping = now
            if now - last_rx > cfg.ping_interval + cfg.ping_timeout:
                return Ending(Outcome.LOST, f"no data or pong for {now - last_rx:.0f} s")
            try:
                opcode, frame = ws.recv_data_frame(True)
            except websocket.WebSocketTimeoutException:
                continue
            except (TimeoutError, *SOCKET_ERRORS) as exc:
                return Ending(Outcome.LOST, describe_error(exc))
            last_rx = self.clock.monotonic()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code, reason = close_code(frame.data)
                if code in AUTH_CLOSE_CODES:
                    return Ending(Outcome.REJECTED, f"close code {code} {reason}".strip())
                if close_deadline is not None:
                    return Ending(Outcome.ENDED, CLIENT_REQUESTED)
                return Ending(Outcome.LOST, f"server closed the connection (code {code} {reason})".strip())
            if opcode in (websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG):
                continue
            data: str | bytes = frame.data
            if opcode == websocket.ABNF.OPCODE_TEXT and isinstance(data, bytes):
                data = data.decode("utf-8", errors="replace")
            self.counters.bytes_down += len(frame.data)
            ended = self.handle(ws, data)
            if ended is not None:
                return ended

    def handle(self, ws: TextSocket, frame: str | bytes) -> Ending | None:
        """Decode one data frame received on `ws` and act on it; an `Ending` if it ends the
        connection. Never raises on anything a server sends (the decoder counts and drops what
        is malformed)."""
        message = self.decoder.decode(frame)
        if message is None:
            return None
        if isinstance(message, AudioDelta):
            if self.downlink.is_set():
                self.on_audio(message.pcm)
            else:
                self.counters.discarded_audio_bytes += len(message.pcm)
        elif isinstance(message, SessionCreated):
            self._session_created(ws, message)
        elif isinstance(message, SessionClosed):
            log.info("session closed by the server: %s", message.reason)
            return Ending(Outcome.ENDED, message.reason)
        elif isinstance(message, Transcript):
            self.on_transcript(message.role, message.text)
        elif isinstance(message, AgentStartTalking):
            self.on_event(AgentStartedTalking())
        elif isinstance(message, AgentStopTalking):
            self.on_event(AgentStoppedTalking())
        elif isinstance(message, Interruption):
            self.on_event(AgentInterrupted())
        elif isinstance(message, ServerError):
            self.counters.server_errors += 1
            self.last_error = f"server error {message.code}: {message.message}"[:200]
            log.warning("server error %s: %s", message.code, message.message[:200])
        return None

    def _session_created(self, ws: TextSocket, message: SessionCreated) -> None:
        self.counters.sessions += 1
        # The generation counts sessions: a mic chunk made for an earlier one is told apart by it.
        info = SessionInfo(message.session_id, message.call_id,
                           StreamFormat(message.sample_rate, self.counters.sessions))
        self.backoff.reset()
        self._live = True
        close_now = self.link.session_live(LiveSession(ws, info))
        log.info("session %s started (call %s, %d Hz)", message.session_id, message.call_id,
                 message.sample_rate)
        self.on_event(SessionStarted(message.session_id, message.call_id, info.format))
        if close_now and not send_text(ws, SESSION_CLOSE_TEXT):   # hung up while connecting
            self.counters.send_errors += 1

"""The session with the Atoms agent: the owner of the connection and sender threads.

`SessionClient` is the control surface for the main thread (connect, hang up, commit, text,
counters, status). It builds the pieces once and hands each thread exactly what it uses, never
itself:

- `Link` (`link.py`): the connection's state, one enum under one Condition, shared by all three;
- `ConnectionThread` (`connection.py`): connects, receives, reconnects with backoff;
- `UplinkSender` (`sender.py`): sends the mic chunks of the live session;
- `SessionConfig` (`config.py`), the socket helpers (`transport.py`), the counters (`counters.py`).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

import websocket

from device.audio.buffers import LatencyWindow, UplinkChunk, UplinkQueue
from device.core.backoff import Backoff
from device.core.events import Event
from device.session.config import SessionConfig
from device.session.connection import SESSION_CLOSE_TEXT, ConnectionThread
from device.session.counters import ConnectionCounters, OwnerCounters, SenderCounters, SessionCounters
from device.session.link import Link, LinkState
from device.session.protocol import InputTextSend, ServerMessageDecoder, encode
from device.session.sender import UplinkSender
from device.session.transport import TextSocket, open_websocket, send_text
from hw.clock import Clock, RealClock

# States in which no socket is open or coming (STOPPED included: after stop(), join() is the wait).
_NO_SOCKET: Final = frozenset({LinkState.IDLE, LinkState.DIALING, LinkState.WAITING_FOR_CLOCK,
                               LinkState.BACKOFF, LinkState.STOPPED})


class SessionClient:
    """A session with the Atoms agent. The control methods are for the main thread, any time.

    `on_event` receives state-machine events (called on the connection thread: it must only
    enqueue); `on_audio` receives decoded agent PCM (called on the connection thread);
    `on_transcript(role, text)` is told each transcript. `clock` times every wait and deadline
    (backoff, close wait, session.created, keepalive); `wall_clock` is the system time, read only
    to see whether TLS can work yet.
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
        connect_ws: Callable[[], websocket.WebSocket] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._clock = clock or RealClock()
        self._uplink = uplink
        self._link = Link(self._clock)
        self._downlink = threading.Event()   # set: agent audio is played (the main thread's gate)
        self._downlink.set()
        self._decoder = ServerMessageDecoder(config.max_message_bytes)
        self._latency = LatencyWindow()
        self._connection_counters = ConnectionCounters()
        self._sender_counters = SenderCounters()
        self._owner_counters = OwnerCounters()
        self._connection = ConnectionThread(
            self._link, config, connect_ws or (lambda: open_websocket(config)), self._decoder,
            backoff or Backoff(config.backoff_initial, config.backoff_max), self._clock, wall_clock,
            self._downlink, self._connection_counters, on_event, on_audio, on_transcript)
        self._sender = UplinkSender(self._link, uplink, self._clock, self._sender_counters, self._latency)

    # -- control (main thread) -------------------------------------------------------------------
    def start(self) -> None:
        self._connection.start()
        self._sender.start()

    def connect(self) -> None:
        """Want a session: connect if not connected; a no-op while one is up or coming.

        After a hang-up whose close is still in progress, this wants a *new* call: the closing
        session finishes its close and the new call follows at once (`CLOSING_REDIAL`)."""
        self._link.want()

    def disconnect(self) -> None:
        """Hang up: send `session.close`; the connection thread waits up to 1 s for
        `session.closed`, then closes the socket. Never reconnects until `connect()`."""
        live = self._link.hang_up()
        if live is not None:
            self._send(live.socket, SESSION_CLOSE_TEXT)

    def send_commit(self) -> None:
        """Queue `input_audio_buffer.commit` behind the audio already queued (push-to-talk)."""
        live = self._link.live()
        if live is not None:
            self._uplink.put(UplinkChunk(b"", self._clock.monotonic(), commit=True,
                                         generation=live.info.format.generation))

    def send_text(self, text: str) -> bool:
        """Send `input_text.send` now (the kiosk's `ctl say`); False if no session is live or
        the send failed (counted)."""
        live = self._link.live()
        if live is None:
            return False
        if self._send(live.socket, encode(InputTextSend(text=text))):
            self._owner_counters.texts_sent += 1
            return True
        return False

    def _send(self, socket: TextSocket, text: str) -> bool:
        if send_text(socket, text):
            return True
        self._owner_counters.send_errors += 1
        return False

    def stop(self) -> None:
        """Stop both threads (they end at once; a close in progress finishes within its 1 s)."""
        self._link.stop()
        self._connection.stop()
        self._sender.stop()
        self._uplink.wake()

    def join(self, timeout: float = 3.0) -> bool:
        a = self._connection.join(timeout)
        b = self._sender.join(timeout)
        return a and b

    def wait_closed(self, timeout: float) -> bool:
        """Wait (on the injected clock) until no socket is open or coming (after `disconnect`)."""
        return self._link.wait_for_state(_NO_SOCKET, self._clock.monotonic() + timeout)

    # -- reading (any thread) --------------------------------------------------------------------
    @property
    def downlink_open(self) -> bool:
        """Whether agent audio is played (False while push-to-talk is held: local barge-in)."""
        return self._downlink.is_set()

    @downlink_open.setter
    def downlink_open(self, open_: bool) -> None:
        if open_:
            self._downlink.set()
        else:
            self._downlink.clear()

    @property
    def alive(self) -> bool:
        return self._connection.alive and self._sender.alive

    @property
    def state(self) -> LinkState:
        return self._link.state

    @property
    def live(self) -> bool:
        return self._link.state is LinkState.LIVE

    @property
    def waiting_for_clock(self) -> bool:
        return self._link.state is LinkState.WAITING_FOR_CLOCK

    @property
    def session_id(self) -> str | None:
        """The live session's id (None unless live)."""
        live = self._link.live()
        return live.info.session_id if live is not None else None

    @property
    def call_id(self) -> str | None:
        """The most recent session's call id (kept after it ends, for status)."""
        last = self._link.last_session
        return last.call_id if last is not None else None

    @property
    def last_error(self) -> str | None:
        return self._connection.last_error

    def counters(self) -> SessionCounters:
        """A snapshot of every session counter, the decoder's malformed kinds and the
        capture-to-send latency (p50, p99)."""
        return SessionCounters.of(self._connection_counters, self._sender_counters, self._owner_counters,
                                  self._decoder.malformed, self._latency.percentiles_ms(0.5, 0.99))

"""The state of the session's connection: one `LinkState` under one Condition.

The owner (`SessionClient`, on the main thread) makes requests: `want` a call, `hang_up`, `stop`.
The connection thread reports what happened: it took a new call, the wall clock is wrong, an
attempt starts, a session is live, the connection ended (an `Outcome`), a backoff elapsed. Every
change is one lookup in `TRANSITIONS`, made under the Condition and announced to every waiter,
so no thread ever sees half a change, and what each request does in each state is a table that
tests read in full. Modelled on wyoming-satellite's `State` enum and its one dispatch loop.

Requests that mean nothing in a state leave it unchanged (`want` while connected, `hang_up` when
idle). A report that cannot happen in a state (the thread says a connection ended while no
connection exists) is a bug in the connection thread and raises `LinkError`.

Waits (backoff, the wall-clock re-check, `wait_closed`) run on the injected clock (`Clock.wait`),
so a test steps a `ManualClock` past a backoff and the retry happens with no wall time spent.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

from device.audio.formats import StreamFormat
from device.session.transport import TextSocket
from hw.clock import Clock, wait_for


class LinkState(Enum):
    """Where the connection is. Exactly one at a time."""

    IDLE = "idle"                            # no call wanted, no socket
    DIALING = "dialing"                      # a new call is wanted; the thread has not taken it yet
    WAITING_FOR_CLOCK = "waiting_for_clock"  # wanted, but the wall clock is before any valid certificate
    CONNECTING = "connecting"                # an attempt: TCP, TLS, upgrade, then waiting for session.created
    LIVE = "live"                            # session.created came on the current socket
    BACKOFF = "backoff"                      # the connection failed or was lost: waiting until `retry_at`
    CLOSING = "closing"                      # hung up with a socket open: session.close, <= 1 s for session.closed
    CLOSING_REDIAL = "closing_redial"        # hung up and called again while closing: a new call follows at once
    STOPPED = "stopped"                      # the owner stopped the client (final)


class Outcome(Enum):
    """How one connection ended (decided by the connection thread)."""

    ENDED = "ended"        # the session ended for good: session.closed, or the close we asked for completed
    REJECTED = "rejected"  # the credentials were refused (HTTP 401/403, close code 4401/4403): never retried
    LOST = "lost"          # network error, HTTP 503, no session.created, keepalive timeout: retried with backoff


class Request(Enum):
    """Everything that can change the state, apart from an ending (an `Outcome`)."""

    WANT = "want"                        # owner: connect() (a user action, SIGHUP, always mode)
    HANG_UP = "hang_up"                  # owner: disconnect()
    STOP = "stop"                        # owner: stop()
    TAKE_CALL = "take_call"              # thread: starts on a new call (resets its backoff)
    CLOCK_WRONG = "clock_wrong"          # thread: the wall clock is before any valid certificate
    CLOCK_RIGHT = "clock_right"          # thread: the wall clock is fine: an attempt starts
    SESSION_LIVE = "session_live"        # thread: session.created on the current socket
    BACKOFF_ELAPSED = "backoff_elapsed"  # thread: `retry_at` has come


S = LinkState
# While the connection thread holds a socket the state is one of these; only its report of the
# ending (or `stop`) leaves them.
WITH_SOCKET: Final = frozenset({S.CONNECTING, S.LIVE, S.CLOSING, S.CLOSING_REDIAL, S.STOPPED})
# The owner asked for the socket to go: the receiver starts its close (session.close is sent
# once: by `hang_up` if the session is live, else by the receiver when session.created comes).
CLOSE_REQUESTED: Final = frozenset({S.CLOSING, S.CLOSING_REDIAL, S.STOPPED})

_ALL: Final = tuple(LinkState)
TRANSITIONS: Final[Mapping[tuple[LinkState, Request | Outcome], LinkState]] = {
    (S.IDLE, Request.WANT): S.DIALING,
    (S.CLOSING, Request.WANT): S.CLOSING_REDIAL,
    (S.DIALING, Request.HANG_UP): S.IDLE,
    (S.WAITING_FOR_CLOCK, Request.HANG_UP): S.IDLE,
    (S.CONNECTING, Request.HANG_UP): S.CLOSING,
    (S.LIVE, Request.HANG_UP): S.CLOSING,
    (S.BACKOFF, Request.HANG_UP): S.IDLE,
    (S.CLOSING_REDIAL, Request.HANG_UP): S.CLOSING,
    **{(state, Request.STOP): S.STOPPED for state in _ALL},
    (S.DIALING, Request.TAKE_CALL): S.CONNECTING,
    (S.CONNECTING, Request.CLOCK_WRONG): S.WAITING_FOR_CLOCK,
    (S.WAITING_FOR_CLOCK, Request.CLOCK_RIGHT): S.CONNECTING,
    (S.CONNECTING, Request.SESSION_LIVE): S.LIVE,
    (S.BACKOFF, Request.BACKOFF_ELAPSED): S.CONNECTING,
    # Endings. An end while closing is the end of the hung-up call; with a redial pending, a new
    # call is dialled at once whatever the old one's end was (its end is not the new call's
    # end), unless the credentials were refused: the new call would be refused too.
    (S.CONNECTING, Outcome.ENDED): S.IDLE,
    (S.LIVE, Outcome.ENDED): S.IDLE,
    (S.CLOSING, Outcome.ENDED): S.IDLE,
    (S.CLOSING_REDIAL, Outcome.ENDED): S.DIALING,
    (S.STOPPED, Outcome.ENDED): S.STOPPED,
    (S.CONNECTING, Outcome.REJECTED): S.IDLE,
    (S.LIVE, Outcome.REJECTED): S.IDLE,
    (S.CLOSING, Outcome.REJECTED): S.IDLE,
    (S.CLOSING_REDIAL, Outcome.REJECTED): S.IDLE,
    (S.STOPPED, Outcome.REJECTED): S.STOPPED,
    (S.CONNECTING, Outcome.LOST): S.BACKOFF,
    (S.LIVE, Outcome.LOST): S.BACKOFF,
    (S.CLOSING, Outcome.LOST): S.IDLE,
    (S.CLOSING_REDIAL, Outcome.LOST): S.DIALING,
    (S.STOPPED, Outcome.LOST): S.STOPPED,
}
# Reports the connection thread can only make while it holds a socket (anything else is a bug).
_SOCKET_REPORTS: Final = (Request.SESSION_LIVE, *Outcome)


def next_state(state: LinkState, change: Request | Outcome) -> LinkState:
    """The state after `change` in `state` (the table; unchanged where the table says nothing).
    Raises `LinkError` for a socket report (session live, an ending) while no socket exists."""
    if change in _SOCKET_REPORTS and state not in WITH_SOCKET:
        raise LinkError(f"{change.name} reported in state {state.name}: no connection exists")
    if change is Request.SESSION_LIVE and state is S.LIVE:
        return S.LIVE   # a second session.created on the same socket: still live (the server's oddity)
    return TRANSITIONS.get((state, change), state)


class LinkError(RuntimeError):
    """The connection thread reported something impossible in the current state (a bug)."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session, as `session.created` described it, with the stream format made for it."""

    session_id: str
    call_id: str
    format: StreamFormat


@dataclass(frozen=True, slots=True)
class LiveSession:
    """The session on the current socket: what the sender and the owner send on."""

    socket: TextSocket
    info: SessionInfo


class Link:
    """The connection's state machine, shared by the owner, the connection thread and the sender.

    Any thread. Every method takes the one Condition, applies one transition and notifies all
    waiters; none of them blocks except the `wait_*` methods, which wait on the injected clock.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._state = LinkState.IDLE
        self._retry_at: float | None = None      # in BACKOFF: when the next attempt is due
        self._live: LiveSession | None = None    # from session.created until the connection ends
        self._last: SessionInfo | None = None    # the most recent session (kept after it ends)

    def _apply(self, change: Request | Outcome) -> tuple[LinkState, LinkState]:
        """One transition (the Condition held); returns (before, after)."""
        before = self._state
        after = next_state(before, change)
        if after is not before:
            self._state = after
            if after is not LinkState.BACKOFF:
                self._retry_at = None
            self._cond.notify_all()
        return before, after

    # -- reading (any thread) -------------------------------------------------------------------
    @property
    def state(self) -> LinkState:
        with self._cond:
            return self._state

    def live(self) -> LiveSession | None:
        """The live session, or None unless the state is LIVE."""
        with self._cond:
            return self._live if self._state is LinkState.LIVE else None

    @property
    def last_session(self) -> SessionInfo | None:
        with self._cond:
            return self._last

    @property
    def retry_at(self) -> float | None:
        """In BACKOFF, the moment (on the injected clock) of the next attempt; else None."""
        with self._cond:
            return self._retry_at

    # -- requests (the owner) --------------------------------------------------------------------
    def want(self) -> LinkState:
        """A call is wanted; returns the new state."""
        with self._cond:
            return self._apply(Request.WANT)[1]

    def hang_up(self) -> LiveSession | None:
        """Hang up; returns the session that was live, on which the caller sends session.close."""
        with self._cond:
            live = self._live
            before, _ = self._apply(Request.HANG_UP)
            return live if before is LinkState.LIVE else None

    def stop(self) -> None:
        with self._cond:
            self._apply(Request.STOP)

    # -- reports (the connection thread) --------------------------------------------------------
    def take_call(self) -> bool:
        """DIALING -> CONNECTING. True if a new call was taken (the caller resets its backoff)."""
        with self._cond:
            return self._apply(Request.TAKE_CALL) == (LinkState.DIALING, LinkState.CONNECTING)

    def clock_wrong(self) -> bool:
        """The wall clock is wrong: True if the state is (now) WAITING_FOR_CLOCK."""
        with self._cond:
            return self._apply(Request.CLOCK_WRONG)[1] is LinkState.WAITING_FOR_CLOCK

    def clock_right(self) -> bool:
        """The wall clock is fine: True if an attempt may start (the state is CONNECTING)."""
        with self._cond:
            return self._apply(Request.CLOCK_RIGHT)[1] is LinkState.CONNECTING

    def session_live(self, session: LiveSession) -> bool:
        """session.created came. True if the owner hung up meanwhile (or stopped): the caller
        sends session.close, since `hang_up` found no live session to send it on."""
        with self._cond:
            self._apply(Request.SESSION_LIVE)
            self._live, self._last = session, session.info
            return self._state in CLOSE_REQUESTED

    def ended(self, outcome: Outcome, retry_at: float | None = None) -> LinkState:
        """The current connection is over (its socket is no longer used); returns the new state.
        `retry_at` is when to try again, used if the state becomes BACKOFF."""
        with self._cond:
            after = self._apply(outcome)[1]
            self._live = None
            if after is LinkState.BACKOFF:
                self._retry_at = retry_at if retry_at is not None else self._clock.monotonic()
            return after

    def backoff_elapsed(self) -> bool:
        """BACKOFF -> CONNECTING; True if it happened (no request came first)."""
        with self._cond:
            return self._apply(Request.BACKOFF_ELAPSED)[1] is LinkState.CONNECTING

    # -- waits (on the injected clock) ----------------------------------------------------------
    def wait_while(self, state: LinkState, deadline: float | None = None) -> LinkState:
        """Wait while the state is `state`, at most until `deadline`; returns the state then."""
        with self._cond:
            wait_for(self._clock, self._cond, lambda: self._state is not state, deadline)
            return self._state

    def wait_live(self) -> LiveSession | None:
        """Wait until a session is live (returned) or the link is stopped (None)."""
        with self._cond:
            wait_for(self._clock, self._cond,
                     lambda: self._state in (LinkState.LIVE, LinkState.STOPPED), None)
            return self._live if self._state is LinkState.LIVE else None

    def wait_for_state(self, states: frozenset[LinkState], deadline: float | None) -> bool:
        """Wait until the state is one of `states`; False if `deadline` came first."""
        with self._cond:
            return wait_for(self._clock, self._cond, lambda: self._state in states, deadline)

"""The session link's state machine: every state x every request, and its waits on the clock.

The expected table is written out here, independently of `device.session.link.TRANSITIONS`, so
a change to either shows up as a difference.
"""
from __future__ import annotations

import threading
from typing import Any

import pytest

from device.audio.formats import StreamFormat
from device.session.link import (
    Link,
    LinkError,
    LinkState,
    LiveSession,
    Outcome,
    Request,
    SessionInfo,
    next_state,
)
from hw.clock import ManualClock

S = LinkState
COLUMNS: tuple[Request | Outcome, ...] = (
    Request.WANT, Request.HANG_UP, Request.STOP, Request.TAKE_CALL, Request.CLOCK_WRONG,
    Request.CLOCK_RIGHT, Request.SESSION_LIVE, Request.BACKOFF_ELAPSED,
    Outcome.ENDED, Outcome.REJECTED, Outcome.LOST,
)
# "=": unchanged; "!": LinkError (a report the connection thread cannot make in that state).
I, D, W, C, L, B, X, R, Z = (S.IDLE, S.DIALING, S.WAITING_FOR_CLOCK, S.CONNECTING, S.LIVE, S.BACKOFF,
                             S.CLOSING, S.CLOSING_REDIAL, S.STOPPED)
EXPECTED: dict[LinkState, tuple[Any, ...]] = {
    #         WANT HANG_UP STOP TAKE  CLK_W CLK_R LIVE  ELAPSED ENDED REJECTED LOST
    S.IDLE:              (D, "=", Z, "=", "=", "=", "!", "=", "!", "!", "!"),
    S.DIALING:           ("=", I, Z, C, "=", "=", "!", "=", "!", "!", "!"),
    S.WAITING_FOR_CLOCK: ("=", I, Z, "=", "=", C, "!", "=", "!", "!", "!"),
    S.CONNECTING:        ("=", X, Z, "=", W, "=", L, "=", I, I, B),
    S.LIVE:              ("=", X, Z, "=", "=", "=", "=", "=", I, I, B),
    S.BACKOFF:           ("=", I, Z, "=", "=", "=", "!", C, "!", "!", "!"),
    S.CLOSING:           (R, "=", Z, "=", "=", "=", "=", "=", I, I, I),
    S.CLOSING_REDIAL:    ("=", X, Z, "=", "=", "=", "=", "=", D, I, D),
    S.STOPPED:           ("=", "=", Z, "=", "=", "=", "=", "=", Z, Z, Z),
}
CASES = [(state, change, expected) for state, row in EXPECTED.items() for change, expected in zip(COLUMNS, row)]


def test_the_expected_table_covers_every_state_and_change() -> None:
    assert set(EXPECTED) == set(LinkState)
    assert set(COLUMNS) == set(Request) | set(Outcome)
    assert all(len(row) == len(COLUMNS) for row in EXPECTED.values())


@pytest.mark.parametrize(("state", "change", "expected"), CASES,
                         ids=[f"{s.name}-{c.name}" for s, c, _ in CASES])
def test_transition(state: LinkState, change: Request | Outcome, expected: Any) -> None:
    if expected == "!":
        with pytest.raises(LinkError):
            next_state(state, change)
    else:
        assert next_state(state, change) is (state if expected == "=" else expected)


# -- the Link object: the same table through its methods, with what each method returns ----------
def info(generation: int = 1) -> SessionInfo:
    return SessionInfo("s1", "c1", StreamFormat(16000, generation))


class Socket:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, payload: str) -> int:
        self.sent.append(payload)
        return len(payload)


def link_in(state: LinkState, clock: ManualClock | None = None) -> Link:
    """A Link driven into `state` through its own methods (never by poking its fields)."""
    link = Link(clock or ManualClock())
    path: dict[LinkState, list[str]] = {
        S.IDLE: [], S.DIALING: ["want"], S.WAITING_FOR_CLOCK: ["want", "take", "clock_wrong"],
        S.CONNECTING: ["want", "take"], S.LIVE: ["want", "take", "live"],
        S.BACKOFF: ["want", "take", "lost"], S.CLOSING: ["want", "take", "live", "hang_up"],
        S.CLOSING_REDIAL: ["want", "take", "live", "hang_up", "want"], S.STOPPED: ["stop"],
    }
    for step in path[state]:
        {"want": link.want, "take": link.take_call, "clock_wrong": link.clock_wrong,
         "live": lambda: link.session_live(LiveSession(Socket(), info())), "hang_up": link.hang_up,
         "lost": lambda: link.ended(Outcome.LOST, 5.0), "stop": link.stop}[step]()
    assert link.state is state
    return link


@pytest.mark.parametrize("state", list(LinkState))
def test_link_methods_follow_the_table(state: LinkState) -> None:
    row = dict(zip(COLUMNS, EXPECTED[state]))
    calls = {
        Request.WANT: lambda lk: lk.want(), Request.HANG_UP: lambda lk: lk.hang_up(),
        Request.STOP: lambda lk: lk.stop(), Request.TAKE_CALL: lambda lk: lk.take_call(),
        Request.CLOCK_WRONG: lambda lk: lk.clock_wrong(), Request.CLOCK_RIGHT: lambda lk: lk.clock_right(),
        Request.SESSION_LIVE: lambda lk: lk.session_live(LiveSession(Socket(), info(2))),
        Request.BACKOFF_ELAPSED: lambda lk: lk.backoff_elapsed(),
        **{o: (lambda lk, o=o: lk.ended(o, 7.0)) for o in Outcome},
    }
    for change, expected in row.items():
        link = link_in(state)
        if expected == "!":
            with pytest.raises(LinkError):
                calls[change](link)
            assert link.state is state
            continue
        calls[change](link)
        assert link.state is (state if expected == "=" else expected), change


def test_hang_up_returns_the_live_session_only_when_live() -> None:
    for state in LinkState:
        link = link_in(state)
        live = link.live()
        returned = link.hang_up()
        assert (returned is not None) == (state is S.LIVE)
        assert returned is live


def test_session_live_asks_for_a_close_when_hung_up_meanwhile() -> None:
    for state, close in ((S.CONNECTING, False), (S.LIVE, False), (S.CLOSING, True),
                         (S.CLOSING_REDIAL, True), (S.STOPPED, True)):
        link = link_in(state)
        assert link.session_live(LiveSession(Socket(), info(3))) is close, state
        assert link.last_session == info(3)
        assert (link.live() is not None) == (link.state is S.LIVE)


def test_an_ending_forgets_the_live_session_but_keeps_the_last_one() -> None:
    link = link_in(S.LIVE)
    assert link.live() is not None
    assert link.ended(Outcome.ENDED) is S.IDLE
    assert link.live() is None and link.last_session == info()


def test_retry_at_is_set_in_backoff_only() -> None:
    clock = ManualClock(100.0)
    link = link_in(S.CONNECTING, clock)
    assert link.retry_at is None
    assert link.ended(Outcome.LOST, 104.5) is S.BACKOFF and link.retry_at == 104.5
    assert link.backoff_elapsed() and link.retry_at is None
    assert link.ended(Outcome.LOST, None) is S.BACKOFF and link.retry_at == 100.0   # no delay: at once
    link.hang_up()
    assert link.retry_at is None


def test_a_report_answers_whether_it_applied() -> None:
    assert not link_in(S.IDLE).take_call()        # hung up before the thread took the call
    assert link_in(S.DIALING).take_call()
    assert not link_in(S.IDLE).clock_right()      # hung up during the clock wait
    assert link_in(S.WAITING_FOR_CLOCK).clock_right()
    assert link_in(S.CONNECTING).clock_right()    # the clock was right all along
    assert link_in(S.WAITING_FOR_CLOCK).clock_wrong()   # still wrong: keep waiting
    assert not link_in(S.STOPPED).clock_wrong()
    assert not link_in(S.IDLE).backoff_elapsed()  # hung up during the backoff


# -- waits ---------------------------------------------------------------------------------------
def run(target: Any) -> tuple[threading.Event, list[Any]]:
    done, result = threading.Event(), []

    def main() -> None:
        result.append(target())
        done.set()

    threading.Thread(target=main, daemon=True).start()
    return done, result


def test_wait_while_ends_at_the_deadline_on_the_injected_clock() -> None:
    clock = ManualClock()
    link = link_in(S.BACKOFF, clock)
    done, result = run(lambda: link.wait_while(S.BACKOFF, 5.0))
    assert clock.wait_for_sleepers(1, 2)
    clock.advance(4.9)
    assert clock.wait_for_sleepers(1, 2)   # woken by the advance, still short: waiting again
    assert not done.is_set()
    clock.advance(0.1)
    assert done.wait(2) and result == [S.BACKOFF]


def test_wait_while_ends_at_a_change() -> None:
    clock = ManualClock()
    link = link_in(S.IDLE, clock)
    done, result = run(lambda: link.wait_while(S.IDLE))
    clock.advance(3600)   # no deadline: time alone changes nothing
    assert not clock.wait_for_sleepers(1, 0)
    link.want()
    assert done.wait(2) and result == [S.DIALING]


def test_wait_live_returns_the_session_or_none_when_stopped() -> None:
    link = link_in(S.CONNECTING)
    done, result = run(link.wait_live)
    session = LiveSession(Socket(), info())
    link.session_live(session)
    assert done.wait(2) and result == [session]
    link = link_in(S.BACKOFF)
    done, result = run(link.wait_live)
    link.stop()
    assert done.wait(2) and result == [None]


def test_wait_for_state_times_out_on_the_injected_clock() -> None:
    clock = ManualClock()
    link = link_in(S.CLOSING, clock)
    done, result = run(lambda: link.wait_for_state(frozenset({S.IDLE}), 1.0))
    assert clock.wait_for_sleepers(1, 2)
    clock.advance(1.0)
    assert done.wait(2) and result == [False]
    done, result = run(lambda: link.wait_for_state(frozenset({S.IDLE}), 10.0))
    assert clock.wait_for_sleepers(1, 2)
    link.ended(Outcome.ENDED)
    assert done.wait(2) and result == [True]

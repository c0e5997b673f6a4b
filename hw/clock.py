"""Injectable clocks: real time for the service, a manual clock for deterministic tests.

Fake devices pace themselves with a clock so that a laptop run behaves like a real sound card,
while tests and benchmarks can run unpaced (as fast as the CPU allows) or step time by hand.
Threads that wait for a state change *or* a deadline (the session's backoff, close and keepalive
waits) wait on their own `threading.Condition` through `Clock.wait`, so a test that steps a
`ManualClock` past a deadline ends such a wait at once, with no wall time spent.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """Monotonic time in seconds, and ways to wait until a moment. Any thread."""

    def monotonic(self) -> float: ...

    def sleep_until(self, deadline: float, interrupt: threading.Event | None = None) -> bool:
        """Wait until `deadline` (monotonic seconds). Return False if `interrupt` was set first."""
        ...

    def wait(self, condition: threading.Condition, deadline: float | None) -> bool:
        """`condition.wait()` on this clock's time. The caller holds `condition`; it is released
        while waiting and held again on return. Returns when `condition` is notified (or wakes
        spuriously, as `Condition.wait` may) or once this clock reaches `deadline` (None: no
        deadline, only a notify ends the wait). False once `deadline` has passed, else True.
        Callers loop over their predicate, as with `Condition.wait` (see `wait_for`)."""
        ...


def wait_for(clock: Clock, condition: threading.Condition, predicate: Callable[[], bool],
             deadline: float | None) -> bool:
    """`Condition.wait_for` on `clock`'s time: True as soon as `predicate()` holds (checked with
    `condition` held, which the caller holds), False if `deadline` passed first."""
    while not predicate():
        if not clock.wait(condition, deadline):
            return predicate()
    return True


class RealClock:
    """The system monotonic clock. Waits use an Event so a stop request ends them at once."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep_until(self, deadline: float, interrupt: threading.Event | None = None) -> bool:
        delay = deadline - time.monotonic()
        if delay <= 0:
            return not (interrupt is not None and interrupt.is_set())
        if interrupt is None:
            time.sleep(delay)
            return True
        return not interrupt.wait(delay)

    def wait(self, condition: threading.Condition, deadline: float | None) -> bool:
        if deadline is None:
            condition.wait()
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        condition.wait(remaining)
        return time.monotonic() < deadline


class UnpacedClock:
    """A clock that never waits: time advances by exactly what callers wait for.

    Used by benchmarks and tests to run the audio pipeline as fast as the CPU allows while every
    timestamp stays consistent (each `sleep_until` jumps the clock to the deadline).
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def sleep_until(self, deadline: float, interrupt: threading.Event | None = None) -> bool:
        with self._lock:
            self._now = max(self._now, deadline)
        return not (interrupt is not None and interrupt.is_set())

    def wait(self, condition: threading.Condition, deadline: float | None) -> bool:
        """Without a deadline, a plain `condition.wait()`; with one, the clock jumps to it and the
        wait ends at once (unpaced: nothing is waited for that time alone would bring)."""
        if deadline is None:
            condition.wait()
            return True
        with self._lock:
            self._now = max(self._now, deadline)
        return False

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class ManualClock:
    """Time that moves only when a test calls `advance`; `sleep_until` blocks until then.

    For deterministic tests of paced devices: `wait_for_sleepers(n)` returns once `n` threads are
    blocked waiting for a moment still in the future (in `sleep_until`, or in `wait` with a
    deadline), so a test can step the audio threads one period at a time, or step a session past
    its backoff, without sleeping. Any thread may use it.

    Lock order: a thread in `wait` holds its own condition and then takes this clock's lock to
    register; `advance` takes this clock's lock, lets go of it, and only then takes each waiter's
    condition to notify it. Never both the other way round, so the two cannot deadlock.
    """

    # Deadlines computed by callers carry float error (7 * 0.01 != 0.07): closer than this is reached.
    TOLERANCE = 1e-9

    def __init__(self, start: float = 0.0) -> None:
        self._ns = round(start * 1e9)   # whole nanoseconds: advancing never accumulates float error
        self._cond = threading.Condition()
        self._deadlines: dict[int, float] = {}   # blocked threads: the moment each waits for
        self._conditions: dict[int, threading.Condition] = {}   # threads in `wait`: their condition

    @property
    def _now(self) -> float:
        return self._ns / 1e9

    def monotonic(self) -> float:
        with self._cond:
            return self._now

    def sleep_until(self, deadline: float, interrupt: threading.Event | None = None) -> bool:
        me = threading.get_ident()
        with self._cond:
            self._deadlines[me] = deadline
            self._cond.notify_all()
            try:
                while self._now < deadline - self.TOLERANCE:
                    if interrupt is not None and interrupt.is_set():
                        return False
                    self._cond.wait(0.05)   # the timeout only lets an interrupt through
            finally:
                del self._deadlines[me]
                self._cond.notify_all()
        return not (interrupt is not None and interrupt.is_set())

    def wait(self, condition: threading.Condition, deadline: float | None) -> bool:
        me = threading.get_ident()
        with self._cond:
            # Checked and registered under our lock: an `advance` either came before (we see its
            # time) or sees us registered and notifies `condition`, which it can only take once
            # `condition.wait()` below has released it. No wake-up is lost in between.
            if deadline is not None:
                if self._now >= deadline - self.TOLERANCE:
                    return False
                self._deadlines[me] = deadline
                self._conditions[me] = condition
                self._cond.notify_all()   # for wait_for_sleepers
        try:
            condition.wait()
        finally:
            if deadline is not None:
                with self._cond:
                    del self._deadlines[me]
                    del self._conditions[me]
                    self._cond.notify_all()
        if deadline is None:
            return True
        with self._cond:
            return self._now < deadline - self.TOLERANCE

    def advance(self, seconds: float) -> None:
        """Move time on and wake every thread whose moment came (call it holding no waiter's condition)."""
        with self._cond:
            self._ns += round(seconds * 1e9)
            self._cond.notify_all()
            conditions = list({id(c): c for c in self._conditions.values()}.values())
        for condition in conditions:   # after letting go of our lock: see the class docstring
            with condition:
                condition.notify_all()

    def wait_for_sleepers(self, count: int, timeout: float) -> bool:
        """True once `count` threads are blocked on a future moment (False after `timeout` s)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: sum(1 for d in self._deadlines.values() if d > self._now + self.TOLERANCE) >= count,
                timeout)


class LockstepClock:
    """Simulated time for several fake devices: as fast as the CPU allows, but kept in step.

    Each device gets its own clock from `member()`; a member's time jumps to whatever it waits
    for, but it may run at most `slack` seconds ahead of the slowest open member. Independent
    unpaced clocks let the mic run seconds ahead of the speaker, which no real sound card does and
    which makes the echo canceller realign constantly. Any thread may use it.

    A member that gets more than `slack` ahead waits until the slowest member has caught up with
    it completely, and only a caught-up member is woken: one thread hand-over per `slack` of
    simulated time, not one per period. Waking the leader at every period of the laggard (as a
    plain "wait while too far ahead" loop does) costs more CPU in futex wake-ups and GIL
    hand-overs than the audio work it paces.
    """

    def __init__(self, slack: float = 0.1) -> None:
        if slack < 0:
            raise ValueError(f"slack must be >= 0, not {slack}")
        self.slack = slack
        self._cond = threading.Condition()
        self._members: dict[int, float] = {}   # open members: their time
        self._waiting: dict[int, float] = {}   # waiting members: the time the slowest must reach
        self._next_id = 0
        self.waits = 0                         # times a member had to wait (for tests and benchmarks)
        self.wake_ups = 0                      # times waiters were woken (for tests)

    def member(self) -> LockstepMember:
        with self._cond:
            self._next_id += 1
            return LockstepMember(self, self._next_id)

    def _wake_caught_up(self) -> None:
        """Wake the waiters if the slowest member reached the earliest waiter's goal (lock held)."""
        if self._waiting and (not self._members or min(self._members.values()) >= min(self._waiting.values())):
            self.wake_ups += 1
            self._cond.notify_all()

    def _set(self, member_id: int, now: float | None) -> None:
        with self._cond:
            if now is None:
                self._members.pop(member_id, None)
            else:
                self._members[member_id] = now
            self._wake_caught_up()

    def _wait_for_others(self, member_id: int, now: float, interrupt: threading.Event | None) -> bool:
        with self._cond:
            members = self._members
            if member_id in members:
                members[member_id] = now
                self._wake_caught_up()
                if now - min(members.values()) > self.slack:
                    self.waits += 1
                    self._waiting[member_id] = now
                    try:
                        while member_id in members and min(members.values()) < now:
                            if interrupt is not None and interrupt.is_set():
                                return False
                            # The timeout re-checks `interrupt` (setting it does not notify us). A
                            # member that dies without closing blocks the others until stopped.
                            self._cond.wait(0.5)
                    finally:
                        del self._waiting[member_id]
        return not (interrupt is not None and interrupt.is_set())


class LockstepMember:
    """One device's view of a `LockstepClock` (`register` at open, `unregister` at close)."""

    def __init__(self, group: LockstepClock, member_id: int) -> None:
        self._group = group
        self._id = member_id
        self._now = 0.0

    def monotonic(self) -> float:
        return self._now

    def register(self) -> None:
        self._group._set(self._id, self._now)

    def unregister(self) -> None:
        self._group._set(self._id, None)

    def sleep_until(self, deadline: float, interrupt: threading.Event | None = None) -> bool:
        self._now = max(self._now, deadline)
        return self._group._wait_for_others(self._id, self._now, interrupt)

    def wait(self, condition: threading.Condition, deadline: float | None) -> bool:
        """As `UnpacedClock.wait`: with a deadline, this member's time jumps to it at once. The
        group learns the new time at this member's next `sleep_until` (which holds it within
        `slack` of the others); waiting for the group here would hold `condition` meanwhile."""
        if deadline is None:
            condition.wait()
            return True
        self._now = max(self._now, deadline)
        return False

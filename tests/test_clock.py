"""The fakes' clocks: `LockstepClock` keeps unpaced devices in step, and cheaply."""
from __future__ import annotations

import sys
import threading
from collections.abc import Callable

import pytest

from hw.clock import Clock, LockstepClock, LockstepMember, ManualClock, RealClock, UnpacedClock, wait_for
from tools.polling import wait_until

STEP = 0.01
STEPS = 2000


def _run_in_step(clock: LockstepClock, members: list[LockstepMember]) -> list[float]:
    """Each member in its own thread waits STEPS periods; returns each one's largest lead over the others."""
    for m in members:
        m.register()
    leads = [0.0] * len(members)
    start = threading.Barrier(len(members))

    def run(index: int) -> None:
        me = members[index]
        start.wait(5)
        for i in range(1, STEPS + 1):
            assert me.sleep_until(i * STEP)
            others = [m.monotonic() for j, m in enumerate(members) if j != index]
            leads[index] = max(leads[index], me.monotonic() - min(others))
        me.unregister()   # as a device closes: the others must not wait for it any more

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(members))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    return leads


def _registered_pair() -> tuple[LockstepClock, LockstepMember, LockstepMember]:
    clock = LockstepClock(slack=0.1)
    leader, laggard = clock.member(), clock.member()
    leader.register()
    laggard.register()
    return clock, leader, laggard


@pytest.mark.parametrize("count", [2, 3])
def test_no_member_runs_more_than_slack_ahead(count: int) -> None:
    clock = LockstepClock(slack=0.1)
    members = [clock.member() for _ in range(count)]
    leads = _run_in_step(clock, members)
    assert max(leads) <= clock.slack + 1e-9
    assert all(m.monotonic() == pytest.approx(STEPS * STEP) for m in members)


def test_a_leader_waits_at_most_once_per_slack() -> None:
    """A member that got too far ahead waits until the others caught up with it completely, so it
    cannot wait again before it ran `slack` ahead once more: one hand-over per 100 ms of audio,
    not one per 10 ms period (which is what cost the benchmark its CPU)."""
    clock = LockstepClock(slack=0.1)
    members = [clock.member(), clock.member()]
    _run_in_step(clock, members)
    per_member_bound = STEPS * STEP / clock.slack + 1
    assert clock.waits <= 2 * per_member_bound   # a wait per period would be ~4000


def test_closing_the_slowest_member_releases_a_waiter() -> None:
    clock, leader, laggard = _registered_pair()
    done = threading.Event()
    result: list[bool] = []

    def lead() -> None:
        result.append(leader.sleep_until(1.0))
        done.set()

    threading.Thread(target=lead, daemon=True).start()
    assert wait_until(lambda: clock.waits == 1)   # waiting: the laggard is 1 s behind
    assert not done.is_set()
    laggard.unregister()
    assert done.wait(2)
    assert result == [True]


def test_a_waiter_catches_up_as_the_laggard_advances() -> None:
    clock, leader, laggard = _registered_pair()
    done = threading.Event()
    threading.Thread(target=lambda: (leader.sleep_until(0.5), done.set()), daemon=True).start()
    assert wait_until(lambda: clock.waits == 1)   # the leader waits before the laggard moves
    assert laggard.sleep_until(0.3)     # 0.2 s behind: the leader keeps waiting for a full catch-up
    assert clock.wake_ups == 0 and not done.is_set()   # not even woken to look
    assert laggard.sleep_until(0.5)     # caught up: the leader is released
    assert done.wait(2)
    assert clock.wake_ups == 1


def test_an_interrupt_ends_a_wait() -> None:
    clock, leader, _laggard = _registered_pair()   # the laggard never moves: only the interrupt ends the wait
    stop = threading.Event()
    result: list[bool] = []
    done = threading.Event()

    def lead() -> None:
        result.append(leader.sleep_until(1.0, stop))
        done.set()

    threading.Thread(target=lead, daemon=True).start()
    assert wait_until(lambda: clock.waits == 1)   # really waiting before the interrupt
    stop.set()
    assert done.wait(2)
    assert result == [False]


def test_one_member_alone_never_waits() -> None:
    clock = LockstepClock(slack=0.0)
    solo = clock.member()
    solo.register()
    for i in range(1, 100):
        assert solo.sleep_until(i * STEP)
    assert clock.waits == 0


def test_negative_slack_is_refused() -> None:
    with pytest.raises(ValueError):
        LockstepClock(slack=-1)


def test_unpaced_clock_jumps_to_each_deadline() -> None:
    clock = UnpacedClock()
    assert clock.sleep_until(2.5)
    assert clock.monotonic() == 2.5
    assert clock.sleep_until(1.0)   # never backwards
    assert clock.monotonic() == 2.5
    stop = threading.Event()
    stop.set()
    assert not clock.sleep_until(3.0, stop)


# -- Clock.wait: waiting on a Condition until a notify or a moment on the clock -------------------
def _waiter(clock: Clock, cond: threading.Condition, predicate: Callable[[], bool],
            deadline: float | None) -> tuple[threading.Event, list[bool]]:
    """Runs `wait_for(clock, cond, predicate, deadline)` on a thread; its result lands in the list."""
    done, result = threading.Event(), []

    def run() -> None:
        with cond:
            result.append(wait_for(clock, cond, predicate, deadline))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, result


def test_manual_clock_wait_ends_when_time_reaches_the_deadline() -> None:
    clock, cond = ManualClock(), threading.Condition()
    done, result = _waiter(clock, cond, lambda: False, 5.0)
    assert clock.wait_for_sleepers(1, 2)
    clock.advance(4.999)
    assert clock.wait_for_sleepers(1, 2)   # woken to look, still short of the deadline: waits again
    assert not done.is_set()
    clock.advance(0.001)
    assert done.wait(2) and result == [False]


def test_manual_clock_wait_ends_at_a_notify_before_the_deadline() -> None:
    clock, cond = ManualClock(), threading.Condition()
    flag: list[bool] = []
    done, result = _waiter(clock, cond, lambda: bool(flag), 5.0)
    assert clock.wait_for_sleepers(1, 2)
    with cond:
        flag.append(True)
        cond.notify_all()
    assert done.wait(2) and result == [True]
    assert clock.monotonic() == 0.0


def test_manual_clock_wait_without_a_deadline_ignores_time() -> None:
    clock, cond = ManualClock(), threading.Condition()
    flag: list[bool] = []
    done, result = _waiter(clock, cond, lambda: bool(flag), None)
    clock.advance(3600)
    assert not clock.wait_for_sleepers(1, 0)   # not waiting for a moment: time alone ends nothing
    assert not done.is_set()
    with cond:
        flag.append(True)
        cond.notify_all()
    assert done.wait(2) and result == [True]


def test_manual_clock_wait_past_its_deadline_returns_at_once() -> None:
    clock, cond = ManualClock(10.0), threading.Condition()
    with cond:
        assert clock.wait(cond, 10.0) is False
        assert wait_for(clock, cond, lambda: False, 9.0) is False


def test_manual_clock_advance_and_notify_never_deadlock() -> None:
    """A waiter holds its condition and then takes the clock's lock; `advance` takes the clock's
    lock and then (after letting go) each waiter's condition. Hammer both orders at once: with
    the two locks taken in opposite orders, the advancing thread or the notifying one would hang."""
    clock, cond = ManualClock(), threading.Condition()
    stop = threading.Event()
    woken = [0]

    def waiter() -> None:
        while not stop.is_set():
            with cond:
                clock.wait(cond, clock.monotonic() + 0.5)
                woken[0] += 1

    def notifier() -> None:
        while not stop.is_set():
            with cond:
                cond.notify_all()

    def advancer() -> None:
        for _ in range(2000):
            clock.advance(0.25)

    waiters = [threading.Thread(target=waiter, daemon=True) for _ in range(2)]
    others = [threading.Thread(target=notifier, daemon=True), threading.Thread(target=advancer, daemon=True)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)   # hand the GIL over often, so the two orders really interleave
    try:
        for t in waiters + others:
            t.start()
        others[1].join(10)
        assert not others[1].is_alive(), "deadlock: advance() never returned"
        stop.set()
        others[0].join(10)
        assert not others[0].is_alive(), "deadlock: the notifier never got the condition back"
        # Each waiter waits at most 0.5 s of clock time: stepping the clock ends the last waits.
        for _ in range(1000):
            if not any(t.is_alive() for t in waiters):
                break
            clock.advance(1.0)
            waiters[0].join(0.01)
        assert not any(t.is_alive() for t in waiters), "a waiter never woke"
    finally:
        sys.setswitchinterval(switch)
    assert woken[0] > 0


def test_real_clock_wait() -> None:
    clock, cond = RealClock(), threading.Condition()
    with cond:
        assert clock.wait(cond, clock.monotonic() - 1) is False   # already past
        assert wait_for(clock, cond, lambda: False, clock.monotonic() + 0.02) is False
    flag: list[bool] = []
    done, result = _waiter(clock, cond, lambda: bool(flag), clock.monotonic() + 30)
    with cond:
        flag.append(True)
        cond.notify_all()
    assert done.wait(2) and result == [True]


def test_unpaced_clock_wait_jumps_to_the_deadline() -> None:
    clock, cond = UnpacedClock(), threading.Condition()
    with cond:
        assert clock.wait(cond, 7.5) is False
    assert clock.monotonic() == 7.5
    flag: list[bool] = []
    done, result = _waiter(clock, cond, lambda: bool(flag), None)   # no deadline: a notify ends it
    with cond:
        flag.append(True)
        cond.notify_all()
    assert done.wait(2) and result == [True]


def test_lockstep_member_wait_jumps_to_the_deadline() -> None:
    member = LockstepClock().member()
    cond = threading.Condition()
    with cond:
        assert member.wait(cond, 2.0) is False
    assert member.monotonic() == 2.0

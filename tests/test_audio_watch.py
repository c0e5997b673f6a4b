"""AudioThreadWatch (issue 13, item 5) with stand-in threads and an injected clock: a crash is
one HardwareLost, a restart after the backoff, HardwareBack only once audio moves again; a stuck
thread is lost until it beats again."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from device.core.events import Event, HardwareBack, HardwareLost
from device.service.audio_watch import AudioThreadWatch, WatchedThread


@dataclass
class StandIn:
    """What the watch reads of an OwnedThread."""

    alive: bool = True
    heartbeat: float = 0.0
    crashed: BaseException | None = None


class Rig:
    def __init__(self) -> None:
        self.t = 100.0
        self.thread = StandIn(heartbeat=self.t)
        self.progress = 0
        self.restarted = 0
        self.events: list[Event] = []
        self.watch = AudioThreadWatch(
            [WatchedThread("capture", lambda: self.thread, self.restart, lambda: self.progress)],  # type: ignore[arg-type,return-value]
            self.events.append, stale_after=5.0, now=lambda: self.t, restart_initial=0.5, restart_max=2.0)

    def restart(self) -> None:
        self.restarted += 1
        self.thread = StandIn(heartbeat=self.t)

    def crash(self) -> None:
        self.thread.alive = False
        self.thread.crashed = RuntimeError("bad frame")

    def tick(self, dt: float = 0.25) -> None:
        self.t += dt
        self.thread.heartbeat = self.t if self.thread.alive else self.thread.heartbeat
        self.watch.check()


def test_a_crash_is_lost_restarted_with_backoff_and_back_on_progress() -> None:
    rig = Rig()
    rig.tick()
    assert rig.events == []
    rig.crash()
    rig.tick()
    assert rig.events == [HardwareLost("capture", "capture thread crashed: RuntimeError: bad frame")]
    rig.tick(0.25)
    assert rig.restarted == 0          # not before the 0.5 s backoff
    rig.tick(0.3)
    assert rig.restarted == 1 and rig.watch.restarts == {"capture": 1}
    rig.tick()
    assert len(rig.events) == 1        # running again, but no audio yet: still lost
    rig.progress += 1
    rig.tick()
    assert rig.events[-1] == HardwareBack("capture") and len(rig.events) == 2


def test_a_thread_that_keeps_dying_backs_off_and_is_reported_once() -> None:
    rig = Rig()
    rig.crash()
    rig.tick()
    restarts_at = []
    for _ in range(80):                # 20 s of ticks, the thread dies right after each restart
        before = rig.restarted
        rig.tick()
        if rig.restarted > before:
            restarts_at.append(rig.t)
            rig.crash()
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(restarts_at)]
    assert gaps[:3] == [1.25, 2.25, 2.25]   # 1 s then the 2 s cap (ticks are 0.25 s apart)
    assert [e for e in rig.events if isinstance(e, HardwareLost)] == rig.events[:1]  # one loss reported


def test_a_stuck_thread_is_lost_until_it_beats_again() -> None:
    rig = Rig()
    rig.tick()
    rig.t += 6.0                       # no heartbeat for 6 s
    rig.watch.check()
    assert rig.events == [HardwareLost("capture", "capture thread stuck for 6 s")]
    rig.watch.check()
    assert len(rig.events) == 1
    assert rig.restarted == 0          # a stuck thread cannot be replaced
    rig.tick()
    assert rig.events[-1] == HardwareBack("capture")

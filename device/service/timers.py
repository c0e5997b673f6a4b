"""The call-limit timers the state machine asks for, kept on the supervisor's injected clock."""
from __future__ import annotations

from device.core.events import TimerName
from hw.clock import Clock


def earliest_due(now: float, deadlines: tuple[tuple[float, bool], ...]) -> float:
    """Seconds from `now` to the earliest of the `(deadline, running)` pairs that run, never below
    0 (infinity when none runs): how long the main thread may wait for an event before something
    periodic (the watchdog ping, the stats file, the level meter) is due."""
    return max(0.0, min((at - now for at, running in deadlines if running), default=float("inf")))


class CallTimers:
    """Deadlines of the state machine's named timers (`StartTimer`/`CancelTimer`). Main thread only.

    The supervisor pops expired timers one at a time and hands each to the machine at once, so a
    timer cancelled or restarted by the previous expiry's actions is never reported stale.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._deadlines: dict[TimerName, float] = {}

    def start(self, name: TimerName, seconds: float) -> None:
        self._deadlines[name] = self.clock.monotonic() + seconds

    def cancel(self, name: TimerName) -> None:
        self._deadlines.pop(name, None)

    def pop_due(self) -> TimerName | None:
        """The earliest timer whose deadline has passed (removed), or None."""
        if not self._deadlines:
            return None
        name = min(self._deadlines, key=self._deadlines.__getitem__)
        if self._deadlines[name] > self.clock.monotonic():
            return None
        del self._deadlines[name]
        return name

    def due_in(self) -> float:
        """Seconds until the earliest timer is due (0 if one is; infinity with none running)."""
        if not self._deadlines:
            return float("inf")
        return max(0.0, min(self._deadlines.values()) - self.clock.monotonic())

    def remaining(self) -> dict[str, float]:
        """Seconds left per running timer (for `ctl status`)."""
        now = self.clock.monotonic()
        return {name: round(max(0.0, at - now), 1) for name, at in sorted(self._deadlines.items())}

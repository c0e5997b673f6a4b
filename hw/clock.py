"""Injectable clocks: real time for the service, a manual clock for deterministic tests.

Fake devices pace themselves with a clock so that a laptop run behaves like a real sound card,
while tests and benchmarks can run unpaced (as fast as the CPU allows) or step time by hand.
"""
from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time in seconds, and a way to wait until a moment. Any thread."""

    def monotonic(self) -> float: ...

    def sleep_until(self, deadline: float, interrupt: threading.Event | None = None) -> bool:
        """Wait until `deadline` (monotonic seconds). Return False if `interrupt` was set first."""
        ...


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
            if deadline > self._now:
                self._now = deadline
        return not (interrupt is not None and interrupt.is_set())

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

"""Exponential backoff: delay ceiling = min(cap, initial * 2^n); with full jitter (AWS architecture
blog's "full jitter") the delay is U(0, ceiling), without it the ceiling itself.

The session's reconnects use full jitter (many devices must not reconnect in step after an outage);
the audio device reopen loop does not (one device, nothing to spread: 0.5 s, 1 s, 2 s, ... 5 s)."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final

MAX_EXPONENT: Final = 60   # 2^60: beyond any cap over any sensible initial delay


@dataclass
class Backoff:
    """Retry delays for one thread (the connection thread's reconnects, an audio thread's device
    reopens). Not thread-safe (one owner)."""

    initial: float = 1.0
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0
    jitter: bool = True   # False: every delay is its ceiling (deterministic)

    def next_delay(self, retry_after: float | None = None) -> float:
        """The delay before the next attempt; a server's Retry-After is a floor (capped at 5 min)."""
        ceiling = self.ceiling()
        self.attempt += 1
        delay = self.rng.uniform(0, ceiling) if self.jitter else ceiling
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, 300.0))
        return delay

    def ceiling(self) -> float:
        """The upper bound of the next delay (for tests and logs)."""
        # The exponent is bounded: after ~1000 attempts (8 hours of 30 s retries, or a fraction of
        # a second on an unpaced test clock) 2.0 ** attempt would overflow a float.
        return min(self.cap, self.initial * (2.0 ** min(self.attempt, MAX_EXPONENT)))

    def reset(self) -> None:
        self.attempt = 0

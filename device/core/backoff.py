"""Full-jitter exponential backoff (AWS architecture blog's "full jitter"): sleep = U(0, min(cap, base*2^n))."""
from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Reconnect delays for the connection thread. Not thread-safe (one owner)."""

    initial: float = 1.0
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        """The delay before the next attempt; a server's Retry-After is a floor (capped at 5 min)."""
        ceiling = min(self.cap, self.initial * (2 ** self.attempt))
        self.attempt += 1
        delay = self.rng.uniform(0, ceiling)
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, 300.0))
        return delay

    def ceiling(self) -> float:
        """The upper bound of the next delay (for tests and logs)."""
        return min(self.cap, self.initial * (2 ** self.attempt))

    def reset(self) -> None:
        self.attempt = 0

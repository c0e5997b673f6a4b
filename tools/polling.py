"""The one bounded wait on a predicate, for conditions no event announces.

A counter in another thread's object or a stats file, a /proc value, a mock pin's history: things
that change without telling anyone. Everything that has an event (a log line, a simulator record,
a Condition) is waited on directly instead. Used by the tests and by the tools' service harness.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

DEFAULT_INTERVAL: Final = 0.001   # seconds between looks: a state another thread reaches in microseconds


def wait_until(predicate: Callable[[], object], timeout: float = 5.0,
               interval: float = DEFAULT_INTERVAL) -> bool:
    """True as soon as `predicate()` holds, False once `timeout` seconds have passed.

    Looks every `interval` seconds and once more at the deadline; bounded by the monotonic clock
    (not by a count of looks, which a loaded machine stretches), never a bare sleep.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()   # never set: wait() is a bounded pause
    while True:
        if predicate():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        pause.wait(min(interval, left))

"""Bounded waits for a state another thread reaches in microseconds (no sleeps to "let threads run")."""
from __future__ import annotations

import threading
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll `predicate` every millisecond until it holds (True) or `timeout` seconds pass (False)."""
    pause = threading.Event()
    for _ in range(int(timeout * 1000)):
        if predicate():
            return True
        pause.wait(0.001)
    return bool(predicate())

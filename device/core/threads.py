"""One base for every thread the service owns: start/stop/join, stop via an Event, never orphaned."""
from __future__ import annotations

import ctypes
import logging
import threading
import time
from abc import ABC, abstractmethod
from typing import Final

log = logging.getLogger(__name__)

JOIN_TIMEOUT: Final = 3.0
PR_SET_NAME: Final = 15          # prctl(2): name the calling thread (15 bytes + NUL)
OS_NAME_BYTES: Final = 15


def name_os_thread(name: str) -> bool:
    """Give the calling thread `name` in the kernel too (`top -H`, `/proc/PID/task/*/comm`,
    `make bench`'s per-thread table), as Python 3.14's `threading` does by itself; True if named.

    Hand-written with ctypes because Python before 3.14 has no call for it and a package (prctl)
    would be a native dependency for one syscall. Never raises: a name is only a convenience.
    """
    try:
        libc = ctypes.CDLL(None)   # the process's own symbols: libc's prctl, no library search
        return libc.prctl(PR_SET_NAME, name.encode()[:OS_NAME_BYTES], 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class OwnedThread(ABC):
    """A named thread owned by one object. Subclasses implement `run()` and poll `stopping`.

    Loops wait with `self.stopping.wait(t)` instead of sleeping, so `stop()` ends them at once.
    An exception escaping `run()` is logged with its traceback and recorded in `crashed`, never
    lost; the supervisor (the service's main loop) sees `alive` go False and acts.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.stopping = threading.Event()
        self.crashed: BaseException | None = None
        self.heartbeat = time.monotonic()  # last sign of progress (the watchdog reads it)
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """Record progress; loops call this once per iteration (and while waiting to retry)."""
        self.heartbeat = time.monotonic()

    @abstractmethod
    def run(self) -> None: ...

    def _main(self) -> None:
        name_os_thread(self.name)
        try:
            self.run()
        except BaseException as exc:
            self.crashed = exc
            log.exception("thread %s crashed", self.name)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"thread {self.name} already started")
        self.stopping.clear()
        self.heartbeat = time.monotonic()
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop; returns at once. Safe to call more than once or before start."""
        self.stopping.set()

    def join(self, timeout: float = JOIN_TIMEOUT) -> bool:
        """Wait for the thread to end; complain (and return False) about a stuck thread."""
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        if thread.is_alive():
            log.error("thread %s did not stop within %.1f s", self.name, timeout)
            return False
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

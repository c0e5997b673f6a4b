"""Where the service's start-up goes: named phases from the process's creation to READY=1.

`systemctl restart` to READY takes ~0.5 s on a laptop with fake hardware and ~10 s in an emulated
VM; on a Pi it is in between. Without a breakdown nobody can tell whether the interpreter, an
import (numpy, livekit's native library, pydantic), the sound card or the GPIO chip is the cost,
so the service logs one line at READY: "start-up took 2.31 s: python and imports 1.20, ...".
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Final

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_age(stat_file: Path = Path("/proc/self/stat")) -> float | None:
    """Seconds since this process was created (the kernel's record), or None where unknown."""
    try:
        # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        fields = stat_file.read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / CLOCK_TICKS   # field 22, starttime: ticks since boot
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, IndexError, ValueError, AttributeError):
        return None


class StartupClock:
    """Phases of the start-up, marked in order by the main thread (one owner, no locking).

    The first phase runs from the process's creation (the interpreter, `device.cli` and the
    settings' imports) to this object's creation; each `mark(name)` ends the phase `name`.
    """

    def __init__(self, now: float | None = None) -> None:
        self._start = time.monotonic() if now is None else now
        age = process_age()
        self.phases: list[tuple[str, float]] = [("python and imports", age)] if age is not None else []
        self._last = self._start

    def mark(self, name: str, now: float | None = None) -> None:
        current = time.monotonic() if now is None else now
        self.phases.append((name, current - self._last))
        self._last = current

    @property
    def total(self) -> float:
        return sum(seconds for _, seconds in self.phases)

    def summary(self) -> str:
        parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in self.phases)
        return f"start-up took {self.total:.2f} s: {parts}"

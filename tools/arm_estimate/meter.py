"""Reading insn_meter's output: instructions retired so far, at moments of the run."""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

MARK_BASE: Final = 424200   # insn_meter.c: close(-MARK_BASE - k) reports mark k


def mark(k: int) -> None:
    """In the guest: ask insn_meter to report its count now, labelled `k` (a no-op natively)."""
    try:
        os.close(-MARK_BASE - k)
    except OSError:
        pass


@dataclass
class MeterLog:
    """insn_meter's lines, parsed: the periodic ticks (CLOCK_MONOTONIC ns, count) and the marks."""

    ticks: list[tuple[int, int]] = field(default_factory=list)
    marks: dict[int, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> MeterLog:
        log = cls()
        for line in path.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["mark"] and len(parts) == 4:
                log.marks[int(parts[1])] = (int(parts[2]), int(parts[3]))
            elif parts[:1] in (["tick"], ["exit"]) and len(parts) == 3:
                log.ticks.append((int(parts[1]), int(parts[2])))
        log.ticks.sort()
        return log

    def between_marks(self, first: int, last: int) -> int:
        return self.marks[last][1] - self.marks[first][1]

    def at(self, t_ns: int) -> float:
        """Instructions retired by CLOCK_MONOTONIC time `t_ns`, interpolated between ticks."""
        times = [t for t, _ in self.ticks]
        i = bisect.bisect_left(times, t_ns)
        if i == 0 or i == len(times):
            raise ValueError("time outside the metered run")
        (t0, n0), (t1, n1) = self.ticks[i - 1], self.ticks[i]
        return n0 + (n1 - n0) * (t_ns - t0) / max(t1 - t0, 1)

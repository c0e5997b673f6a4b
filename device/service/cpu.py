"""Where the service's threads run: one CPU for the whole process (`ATOMS_CPU_AFFINITY`).

CPython runs one thread's Python at a time (the GIL). With the audio threads free to run on any
core, every hand-over of the GIL between them moves the interpreter's hot data from one core's
cache to another's and wakes a sleeping core: `make bench` measured the threaded pipeline at 1.8x
the CPU of the same work on one core (x86 host, unpaced). Pinning the process to one CPU gives
up nothing that the GIL did not already take (the native DSP calls are tens of microseconds),
and on a Raspberry Pi the last core is the one that serves no interrupts (all IRQs go to CPU 0
by default).

`auto` pins to the last CPU the process may use, when it may use more than one; `off` leaves the
scheduler free; a list such as `3` or `2,3` pins to those. Called once by the main thread at
start, before the service starts its threads (they inherit it); threads that already exist
(livekit's native runtime, started at import) are moved as well.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

SPEC_PATTERN: Final = re.compile(r"^(auto|off|\d+(\s*,\s*\d+)*)$")


def parse_affinity(spec: str) -> str | frozenset[int]:
    """`"auto"`, `"off"`, or the CPU numbers of a list like `"2,3"` (raises ValueError)."""
    text = spec.strip().lower()
    if not SPEC_PATTERN.match(text):
        raise ValueError("must be 'auto', 'off' or a comma-separated list of CPU numbers such as '3' or '2,3'")
    if text in ("auto", "off"):
        return text
    return frozenset(int(part) for part in text.split(","))


def choose_cpus(spec: str, allowed: frozenset[int]) -> frozenset[int] | None:
    """The CPUs to pin to for `spec` given the CPUs the process may use, or None for no pinning.

    Raises ValueError when a listed CPU is not among `allowed` (the message names them).
    """
    parsed = parse_affinity(spec)
    if parsed == "off":
        return None
    if parsed == "auto":
        return frozenset({max(allowed)}) if len(allowed) > 1 else None
    assert isinstance(parsed, frozenset)
    missing = parsed - allowed
    if missing:
        raise ValueError(f"CPU {', '.join(map(str, sorted(missing)))} is not available to this process "
                         f"(available: {', '.join(map(str, sorted(allowed)))})")
    return parsed


def pin_process(spec: str, task_dir: Path = Path("/proc/self/task")) -> frozenset[int] | None:
    """Apply `spec` to the calling thread and every existing thread of the process.

    Returns the CPUs pinned to, or None when nothing was pinned. Never raises: a CPU that is not
    available, a platform without affinity, or a sandbox that refuses the system call (a systemd
    `SystemCallFilter=` without `sched_setaffinity`) gets one log line and the service runs unpinned.
    """
    if not hasattr(os, "sched_setaffinity"):
        log.info("CPU affinity: not supported on this platform; not pinned")
        return None
    try:
        cpus = choose_cpus(spec, frozenset(os.sched_getaffinity(0)))
    except ValueError as exc:
        log.error("ATOMS_CPU_AFFINITY=%s: %s; running unpinned (fix: use 'auto', 'off' or an available CPU)",
                  spec, exc)
        return None
    except OSError as exc:
        log.error("CPU affinity: cannot read the allowed CPUs (%s); running unpinned", exc)
        return None
    if cpus is None:
        log.info("CPU affinity: not pinned (%s)", spec)
        return None
    try:
        os.sched_setaffinity(0, cpus)   # the calling thread; threads it starts from now on inherit it
    except OSError as exc:
        log.error("CPU affinity: pinning to CPU %s was refused (%s); running unpinned (fix: allow "
                  "sched_setaffinity in the unit's SystemCallFilter=, or set ATOMS_CPU_AFFINITY=off)",
                  ",".join(map(str, sorted(cpus))), exc)
        return None
    moved = 0
    try:
        tids = [int(entry.name) for entry in task_dir.iterdir() if entry.name.isdigit()]
    except OSError:
        tids = []
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
            moved += 1
        except OSError:   # a thread that ended meanwhile
            continue
    log.info("CPU affinity: pinned to CPU %s (%d threads)", ",".join(map(str, sorted(cpus))), moved)
    return cpus

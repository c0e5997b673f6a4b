"""Where the service's threads run: one CPU for the whole process, set by the unit, checked here.

CPython runs one thread's Python at a time (the GIL). With the audio threads free to run on any
core, every hand-over of the GIL between them moves the interpreter's hot data from one core's
cache to another's and wakes a sleeping core: `make bench` measured the threaded pipeline at 1.8x
the CPU of the same work on one core (x86 host, unpaced). Pinning the process to one CPU gives
up nothing that the GIL did not already take (the native DSP calls are tens of microseconds),
and on a Raspberry Pi the last core is the one that serves no interrupts (all IRQs go to CPU 0
by default).

The pinning itself is systemd's: `CPUAffinity=` in the unit's drop-in `cpu-affinity.conf`
(written by deploy/install.sh with the machine's last CPU), applied before the process starts,
so every thread inherits it and the service's syscall filter need not allow `sched_setaffinity`.
The process only checks what it got against `ATOMS_CPU_AFFINITY` (`auto`: one CPU when the
machine has several; `off`: no expectation; a list such as `3` or `2,3`: exactly those), logs
one line, and reports its CPUs in `ctl status`. Run by hand, `taskset -c N atoms-appliance run`
does what the unit does.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Final

log = logging.getLogger(__name__)

SPEC_PATTERN: Final = re.compile(r"^(auto|off|\d+(\s*,\s*\d+)*)$")
FIX: Final = ("set CPUAffinity= in the unit (deploy/install.sh writes atoms-appliance.service.d/"
              "cpu-affinity.conf; or systemctl edit atoms-appliance), or ATOMS_CPU_AFFINITY=off")


def parse_affinity(spec: str) -> str | frozenset[int]:
    """`"auto"`, `"off"`, or the CPU numbers of a list like `"2,3"` (raises ValueError)."""
    text = spec.strip().lower()
    if not SPEC_PATTERN.match(text):
        raise ValueError("must be 'auto', 'off' or a comma-separated list of CPU numbers such as '3' or '2,3'")
    if text in ("auto", "off"):
        return text
    return frozenset(int(part) for part in text.split(","))


def choose_cpus(spec: str, allowed: frozenset[int]) -> frozenset[int] | None:
    """The CPUs `spec` asks for given the CPUs of the machine, or None for no pinning.

    `auto` is the last CPU when there are several: what the installer's `CPUAffinity=` drop-in
    sets (the bench uses this to run the service as the unit would). Raises ValueError when a
    listed CPU is not among `allowed` (the message names them).
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


@dataclass(frozen=True)
class AffinityCheck:
    """What the process got (`cpus`) against what `ATOMS_CPU_AFFINITY` expects; `problem` is None
    when they agree (or nothing is expected). A value object, made once by the main thread."""

    cpus: frozenset[int]
    machine_cpus: int
    problem: str | None


def judge_affinity(spec: str, cpus: frozenset[int], machine_cpus: int) -> AffinityCheck:
    """Compare the CPUs the process may run on with `spec` (pure: no system calls)."""
    parsed = parse_affinity(spec)
    problem = None
    if parsed == "auto" and machine_cpus > 1 and len(cpus) > 1:
        problem = f"not pinned: runs on CPUs {_names(cpus)} of {machine_cpus}"
    elif isinstance(parsed, frozenset) and cpus != parsed:
        problem = f"ATOMS_CPU_AFFINITY={','.join(map(str, sorted(parsed)))} but the process runs on CPU {_names(cpus)}"
    return AffinityCheck(cpus=cpus, machine_cpus=machine_cpus, problem=problem)


def check_affinity(spec: str) -> AffinityCheck | None:
    """Read the process's CPUs, judge them against `spec`, log one line; never raises, never pins.

    None where the platform has no affinity (macOS) or it cannot be read. A mismatch is a warning
    under systemd (the unit should have pinned us: `INVOCATION_ID` is set) and an info line when
    run by hand, where nothing pins by default.
    """
    if not hasattr(os, "sched_getaffinity"):
        log.info("CPU affinity: not supported on this platform")
        return None
    try:
        cpus = frozenset(os.sched_getaffinity(0))
    except OSError as exc:
        log.error("CPU affinity: cannot read the allowed CPUs (%s)", exc)
        return None
    result = judge_affinity(spec, cpus, os.cpu_count() or len(cpus))
    if result.problem is None:
        log.info("CPU affinity: CPU %s (ATOMS_CPU_AFFINITY=%s)", _names(cpus), spec)
    elif "INVOCATION_ID" in os.environ:
        log.warning("CPU affinity: %s; fix: %s", result.problem, FIX)
    else:
        log.info("CPU affinity: %s (run by hand: taskset -c N pins it as the unit does)", result.problem)
    return result


def _names(cpus: frozenset[int]) -> str:
    return ",".join(map(str, sorted(cpus)))

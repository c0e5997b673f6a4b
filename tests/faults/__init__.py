"""The fault-injection suite's own helpers; the service it drives is `tools.fault_service.FaultService`.

`FaultService` (shared with the soak run, `tools.soak`) runs the real service as a child process
against the local agent simulator and adds what fault tests measure: the arrival time of every
log line (recovery times), the child's resources from /proc and its live counters from the stats
file. Conditions that no event announces are waited on with `tools.polling.wait_until`, looking
every `tools.fault_service.POLL_INTERVAL` at the child.

Two forms: the short one (the default, run by `make test`) and the full one (`ATOMS_FAULTS_FULL=1`,
run by `make test-faults`): more repetitions, longer faults. `pick(short, full)` chooses.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Final, TypeVar

T = TypeVar("T")

FULL: Final = os.environ.get("ATOMS_FAULTS_FULL", "") not in ("", "0", "false", "no")
# Backoff used by the fault tests (the harness default is 0.2 s doubling to 2 s). NO_RETRY_CAP is
# the cap of the auth-fault tests: a retry that should (or should not) come, comes at once.
BACKOFF_INITIAL: Final = 0.2
BACKOFF_MAX: Final = 2.0
NO_RETRY_CAP: Final = 0.3


def pick(short: T, full: T) -> T:
    """The short-form value, or the full-form one under `ATOMS_FAULTS_FULL=1`."""
    return full if FULL else short


def free_port() -> int:
    """A TCP port on 127.0.0.1 where nothing listens right now (bound, read, closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def unique_tmp(base: Path, name: str) -> Path:
    """A fresh directory under `base` (one per service, so sockets and state never collide)."""
    n = 0
    while (base / f"{name}{n}").exists():
        n += 1
    path = base / f"{name}{n}"
    path.mkdir(parents=True)
    return path

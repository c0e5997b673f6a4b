"""`ServiceProcess` plus what the fault suite (tests/faults) and the soak run (`tools.soak`) measure.

The real service runs as a child process against the local agent simulator; `FaultService` adds
the arrival time of every log line (to measure recovery times), the child's resources from /proc
(RSS, peak RSS, threads, file descriptors, TCP connections) and its live counters from the stats
file, waited on with the one bounded poll (`tools.polling.wait_until`, every `POLL_INTERVAL`).
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from tools.polling import wait_until
from tools.service_process import ServiceProcess

POLL_INTERVAL: Final = 0.05   # seconds between looks at the child's stats file, /proc or status


def proc_status_kb(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def tcp_connections(pid: int, remote_port: int) -> int:
    """How many of the process's open file descriptors are TCP sockets to `remote_port`.

    Matches the socket inodes of /proc/net/tcp{,6} (this network namespace) against the targets
    of /proc/PID/fd: precise where a bare descriptor count is not (the stats writer and control
    clients open descriptors for a moment).
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == remote_port:
                inodes.add(fields[9])
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed while we looked
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            count += 1
    return count


class FaultService(ServiceProcess):
    """`ServiceProcess` plus the arrival time of each output line and the child's resources.

    Arrival times are Unix time (`time.time()`), the clock the simulator stamps its events with,
    so "fault end (a simulator event) -> recovered (a service log line)" is one subtraction.
    """

    def __init__(self, tmp: Path, url: str, **settings: Any) -> None:
        settings.setdefault("stats_interval", 0.25)  # fresher counters than the harness's 1 s
        super().__init__(tmp, url, **settings)
        self.arrivals: list[float] = []

    def _read(self) -> None:
        # The harness's reader, plus the arrival time of each line (same lock, same order).
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self.arrivals.append(time.time())
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<eof>")
            self.arrivals.append(time.time())
            self._cond.notify_all()

    # -- log lines ------------------------------------------------------------------------------
    def wait_line(self, pattern: str, timeout: float, count: int = 1, after: float = 0.0) -> float | None:
        """Arrival time of the `count`-th line matching `pattern` that arrived after `after`
        (Unix time), waiting up to `timeout` s; None on timeout or when the process ended."""
        regex = re.compile(pattern)
        found: list[float] = []

        def ready() -> bool:
            found[:] = [t for line, t in zip(self.lines, self.arrivals) if t > after and regex.search(line)]
            return len(found) >= count or "<eof>" in self.lines

        with self._cond:
            self._cond.wait_for(ready, timeout)
        return found[count - 1] if len(found) >= count else None

    def count_after(self, pattern: str, after: float) -> int:
        regex = re.compile(pattern)
        with self._cond:
            return sum(1 for line, t in zip(self.lines, self.arrivals) if t > after and regex.search(line))

    # -- the child process ----------------------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_mb(self) -> float:
        return proc_status_kb(self.pid, "VmRSS") / 1024

    def peak_rss_mb(self) -> float:
        return proc_status_kb(self.pid, "VmHWM") / 1024

    def fds(self) -> int:
        return fd_count(self.pid)

    def threads(self) -> int:
        return thread_count(self.pid)

    def connections_to(self, port: int) -> int:
        return tcp_connections(self.pid, port)

    def stats(self) -> dict[str, Any]:
        """The last stats snapshot (written atomically every `stats_interval`); {} before the first."""
        try:
            data: dict[str, Any] = json.loads(self.stats_file.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def counters(self) -> dict[str, Any]:
        """Live counters. From the stats file, not `ctl status`: the status snapshot is only
        republished on state changes, so its counters are stale during a steady call."""
        counters: dict[str, Any] = self.stats().get("counters", {})
        return counters

    def wait_counters(self, predicate: Callable[[dict[str, Any]], bool],
                      timeout: float) -> dict[str, Any] | None:
        """The first counters snapshot satisfying `predicate`, or None after `timeout` s."""
        seen: list[dict[str, Any]] = []

        def check() -> bool:
            counters = self.counters()
            if counters and predicate(counters):
                seen.append(counters)
                return True
            return False

        return seen[0] if wait_until(check, timeout, interval=POLL_INTERVAL) else None

    def ctl_lines(self, *cmds: str) -> list[dict[str, Any]]:
        """Several commands in one write on one connection (back to back, as fast as it gets)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(3.0)
            sock.connect(str(self.socket))
            sock.sendall(b"".join(json.dumps({"cmd": c}).encode() + b"\n" for c in cmds))
            data = b""
            while data.count(b"\n") < len(cmds):
                part = sock.recv(65536)
                if not part:
                    break
                data += part
        return [json.loads(line) for line in data.splitlines()]

    def timed_ctl(self, cmd: str) -> tuple[dict[str, Any], float]:
        """A control command and how long the service took to answer it (seconds)."""
        start = time.monotonic()
        reply = self.ctl(cmd)
        return reply, time.monotonic() - start

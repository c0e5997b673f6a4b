"""A crashed or stuck audio thread is a hardware fault a person can see (issue 13, item 5).

The audio threads handle a *device* that vanishes themselves (reopen with backoff, HardwareLost /
HardwareBack). What they cannot handle is their own death (an exception escaping `run`: a driver
bug, a bad frame) or a read/write that never returns. Before this, both left the service "ready"
with a normal LED until systemd's watchdog (only under systemd) noticed.

`AudioThreadWatch.check()` runs on the main thread every tick and, per thread:
- dead (crashed or ended while the service runs): one log line, `HardwareLost(device, "... thread
  crashed: ...")` (the state machine blinks the LED fast and refuses new calls without a mic),
  then a restart with backoff (REOPEN-like: 0.5 s doubling to 10 s); `HardwareBack` once the new
  thread makes audio progress (frames captured / periods played), not merely once it runs, so a
  restarted thread whose device is still missing does not clear the fault;
- stuck (alive, no heartbeat for `stale_after` s): one log line and `HardwareLost(device, "...
  stuck")`; a thread cannot be killed, so it is not restarted: `HardwareBack` when it beats
  again. (The systemd watchdog ping is withheld meanwhile, so under systemd the process restarts.)
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from device.core.events import Event, HardwareBack, HardwareLost
from device.core.threads import OwnedThread

log = logging.getLogger(__name__)

RESTART_INITIAL: Final = 0.5
RESTART_MAX: Final = 10.0


@dataclass
class WatchedThread:
    """How the watch sees one audio thread: the current thread object (it changes on restart), a
    restart, and a progress count that only grows while audio really moves."""

    device: str                              # the HardwareLost device name ("capture", "playback")
    current: Callable[[], OwnedThread]
    restart: Callable[[], None]
    progress: Callable[[], int]


@dataclass
class _Health:
    fault: str | None = None                 # "crashed" | "stuck" while reported lost
    restart_at: float | None = None
    delay: float | None = None               # the next restart delay (None: restart_initial)
    progress_at_restart: int = 0
    restarts: int = 0


class AudioThreadWatch:
    """Checks the audio threads (main thread only; `check` once per tick)."""

    def __init__(self, threads: list[WatchedThread], post: Callable[[Event], None], stale_after: float,
                 now: Callable[[], float] = time.monotonic, restart_initial: float = RESTART_INITIAL,
                 restart_max: float = RESTART_MAX) -> None:
        self.threads = threads
        self.post = post
        self.stale_after = stale_after
        self.now = now
        self.restart_initial = restart_initial
        self.restart_max = restart_max
        self._health = {t.device: _Health() for t in threads}

    @property
    def restarts(self) -> dict[str, int]:
        return {name: h.restarts for name, h in self._health.items()}

    def check(self) -> None:
        now = self.now()
        for watched in self.threads:
            self._check(watched, self._health[watched.device], now)

    def _check(self, watched: WatchedThread, health: _Health, now: float) -> None:
        thread = watched.current()
        name = watched.device
        if health.fault == "crashed":
            if health.restart_at is not None:
                if now >= health.restart_at:
                    health.restart_at = None
                    health.restarts += 1
                    log.warning("restarting the %s thread (restart %d)", name, health.restarts)
                    watched.restart()
                    health.progress_at_restart = watched.progress()   # the new thread's count
                return
            if not thread.alive:   # the restarted one died too: try again, later
                self._schedule(health, now, name, thread)
            elif watched.progress() > health.progress_at_restart:
                log.info("the %s thread works again", name)
                health.fault = None
                health.delay = None
                self.post(HardwareBack(name))
            return
        if not thread.alive:
            reason = f"{name} thread crashed: {_describe(thread.crashed)}"
            log.error("%s; the %s is lost until it is restarted", reason, name)
            health.fault = "crashed"
            self.post(HardwareLost(name, reason))
            self._schedule(health, now, name, thread)
            return
        stale = now - thread.heartbeat
        if health.fault == "stuck":
            if stale < self.stale_after:
                log.info("the %s thread makes progress again", name)
                health.fault = None
                self.post(HardwareBack(name))
        elif stale >= self.stale_after:
            log.error("the %s thread is stuck (no progress for %.1f s)", name, stale)
            health.fault = "stuck"
            self.post(HardwareLost(name, f"{name} thread stuck for {stale:.0f} s"))

    def _schedule(self, health: _Health, now: float, name: str, thread: OwnedThread) -> None:
        delay = self.restart_initial if health.delay is None else health.delay
        health.restart_at = now + delay
        if health.restarts:
            log.error("the %s thread died again (%s); next restart in %.1f s", name,
                      _describe(thread.crashed), delay)
        health.delay = min(delay * 2, self.restart_max)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "it ended"
    return f"{type(exc).__name__}: {exc}"[:200]

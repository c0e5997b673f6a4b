"""Opening an audio device that may be missing: retry with backoff until it opens or the thread stops.

Used by the capture and playback threads, each for its own device. A device that is missing at
boot (a USB mic not enumerated yet) or vanishes in a call is reported once as `HardwareLost`, and
as `HardwareBack` when it opens again; the call goes on meanwhile.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, TypeVar

from device.core.backoff import Backoff
from device.core.events import Event, HardwareBack, HardwareLost
from device.core.threads import OwnedThread
from hw.clock import Clock
from hw.errors import DeviceUnavailable

log = logging.getLogger(__name__)

REOPEN_INITIAL: Final = 0.5
REOPEN_MAX: Final = 5.0

Device = TypeVar("Device")


def reopen_backoff() -> Backoff:
    """0.5 s doubling to 5 s, without jitter: one device, no crowd of clients to spread out."""
    return Backoff(initial=REOPEN_INITIAL, cap=REOPEN_MAX, jitter=False)


def open_with_retry(thread: OwnedThread, what: str, open_device: Callable[[], Device],
                    on_event: Callable[[Event], None], clock: Clock, lost: bool = False) -> Device | None:
    """The opened device, retrying `open_device` with `reopen_backoff` delays on `clock`; None if
    `thread` was asked to stop first. Called on `thread` itself.

    Reports `HardwareLost(what)` once when the first attempt fails (unless the caller already did:
    `lost=True`) and `HardwareBack(what)` when it opens after a loss.
    """
    backoff = reopen_backoff()
    while not thread.stopping.is_set():
        thread.beat()  # waiting for a device is not being stuck
        try:
            device = open_device()
        except DeviceUnavailable as exc:
            if not lost:
                log.error("%s device unavailable (%s); retrying every %.1f-%.0f s",
                          what, exc.reason, REOPEN_INITIAL, REOPEN_MAX)
                on_event(HardwareLost(what, exc.reason))
                lost = True
            clock.sleep_until(clock.monotonic() + backoff.next_delay(), thread.stopping)
            continue
        if lost:
            log.info("%s device is back", what)
            on_event(HardwareBack(what))
        return device
    return None

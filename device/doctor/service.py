"""`doctor` while the service runs: its sound devices and GPIO lines are the service's, so doctor
asks the service about them over the control socket instead of reporting them busy.

Two `status` snapshots a moment apart tell whether the microphone is being read and the speaker
fed (the frame counters move) and whether a device is lost or the GPIO could not be opened. Runs on
doctor's main thread; the socket client is injectable for tests.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from device.doctor.core import CheckResult
from device.service.control import send_command

StatusReader = Callable[[Path], "dict[str, Any] | None"]
PROGRESS_WAIT: Final = 0.6   # seconds between the two snapshots: 30-60 periods of audio
DEVICE_FIX: Final = ("check the card and its cable (`atoms-appliance devices` lists what ALSA sees); the "
                     "service reopens it by itself once it is back")


def read_status(socket_path: Path, timeout: float = 2.0) -> dict[str, Any] | None:
    """The running service's status, or None when no service answers on `socket_path`."""
    try:
        reply = send_command(socket_path, "status", timeout=timeout)
    except (OSError, ValueError):
        return None
    status = reply.get("status") if reply.get("ok") else None
    return status if isinstance(status, dict) else None


def service_snapshots(socket_path: Path, read: StatusReader = read_status,
                      sleep: Callable[[float], None] = time.sleep) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Two status snapshots PROGRESS_WAIT apart, or None when the service is not running."""
    first = read(socket_path)
    if first is None:
        return None
    sleep(PROGRESS_WAIT)
    second = read(socket_path)
    return (first, second) if second is not None else None


def check_device_in_service(name: str, direction: str, first: dict[str, Any],
                            second: dict[str, Any]) -> CheckResult:
    """The microphone ("capture") or speaker ("playback") as the running service sees it."""
    devices = second.get("devices", {})
    device = devices.get("microphone" if direction == "capture" else "speaker", "?")
    counter = "frames_captured" if direction == "capture" else "periods_played"
    moved = second.get("counters", {}).get(counter, 0) - first.get("counters", {}).get(counter, 0)
    where = f"{device!r}, held by the running service (pid {second.get('pid', '?')})"
    if direction in second.get("hardware_faults", []):
        return CheckResult.fail(name, f"{where}: lost ({second.get('last_error') or 'no detail'})", DEVICE_FIX)
    if moved <= 0:
        return CheckResult.warn(name, f"{where}, but its {counter} did not move in {PROGRESS_WAIT:g} s",
                                "look at `journalctl -u atoms-appliance` for xruns or a stuck audio thread")
    verb = "capturing" if direction == "capture" else "playing"
    return CheckResult.passed(name, f"{where}: {verb} ({moved} in {PROGRESS_WAIT:g} s)", **{counter: moved})


def check_gpio_in_service(status: dict[str, Any], fix_for: Callable[[str], str]) -> CheckResult:
    """The GPIO lines as the running service holds them (or the fault that kept it from them)."""
    gpio = status.get("devices", {}).get("gpio", {})
    if gpio.get("backend") == "none":
        return CheckResult.passed("gpio", "skipped: gpio_backend = none (no buttons or LEDs)")
    if gpio.get("fault"):
        return CheckResult.fail("gpio", f"the running service could not open the GPIO: {gpio['fault']}",
                                fix_for(str(gpio["fault"])))
    pins = ", ".join(f"{part} GPIO{pin}" for part, pin in gpio.get("pins", {}).items()) or "no pins configured"
    return CheckResult.passed("gpio", f"held by the running service (pid {status.get('pid', '?')}) on "
                              f"{gpio.get('factory')}: {pins}", pins=gpio.get("pins", {}))

"""One root exception for hardware problems, with subclasses that also inherit the built-in."""
from __future__ import annotations


class HardwareError(Exception):
    """Root of every error raised by `hw` backends."""


class DeviceUnavailable(HardwareError, OSError):
    """A device is missing, busy or was unplugged. The caller reopens it with backoff."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"{device}: {reason}")
        self.device = device
        self.reason = reason


class UnknownBackend(HardwareError, ValueError):
    """A backend name that no implementation is registered under."""

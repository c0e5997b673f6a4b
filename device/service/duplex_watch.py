"""Turns the capture DSP's adaptive half-duplex mode into `duplex` events when it changes."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from device.audio.dsp import CaptureDsp
from device.service.event_schema import DuplexEvent


class DuplexWatch:
    """Polled by the main thread each tick: one `DuplexEvent` per switch of `dsp.duplex_mode`
    (the capture thread swaps that str; reading it is one reference read)."""

    def __init__(self, dsp: CaptureDsp, publish: Callable[[Any], None]) -> None:
        self._dsp = dsp
        self._publish = publish
        self.mode = "full"
        self.events = 0

    def poll(self) -> None:
        mode = self._dsp.duplex_mode
        if mode != self.mode:
            self.mode = mode
            self.events += 1
            residual = self._dsp.residual_echo_db
            kind: Literal["full", "half"] = "half" if mode == "half" else "full"
            self._publish(DuplexEvent(mode=kind, residual_echo_db=round(residual, 1) if residual is not None else None))

    def status(self) -> dict[str, Any]:
        """The `echo` part of `ctl status`."""
        residual = self._dsp.residual_echo_db
        return {"duplex": self._dsp.duplex_mode,
                "residual_echo_db": round(residual, 1) if residual is not None else None,
                "residual_attenuation_db": round(self._dsp.residual_attenuation_db, 1)}

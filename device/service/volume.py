"""The speaker level: one owner for the software gain, the optional hardware mixer, persistence
and the confirmation tone.

Without a hardware mixer the level is the playback thread's software gain (before the echo
canceller's reference tap: the canceller sees exactly what is played, and nothing re-converges).
With one (`volume_mixer`), the mixer takes the level and the software gain stays at unity, so no
bit depth is lost at low volume; the cost is that every step changes the echo path after the
reference tap and the canceller re-learns it (measured in tests/dsp/test_volume_echo.py: no
100 ms window under 25 dB of echo reduction after a +-6 or +-12 dB step on the simulated room).
A mixer that fails falls back to the software gain for that change, logged once and counted.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from device.audio.volume import SoftwareGain, clamp_level, level_db, level_gain
from device.core.events import VolumeCommand
from hw.audio import VolumeControl
from hw.clock import Clock
from hw.errors import DeviceUnavailable

log = logging.getLogger(__name__)

TONE_INTERVAL: Final = 0.15  # an encoder spun fast confirms once per this, not once per detent


class VolumeController:
    """The speaker level, 0-100 %. Main thread only (every change arrives as an event there).

    `save(level)` persists it; `confirm()` plays the short tone (through the same gain, so it is
    heard at the new level). `mixer_errors` counts failed hardware steps.
    """

    def __init__(self, level: int, floor_db: float, step: int, gain: SoftwareGain,
                 mixer: VolumeControl | None, save: Callable[[int], None],
                 confirm: Callable[[], None] | None, clock: Clock) -> None:
        self.floor_db = floor_db
        self.step_size = step
        self.gain = gain
        self.mixer = mixer
        self.save = save
        self.confirm = confirm
        self.clock = clock
        self.mixer_errors = 0
        self.changes = 0
        self._last_tone = -TONE_INTERVAL
        self.level = clamp_level(level)
        self._apply()

    def _apply(self) -> None:
        if self.mixer is not None:
            try:
                self.mixer.set_db(level_db(self.level, self.floor_db))
                self.gain.gain = 1.0
                return
            except DeviceUnavailable as exc:
                self.mixer_errors += 1
                if self.mixer_errors == 1:
                    log.error("hardware volume failed (%s); using the software gain instead", exc)
        self.gain.gain = level_gain(self.level, self.floor_db)

    def set(self, level: int) -> int:
        """Set the level (clamped to 0-100); persist, confirm and return it."""
        level = clamp_level(level)
        if level == self.level:
            return level
        self.level = level
        self.changes += 1
        self._apply()
        log.info("volume %d %%", level)
        self.save(level)
        now = self.clock.monotonic()
        if self.confirm is not None and level > 0 and now - self._last_tone >= TONE_INTERVAL:
            self._last_tone = now
            self.confirm()
        return level

    def step(self, steps: int) -> int:
        """Move by `steps` volume steps (negative: down)."""
        return self.set(self.level + steps * self.step_size)

    def close(self) -> None:
        if self.mixer is not None:
            self.mixer.close()


def volume_reply(spec: str | None, current: int) -> tuple[dict[str, Any], VolumeCommand | None]:
    """A `ctl volume` request (`spec`: None, "N", "+N" or "-N") at level `current`: the reply,
    and the command for the main thread (None when nothing changes or the request is bad)."""
    if spec is None:
        return {"ok": True, "cmd": "volume", "volume": current}, None
    text = spec.strip()
    try:
        number = int(text)
    except ValueError:
        return {"ok": False, "error": f"volume: {spec[:20]!r} is not N, +N or -N (N a whole percent)"}, None
    relative = text[:1] in "+-"
    if not relative and not 0 <= number <= 100:
        return {"ok": False, "error": "volume: the level is 0-100 (or +N/-N to change it)"}, None
    target = max(0, min(100, current + number if relative else number))
    command = VolumeCommand(delta=number) if relative else VolumeCommand(level=number)
    return {"ok": True, "cmd": "volume", "volume": target}, command

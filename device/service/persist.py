"""Persistent device state under the state directory (mute and volume survive restarts and power cuts)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from device.service.outage import Outage
from device.service.stats import write_json_atomic

log = logging.getLogger(__name__)


class PersistentState:
    """Reads and writes `state.json` in the state directory. Main thread only.

    Each save rewrites the whole file from what is known (`muted`, `volume`), durably (fsync of
    the file and its folder), so saving one field never drops the other. Privacy first: a file
    whose `muted` is not exactly what we write (true or false) means we cannot prove the user had
    unmuted, so the device starts muted and says why. A mute change that could not be saved is
    kept in `unsaved` (shown in `ctl status`): it will not survive a restart. Failing saves are
    logged once per outage (`saves`).
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "state.json"
        self._known: dict[str, Any] = {}
        self.saves = Outage(log, f"saving the device state to {self.path}")
        self.unsaved: bool | None = None   # the mute value that is not on disk, if any

    def _read(self) -> Any:
        return json.loads(self.path.read_text(encoding="utf-8"))

    def load_muted(self) -> bool:
        try:
            data = self._read()
        except FileNotFoundError:
            self._known["muted"] = False
            return False
        except (OSError, ValueError) as exc:   # UnicodeDecodeError is a ValueError
            # (and a later volume save writes "muted" down instead of dropping it)
            log.error("cannot read %s (%s); starting muted", self.path, exc)
            self._known["muted"] = True
            return True
        muted = data.get("muted") if isinstance(data, dict) else None
        if not isinstance(muted, bool):
            log.error("%s does not hold a mute state we wrote (%.80r); starting muted", self.path, data)
            muted = True
        self._known["muted"] = muted
        return muted

    def load_volume(self) -> int | None:
        """The saved speaker level (0-100), or None when none was saved or it is unreadable."""
        try:
            data = self._read()
        except (OSError, ValueError):
            return None
        value = data.get("volume") if isinstance(data, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100:
            self._known["volume"] = value
            return value
        return None

    def _save(self, **fields: Any) -> bool:
        self._known.update(fields)
        try:
            write_json_atomic(self.path, dict(self._known), durable=True)
        except OSError as exc:
            muted = self._known.get("muted")
            self.unsaved = muted if isinstance(muted, bool) else None
            self.saves.failed(f"{exc}; mute is {'on' if muted else 'off'} now but will not survive a restart")
            return False
        self.unsaved = None
        self.saves.ok()
        return True

    def save_muted(self, muted: bool) -> bool:
        """Write the mute state durably; False (logged once per outage, kept in `unsaved`) on failure."""
        return self._save(muted=muted)

    def save_volume(self, level: int) -> None:
        self._save(volume=level)   # a failure is logged (once per outage) and counted by `saves`

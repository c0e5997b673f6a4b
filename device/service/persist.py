"""Persistent device state under the state directory (mute and volume survive restarts)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from device.service.stats import write_json_atomic

log = logging.getLogger(__name__)


class PersistentState:
    """Reads and writes `state.json` in the state directory. Main thread only.

    Each save rewrites the whole file from what is known (`muted`, `volume`), so saving one
    field never drops the other.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "state.json"
        self._known: dict[str, Any] = {}

    def _read(self) -> dict[str, Any]:
        data = json.loads(self.path.read_text())
        return data if isinstance(data, dict) else {}

    def load_muted(self) -> bool:
        try:
            data = self._read()
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            # Privacy first: unreadable state means we cannot prove it was unmuted (and a later
            # volume save writes that down instead of dropping it).
            log.error("cannot read %s (%s); starting muted", self.path, exc)
            self._known["muted"] = True
            return True
        muted = bool(data.get("muted", False))
        self._known["muted"] = muted
        return muted

    def load_volume(self) -> int | None:
        """The saved speaker level (0-100), or None when none was saved or it is unreadable."""
        try:
            value = self._read().get("volume")
        except (OSError, ValueError):
            return None
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100:
            self._known["volume"] = value
            return value
        return None

    def _save(self, what: str, **fields: Any) -> None:
        self._known.update(fields)
        try:
            write_json_atomic(self.path, dict(self._known))
        except OSError as exc:
            log.error("cannot save %s to %s: %s", what, self.path, exc)

    def save_muted(self, muted: bool) -> None:
        self._save("mute state", muted=muted)

    def save_volume(self, level: int) -> None:
        self._save("volume", volume=level)

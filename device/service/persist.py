"""Persistent device state under the state directory (mute survives restarts)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from device.service.stats import write_json_atomic

log = logging.getLogger(__name__)


class PersistentState:
    """Reads and writes `state.json` in the state directory. Main thread only."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "state.json"

    def load_muted(self) -> bool:
        try:
            data = json.loads(self.path.read_text())
            return bool(data.get("muted", False)) if isinstance(data, dict) else False
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            # Privacy first: unreadable state means we cannot prove it was unmuted.
            log.error("cannot read %s (%s); starting muted", self.path, exc)
            return True

    def save_muted(self, muted: bool) -> None:
        try:
            # Durable: a mute pressed just before a power cut must still hold after the boot.
            write_json_atomic(self.path, {"muted": muted}, durable=True)
        except OSError as exc:
            log.error("cannot save mute state to %s: %s", self.path, exc)

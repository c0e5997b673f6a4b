"""Call records under the state directory: the last call id (`conversation last`) and, when
`conversation_keep` > 0, each finished call's conversation record, fetched after the call.

Layout: `last_call.json` ({"call_id", "session_id"}), `conversations/<call id>.json`. The folder
is bounded by count (`conversation_keep`, oldest removed first) and each record by size
(`conversation_max_bytes`: a larger one is not written, logged once and counted), so a kiosk
taking calls all day cannot fill its SD card.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import re
import tempfile
from pathlib import Path
from typing import Any, Final

from device.core.threads import OwnedThread
from device.service.stats import write_json_atomic
from device.session.conversation import ConversationError, ConversationSource, fetch_conversation

log = logging.getLogger(__name__)

LAST_CALL_FILE: Final = "last_call.json"
RECORDS_DIR: Final = "conversations"
# The record may be written a little after the call ends: try again after these delays.
RETRY_DELAYS: Final = (2.0, 5.0, 15.0)
MAX_PENDING: Final = 16
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]")


def load_last_call_id(state_dir: Path) -> str | None:
    """The last call id the service saw (any thread; None if there was none or it is unreadable)."""
    try:
        data = json.loads((state_dir / LAST_CALL_FILE).read_text())
    except (OSError, ValueError):
        return None
    call_id = data.get("call_id") if isinstance(data, dict) else None
    return call_id if isinstance(call_id, str) and call_id else None


def save_last_call_id(state_dir: Path, call_id: str, session_id: str) -> None:
    """Main thread, at each session.created (a crash later still leaves `last` right)."""
    try:
        write_json_atomic(state_dir / LAST_CALL_FILE, {"call_id": call_id, "session_id": session_id})
    except OSError as exc:
        log.error("cannot save the last call id to %s: %s", state_dir, exc)


def _write_private(path: Path, text: str) -> None:
    """Write atomically with mode 0600 from the start: a transcript is what people said."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class RecordStore:
    """`conversations/` under the state directory, bounded by count and size. One writer thread."""

    def __init__(self, state_dir: Path, keep: int, max_bytes: int) -> None:
        self.directory = state_dir / RECORDS_DIR
        self.keep = keep
        self.max_bytes = max_bytes
        self.saved = 0
        self.oversize = 0
        self.removed = 0

    def path_for(self, call_id: str) -> Path:
        return self.directory / (_UNSAFE.sub("_", call_id)[:120] + ".json")

    def store(self, call_id: str, record: dict[str, Any]) -> bool:
        data = json.dumps(record, indent=1, sort_keys=True)
        if len(data.encode()) > self.max_bytes:
            self.oversize += 1
            log.warning("conversation record of %s is %d bytes, over conversation_max_bytes (%d): not saved",
                        call_id, len(data.encode()), self.max_bytes)
            return False
        _write_private(self.path_for(call_id), data)
        self.saved += 1
        self._prune()
        return True

    def _prune(self) -> None:
        files = sorted(self.directory.glob("*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        for old in files[: max(0, len(files) - self.keep)]:
            try:
                old.unlink()
                self.removed += 1
            except OSError as exc:
                log.warning("cannot remove old conversation record %s: %s", old, exc)


class ConversationSaver(OwnedThread):
    """Fetches each finished call's record and stores it (its own thread: network I/O never runs
    on the main thread). `request` is called by the main thread; a full queue drops and counts."""

    def __init__(self, source: ConversationSource, store: RecordStore) -> None:
        super().__init__("conversation-saver")
        self.source = source
        self.store = store
        self.failed = 0
        self.dropped = 0
        self._queue: queue.Queue[str] = queue.Queue(MAX_PENDING)

    def request(self, call_id: str) -> None:
        try:
            self._queue.put_nowait(call_id)
        except queue.Full:
            self.dropped += 1
            log.warning("conversation saver is behind: not saving %s", call_id)

    def run(self) -> None:
        while not self.stopping.is_set():
            self.beat()
            try:
                call_id = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self._save(call_id)

    def _save(self, call_id: str) -> None:
        error: ConversationError | None = None
        for delay in (0.0, *RETRY_DELAYS):
            if delay and self.stopping.wait(delay):
                return
            try:
                record = fetch_conversation(self.source, call_id)
            except ConversationError as exc:
                error = exc
                continue
            try:
                if self.store.store(call_id, record):
                    log.info("conversation of %s saved to %s", call_id, self.store.path_for(call_id))
            except OSError as exc:
                self.failed += 1
                log.error("cannot save the conversation of %s: %s", call_id, exc)
            return
        self.failed += 1
        log.error("cannot fetch the conversation of %s: %s", call_id, error)

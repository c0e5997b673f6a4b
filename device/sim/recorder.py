"""What the simulator saw, for tests: counters, a timestamped event log, and waits on conditions.

Written by the simulator's event-loop thread, read from any thread. Every write notifies one
Condition, so a test waits for "the second session was created" with a bounded `wait_for`
instead of sleeping.
"""
from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import IO, Any

log = logging.getLogger(__name__)


class Recorder:
    """Thread-safe record of connections, messages, audio and events; optional JSON-lines mirror.

    The event loop thread writes; any thread reads (snapshots are copies) or waits. The API key is
    never passed in: callers redact it before recording.

    `received` counts valid client messages by type and malformed ones under `<invalid_json>`,
    `<not_an_object>`, `<unknown_type>`, `<invalid:TYPE>`, `<bad_audio>` and `<binary>`.
    Event kinds: connect, reject, created, speech_start, commit, utterance, reply_start,
    reply_end, interrupt, invalid, session_update, close_requested, drop, close_fault, timeout,
    garbage, stop_reading, disconnect. Each event has `t` (Unix time) and `kind`; session events
    also `conn` (attempt index), `session` (session index) and `session_id`.
    """

    def __init__(self, events_file: str | None = None) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._events_path = events_file
        self._file: IO[str] | None = None
        self._attempts = 0
        self._sessions = 0
        self._connections: list[dict[str, Any]] = []
        self._received: Counter[str] = Counter()
        self._audio_total = 0
        self._audio_by_session: Counter[str] = Counter()
        self._audio_kept: dict[str, bytearray] = {}
        self._commits = 0
        self._session_closes = 0
        self._events: list[dict[str, Any]] = []

    # -- lifecycle (called by Simulator) -----------------------------------------------------
    def open(self) -> None:
        """Open the events file (truncating it); raises OSError so `Simulator.start` fails early."""
        if self._events_path is not None and self._file is None:
            self._file = open(self._events_path, "w", encoding="utf-8")

    def close(self) -> None:
        with self._cond:
            if self._file is not None:
                self._file.close()
                self._file = None

    # -- writers (event loop thread) -----------------------------------------------------------
    def next_attempt(self) -> int:
        with self._cond:
            self._attempts += 1
            return self._attempts - 1

    def next_session(self) -> int:
        with self._cond:
            self._sessions += 1
            return self._sessions - 1

    def connection(self, info: dict[str, Any]) -> None:
        """One upgrade attempt and how it was answered (status 101 = accepted)."""
        with self._cond:
            self._connections.append(dict(info))
        self.event("connect" if info.get("status") == 101 else "reject", **info)

    def count_received(self, kind: str) -> None:
        with self._cond:
            self._received[kind] += 1
            if kind == "input_audio_buffer.commit":
                self._commits += 1
            elif kind == "session.close":
                self._session_closes += 1
            self._cond.notify_all()

    def audio(self, session_id: str, nbytes: int, pcm: bytes = b"", keep_bytes: int = 0) -> None:
        """Count one input_audio_buffer.append; keep its PCM while the session has kept less
        than `keep_bytes` (the simulator's keep_audio_seconds)."""
        with self._cond:
            self._audio_total += nbytes
            self._audio_by_session[session_id] += nbytes
            kept = self._audio_kept.setdefault(session_id, bytearray())
            if len(kept) < keep_bytes:
                kept += pcm[: keep_bytes - len(kept)]
            self._cond.notify_all()

    def audio_of(self, session_id: str) -> bytes:
        """The kept PCM of a session (any thread)."""
        with self._cond:
            return bytes(self._audio_kept.get(session_id, b""))

    def event(self, kind: str, **fields: Any) -> None:
        record: dict[str, Any] = {"t": round(time.time(), 6), "kind": kind, **fields}
        with self._cond:
            self._events.append(record)
            if self._file is not None:
                try:
                    self._file.write(json.dumps(record, default=str) + "\n")
                    self._file.flush()
                except OSError as exc:  # a full disk must not take the simulator down
                    log.warning("cannot write events file: %s", exc)
            self._cond.notify_all()
        log.info("%s %s", kind, " ".join(f"{k}={v}" for k, v in fields.items()))

    # -- readers (any thread) ----------------------------------------------------------------
    @property
    def connections(self) -> list[dict[str, Any]]:
        with self._cond:
            return copy.deepcopy(self._connections)

    @property
    def received(self) -> dict[str, int]:
        with self._cond:
            return dict(self._received)

    @property
    def audio_bytes_received(self) -> int:
        with self._cond:
            return self._audio_total

    @property
    def audio_bytes_by_session(self) -> dict[str, int]:
        with self._cond:
            return dict(self._audio_by_session)

    @property
    def commits(self) -> int:
        with self._cond:
            return self._commits

    @property
    def session_closes(self) -> int:
        with self._cond:
            return self._session_closes

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._cond:
            return copy.deepcopy(self._events)

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(e) for e in self._events if e["kind"] == kind]

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` is true (re-checked after every record); False on timeout.

        The predicate runs with the recorder's (re-entrant) lock held, so it may read any property.
        """
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait_for_event(self, kind: str, timeout: float, count: int = 1,
                       **match: Any) -> dict[str, Any] | None:
        """The `count`-th event of `kind` whose fields equal `match`, waiting up to `timeout` s."""
        def matching() -> list[dict[str, Any]]:
            return [e for e in self._events
                    if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())]

        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= count, timeout):
                return None
            return dict(matching()[count - 1])

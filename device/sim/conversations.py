"""The simulator's call log: what `GET /atoms/v1/conversation/{callId}` returns for the sessions
it held.

The response schema of the real endpoint is not in the spec, so this is our guess at its shape
(an envelope with `data`, camelCase fields, a `transcript` list of `{role, content, timestamp}`);
the device's parser (`device.session.conversation.transcript_lines`) is tolerant of other
shapes and tested against several.
"""
from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any, Final

CONVERSATION_PATH: Final = "/atoms/v1/conversation/"
MAX_CALLS: Final = 1000  # a long-running simulator forgets the oldest


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ConversationLog:
    """Calls by call id. Written by the simulator's loop thread, read by its request handler and tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, dict[str, Any]] = {}

    def start(self, call_id: str, session_id: str, agent_id: str) -> None:
        with self._lock:
            while len(self._calls) >= MAX_CALLS:
                del self._calls[next(iter(self._calls))]
            self._calls[call_id] = {"callId": call_id, "sessionId": session_id, "agentId": agent_id,
                                    "status": "in_progress", "startedAt": time.time(), "endedAt": None,
                                    "transcript": []}

    def line(self, call_id: str, role: str, text: str) -> None:
        with self._lock:
            call = self._calls.get(call_id)
            if call is not None:
                call["transcript"].append({"role": role, "content": text, "timestamp": _iso(time.time())})

    def end(self, call_id: str) -> None:
        with self._lock:
            call = self._calls.get(call_id)
            if call is not None and call["endedAt"] is None:
                call["endedAt"] = time.time()
                call["status"] = "completed"

    def record(self, call_id: str) -> dict[str, Any] | None:
        """The endpoint's JSON body for `call_id`, or None if this simulator never held it."""
        with self._lock:
            call = self._calls.get(call_id)
            if call is None:
                return None
            started, ended = call["startedAt"], call["endedAt"]
            data = {**call, "transcript": [dict(t) for t in call["transcript"]],
                    "startedAt": _iso(started), "endedAt": _iso(ended) if ended is not None else None,
                    "durationSeconds": round((ended or time.time()) - started, 3), "recordingUrl": None}
        return {"status": "success", "data": data}

    @property
    def call_ids(self) -> list[str]:
        with self._lock:
            return list(self._calls)

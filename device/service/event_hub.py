"""Fan-out of the live event stream to control-socket subscribers (docs/control-api.md).

`publish` is called by whoever has news (the main thread, the session's receiver thread for
transcripts) and never blocks: it appends the line to each subscriber's bounded buffer and pokes
the control thread through a socket pair. The control thread owns the subscriber sockets and
writes without blocking (`flush`). A subscriber that does not read fills the kernel's socket
buffer (kept small, `SUBSCRIBER_SNDBUF`), then its own buffer; past `max_buffer_bytes` it is
disconnected and counted (`dropped_subscribers`), so it can never slow the main thread, the
audio or the other clients, and the others never see a gap.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final

from device.service.event_schema import SCHEMA_VERSION, LevelsEvent, _Event

log = logging.getLogger(__name__)

DEFAULT_MAX_BUFFER: Final = 64 * 1024
SUBSCRIBER_SNDBUF: Final = 16 * 1024  # kernel bytes a stalled subscriber may pin


@dataclass
class _Subscriber:
    conn: socket.socket
    levels: bool
    out: bytearray = field(default_factory=bytearray)
    seq: int = 0
    stalled: bool = False


class EventHub:
    """Subscribers and their pending lines. `publish`: any thread; the rest: the control thread."""

    def __init__(self, max_buffer_bytes: int = DEFAULT_MAX_BUFFER) -> None:
        self.max_buffer_bytes = max_buffer_bytes
        self.dropped_subscribers = 0
        self.published = 0
        self._subs: dict[socket.socket, _Subscriber] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    # -- any thread ----------------------------------------------------------------------------
    @property
    def subscribers(self) -> int:
        return len(self._subs)

    @property
    def wants_levels(self) -> bool:
        return any(sub.levels for sub in list(self._subs.values()))

    def publish(self, event: _Event) -> None:
        """Queue `event` for every subscriber (levels only for those who asked). Never blocks."""
        if not self._subs:
            return
        body = event.model_dump(mode="json", exclude={"v", "seq", "t"})
        stamp = round(time.time(), 3)
        levels = isinstance(event, LevelsEvent)
        with self._lock:
            self.published += 1
            for sub in self._subs.values():
                if sub.stalled or (levels and not sub.levels):
                    continue
                sub.seq += 1
                line = json.dumps({"v": SCHEMA_VERSION, "seq": sub.seq, "t": stamp, **body}).encode() + b"\n"
                if len(sub.out) + len(line) > self.max_buffer_bytes:
                    sub.stalled = True   # the control thread disconnects it
                else:
                    sub.out += line
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending

    # -- the control thread --------------------------------------------------------------------
    @property
    def wake_socket(self) -> socket.socket:
        return self._wake_r

    def add(self, conn: socket.socket, levels: bool, first_line: dict[str, Any]) -> None:
        """Subscribe `conn`; `first_line` (the snapshot reply) goes out before any event."""
        try:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SUBSCRIBER_SNDBUF)
        except OSError:
            pass
        conn.setblocking(False)
        with self._lock:
            self._subs[conn] = _Subscriber(conn, levels, bytearray(json.dumps(first_line).encode() + b"\n"))
        self.flush()

    def remove(self, conn: socket.socket) -> None:
        with self._lock:
            self._subs.pop(conn, None)

    def is_subscriber(self, conn: socket.socket) -> bool:
        return conn in self._subs

    def flush(self) -> list[socket.socket]:
        """Write what each subscriber can take now; returns the sockets dropped (to be closed)."""
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        gone: list[socket.socket] = []
        with self._lock:
            for conn, sub in list(self._subs.items()):
                if sub.stalled:
                    self.dropped_subscribers += 1
                    log.warning("event subscriber stopped reading (%d bytes pending): disconnected",
                                len(sub.out))
                    gone.append(conn)
                    del self._subs[conn]
                    continue
                while sub.out:
                    try:
                        sent = conn.send(sub.out)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        gone.append(conn)
                        del self._subs[conn]
                        break
                    del sub.out[:sent]
        return gone

    def close(self) -> None:
        with self._lock:
            conns = list(self._subs)
            self._subs.clear()
        for conn in conns:
            conn.close()
        self._wake_r.close()
        self._wake_w.close()

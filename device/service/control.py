"""The control socket: JSON lines over a Unix socket, for kiosk screens, home automation and tests.

Request: `{"cmd": "call" | "hangup" | "mute" | "unmute" | "talk_start" | "talk_stop" | "status" |
"dump_audio"}`, `{"cmd": "say", "text": "..."}` (typed text to the agent during a call), or
`{"cmd": "volume"}` (the speaker level) / `{"cmd": "volume", "level": "N" | "+N" | "-N"}`, or
`{"cmd": "subscribe", "levels": false}`: the live event stream (docs/control-api.md), a snapshot
line and then one JSON line per event on the same connection until it closes.
Reply: `{"ok": true, ...}` or `{"ok": false, "error": "..."}`, one line each.
Commands become the same `Command` events the buttons produce and go through the state machine;
`status` returns the snapshot the main thread last published (never the key); `dump_audio` writes
the debug recording and replies with the files (the service's `dump_audio`); `say` hands the text
to the service's `say`, which sends `input_text.send` in a call and refuses otherwise.
"""
from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from device.core.events import COMMAND_NAMES, Command, Event
from device.core.threads import OwnedThread
from device.service.event_hub import EventHub
from device.service.event_schema import SCHEMA_VERSION

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES: Final = 4096
SOCKET_MODE: Final = 0o660
TIMEOUT: Final = 3.0
# `dump_audio` waits for files to be written: the service gives up after DUMP_AUDIO_TIMEOUT and
# the client waits a little longer, so it reads that answer rather than timing out first.
DUMP_AUDIO_TIMEOUT: Final = 20.0
CLIENT_TIMEOUTS: Final = {"dump_audio": DUMP_AUDIO_TIMEOUT + 5.0}
OTHER_COMMANDS: Final = ("status", "dump_audio", "say", "volume", "subscribe")
MAX_SAY_CHARS: Final = 2000


def _no_dump_audio() -> dict[str, Any]:
    return {"ok": False, "error": "dump_audio is not available here"}


def _no_say(text: str) -> dict[str, Any]:
    return {"ok": False, "error": "say is not available here"}


def _no_volume(spec: str | None) -> dict[str, Any]:
    return {"ok": False, "error": "volume is not available here"}


class ControlServer(OwnedThread):
    """Serves the control socket on its own thread; commands are only enqueued as events.

    `status` and `dump_audio` are called on this thread and return the whole reply; `dump_audio`
    may block it (up to DUMP_AUDIO_TIMEOUT) while the dump is written, other clients wait meanwhile.
    """

    def __init__(self, path: Path, on_event: Callable[[Event], None],
                 status: Callable[[], dict[str, Any]],
                 dump_audio: Callable[[], dict[str, Any]] = _no_dump_audio,
                 say: Callable[[str], dict[str, Any]] = _no_say,
                 volume: Callable[[str | None], dict[str, Any]] = _no_volume,
                 hub: EventHub | None = None) -> None:
        super().__init__("control-socket")
        self.path = path
        self.on_event = on_event
        self.status = status
        self.dump_audio = dump_audio
        self.say = say
        self.volume = volume
        self.hub = hub
        self.requests = 0
        self.bad_requests = 0
        self._sock: socket.socket | None = None

    def bind(self) -> None:
        """Create the socket (main thread, before start) so clients can connect right away."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise OSError(f"{self.path} exists and is not a socket")
            self.path.unlink()  # a stale socket from a previous run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o117)  # created 0660 at once: no window where others may connect
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, SOCKET_MODE)
        sock.listen(8)
        sock.setblocking(False)
        self._sock = sock

    def run(self) -> None:
        if self._sock is None:
            self.bind()
        assert self._sock is not None
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, None)
        if self.hub is not None:
            sel.register(self.hub.wake_socket, selectors.EVENT_READ, "wake")
        buffers: dict[socket.socket, bytearray] = {}

        def drop(conn: socket.socket) -> None:
            sel.unregister(conn)
            buffers.pop(conn, None)
            if self.hub is not None:
                self.hub.remove(conn)
            conn.close()

        try:
            while not self.stopping.is_set():
                for key, _ in sel.select(timeout=0.2):
                    if key.data == "wake":
                        continue  # the flush below writes what was published
                    if key.data is None:
                        try:
                            conn, _addr = self._sock.accept()
                        except OSError:
                            continue
                        conn.setblocking(False)
                        buffers[conn] = bytearray()
                        sel.register(conn, selectors.EVENT_READ, "client")
                        continue
                    conn = key.fileobj  # type: ignore[assignment]
                    if not self._serve(conn, buffers[conn]):
                        drop(conn)
                if self.hub is not None:
                    for conn in self.hub.flush():  # stalled or gone subscribers
                        if conn in buffers:
                            drop(conn)
        finally:
            for conn in list(buffers):
                conn.close()
            if self.hub is not None:
                self.hub.close()
            sel.close()
            self._sock.close()
            self._sock = None
            try:
                self.path.unlink()
            except OSError:
                pass

    def _serve(self, conn: socket.socket, buf: bytearray) -> bool:
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
        if self.hub is not None and self.hub.is_subscriber(conn):
            return True  # a subscriber only listens: what it sends is ignored
        buf += data
        if len(buf) > MAX_REQUEST_BYTES and b"\n" not in buf:
            self._reply(conn, {"ok": False, "error": "request too long"})
            return False
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            levels = self._subscription(line)
            if levels is not None and self.hub is not None:
                self.requests += 1
                self.hub.add(conn, levels, {"ok": True, "cmd": "subscribe", "v": SCHEMA_VERSION,
                                            "levels": levels, "snapshot": self.status()})
                return True
            self._reply(conn, self.handle(line))
        return True

    def _subscription(self, line: bytes) -> bool | None:
        """For a `subscribe` request, whether it asks for levels; None for any other line."""
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):
            return None
        if not isinstance(request, dict) or request.get("cmd") != "subscribe":
            return None
        return request.get("levels") is True

    def _reply(self, conn: socket.socket, reply: dict[str, Any]) -> None:
        try:
            conn.setblocking(True)
            conn.settimeout(1.0)
            conn.sendall(json.dumps(reply).encode() + b"\n")
            conn.setblocking(False)
        except OSError as exc:
            log.debug("control client went away: %s", exc)

    def handle(self, line: bytes) -> dict[str, Any]:
        """Turn one request line into a reply (and maybe an event)."""
        self.requests += 1
        try:
            request = json.loads(line)
            cmd = request["cmd"] if isinstance(request, dict) else None
        except (ValueError, KeyError, TypeError, RecursionError):  # deep nesting: a 2 KB line
            cmd = None
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd == "dump_audio":
            return self.dump_audio()
        if cmd == "subscribe":  # reached only without a hub (no stream here) or by handle() alone
            return {"ok": False, "error": "subscribe: the event stream is not available here"}
        if cmd == "say":
            text = request.get("text")
            if not isinstance(text, str) or not text.strip():
                return {"ok": False, "error": 'say needs "text": a non-empty string'}
            if len(text) > MAX_SAY_CHARS:
                return {"ok": False, "error": f"say: text longer than {MAX_SAY_CHARS} characters"}
            return self.say(text)
        if cmd == "volume":
            level = request.get("level")
            if isinstance(level, bool) or (level is not None and not isinstance(level, (str, int))):
                return {"ok": False, "error": 'volume: "level" is N, "+N" or "-N"'}
            return self.volume(None if level is None else str(level))
        if cmd in COMMAND_NAMES:
            self.on_event(Command(cmd))
            return {"ok": True, "cmd": cmd}
        self.bad_requests += 1
        if self.bad_requests == 1:
            log.warning("bad control request %r; further ones are only counted", line[:80])
        return {"ok": False, "error": f"unknown command; use one of {', '.join((*COMMAND_NAMES, *OTHER_COMMANDS))}"}


def send_command(path: Path, cmd: str, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
    """Client side (`atoms-appliance ctl`): send one command (with `fields`, e.g. `text`), return the reply.

    `timeout` defaults to TIMEOUT, longer for commands that write files (CLIENT_TIMEOUTS).
    """
    if timeout is None:
        timeout = CLIENT_TIMEOUTS.get(cmd, TIMEOUT)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps({**fields, "cmd": cmd}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            part = sock.recv(65536)
            if not part:
                break
            data += part
    reply: dict[str, Any] = json.loads(data)
    return reply


def watch(path: Path, levels: bool = False) -> Iterator[dict[str, Any]]:
    """Client side (`atoms-appliance ctl watch`): subscribe, then yield the snapshot reply and each
    event as it comes, until the service closes the stream (no timeout: events come when they do)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        sock.sendall(json.dumps({"cmd": "subscribe", "levels": levels}).encode() + b"\n")
        sock.settimeout(None)
        with sock.makefile("rb") as lines:
            for line in lines:
                yield json.loads(line)

"""The control socket: JSON lines over a Unix socket, for kiosk screens, home automation and tests.

Request: `{"cmd": "call" | "hangup" | "mute" | "unmute" | "talk_start" | "talk_stop" | "status" |
"dump_audio"}`. Reply: `{"ok": true, ...}` or `{"ok": false, "error": "..."}`, one line each.
Commands become the same `Command` events the buttons produce and go through the state machine;
`status` returns the snapshot the main thread last published (never the key); `dump_audio` writes
the debug recording and replies with the files (the service's `dump_audio`).
"""
from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from device.core.events import COMMAND_NAMES, Command, Event
from device.core.threads import OwnedThread

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES: Final = 4096
SOCKET_MODE: Final = 0o660
TIMEOUT: Final = 3.0
# `dump_audio` waits for files to be written: the service gives up after DUMP_AUDIO_TIMEOUT and
# the client waits a little longer, so it reads that answer rather than timing out first.
DUMP_AUDIO_TIMEOUT: Final = 20.0
CLIENT_TIMEOUTS: Final = {"dump_audio": DUMP_AUDIO_TIMEOUT + 5.0}
OTHER_COMMANDS: Final = ("status", "dump_audio")


def _no_dump_audio() -> dict[str, Any]:
    return {"ok": False, "error": "dump_audio is not available here"}


class ControlServer(OwnedThread):
    """Serves the control socket on its own thread; commands are only enqueued as events.

    `status` and `dump_audio` are called on this thread and return the whole reply; `dump_audio`
    may block it (up to DUMP_AUDIO_TIMEOUT) while the dump is written, other clients wait meanwhile.
    """

    def __init__(self, path: Path, on_event: Callable[[Event], None],
                 status: Callable[[], dict[str, Any]],
                 dump_audio: Callable[[], dict[str, Any]] = _no_dump_audio) -> None:
        super().__init__("control-socket")
        self.path = path
        self.on_event = on_event
        self.status = status
        self.dump_audio = dump_audio
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
        buffers: dict[socket.socket, bytearray] = {}
        try:
            while not self.stopping.is_set():
                for key, _ in sel.select(timeout=0.2):
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
                        sel.unregister(conn)
                        buffers.pop(conn, None)
                        conn.close()
        finally:
            for conn in list(buffers):
                conn.close()
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
        buf += data
        if len(buf) > MAX_REQUEST_BYTES and b"\n" not in buf:
            self._reply(conn, {"ok": False, "error": "request too long"})
            return False
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            self._reply(conn, self.handle(line))
        return True

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
        if cmd in COMMAND_NAMES:
            self.on_event(Command(cmd))
            return {"ok": True, "cmd": cmd}
        self.bad_requests += 1
        if self.bad_requests == 1:
            log.warning("bad control request %r; further ones are only counted", line[:80])
        return {"ok": False, "error": f"unknown command; use one of {', '.join((*COMMAND_NAMES, *OTHER_COMMANDS))}"}


def send_command(path: Path, cmd: str, timeout: float | None = None) -> dict[str, Any]:
    """Client side (`atoms-appliance ctl`): send one command, return the reply.

    `timeout` defaults to TIMEOUT, longer for commands that write files (CLIENT_TIMEOUTS).
    """
    if timeout is None:
        timeout = CLIENT_TIMEOUTS.get(cmd, TIMEOUT)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            part = sock.recv(65536)
            if not part:
                break
            data += part
    reply: dict[str, Any] = json.loads(data)
    return reply

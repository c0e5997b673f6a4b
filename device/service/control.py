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

import errno
import json
import logging
import os
import selectors
import socket
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
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

# -- fairness limits (issue 13): one client must never hold up the others -----------------------
# Replies queued for a client that does not read them. Above this its requests are not read any
# more (the kernel buffer then stops its writes); a status reply is ~2 KB, so this is ~30 of them.
MAX_OUTPUT_BYTES: Final = 64 * 1024
# A client whose queued replies have not moved for this long is dropped: it does not read.
SEND_STALL_SECONDS: Final = 2.0
# Requests served from one client per loop turn before the others get theirs.
LINES_PER_TURN: Final = 8
# Connections held at once; one more evicts the longest-idle client (a kiosk reconnecting to say
# `mute` must get in even when a neighbour holds many idle connections).
MAX_CLIENTS: Final = 32
# A connection with no request for this long is closed (clients connect, ask and go).
IDLE_SECONDS: Final = 60.0
# Out of file descriptors and nothing to evict: stop accepting for this long instead of spinning.
ACCEPT_PAUSE_SECONDS: Final = 0.5
LOOP_SECONDS: Final = 0.2
# `listen()` backlog: the kernel caps it at net.core.somaxconn (4096 on current kernels).
BACKLOG: Final = socket.SOMAXCONN
# Counter names (`ctl status` shows them as control_<name>); each kind is logged once.
COUNTER_KINDS: Final = ("slow_clients_dropped", "idle_closed", "evicted", "fd_exhausted",
                        "too_long", "bad_requests")


class ControlSocketError(OSError):
    """The control socket cannot be created at its path (a person must fix the path or its folder)."""


def _no_dump_audio() -> dict[str, Any]:
    return {"ok": False, "error": "dump_audio is not available here"}


def _no_say(text: str) -> dict[str, Any]:
    return {"ok": False, "error": "say is not available here"}


def _no_volume(spec: str | None) -> dict[str, Any]:
    return {"ok": False, "error": "volume is not available here"}


def _no_note(cmd: str) -> str | None:
    return None


@dataclass(eq=False)
class _Client:
    """One connection's buffers and clocks (control thread only)."""

    conn: socket.socket
    last_request: float
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    out_since: float = 0.0          # when outbuf last made progress (or became non-empty)
    waiting: Future[dict[str, Any]] | None = None   # a slow command (dump_audio) in progress
    closing: bool = False           # close once outbuf is sent (after "request too long")
    events: int = 0                 # what the selector watches for this connection (0: not registered)
    subscribed: bool = False        # an event-stream subscriber: the hub writes to it, it only listens


class ControlServer(OwnedThread):
    """Serves the control socket on its own thread; commands are only enqueued as events.

    Every client is served fairly: non-blocking replies with a bounded per-client output buffer,
    at most LINES_PER_TURN requests per client per turn, a connection limit that evicts the
    longest-idle client, an idle timeout, and file-descriptor exhaustion handled with a reserve
    descriptor (then a short accept pause) instead of a busy loop. `status` is answered on this
    thread from the snapshot the main thread last published; `dump_audio` runs on one worker thread
    this object owns, so a dump being written never holds up other clients.
    `note(cmd)` (the service's) says what a command will do in the current state, or None.
    """

    def __init__(self, path: Path, on_event: Callable[[Event], None],
                 status: Callable[[], dict[str, Any]],
                 dump_audio: Callable[[], dict[str, Any]] = _no_dump_audio,
                 say: Callable[[str], dict[str, Any]] = _no_say,
                 volume: Callable[[str | None], dict[str, Any]] = _no_volume,
                 hub: EventHub | None = None,
                 note: Callable[[str], str | None] = _no_note,
                 now: Callable[[], float] = time.monotonic,
                 max_clients: int = MAX_CLIENTS, idle_seconds: float = IDLE_SECONDS) -> None:
        super().__init__("control-socket")
        self.path = path
        self.on_event = on_event
        self.status = status
        self.dump_audio = dump_audio
        self.say = say
        self.volume = volume
        self.hub = hub
        self.note = note
        self.now = now
        self.max_clients = max_clients
        self.idle_seconds = idle_seconds
        self.requests = 0
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_KINDS, 0)
        self.clients_now = 0
        self.turns = 0            # loop iterations: a spinning loop shows here (tests, `status`)
        self._sock: socket.socket | None = None
        self._reserve_fd: int | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="control-slow")

    @property
    def bad_requests(self) -> int:
        return self.counters["bad_requests"]

    def _count(self, kind: str, message: str, *args: Any) -> None:
        """Count one occurrence; log the first of each kind (a flood must not flood the journal)."""
        self.counters[kind] += 1
        if self.counters[kind] == 1:
            log.warning(message + "; further ones are only counted (ctl status: control_%s)", *args, kind)

    def bind(self) -> None:
        """Create the socket (main thread, before start) so clients can connect right away.

        A socket file left at the path is removed only after checking that nothing answers on it;
        the service's instance lock (device/service/instance.py) is what makes that check safe.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() or self.path.is_symlink():
                if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                    raise ControlSocketError(f"{self.path} exists and is not a socket")
                if _answers(self.path):
                    raise ControlSocketError(f"{self.path} is served by another running process")
                self.path.unlink()  # a stale socket from a run that died
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old_umask = os.umask(0o117)  # created 0660 at once: no window where others may connect
            try:
                sock.bind(str(self.path))
            except OSError:
                sock.close()
                raise
            finally:
                os.umask(old_umask)
            os.chmod(self.path, SOCKET_MODE)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except ControlSocketError:
            raise
        except OSError as exc:
            raise ControlSocketError(f"cannot create the control socket {self.path}: "
                                     f"{exc.strerror or exc}") from None
        self._sock = sock
        self._reserve()

    def _reserve(self) -> None:
        if self._reserve_fd is None:
            try:
                self._reserve_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._reserve_fd = None

    def _release_reserve(self) -> bool:
        if self._reserve_fd is None:
            return False
        os.close(self._reserve_fd)
        self._reserve_fd = None
        return True

    def stop(self) -> None:
        super().stop()
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # already full (a wake is pending) or closed

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        if self._sock is None:
            self.bind()
        assert self._sock is not None
        listener = self._sock
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        if self.hub is not None:
            sel.register(self.hub.wake_socket, selectors.EVENT_READ, "hub")   # drained by hub.flush
        clients: dict[socket.socket, _Client] = {}
        accept_paused_until: float | None = None
        try:
            while not self.stopping.is_set():
                self.turns += 1
                now = self.now()
                if accept_paused_until is not None and now >= accept_paused_until:
                    accept_paused_until = None
                    self._reserve()
                    sel.register(listener, selectors.EVENT_READ, None)
                busy = any(self._ready_lines(c) for c in clients.values())
                # With no client and no accept pause there is nothing to time out: sleep until a
                # connection, a published event or a stop (both wake the selector), not 5 times a second.
                timeout = 0 if busy else (None if not clients and accept_paused_until is None else LOOP_SECONDS)
                for key, mask in sel.select(timeout=timeout):
                    if key.data is None:
                        if not self._accept(listener, sel, clients):
                            sel.unregister(listener)
                            accept_paused_until = self.now() + ACCEPT_PAUSE_SECONDS
                    elif key.data == "hub":
                        pass   # the flush below writes what was published
                    elif key.data == "wake":
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except OSError:
                            pass
                    else:
                        client = key.data
                        if mask & selectors.EVENT_WRITE:
                            self._flush(client)
                        if mask & selectors.EVENT_READ and client.conn in clients:
                            self._read(client)
                now = self.now()
                for client in list(clients.values()):
                    self._serve(client)
                    self._flush(client)
                    self._check(client, now, sel, clients)
                if self.hub is not None:
                    for conn in self.hub.flush():   # subscribers that stalled or went away
                        if conn in clients:
                            self._close(clients[conn], sel, clients)
                self.clients_now = len(clients)
        finally:
            for client in list(clients.values()):
                self._close(client, sel, clients)
            self._worker.shutdown(wait=False, cancel_futures=True)
            if self.hub is not None:
                self.hub.close()
            sel.close()
            listener.close()
            self._sock = None
            if self._reserve_fd is not None:
                os.close(self._reserve_fd)
                self._reserve_fd = None
            try:
                self.path.unlink()
            except OSError:
                pass

    def join(self, timeout: float = 3.0) -> bool:
        ok = super().join(timeout)
        self._wake_r.close()
        self._wake_w.close()
        return ok

    def _accept(self, listener: socket.socket, sel: selectors.BaseSelector,
                clients: dict[socket.socket, _Client]) -> bool:
        """Accept what is waiting. False: out of descriptors with nothing to free (pause accepting)."""
        for _ in range(64):   # a burst: take many per turn, but let the clients in between
            try:
                conn, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.debug("accept failed: %s", exc)
                    return True
                self._count("fd_exhausted", "control socket: out of file descriptors (%s)", exc.strerror)
                # The listener stays readable while a connection waits: free a descriptor and take
                # it, or this loop would wake forever. First the longest-idle client...
                if self._evict_idlest(sel, clients):
                    continue
                # ...else the reserve descriptor, to tell the newcomer why it is refused...
                if not self._release_reserve():
                    return False   # ...else stop accepting for a moment
                try:
                    conn, _addr = listener.accept()
                except OSError:
                    self._reserve()
                    return False
                self._refuse(conn, "the service is out of file descriptors; try again later")
                self._reserve()
                continue
            if len(clients) >= self.max_clients:
                self._evict_idlest(sel, clients)
            conn.setblocking(False)
            client = _Client(conn, self.now())
            clients[conn] = client
            sel.register(conn, selectors.EVENT_READ, client)
            client.events = selectors.EVENT_READ
        return True

    def _refuse(self, conn: socket.socket, why: str) -> None:
        try:
            conn.setblocking(False)
            conn.send(json.dumps({"ok": False, "error": why}).encode() + b"\n")
        except OSError:
            pass
        conn.close()

    def _evict_idlest(self, sel: selectors.BaseSelector, clients: dict[socket.socket, _Client]) -> bool:
        idle = [c for c in clients.values() if c.waiting is None and not c.inbuf and not c.subscribed]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.last_request)
        self._count("evicted", "control socket: %d connections open; closing the longest-idle one",
                    len(clients))
        self._close(victim, sel, clients)
        return True

    @staticmethod
    def _wants_input(client: _Client) -> bool:
        """Read more from this client only while its replies are read and its queued requests are
        few: a flood then waits in the kernel (and backs up to the sender), not in our memory."""
        return (len(client.outbuf) < MAX_OUTPUT_BYTES and not client.closing
                and not (b"\n" in client.inbuf and len(client.inbuf) >= MAX_REQUEST_BYTES))

    def _read(self, client: _Client) -> None:
        if not self._wants_input(client):
            return
        try:
            data = client.conn.recv(MAX_REQUEST_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            client.closing, client.outbuf[:] = True, b""
            return
        if not data:
            client.closing = True   # the client half-closed: send what is queued, then close
            return
        if client.subscribed:
            return   # a subscriber only listens: what it sends is ignored
        client.inbuf += data
        client.last_request = self.now()

    @staticmethod
    def _ready_lines(client: _Client) -> bool:
        return (b"\n" in client.inbuf and client.waiting is None and not client.closing
                and not client.subscribed and len(client.outbuf) < MAX_OUTPUT_BYTES)

    def _serve(self, client: _Client) -> None:
        """Answer up to LINES_PER_TURN complete requests of one client."""
        if client.waiting is not None:
            if not client.waiting.done():
                return
            future, client.waiting = client.waiting, None
            self._queue(client, _result(future))
        for _ in range(LINES_PER_TURN):
            if not self._ready_lines(client):
                break
            line, _, rest = bytes(client.inbuf).partition(b"\n")
            client.inbuf[:] = rest
            if len(line) > MAX_REQUEST_BYTES:
                self._too_long(client)
                return
            levels = _subscription(line)
            if levels is not None and self.hub is not None:
                self.requests += 1
                client.subscribed = True   # from now on the hub writes to it (bounded there)
                client.inbuf.clear()
                self.hub.add(client.conn, levels, {"ok": True, "cmd": "subscribe", "v": SCHEMA_VERSION,
                                                   "levels": levels, "snapshot": self.status()})
                return
            if _is_command(line, "dump_audio"):
                self.requests += 1
                client.waiting = self._worker.submit(self.dump_audio)
                client.waiting.add_done_callback(lambda _f: self._wake())
                return
            self._queue(client, self.handle(line))
        if len(client.inbuf) > MAX_REQUEST_BYTES and b"\n" not in client.inbuf and not client.closing:
            self._too_long(client)

    def _too_long(self, client: _Client) -> None:
        """Refuse a request longer than MAX_REQUEST_BYTES (whether or not its newline came) and hang up."""
        self._count("too_long", "control request longer than %d bytes", MAX_REQUEST_BYTES)
        client.inbuf.clear()
        self._queue(client, {"ok": False, "error": "request too long"})
        client.closing = True

    def _queue(self, client: _Client, reply: dict[str, Any]) -> None:
        if not client.outbuf:
            client.out_since = self.now()
        client.outbuf += json.dumps(reply).encode() + b"\n"

    def _flush(self, client: _Client) -> None:
        if not client.outbuf:
            return
        try:
            sent = client.conn.send(client.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("control client went away: %s", exc)
            client.outbuf.clear()
            client.closing = True
            return
        if sent:
            del client.outbuf[:sent]
            client.out_since = self.now()

    def _check(self, client: _Client, now: float, sel: selectors.BaseSelector,
               clients: dict[socket.socket, _Client]) -> None:
        """Close a client that is done, does not read, or has been idle too long."""
        if client.closing and not client.outbuf and client.waiting is None:
            self._close(client, sel, clients)
        elif client.outbuf and now - client.out_since > SEND_STALL_SECONDS:
            self._count("slow_clients_dropped", "control client does not read its replies "
                        "(%d bytes queued for %.0f s); closing it", len(client.outbuf), SEND_STALL_SECONDS)
            self._close(client, sel, clients)
        elif (not client.outbuf and client.waiting is None and not client.inbuf and not client.subscribed
              and now - client.last_request > self.idle_seconds):
            self._count("idle_closed", "control client idle for %.0f s; closing it", self.idle_seconds)
            self._close(client, sel, clients)
        else:
            self._watch(client, sel)

    @staticmethod
    def _watch(client: _Client, sel: selectors.BaseSelector) -> None:
        """Select on what the client can use now: replies to send; requests only while its
        replies are below the bound (and never after EOF, which would stay readable forever)."""
        events = selectors.EVENT_WRITE if client.outbuf else 0
        if ControlServer._wants_input(client):
            events |= selectors.EVENT_READ
        if events == client.events:
            return
        if client.events == 0:
            sel.register(client.conn, events, client)
        elif events == 0:
            sel.unregister(client.conn)
        else:
            sel.modify(client.conn, events, client)
        client.events = events

    def _close(self, client: _Client, sel: selectors.BaseSelector,
               clients: dict[socket.socket, _Client]) -> None:
        clients.pop(client.conn, None)
        if self.hub is not None:
            self.hub.remove(client.conn)
        if client.waiting is not None:
            client.waiting.cancel()
        if client.events:
            sel.unregister(client.conn)
            client.events = 0
        client.conn.close()

    def handle(self, line: bytes) -> dict[str, Any]:
        """Turn one request line into a reply (and maybe an event). `dump_audio` is run here too
        when called directly; the loop hands it to the worker instead."""
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
        if isinstance(cmd, str) and cmd in COMMAND_NAMES:
            note = self.note(cmd)
            self.on_event(Command(cmd))
            return {"ok": True, "cmd": cmd, "note": note} if note else {"ok": True, "cmd": cmd}
        self._count("bad_requests", "bad control request %r", line[:80])
        return {"ok": False, "error": f"unknown command; use one of {', '.join((*COMMAND_NAMES, *OTHER_COMMANDS))}"}


def _subscription(line: bytes) -> bool | None:
    """For a `subscribe` request, whether it asks for levels; None for any other line."""
    if b"subscribe" not in line:
        return None
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(request, dict) or request.get("cmd") != "subscribe":
        return None
    return request.get("levels") is True


def _is_command(line: bytes, name: str) -> bool:
    if name.encode() not in line:
        return False
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(request, dict) and request.get("cmd") == name


def _result(future: Future[dict[str, Any]]) -> dict[str, Any]:
    try:
        return future.result()
    except Exception as exc:  # the reply says it; the control thread must go on
        log.exception("dump_audio failed")
        return {"ok": False, "error": f"dump_audio failed: {exc}"}


def _answers(path: Path) -> bool:
    """Whether a process accepts connections on the socket at `path` (then it is not stale)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(str(path))
    except OSError as exc:
        # EAGAIN: a live server whose backlog is full; anything else (ECONNREFUSED): nobody there.
        return exc.errno == errno.EAGAIN
    finally:
        probe.close()
    return True


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

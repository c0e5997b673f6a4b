"""The local Atoms agent simulator: the stand-in for the Atoms cloud in the demo and in tests.

`Simulator` runs a `websockets` server on its own asyncio loop in one background thread; `main()`
is `atoms-appliance sim`. The protocol is the Atoms agent WebSocket (see
`/work/shared/reference/atoms-agent-websocket-api.md`); the behaviour (VAD turns, spoken replies,
barge-in, faults) is described on `SimOptions` and `SimSession`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, Final, Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from device.sim.conversations import CONVERSATION_PATH, ConversationLog
from device.sim.faults import FaultPlan
from device.sim.handshake import Refusal, SessionParams, check_key, check_request, parse_query, redacted_query
from device.sim.options import CONNECT_PATH, SimOptions, build_parser, options_from_args
from device.sim.recorder import Recorder
from device.sim.session import SimSession

log = logging.getLogger(__name__)

START_TIMEOUT_S: Final = 10.0
JOIN_TIMEOUT_S: Final = 5.0
_CLOSE_TIMEOUT_S: Final = 1.0  # short: a --stop-reading session can never finish a close handshake

# websockets logs every request header at DEBUG, Authorization included: give it a logger of its
# own that never passes DEBUG records, whatever level the user picks, so the key stays out of logs.
_ws_log = logging.getLogger(__name__ + ".websockets")
_ws_log.addFilter(lambda record: record.levelno >= logging.INFO)


class SimulatorError(RuntimeError):
    """The simulator could not start (port in use, bad events file...) or was misused."""


class Simulator:
    """The simulator server. Its asyncio loop runs in ONE background thread that it owns.

    `start()` returns once the socket listens (raises `SimulatorError` otherwise); `stop()` asks
    the loop to close every connection and returns at once; `join(timeout)` waits for the thread.
    What it saw (`connections`, `received`, `events`, ...) may be read from any thread, and
    `wait_for` / `wait_for_event` block (bounded) until a condition holds. Also a context manager.
    """

    def __init__(self, options: SimOptions | None = None) -> None:
        self.options = options if options is not None else SimOptions()
        self.recorder = Recorder(self.options.events_file)
        self.conversations = ConversationLog()
        self._plan = FaultPlan(self.options)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop_requested = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_async: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._port: int | None = None
        # Accepted upgrades waiting for their handler (weak: a failed handshake must not leak).
        self._pending: weakref.WeakKeyDictionary[ServerConnection, tuple[int, SessionParams]] = (
            weakref.WeakKeyDictionary())

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the loop thread and return once listening; raises `SimulatorError` on failure."""
        if self._thread is not None:
            raise SimulatorError("simulator already started")
        try:
            self.recorder.open()
        except OSError as exc:
            raise SimulatorError(f"cannot open events file: {exc}") from exc
        self._thread = threading.Thread(target=self._run, name="atoms-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            self.join()
            raise SimulatorError(f"simulator did not start within {timeout:.1f} s")
        if self._error is not None:
            self.join()
            raise SimulatorError(
                f"cannot listen on {self.options.host}:{self.options.port}: {self._error}"
            ) from self._error

    def stop(self) -> None:
        """Ask the server to close every connection and stop; returns at once. Idempotent."""
        self._stop_requested.set()
        loop, stop_async = self._loop, self._stop_async
        if loop is not None and stop_async is not None:
            try:
                loop.call_soon_threadsafe(stop_async.set)
            except RuntimeError:  # the loop has already closed: nothing left to stop
                pass

    def join(self, timeout: float = JOIN_TIMEOUT_S) -> bool:
        """Wait for the loop thread to end; False (and an error log) if it is stuck."""
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        if thread.is_alive():
            log.error("simulator thread did not stop within %.1f s", timeout)
            return False
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self.join()

    @property
    def port(self) -> int:
        if self._port is None:
            raise SimulatorError("simulator is not listening")
        return self._port

    @property
    def url(self) -> str:
        """The connect URL without a query, e.g. ws://127.0.0.1:8765/atoms/v1/agent/connect."""
        host = self.options.host
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self.port}{CONNECT_PATH}"

    # -- what it saw (any thread) --------------------------------------------------------------
    @property
    def connections(self) -> list[dict[str, Any]]:
        return self.recorder.connections

    @property
    def received(self) -> dict[str, int]:
        return self.recorder.received

    @property
    def audio_bytes_received(self) -> int:
        return self.recorder.audio_bytes_received

    @property
    def audio_bytes_by_session(self) -> dict[str, int]:
        return self.recorder.audio_bytes_by_session

    @property
    def commits(self) -> int:
        return self.recorder.commits

    @property
    def session_closes(self) -> int:
        return self.recorder.session_closes

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.recorder.events

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        return self.recorder.events_of(kind)

    def audio_of(self, session_id: str) -> bytes:
        """The uplink PCM kept for a session (`keep_audio_seconds`)."""
        return self.recorder.audio_of(session_id)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        return self.recorder.wait_for(predicate, timeout)

    def wait_for_event(self, kind: str, timeout: float, count: int = 1,
                       **match: Any) -> dict[str, Any] | None:
        return self.recorder.wait_for_event(kind, timeout, count, **match)

    # -- the loop thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # report to start(), never vanish silently
            log.exception("simulator loop crashed")
            self._error = self._error or exc
        finally:
            self._ready.set()
            self.recorder.close()

    async def _serve(self) -> None:
        self._stop_async = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            server: Server = await serve(
                self._handle, self.options.host, self.options.port,
                process_request=self._process_request,
                compression=None,
                close_timeout=_CLOSE_TIMEOUT_S,
                # Keepalive pongs cannot be read while --stop-reading, so pings would end the call.
                ping_interval=None if self.options.stop_reading else 20.0,
                logger=_ws_log,
            )
        except OSError as exc:
            self._error = exc
            return
        self._port = int(next(iter(server.sockets)).getsockname()[1])
        log.info("simulator listening on %s", self.url)
        self._ready.set()
        if not self._stop_requested.is_set():
            await self._stop_async.wait()
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), JOIN_TIMEOUT_S)
        except TimeoutError:
            log.warning("connections still open after %.1f s; abandoning them", JOIN_TIMEOUT_S)
        log.info("simulator stopped")

    def _conversation(self, connection: ServerConnection, route: str, query: dict[str, list[str]],
                      authorization: list[str]) -> Response:
        """`GET /atoms/v1/conversation/{callId}`: a plain HTTP request, answered with JSON."""
        call_id = route[len(CONVERSATION_PATH):]
        refused = check_key(query, authorization, self.options)
        record = self.conversations.record(call_id) if refused is None else None
        if refused is not None:
            status, body = refused.status, {"status": "error", "message": refused.reason}
        elif record is None:
            status, body = 404, {"status": "error", "message": f"no call {call_id[:80]!r}"}
        else:
            status, body = 200, record
        self.recorder.event("conversation_request", call_id=call_id[:80], status=status,
                            auth_header=bool(authorization), auth_query="token" in query)
        payload = json.dumps(body).encode()
        headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
                           ("Connection", "close")])
        return Response(status, "OK" if status == 200 else "Error", headers, payload)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Accept or refuse the HTTP upgrade (faults first, as a draining server would); answer
        the conversation endpoint, which is plain HTTP on the same port."""
        route, query = parse_query(request.path)
        if route.startswith(CONVERSATION_PATH):
            return self._conversation(connection, route, query, request.headers.get_all("Authorization"))
        attempt = self.recorder.next_attempt()
        authorization = request.headers.get_all("Authorization")
        info: dict[str, Any] = {
            "index": attempt, "path": route, "query": redacted_query(query),
            "auth_header": bool(authorization), "auth_query": "token" in query,
        }
        result: Refusal | SessionParams
        status = self._plan.reject_status(attempt)
        if status is not None:
            headers: dict[str, str] = {}
            if status in (429, 503) and self.options.retry_after is not None:
                headers["Retry-After"] = str(self.options.retry_after)
            result = Refusal(status, "simulated refusal", headers)
        else:
            result = check_request(request.path, authorization, self.options)
        if isinstance(result, Refusal):
            self.recorder.connection({**info, "status": result.status, "reason": result.reason})
            response = connection.respond(result.status, result.reason + "\n")
            for name, value in result.headers.items():
                response.headers[name] = value
            return response
        self.recorder.connection({**info, "status": 101, "reason": "accepted",
                                  "sample_rate": result.sample_rate, "mode": result.mode})
        self._pending[connection] = (attempt, result)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        pending = self._pending.pop(ws, None)
        if pending is None:  # cannot happen: only accepted upgrades reach the handler
            return
        attempt, params = pending
        session = SimSession(ws, params, self.options, self.recorder, self._plan,
                             attempt, self.recorder.next_session(), self.conversations)
        try:
            await session.run()
        except Exception:  # log it as ours; websockets then closes with 1011
            log.exception("session %s failed", session.session_id)
            raise


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """`atoms-appliance sim`: serve until SIGINT/SIGTERM; prints the listening line to stdout."""
    parser = build_parser()
    args: argparse.Namespace = parser.parse_args(argv)
    try:
        options = options_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))  # exits with status 2, like any other bad flag
    _configure_logging(args.log_level)

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stopping.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    sim = Simulator(options)
    status = 0
    try:
        try:
            sim.start()
        except SimulatorError as exc:
            log.error("%s", exc)
            return 1
        print(f"sim listening on {sim.url}", flush=True)
        while not stopping.wait(0.5):
            if not sim.alive:
                log.error("simulator thread ended unexpectedly")
                status = 1
                break
    finally:
        sim.stop()
        sim.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


if __name__ == "__main__":
    sys.exit(main())

"""The websocket-client specifics of the session, in one place: open a socket, send on it
without raising, and read what a refused upgrade or a close frame says.

Why the plain `websocket.WebSocket` and not `WebSocketApp.run_forever(reconnect=N)`: that retries
a 401 forever, loses close codes 4401/4403, and takes its connect timeout only from the
process-wide `websocket.setdefaulttimeout`. The plain socket gives a per-connection timeout, the
close code of every close, and leaves the one receive loop to a thread we own
(`device.session.connection`).
"""
from __future__ import annotations

import logging
import ssl
from typing import Any, Final, Protocol

import websocket

from device.session.config import SessionConfig

log = logging.getLogger(__name__)

# What a send, receive or connect on a websocket-client socket can raise when the network fails.
SOCKET_ERRORS: Final = (websocket.WebSocketException, OSError, ssl.SSLError)


class TextSocket(Protocol):
    """The part of a socket the main thread and the sender use: send one text frame."""

    def send(self, payload: str) -> Any: ...


def open_websocket(config: SessionConfig) -> websocket.WebSocket:
    """Connect and upgrade (TCP, TLS, HTTP) within `config.connect_timeout`; raises on failure."""
    # UTF-8 is checked by our own decode (errors="replace" + JSON); websocket-client's
    # validator is a pure-Python loop over every byte of every audio delta.
    ws = websocket.WebSocket(enable_multithread=True, skip_utf8_validation=True)
    ws.settimeout(config.connect_timeout)
    ws.connect(config.connect_url(), header=config.headers(), suppress_origin=True)
    return ws


def send_text(ws: TextSocket, text: str) -> bool:
    """Send one text frame; False (logged at debug) if the socket failed. Never raises.

    `send()` can race a closing socket (websocket-client issue 1045): callers count a False.
    Sends from several threads are safe: the socket is made with `enable_multithread=True`.
    """
    try:
        ws.send(text)
        return True
    except SOCKET_ERRORS as exc:
        log.debug("send failed: %s", exc)
        return False


def retry_after(headers: Any) -> float | None:
    """The `Retry-After` of a refused upgrade, in seconds (None if absent or not a number)."""
    if not headers:
        return None
    value = None
    for key, val in dict(headers).items():
        if str(key).lower() == "retry-after":
            value = val
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def close_code(data: bytes) -> tuple[int | None, str]:
    """The status code and reason of a close frame's payload."""
    if len(data) < 2:
        return None, ""
    return int.from_bytes(data[:2], "big"), data[2:].decode("utf-8", errors="replace")[:120]


def describe_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:200]

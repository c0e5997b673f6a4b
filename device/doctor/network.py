"""The `doctor` checks of the way to the agent: DNS, TCP/TLS and an authenticated session.

Each takes its network dependencies as arguments (resolver, connector, TLS context, WebSocket
opener), so tests reach every outcome with a local simulator or a closed port. They run on the
CLI's main thread; the only other thread is the DNS lookup's (getaddrinfo has no timeout).
"""
from __future__ import annotations

import errno
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, Final

import websocket

from device.doctor.core import CheckResult, describe_exception
from device.session.config import SessionConfig
from device.session.protocol import (
    AUTH_CLOSE_CODES,
    ServerError,
    ServerMessageDecoder,
    SessionClose,
    SessionClosed,
    SessionCreated,
    encode,
)

log = logging.getLogger(__name__)

DNS_TIMEOUT: Final = 5.0
CLOSE_WAIT: Final = 1.0          # seconds to wait for session.closed after our session.close
MAX_ADDRESSES: Final = 3          # addresses tried for TCP/TLS before giving up

Address = tuple[int, Any]         # (family, sockaddr) from getaddrinfo


# -- DNS and TCP/TLS --------------------------------------------------------------------------------------
def endpoint(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of a ws:// or wss:// URL."""
    parts = urllib.parse.urlsplit(url)
    tls = parts.scheme == "wss"
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    return parts.hostname, parts.port or (443 if tls else 80), tls


def _with_timeout(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """Run `fn` on a helper thread and wait at most `timeout` s (getaddrinfo cannot be cancelled:
    the thread ends when the resolver gives up; the doctor's process ends soon after anyway)."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=f"doctor-{what}", daemon=True).start()
    if not done.wait(timeout):
        raise TimeoutError(f"{what} took longer than {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def check_dns(url: str, resolve: Callable[..., list[Any]] = socket.getaddrinfo,
              timeout: float = DNS_TIMEOUT) -> tuple[CheckResult, list[Address]]:
    """Resolve the endpoint's host; returns the result and the addresses found."""
    name = "dns"
    host, port, _ = endpoint(url)
    started = time.monotonic()
    try:
        infos = _with_timeout(lambda: resolve(host, port, type=socket.SOCK_STREAM), timeout, "dns")
    except (socket.gaierror, TimeoutError, OSError, UnicodeError) as exc:
        return CheckResult.fail(name, f"cannot resolve {host}: {describe_exception(exc)}",
                                "check the network connection and DNS (/etc/resolv.conf, "
                                "`resolvectl status`), and the host in ATOMS_URL"), []
    addresses: list[Address] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    ms = (time.monotonic() - started) * 1000
    shown = ", ".join(str(a[1][0]) for a in addresses[:3])
    return CheckResult.passed(name, f"{host} -> {shown} in {ms:.0f} ms", host=host,
                              addresses=[str(a[1][0]) for a in addresses]), addresses


def _network_fix(exc: BaseException, host: str, port: int) -> tuple[str, str]:
    """(what happened, the fix) for a failed TCP connect."""
    if isinstance(exc, ConnectionRefusedError):
        return (f"connection refused by {host}:{port}",
                "nothing listens there: check the host and port in ATOMS_URL (or start the simulator)")
    if isinstance(exc, TimeoutError | socket.timeout):
        return (f"no answer from {host}:{port} in time",
                f"check the network, firewall or proxy: outbound TCP port {port} must be open")
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return (f"{host}:{port} is unreachable ({describe_exception(exc)})",
                "check the network connection (`ip route` needs a default route)")
    return (f"cannot connect to {host}:{port}: {describe_exception(exc)}",
            "check the network connection and ATOMS_URL")


def check_endpoint(
    url: str,
    addresses: list[Address],
    timeout: float,
    connect: Callable[..., socket.socket] = socket.create_connection,
    tls_context: Callable[[], ssl.SSLContext] = ssl.create_default_context,
) -> CheckResult:
    """TCP connect to the endpoint and, for wss://, a TLS handshake with SNI and the system CAs."""
    host, port, tls = endpoint(url)
    name = "tls" if tls else "tcp"
    error: BaseException | None = None
    for _family, sockaddr in addresses[:MAX_ADDRESSES] or [(0, (host, port))]:
        started = time.monotonic()
        try:
            sock = connect((sockaddr[0], port), timeout=timeout)
        except OSError as exc:
            error = exc
            continue
        try:
            if not tls:
                ms = (time.monotonic() - started) * 1000
                return CheckResult.passed(name, f"TCP connect to {sockaddr[0]}:{port} in {ms:.0f} ms "
                                          "(ws:// has no TLS: for a local simulator only)")
            sock.settimeout(timeout)
            context = tls_context()
            with context.wrap_socket(sock, server_hostname=host) as tls_sock:
                ms = (time.monotonic() - started) * 1000
                cert = tls_sock.getpeercert() or {}
                until = str(cert.get("notAfter", "?"))
                return CheckResult.passed(
                    name, f"{tls_sock.version()} with {host} ({sockaddr[0]}:{port}) in {ms:.0f} ms; "
                    f"certificate valid until {until}", version=tls_sock.version(), not_after=until)
        except ssl.SSLCertVerificationError as exc:
            message = exc.verify_message or str(exc)
            clock = "not yet valid" in message or "expired" in message
            return CheckResult.fail(
                name, f"the certificate of {host} was rejected: {message}",
                "check the system clock (see the clock line)" if clock else
                "a proxy or captive portal intercepts TLS: use a network without one, or install its "
                "CA certificate")
        except (ssl.SSLError, OSError) as exc:
            what, fix = _network_fix(exc, host, port) if not isinstance(exc, ssl.SSLError) else (
                f"TLS handshake with {host} failed: {describe_exception(exc)}",
                "a proxy or firewall interferes with TLS: try another network")
            return CheckResult.fail(name, what, fix)
        finally:
            sock.close()
    assert error is not None
    what, fix = _network_fix(error, host, port)
    return CheckResult.fail(name, what, fix)


# -- the agent ------------------------------------------------------------------------------------
def open_websocket(config: SessionConfig) -> websocket.WebSocket:
    """Connect as the service does (header auth, no Origin, per-connection timeout)."""
    ws = websocket.WebSocket(skip_utf8_validation=True)
    ws.settimeout(config.connect_timeout)
    ws.connect(config.connect_url(), header=config.headers(), suppress_origin=True)
    return ws


def _refusal(exc: websocket.WebSocketBadStatusException) -> CheckResult:
    name = "agent"
    status = int(getattr(exc, "status_code", 0) or 0)
    body = getattr(exc, "resp_body", None) or b""
    reason = body.decode("utf-8", "replace").strip().splitlines()[0][:100] if body.strip() else ""
    said = f": {reason}" if reason else ""
    if status in (401, 403):
        return CheckResult.fail(name, f"the key or agent was rejected (HTTP {status}{said})",
                                "check the API key (credential atoms_api_key or ATOMS_API_KEY) and "
                                "ATOMS_AGENT_ID against the Atoms console", http_status=status)
    if status in (429, 503):
        headers = {str(k).lower(): v for k, v in dict(getattr(exc, "resp_headers", None) or {}).items()}
        retry = headers.get("retry-after")
        after = f", retry after {retry} s" if retry else ""
        return CheckResult.warn(name, f"the server is draining or busy (HTTP {status}{after})",
                                "retry later; the service itself retries with backoff", http_status=status)
    if status == 404:
        return CheckResult.fail(name, f"no such endpoint (HTTP 404{said})",
                                "check the path in ATOMS_URL (/atoms/v1/agent/connect)", http_status=status)
    if status == 400:
        return CheckResult.fail(name, f"the server refused the request (HTTP 400{said})",
                                "check ATOMS_SAMPLE_RATE, ATOMS_VARIABLES and ATOMS_AUTH", http_status=status)
    return CheckResult.fail(name, f"the server answered HTTP {status}{said}",
                            "retry later; if it persists, check ATOMS_URL", http_status=status)


def check_agent(config: SessionConfig,
                open_ws: Callable[[SessionConfig], websocket.WebSocket] = open_websocket) -> CheckResult:
    """An authenticated connect: wait for `session.created`, send `session.close` at once, close.

    401/403 (or close code 4401/4403) FAIL as rejected credentials, 429/503 WARN (draining), network
    errors FAIL as unreachable. Costs the account one empty session of about a second.
    """
    name = "agent"
    started = time.monotonic()
    try:
        ws = open_ws(config)
    except websocket.WebSocketBadStatusException as exc:
        return _refusal(exc)
    except (websocket.WebSocketException, OSError, ssl.SSLError, ValueError) as exc:
        return CheckResult.fail(name, f"unreachable: {describe_exception(exc)}",
                                "check the network and ATOMS_URL (see the dns and tls lines)")
    try:
        return _await_session(ws, config, started)
    finally:
        try:
            ws.close(timeout=0.5)
        except Exception:  # noqa: BLE001 - best effort on a socket that may be dead
            pass


def _await_session(ws: websocket.WebSocket, config: SessionConfig, started: float) -> CheckResult:
    name = "agent"
    decoder = ServerMessageDecoder(config.max_message_bytes)
    deadline = started + config.connect_timeout
    ws.settimeout(0.2)
    created: SessionCreated | None = None
    close_deadline = 0.0
    while True:
        now = time.monotonic()
        if created is not None and now >= close_deadline:
            break
        if created is None and now >= deadline:
            return CheckResult.fail(name, f"connected, but no session.created within {config.connect_timeout:.0f} s",
                                    "retry; if it persists, check the agent in the Atoms console")
        try:
            opcode, frame = ws.recv_data_frame(True)
        except websocket.WebSocketTimeoutException:
            continue
        except (websocket.WebSocketException, OSError, ssl.SSLError) as exc:
            if created is not None:
                break   # closed after our session.close: fine
            return CheckResult.fail(name, f"the connection broke before session.created: {describe_exception(exc)}",
                                    "retry; check the network (see the tls line)")
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else None
            if code in AUTH_CLOSE_CODES:   # the service treats these as rejected credentials at any time
                return CheckResult.fail(name, f"the key or agent was rejected (close code {code})",
                                        "check the API key and ATOMS_AGENT_ID against the Atoms console")
            if created is not None:
                break
            return CheckResult.fail(name, f"the server closed the connection before session.created (code {code})",
                                    "retry later; if it persists, check the agent in the Atoms console")
        if opcode != websocket.ABNF.OPCODE_TEXT:
            continue
        message = decoder.decode(frame.data.decode("utf-8", "replace"))
        if isinstance(message, SessionCreated) and created is None:
            created = message
            ws.send(encode(SessionClose()))
            close_deadline = time.monotonic() + CLOSE_WAIT
        elif isinstance(message, SessionClosed) and created is not None:
            break
        elif isinstance(message, ServerError) and created is None:
            return CheckResult.fail(name, f"server error {message.code}: {message.message[:120]}",
                                    "check ATOMS_AGENT_ID and the agent's configuration in the Atoms console")
    assert created is not None
    ms = (time.monotonic() - started) * 1000
    rate = "" if created.sample_rate == config.sample_rate else f" (asked for {config.sample_rate} Hz)"
    return CheckResult.passed(name, f"session.created in {ms:.0f} ms at {created.sample_rate} Hz{rate}; "
                              "closed again", sample_rate=created.sample_rate, session_id=created.session_id)

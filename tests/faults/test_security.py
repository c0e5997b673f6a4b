"""Security checks: the API key never shows, TLS verification cannot be turned off, the config
file warns when others can read it, and garbage on the control socket cannot silence it.

The end-to-end tests already check text logs at DEBUG for header and query auth; here: JSON logs
through refusals and a call, websocket-client's own trace, every file the service writes, and
the TLS paths (an untrusted server is refused; a trusted one is reached, so the refusal is not
an accident of the test server).
"""
from __future__ import annotations

import io
import json
import logging
import queue
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from device.audio.buffers import UplinkQueue
from device.core.events import ConnectionLost, Event, SessionStarted
from device.service.logs import setup_logging
from device.service.settings import Settings, config_file_warnings
from device.session.client import SessionClient
from device.session.config import SessionConfig
from device.sim.server import SimOptions, Simulator
from tools import REPO
from tools.fault_service import POLL_INTERVAL, FaultService
from tools.polling import wait_until
from tools.service_process import TEST_KEY

SimFactory = Callable[..., Simulator]
ServiceFactory = Callable[..., FaultService]
RecordFault = Callable[..., None]
KEY_FORMS = (TEST_KEY, urllib.parse.quote(TEST_KEY, safe=""), urllib.parse.quote_plus(TEST_KEY))


def assert_no_key(text: str | bytes, where: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    for form in KEY_FORMS:
        assert form.encode() not in data, f"the API key is in {where}"


# -- the key ---------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("auth", ["header", "query"])
def test_the_key_is_nowhere_in_json_logs_status_or_files(auth: str, start_sim: SimFactory,
                                                         start_service: ServiceFactory, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('call_mode = "always"\n')
    config.chmod(0o644)  # readable by every user: the service must say so
    sim = start_sim(reject_status=503, reject_count=1, greeting="Hello there.")
    service = start_service(sim.url, auth=auth, log_format="json", log_level="DEBUG", config=config)
    assert sim.wait_for_event("reply_end", 20), service.output()
    status = service.ctl("status")
    assert service.ctl("hangup")["ok"]
    service.signal(signal.SIGTERM)
    assert service.stop() == 0
    lines = [line for line in service.output().splitlines() if line and line != "<eof>"]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    assert any(r["level"] == "DEBUG" for r in records)  # the test ran at DEBUG, with the refusal:
    assert any("HTTP 503" in r["msg"] for r in records)
    assert any(r["level"] == "WARNING" and "readable by every user" in r["msg"] for r in records)
    assert_no_key(service.output(), "the log")
    assert_no_key(json.dumps(status), "ctl status")
    for path in service.tmp.rglob("*"):
        if path.is_file():
            assert_no_key(path.read_bytes(), str(path.relative_to(service.tmp)))
    env = {**service.env, "ATOMS_CONFIG": str(config)}
    shown = subprocess.run([sys.executable, "-m", "device", "config"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0 and '"api_key": "<set>"' in shown.stdout
    assert_no_key(shown.stdout + shown.stderr, "`atoms-appliance config`")


@pytest.fixture(autouse=True)
def restore_root_logging() -> Iterator[None]:
    """setup_logging reconfigures the root logger (level ERROR, its own handler only): put back
    what pytest had, or later tests' caplog sees no warnings (test_error_leds did)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_websocket_client_trace_is_redacted(fmt: str) -> None:
    """websocket-client's trace dumps the upgrade request, Authorization header included, to its
    own logger (and to a handler of its own); neither may show the key."""
    ours, theirs = io.StringIO(), io.StringIO()
    handler = setup_logging("DEBUG", fmt, secrets=[TEST_KEY], stream=ours)
    websocket.enableTrace(True, handler=logging.StreamHandler(theirs))
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    client: SessionClient | None = None
    try:
        with Simulator(SimOptions(port=0, api_key=TEST_KEY)) as sim:
            client = SessionClient(SessionConfig(url=sim.url, api_key=TEST_KEY, agent_id="sim-agent"),
                                   UplinkQueue(10), events.put, lambda pcm: None)
            client.start()
            client.connect()
            assert wait_event(events, SessionStarted, 10)
            client.stop()
            assert client.join(5)
    finally:
        websocket.enableTrace(False)
        logging.getLogger().removeHandler(handler)
    assert "Authorization: Bearer ***" in theirs.getvalue()  # the trace ran and was redacted
    assert "Authorization: Bearer ***" in ours.getvalue()
    assert_no_key(ours.getvalue(), "our log")
    assert_no_key(theirs.getvalue(), "websocket-client's trace handler")


def test_json_log_exceptions_are_redacted() -> None:
    out = io.StringIO()
    handler = setup_logging("ERROR", "json", secrets=[TEST_KEY], stream=out)
    try:
        try:
            raise ConnectionError(f"refused wss://host/?token={urllib.parse.quote_plus(TEST_KEY)} ({TEST_KEY})")
        except ConnectionError:
            logging.getLogger("device.session.connection").exception("connect failed for %s", TEST_KEY)
    finally:
        logging.getLogger().removeHandler(handler)
    record = json.loads(out.getvalue())
    assert record["msg"] == "connect failed for ***" and "ConnectionError" in record["exc"]
    assert_no_key(out.getvalue(), "a JSON exception record")


def wait_event(events: queue.SimpleQueue[Event], kind: type, timeout: float) -> Event | None:
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.start()
    try:
        while not deadline.is_set():
            try:
                event = events.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(event, kind):
                return event
        return None
    finally:
        timer.cancel()


# -- the config file -------------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "warns"), [(0o644, True), (0o604, True), (0o640, False), (0o600, False)])
def test_a_config_file_readable_by_others_warns(tmp_path: Path, mode: int, warns: bool) -> None:
    config = tmp_path / "config.toml"
    config.write_text('api_key = "sk-in-the-file"\n')
    config.chmod(mode)
    warnings = config_file_warnings(config)
    if warns:
        assert len(warnings) == 1 and "readable by every user" in warnings[0]
        assert f"chmod 640 {config}" in warnings[0]
        assert "sk-in-the-file" not in warnings[0]
    else:
        assert warnings == []
    assert stat.S_IMODE(config.stat().st_mode) == mode  # a warning, never a silent chmod


# -- TLS ---------------------------------------------------------------------------------------------
FORBIDDEN_TLS = re.compile(r"CERT_NONE|cert_reqs|sslopt|check_hostname|verify_mode|_create_unverified_context|"
                           r"PYTHONHTTPSVERIFY|WEBSOCKET_CLIENT_CA_BUNDLE")


def test_nothing_can_turn_tls_verification_off() -> None:
    """No code path passes TLS options (websocket-client then verifies against the system CAs
    with hostname checking), and no setting could ask it not to."""
    offenders = [f"{path.relative_to(REPO)}:{n}: {line.strip()}"
                 for top in ("device", "hw") for path in sorted((REPO / top).rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if FORBIDDEN_TLS.search(line)]
    assert offenders == []
    suspicious = [name for name in Settings.model_fields if re.search(r"verify|insecure|cert|ssl|tls", name)]
    assert suspicious == []


def make_cert(tmp: Path, name: str, san: str) -> tuple[Path, Path]:
    """A self-signed certificate and key (openssl CLI), valid for `san` (e.g. IP:127.0.0.1)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp / f"{name}.pem", tmp / f"{name}.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName={san}"], check=True, capture_output=True, timeout=30)
    return cert, key


class TlsServer:
    """A TLS listener on 127.0.0.1 that records handshakes and answers any request with 503."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.handshakes = 0
        self.failures: list[str] = []
        self.requests: list[bytes] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tls-server", daemon=True)

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/atoms/v1/agent/connect"

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                tls = self.context.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                conn.close()
                with self._cond:
                    self.failures.append(str(exc))
                    self._cond.notify_all()
                continue
            with self._cond:
                self.handshakes += 1
                self._cond.notify_all()
            self._answer(tls)

    def _answer(self, tls: ssl.SSLSocket) -> None:
        request = b""
        try:
            while b"\r\n\r\n" not in request and len(request) < 65536:
                part = tls.recv(4096)
                if not part:
                    break
                request += part
            tls.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass
        finally:
            tls.close()
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()

    def __enter__(self) -> TlsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def self_signed(tmp_path: Path) -> Iterator[TlsServer]:
    cert, key = make_cert(tmp_path, "atoms-test", "IP:127.0.0.1")
    with TlsServer(cert, key) as server:
        server.cert = cert  # type: ignore[attr-defined]
        yield server


@pytest.mark.slow
def test_an_untrusted_tls_server_is_refused_and_retried(self_signed: TlsServer, start_service: ServiceFactory,
                                                        record_fault: RecordFault) -> None:
    service = start_service(self_signed.url, call_mode="always")
    assert service.wait_line(r"connection lost \(SSLCertVerificationError.*CERTIFICATE_VERIFY_FAILED", 10), \
        service.output()
    # A retryable network error: it tries again (with backoff), and never gets further.
    assert self_signed.wait(lambda: len(self_signed.failures) >= 2, 10), self_signed.failures
    status = service.status()
    assert status["call_state"] in ("connecting", "reconnecting") and "CERTIFICATE_VERIFY_FAILED" in status["last_error"]
    assert self_signed.handshakes == 0 and self_signed.requests == []  # the key never left
    assert service.count_log(r"session \S+ started \(call") == 0
    assert service.running
    assert service.stop() == 0
    record_fault("tls_untrusted", None, refused_handshakes=len(self_signed.failures))


def tls_client(url: str, events: queue.SimpleQueue[Event]) -> SessionClient:
    config = SessionConfig(url=url, api_key=TEST_KEY, agent_id="sim-agent", backoff_initial=0.1, backoff_max=0.3)
    return SessionClient(config, UplinkQueue(10), events.put, lambda pcm: None)


def first_loss(url: str) -> ConnectionLost:
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    client = tls_client(url, events)
    client.start()
    try:
        client.connect()
        lost = wait_event(events, ConnectionLost, 10)
    finally:
        client.stop()
        assert client.join(5)
    assert isinstance(lost, ConnectionLost)
    return lost


def test_a_trusted_certificate_gets_through_and_the_hostname_is_checked(
        self_signed: TlsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The positive control: trusting the test CA (websocket-client's documented CA-bundle
    variable) gets past TLS to HTTP; a trusted certificate for another name is still refused."""
    monkeypatch.setenv("WEBSOCKET_CLIENT_CA_BUNDLE", str(self_signed.cert))  # type: ignore[attr-defined]
    lost = first_loss(self_signed.url)
    assert lost.reason == "HTTP 503"
    assert self_signed.handshakes == 1 and b"GET /atoms/v1/agent/connect" in self_signed.requests[0]
    other_cert, other_key = make_cert(tmp_path, "other", "DNS:elsewhere.example")
    monkeypatch.setenv("WEBSOCKET_CLIENT_CA_BUNDLE", str(other_cert))
    with TlsServer(other_cert, other_key) as other:
        lost = first_loss(other.url)
        assert "CERTIFICATE_VERIFY_FAILED" in lost.reason and "IP address mismatch" in lost.reason, lost.reason
        assert other.handshakes == 0


# -- the control socket ------------------------------------------------------------------------------
@pytest.mark.slow
def test_garbage_on_the_control_socket_does_not_silence_it(start_sim: SimFactory,
                                                           start_service: ServiceFactory,
                                                           record_fault: RecordFault) -> None:
    sim = start_sim()
    service = start_service(sim.url, call_mode="button")
    garbage: list[bytes] = [
        b"[" * 3000 + b"\n",                      # nesting deeper than the recursion limit
        b'{"cmd":' * 1500 + b"\n",
        bytes(range(256)).replace(b"\n", b"") + b"\n",
        b'{"cmd": ["call"]}\n{"cmd": {"x": 1}}\n{"cmd": null}\n"status"\n',
        b"\xff\xfe\x00garbage\n",
    ]
    for chunk in garbage:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(3)
            sock.connect(str(service.socket))
            sock.sendall(chunk)
            replies = read_replies(sock, chunk.count(b"\n"))
        assert replies and all(r == {"ok": False, "error": replies[0]["error"]} for r in replies), replies
    assert service.status()["call_state"] == "idle"  # nothing in there was a command
    assert service.ctl("mute")["ok"]
    assert wait_until(lambda: service.status()["muted"] is True, 3, interval=POLL_INTERVAL)
    assert service.count_log(r"thread control-socket crashed") == 0
    assert service.count_log(r"bad control request") == 1  # logged once, then only counted
    assert service.stop() == 0
    record_fault("control_garbage", None, garbage_writes=len(garbage))


def read_replies(sock: socket.socket, count: int) -> list[dict[str, Any]]:
    data = b""
    while data.count(b"\n") < count:
        try:
            part = sock.recv(65536)
        except (TimeoutError, OSError):
            break
        if not part:
            break
        data += part
    return [json.loads(line) for line in data.splitlines()]


"""The way to the agent: DNS, TCP/TLS and an authenticated session, against the local simulator,
a closed port and a local TLS server with a throwaway certificate."""
from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import websocket

from device.doctor.core import Status
from device.doctor.network import check_agent, check_dns, check_endpoint, endpoint
from device.session.config import SessionConfig
from device.sim.server import Simulator

from . import TEST_KEY, closed_port

pytestmark = pytest.mark.timeout(30)


def config(url: str, key: str = TEST_KEY, **extra: Any) -> SessionConfig:
    extra.setdefault("connect_timeout", 5.0)
    return SessionConfig(url=url, api_key=key, agent_id="sim-agent", **extra)


# -- the agent ------------------------------------------------------------------------------------
def test_an_accepted_key_opens_and_closes_one_session(start_sim: Callable[..., Simulator]) -> None:
    sim = start_sim()
    result = check_agent(config(sim.url))
    assert result.status is Status.PASS, result
    assert "session.created" in result.detail and "16000 Hz" in result.detail
    assert sim.wait_for(lambda: sim.session_closes == 1, 5), "doctor must send session.close"
    assert sim.connections[0]["auth_header"] and not sim.connections[0]["auth_query"]


def test_query_auth_is_used_when_configured(start_sim: Callable[..., Simulator]) -> None:
    sim = start_sim()
    assert check_agent(config(sim.url, auth="query")).status is Status.PASS
    assert sim.connections[0]["auth_query"]


def test_a_rejected_key_fails_as_credentials(start_sim: Callable[..., Simulator]) -> None:
    sim = start_sim()
    result = check_agent(config(sim.url, key="not-the-key"))
    assert result.status is Status.FAIL
    assert "rejected (HTTP 401: invalid API key)" in result.detail
    assert "ATOMS_AGENT_ID" in result.fix and "not-the-key" not in result.detail


def test_a_simulator_that_refuses_with_401_fails(start_sim: Callable[..., Simulator]) -> None:
    sim = start_sim(reject_status=401)
    result = check_agent(config(sim.url))
    assert result.status is Status.FAIL
    assert result.data["http_status"] == 401


def test_a_draining_server_warns_with_retry_after(start_sim: Callable[..., Simulator]) -> None:
    sim = start_sim(reject_status=503, retry_after=7)
    result = check_agent(config(sim.url))
    assert result.status is Status.WARN
    assert "HTTP 503, retry after 7 s" in result.detail and "retry later" in result.fix


class ScriptedWs:
    """Stands in for websocket.WebSocket: hands out scripted frames, records what was sent."""

    def __init__(self, frames: list[tuple[int, bytes]]) -> None:
        self.frames = frames
        self.sent: list[str] = []
        self.closed = False

    def settimeout(self, timeout: float) -> None:
        pass

    def recv_data_frame(self, control: bool) -> tuple[int, Any]:
        if not self.frames:
            raise websocket.WebSocketTimeoutException("no data")
        opcode, data = self.frames.pop(0)
        return opcode, SimpleNamespace(data=data)

    def send(self, text: str) -> None:
        self.sent.append(text)

    def close(self, timeout: float = 0) -> None:
        self.closed = True


CREATED = json.dumps({"type": "session.created", "session_id": "s1", "call_id": "c1", "sample_rate": 24000})


@pytest.mark.parametrize("after_created", [False, True])
def test_a_close_code_4401_fails_as_credentials(after_created: bool) -> None:
    frames = [(websocket.ABNF.OPCODE_CLOSE, (4401).to_bytes(2, "big") + b"unauthorized")]
    if after_created:
        frames.insert(0, (websocket.ABNF.OPCODE_TEXT, CREATED.encode()))
    ws = ScriptedWs(frames)
    result = check_agent(config("ws://127.0.0.1:1/x"), lambda cfg: ws)  # type: ignore[arg-type,return-value]
    assert result.status is Status.FAIL
    assert "close code 4401" in result.detail
    assert ws.closed


def test_the_negotiated_rate_is_reported_and_no_session_times_out() -> None:
    ws = ScriptedWs([(websocket.ABNF.OPCODE_TEXT, CREATED.encode())])
    result = check_agent(config("ws://127.0.0.1:1/x"), lambda cfg: ws)  # type: ignore[arg-type,return-value]
    assert result.status is Status.PASS
    assert "24000 Hz (asked for 16000 Hz)" in result.detail
    assert json.loads(ws.sent[0]) == {"type": "session.close"}
    silent = check_agent(config("ws://127.0.0.1:1/x", connect_timeout=0.3),
                         lambda cfg: ScriptedWs([]))  # type: ignore[arg-type,return-value]
    assert silent.status is Status.FAIL and "no session.created" in silent.detail


def test_an_unreachable_host_fails_as_unreachable() -> None:
    port = closed_port()
    result = check_agent(config(f"ws://127.0.0.1:{port}/atoms/v1/agent/connect"))
    assert result.status is Status.FAIL
    assert result.detail.startswith("unreachable: ConnectionRefusedError")
    assert "network" in result.fix


# -- DNS and TCP ------------------------------------------------------------------------------------
def test_dns_resolves_and_tcp_connects_to_the_simulator(start_sim: Callable[..., Simulator]) -> None:
    sim = start_sim()
    dns, addresses = check_dns(sim.url)
    assert dns.status is Status.PASS and addresses
    tcp = check_endpoint(sim.url, addresses, timeout=2)
    assert tcp.status is Status.PASS and tcp.name == "tcp"


def test_a_closed_port_fails_the_tcp_check() -> None:
    url = f"ws://127.0.0.1:{closed_port()}/atoms/v1/agent/connect"
    _, addresses = check_dns(url)
    result = check_endpoint(url, addresses, timeout=2)
    assert result.status is Status.FAIL
    assert "connection refused" in result.detail and "ATOMS_URL" in result.fix


def test_a_host_that_does_not_resolve_fails() -> None:
    def resolve(*args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    result, addresses = check_dns("wss://api.example.invalid/x", resolve)
    assert result.status is Status.FAIL and addresses == []
    assert "api.example.invalid" in result.detail and "DNS" in result.fix


def test_a_resolver_that_hangs_times_out() -> None:
    release = threading.Event()

    def resolve(*args: Any, **kwargs: Any) -> list[Any]:
        release.wait(5)
        return []

    try:
        result, _ = check_dns("wss://slow.example/x", resolve, timeout=0.2)
    finally:
        release.set()
    assert result.status is Status.FAIL
    assert "TimeoutError" in result.detail


def test_endpoint_parts() -> None:
    assert endpoint("wss://api.smallest.ai/atoms/v1/agent/connect") == ("api.smallest.ai", 443, True)
    assert endpoint("ws://127.0.0.1:8765/x") == ("127.0.0.1", 8765, False)


# -- TLS ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=30)
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[int]:
    """A TLS server on 127.0.0.1 that completes (or fails) one handshake per connection."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(2)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, name="test-tls-server")
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    listener.close()
    assert not thread.is_alive()


def test_tls_with_a_trusted_certificate_passes(tls_server: int, certificate: tuple[Path, Path]) -> None:
    url = f"wss://localhost:{tls_server}/atoms/v1/agent/connect"
    _, addresses = check_dns(url)
    result = check_endpoint(url, addresses, timeout=5,
                            tls_context=lambda: ssl.create_default_context(cafile=str(certificate[0])))
    assert result.status is Status.PASS, result
    assert result.name == "tls" and "TLSv1." in result.detail and "valid until" in result.detail


def test_tls_with_an_untrusted_certificate_fails(tls_server: int) -> None:
    url = f"wss://localhost:{tls_server}/atoms/v1/agent/connect"
    _, addresses = check_dns(url)
    result = check_endpoint(url, addresses, timeout=5)
    assert result.status is Status.FAIL
    assert "certificate of localhost was rejected" in result.detail
    assert "proxy" in result.fix


def test_a_tls_handshake_with_a_plain_server_fails(start_sim: Callable[..., Simulator]) -> None:
    sim = start_sim()
    url = f"wss://127.0.0.1:{sim.port}/atoms/v1/agent/connect"
    result = check_endpoint(url, [(socket.AF_INET, ("127.0.0.1", sim.port))], timeout=2)
    assert result.status is Status.FAIL
    assert "TLS handshake with 127.0.0.1 failed" in result.detail

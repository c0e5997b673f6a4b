"""Protocol faults the simulator cannot produce, from a scripted agent, against the service process.

The simulator's `--garbage` (covered in tests/e2e/test_call.py) sends one frame of each malformed
*shape*; here a scripted server sends known message types with wrong field *types*, a 2 MB
audio delta and pathologically nested JSON, and tries session-level faults: a session.created
with a rate the device cannot play, and an accepted upgrade that never becomes a session.
"""
from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from device.service.settings import Settings
from tests.faults import pick
from tools.fault_service import POLL_INTERVAL, FaultService
from tools.polling import wait_until

pytestmark = pytest.mark.slow

IN_CALL = r"state in_call\b"
PERIOD_MS: int = Settings.model_fields["period_ms"].default   # the service's period (start_service sets none)
ServiceFactory = Callable[..., FaultService]
RecordFault = Callable[..., None]
Script = Callable[[ServerConnection, "ScriptedAgent"], None]

CREATED = {"type": "session.created", "session_id": "scripted-1", "call_id": "CALL-1", "sample_rate": 16000,
           "channels": 1}

# (malformed counter kind the service must count, frame)
WRONG_TYPES: list[tuple[str, str]] = [
    ("invalid_session.created", json.dumps({"type": "session.created", "session_id": 5, "call_id": ["x"],
                                            "sample_rate": "fast"})),
    ("invalid_transcript", json.dumps({"type": "transcript", "role": "agent", "text": 12345})),
    ("invalid_transcript", json.dumps({"type": "transcript", "role": 7, "text": "x"})),
    ("invalid_error", json.dumps({"type": "error", "code": {"a": 1}, "message": None})),
    # A session.closed that does not parse must not end the call.
    ("invalid_session.closed", json.dumps({"type": "session.closed", "reason": ["timeout"]})),
    ("invalid_agent_start_talking", json.dumps({"type": "agent_start_talking", "timestamp": 123})),
    ("invalid_output_audio.delta", json.dumps({"type": "output_audio.delta", "audio": 12})),
    ("invalid_output_audio.delta", json.dumps({"type": "output_audio.delta", "audio": None})),
    ("unknown_type", json.dumps({"type": ["session.closed"]})),
    ("invalid_json", "[" * 100_000),  # deeper than any recursion limit
    ("invalid_json", '{"type": "session.created", "sample_rate": ' + "9" * 5000 + "}"),  # int too long
    ("oversized", json.dumps({"type": "output_audio.delta",
                              "audio": base64.b64encode(bytes(1_500_000)).decode()})),  # 2 MB
]


def tone_deltas(seconds: float, rate: int = 16000, chunk_ms: int = 40) -> list[str]:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (4000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()
    step = rate * chunk_ms // 1000 * 2
    return [json.dumps({"type": "output_audio.delta", "audio": base64.b64encode(pcm[i:i + step]).decode()})
            for i in range(0, len(pcm), step)]


class ScriptedAgent:
    """A WebSocket server on 127.0.0.1 that accepts every upgrade and runs `script` per connection
    (websockets' threaded server: one thread per connection, all stopped by `close`)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.appends = 0
        self.marks: dict[str, float] = {}
        self._cond = threading.Condition()
        self._server = serve(self._handle, "127.0.0.1", 0, max_size=None, compression=None)
        self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-agent", daemon=True)

    @property
    def url(self) -> str:
        port = self._server.socket.getsockname()[1]
        return f"ws://127.0.0.1:{port}/atoms/v1/agent/connect"

    def mark(self, name: str) -> None:
        with self._cond:
            self.marks[name] = time.time()
            self._cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def _handle(self, ws: ServerConnection) -> None:
        with self._cond:
            self.connections += 1
            self._cond.notify_all()
        # Read on a thread of our own while the script sends (the sync API allows one of each),
        # so the client's uplink keeps flowing; the connection lives until the client leaves.
        reader = threading.Thread(target=self._read, args=(ws,), name="scripted-agent-reader", daemon=True)
        reader.start()
        try:
            self.script(ws, self)
        except ConnectionClosed:
            pass
        reader.join()

    def _read(self, ws: ServerConnection) -> None:
        """Count the client's audio appends until it goes away."""
        try:
            for message in ws:
                if isinstance(message, str) and '"input_audio_buffer.append"' in message:
                    with self._cond:
                        self.appends += 1
                        self._cond.notify_all()
        except ConnectionClosed:
            pass

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._thread.join(5)


@pytest.fixture
def scripted() -> Iterator[Callable[[Script], ScriptedAgent]]:
    agents: list[ScriptedAgent] = []

    def start(script: Script) -> ScriptedAgent:
        agent = ScriptedAgent(script)
        agents.append(agent)
        return agent.__enter__()

    yield start
    for agent in agents:
        agent.__exit__(None, None, None)


def test_wrong_field_types_and_a_2mb_message_are_counted_and_ignored(
        scripted: Callable[[Script], ScriptedAgent], start_service: ServiceFactory,
        record_fault: RecordFault) -> None:
    audio = tone_deltas(0.6)

    def script(ws: ServerConnection, agent: ScriptedAgent) -> None:
        ws.send(json.dumps(CREATED))
        agent.wait(lambda: agent.appends >= 5, 5)  # the call is up and the mic flows
        for _, frame in WRONG_TYPES:
            ws.send(frame)
        agent.mark("garbage_sent")
        ws.send(json.dumps({"type": "agent_start_talking"}))
        for delta in audio:
            ws.send(delta)
        ws.send(json.dumps({"type": "agent_stop_talking"}))
        agent.mark("audio_sent")

    agent = scripted(script)
    service = start_service(agent.url, call_mode="always")
    assert agent.wait(lambda: "audio_sent" in agent.marks, 15), service.output()
    speaking = service.wait_line(r"state in_call agent-speaking", 10, after=agent.marks["garbage_sent"])
    assert speaking is not None, service.output()
    expected: dict[str, int] = {}
    for kind, _ in WRONG_TYPES:
        expected[kind] = expected.get(kind, 0) + 1
    counters = service.wait_counters(lambda c: c["malformed"] == expected
                                     and c["agent_periods_played"] >= 500 // PERIOD_MS, 10)   # 0.5 of the 0.6 s
    assert counters is not None, (service.counters().get("malformed"), expected)
    appends = agent.appends
    assert agent.wait(lambda: agent.appends > appends + 25, 5)  # the uplink still flows
    status = service.status()
    assert status["call_state"] == "in_call" and status["session_id"] == "scripted-1"
    assert agent.connections == 1  # nothing in the garbage ended or restarted the session
    for kind in expected:
        assert service.count_log(rf"ignoring malformed server message \({kind}\)") == 1  # logged once
    assert service.stop() == 0
    record_fault("wrong_types", speaking - agent.marks["garbage_sent"], frames=len(WRONG_TYPES),
                 kinds=len(expected))


@pytest.mark.parametrize("rate", [44100])
def test_session_created_with_an_unsupported_rate_does_not_kill_the_audio(
        rate: int, scripted: Callable[[Script], ScriptedAgent], start_service: ServiceFactory) -> None:
    def script(ws: ServerConnection, agent: ScriptedAgent) -> None:
        ws.send(json.dumps({**CREATED, "sample_rate": rate}))

    agent = scripted(script)
    service = start_service(agent.url, call_mode="always")
    assert agent.wait(lambda: agent.connections >= 1, 10)
    # The device decides at once: the decoder refuses the rate (a malformed session.created,
    # counted) and the session is never started. Waited for as that event, not as wall time.
    decided = service.wait_counters(lambda c: c["malformed"].get("invalid_session.created", 0) >= 1, 10)
    assert decided is not None, service.counters()
    assert decided["sessions"] == 0
    # Its audio threads live on after the decision: they play on, and none crashed.
    before = decided.get("periods_played", 0)
    assert service.wait_counters(lambda c: c["periods_played"] > before + 500 // PERIOD_MS, 3), service.counters()
    assert service.count_log(r"thread \S+ crashed") == 0, service.output()
    assert service.running


def test_an_upgrade_that_never_becomes_a_session_is_retried(
        scripted: Callable[[Script], ScriptedAgent], start_service: ServiceFactory) -> None:
    def script(ws: ServerConnection, agent: ScriptedAgent) -> None:
        pass  # accepted, then silence: no session.created, ever

    agent = scripted(script)
    service = start_service(agent.url, call_mode="always", connect_timeout=0.5, backoff_initial=0.1,
                            backoff_max=0.3)
    assert agent.wait(lambda: agent.connections >= 1, 10)
    # connect_timeout bounds TCP+TLS+upgrade; session.created should get a bound of its own.
    assert agent.wait(lambda: agent.connections >= 2, pick(2.5, 5.0)), service.status()
    assert wait_until(lambda: service.status()["call_state"] in ("connecting", "reconnecting"), 1,
                      interval=POLL_INTERVAL)

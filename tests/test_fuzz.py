"""Fuzzing (hypothesis) of everything that parses input from outside or turns events into actions.

What tests/test_protocol.py and tests/test_state_machine.py already cover is not repeated (one
frame at a time never raising; a representative event grid and sequences of it). Added here:
- the decoder over *sequences* of frames, including known types with mutated field types: its
  counters only grow, one per rejected frame, and what it returns is one of the 8 server types
  with fields of the declared types;
- the session's frame handling (`_ConnectionThread._handle`) through a `SessionClient` whose
  uplink is a plain queue: the right event per message, audio only whole samples and only while
  the downlink is open, nothing but a valid `session.closed` ends a session;
- the control socket's `ControlServer.handle` with arbitrary bytes (and its stream reader with
  arbitrary chunks): always a JSON reply, a command event only for a valid command;
- the state machine with arbitrary event *values* (any attempt, reason, device or command name,
  unknown event types), and the service applying the actions for real: muted means the mic gate
  is closed, the mute LED is on and nothing is queued for sending; the LEDs always equal
  `leds_for(state)`; mute changes only on user mute actions and is persisted.
"""
from __future__ import annotations

import base64
import json
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.audio.buffers import LatencyWindow, UplinkChunk, UplinkQueue
from device.audio.formats import SESSION_RATES, StreamFormat
from device.core import state_machine
from device.core.backoff import Backoff
from device.core.events import (
    COMMAND_NAMES,
    AgentInterrupted,
    AgentStartedTalking,
    AgentStoppedTalking,
    AuthRejected,
    CallMode,
    Command,
    ConnectionLost,
    Event,
    HardwareBack,
    HardwareLost,
    MachineConfig,
    Reload,
    SessionConnecting,
    SessionEnded,
    SessionStarted,
    Shutdown,
)
from device.core.state_machine import leds_for, mic_gate_open
from device.service.control import OTHER_COMMANDS, ControlServer
from device.service.persist import PersistentState
from device.service.settings import load_settings
from device.service.supervisor import ApplianceService
from device.session.config import SessionConfig
from device.session.connection import MIN_SANE_TIME, ConnectionThread, Ending
from device.session.counters import ConnectionCounters, SenderCounters
from device.session.link import Link, LinkState, Outcome
from device.session.protocol import (
    AgentStartTalking,
    AgentStopTalking,
    AudioDelta,
    Interruption,
    ServerError,
    ServerMessageDecoder,
    SessionClosed,
    SessionCreated,
    Transcript,
)
from device.session.sender import UplinkSender
from hw.clock import ManualClock
from hw.controls import ButtonHeld, ButtonName, ButtonPressed, ButtonReleased, LedState, NoControls
from hw.fake_audio import FakeAudioBackend
from tests.state_machine_support import check_transition, expected_muted

DECODED = (AudioDelta, SessionCreated, SessionClosed, Transcript, AgentStartTalking, AgentStopTalking,
           Interruption, ServerError)
MAX_MESSAGE = 4096  # small, so that "oversized" is reachable by generated frames

# -- frames ---------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
pcm = st.binary(max_size=64)
b64 = pcm.map(lambda b: base64.b64encode(b).decode())
valid_messages: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.builds(lambda s, c, r: {"type": "session.created", "session_id": s, "call_id": c, "sample_rate": r,
                               "channels": 1},
              st.text(max_size=8), st.text(max_size=8), st.sampled_from([8000, 16000, 24000, 48000])),
    st.builds(lambda r: {"type": "session.closed", "reason": r}, st.text(max_size=10)),
    st.builds(lambda a: {"type": "output_audio.delta", "audio": a}, b64),
    st.builds(lambda role, t: {"type": "transcript", "role": role, "text": t},
              st.sampled_from(["user", "agent"]), st.text(max_size=20)),
    st.just({"type": "agent_start_talking"}), st.just({"type": "agent_stop_talking", "timestamp": "t"}),
    st.just({"type": "interruption"}),
    st.builds(lambda c, m: {"type": "error", "code": c, "message": m}, st.text(max_size=8), st.text(max_size=20)),
)


@st.composite
def mutated_messages(draw: st.DrawFn) -> dict[str, Any]:
    """A valid message with some fields replaced by arbitrary JSON, deleted, or added."""
    message = dict(draw(valid_messages))
    for key in draw(st.lists(st.sampled_from(sorted(message)), max_size=3, unique=True)):
        if draw(st.booleans()):
            message[key] = draw(json_values)
        else:
            del message[key]
    message.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)))
    return message


frames: st.SearchStrategy[str | bytes] = st.one_of(
    valid_messages.map(json.dumps),
    mutated_messages().map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=100),
    st.binary(max_size=100),
    st.integers(1, 3000).map(lambda depth: "[" * depth),
    st.integers(MAX_MESSAGE - 50, MAX_MESSAGE + 50).map(
        lambda n: json.dumps({"type": "transcript", "role": "agent", "text": "x" * n})),
)


def empty_audio(frame: str | bytes) -> bool:
    """An audio delta with nothing in it: returned as None, and rightly not counted as malformed."""
    try:
        raw = json.loads(frame)
        return (isinstance(raw, dict) and raw.get("type") == "output_audio.delta"
                and isinstance(raw.get("audio"), str) and base64.b64decode(raw["audio"], validate=True) == b"")
    except (ValueError, RecursionError):
        return False


def check_decoded(message: object) -> None:
    """The fields of what the decoder returns have the declared types (no coercion surprises)."""
    assert isinstance(message, DECODED)
    if isinstance(message, AudioDelta):
        assert isinstance(message.pcm, bytes) and message.pcm and len(message.pcm) % 2 == 0
    elif isinstance(message, SessionCreated):
        assert isinstance(message.session_id, str) and isinstance(message.call_id, str)
        assert isinstance(message.sample_rate, int) and message.sample_rate > 0
    elif isinstance(message, Transcript):
        assert message.role in ("user", "agent") and isinstance(message.text, str)
    elif isinstance(message, SessionClosed):
        assert isinstance(message.reason, str)
    elif isinstance(message, ServerError):
        assert isinstance(message.code, str) and isinstance(message.message, str)


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(frames, max_size=25))
def test_decoder_counters_only_grow_and_results_are_typed(sequence: list[str | bytes]) -> None:
    decoder = ServerMessageDecoder(max_message_bytes=MAX_MESSAGE)
    before: dict[str, int] = {}
    for frame in sequence:
        message = decoder.decode(frame)
        after = decoder.malformed
        assert all(after.get(kind, 0) >= count for kind, count in before.items())
        grown = {kind: after[kind] - before.get(kind, 0) for kind in after if after[kind] != before.get(kind, 0)}
        if message is None:
            assert sum(grown.values()) == 1 or (not grown and empty_audio(frame)), (frame, grown)
        else:
            check_decoded(message)
            # A decoded message was fine, or audio that lost its trailing half sample.
            assert grown in ({}, {"odd_audio_length": 1}), grown
        before = after


# -- the session's frame handling -----------------------------------------------------------------
class Recorded:
    """What the connection thread hands to the rest of the device, and what it sends."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.audio: list[bytes] = []
        self.transcripts: list[tuple[str, str]] = []
        self.sent: list[str] = []

    def send(self, payload: str) -> int:   # the socket the frames came on
        self.sent.append(payload)
        return len(payload)


def connection_thread(record: Recorded, link: Link) -> ConnectionThread:
    """A connection thread (not started) given its inputs, its link connecting."""
    config = SessionConfig(url="ws://127.0.0.1:9/atoms/v1/agent/connect", api_key="k", agent_id="a",
                           max_message_bytes=MAX_MESSAGE)
    downlink = threading.Event()

    def no_socket() -> Any:
        raise AssertionError("not connected in this test")

    thread = ConnectionThread(link, config, no_socket, ServerMessageDecoder(MAX_MESSAGE), Backoff(),
                              ManualClock(), lambda: MIN_SANE_TIME, downlink, ConnectionCounters(),
                              record.events.append, record.audio.append,
                              lambda role, text: record.transcripts.append((role, text)))
    link.want()
    assert link.take_call() and link.clock_right()
    return thread


EXPECTED_EVENT: dict[type, type] = {AgentStartTalking: AgentStartedTalking, AgentStopTalking: AgentStoppedTalking,
                                    Interruption: AgentInterrupted, SessionCreated: SessionStarted}


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.tuples(frames, st.booleans()), max_size=25))
def test_session_frame_handling(sequence: list[tuple[str | bytes, bool]]) -> None:
    record = Recorded()
    link = Link(ManualClock())
    thread = connection_thread(record, link)
    sender = UplinkSender(link, UplinkQueue(8), ManualClock(), SenderCounters(), LatencyWindow())
    counters = thread.counters
    reference = ServerMessageDecoder(max_message_bytes=MAX_MESSAGE)  # what each frame decodes to
    for frame, downlink_open in sequence:
        if downlink_open:
            thread.downlink.set()
        else:
            thread.downlink.clear()
        events, audio, discarded = len(record.events), len(record.audio), counters.discarded_audio_bytes
        before = (counters.sessions, counters.server_errors)
        ending = thread.handle(record, frame)  # must never raise
        expected = reference.decode(frame)
        new_events = record.events[events:]
        assert (counters.sessions, counters.server_errors) >= before
        if isinstance(expected, SessionClosed):
            assert ending == Ending(Outcome.ENDED, expected.reason)
        else:
            assert ending is None
        if isinstance(expected, AudioDelta):
            if downlink_open:
                assert record.audio[audio:] == [expected.pcm] and len(expected.pcm) % 2 == 0
            else:
                assert record.audio[audio:] == []
                assert counters.discarded_audio_bytes == discarded + len(expected.pcm)
        else:
            assert record.audio[audio:] == []
        wanted = EXPECTED_EVENT.get(type(expected))
        assert [type(e) for e in new_events] == ([wanted] if wanted else [])
        if isinstance(expected, SessionCreated):
            live = link.live()
            assert link.state is LinkState.LIVE and live is not None
            assert live.info.session_id == expected.session_id and live.socket is record
            # One generation per session: the stream format the audio side is handed.
            assert live.info.format == StreamFormat(expected.sample_rate, counters.sessions)
            started = new_events[0]
            assert isinstance(started, SessionStarted) and started.format == live.info.format
            # Audio made before this session is refused, this session's goes out.
            stale = sender.counters.stale_chunks
            assert not sender.send(UplinkChunk(b"\x00\x00", 0.0, generation=counters.sessions - 1), live)
            assert sender.counters.stale_chunks == stale + 1
            assert sender.send(UplinkChunk(b"\x00\x00", 0.0, generation=counters.sessions), live)
        if isinstance(expected, ServerError):
            assert counters.server_errors == before[1] + 1 and thread.last_error
    assert thread.decoder.malformed == reference.malformed
    assert record.sent == ['{"type":"input_audio_buffer.append","audio":"AAA="}'] * sender.counters.chunks_sent


# -- the control socket -----------------------------------------------------------------------------
control_lines: st.SearchStrategy[bytes] = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.just("cmd"), json_values | st.sampled_from([*COMMAND_NAMES, *OTHER_COMMANDS]),
                    min_size=1).map(lambda d: json.dumps(d).encode()),
    st.sampled_from([*COMMAND_NAMES, *OTHER_COMMANDS]).map(lambda c: json.dumps({"cmd": c}).encode()),
    st.integers(1, 4000).map(lambda depth: b"[" * depth),
    st.integers(1, 2000).map(lambda depth: b'{"cmd":' * depth),
)


DUMP_REPLY = {"ok": True, "cmd": "dump_audio", "files": []}


def control_server(events: list[Event]) -> ControlServer:
    return ControlServer(Path("/nonexistent/control.sock"), events.append, lambda: {"call_state": "idle"},
                         lambda: DUMP_REPLY)


@settings(max_examples=400, deadline=None, database=None)
@given(control_lines)
def test_control_handle_answers_anything(line: bytes) -> None:
    events: list[Event] = []
    server = control_server(events)
    reply = server.handle(line)
    json.dumps(reply)  # always serialisable: it goes back on the socket
    assert isinstance(reply["ok"], bool) and server.requests == 1
    if not reply["ok"]:
        if reply["error"].startswith(("say", "volume", "subscribe")):  # refused by its handler
            assert events == [] and json.loads(line)["cmd"] in ("say", "volume", "subscribe")
            return
        assert events == [] and server.bad_requests == 1 and "unknown command" in reply["error"]
        return
    cmd = json.loads(line)["cmd"]
    assert server.bad_requests == 0
    assert (events, reply) == (([], {"ok": True, "status": {"call_state": "idle"}}) if cmd == "status"
                               else ([], DUMP_REPLY) if cmd == "dump_audio"
                               else ([Command(cmd)], {"ok": True, "cmd": cmd}))


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=200), control_lines.map(lambda b: b + b"\n")), max_size=8))
def test_control_stream_reader_with_arbitrary_chunks(chunks: list[bytes]) -> None:
    """The running server's per-connection reader: arbitrary chunking, lines split anywhere,
    too-long requests; it replies once per complete line (or once, and hangs up, for an overlong one)."""
    events: list[Event] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = ControlServer(Path(tmp) / "c.sock", events.append, lambda: {"call_state": "idle"},
                               lambda: DUMP_REPLY)
        server.bind()
        server.start()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(2)
                client.connect(str(server.path))
                sent = b"".join(chunks)
                # A line longer than the limit (terminated or not) is refused and the server hangs up;
                # every complete line before it gets its reply.
                lines = sent.split(b"\n")
                too_long = [i for i, line in enumerate(lines) if len(line) > 4096]
                overlong = bool(too_long)
                expected = too_long[0] if overlong else sent.count(b"\n")
                try:
                    for chunk in chunks:
                        client.sendall(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    assert overlong   # it hung up on the overlong request while the rest was sent
                data = b""
                while (b"request too long" not in data) if overlong else (data.count(b"\n") < expected):
                    part = client.recv(65536)
                    if not part:
                        break
                    data += part
        finally:
            server.stop()
            assert server.join(3)
    replies = [json.loads(line) for line in data.splitlines()]
    assert all(isinstance(r.get("ok"), bool) for r in replies)
    if overlong:
        assert replies[-1] == {"ok": False, "error": "request too long"}
        assert len(replies) == expected + 1
    else:
        assert len(replies) == expected == server.requests


# -- the state machine and the service applying it ---------------------------------------------------
devices = st.sampled_from(["capture", "playback"]) | st.text(max_size=6)
any_events: st.SearchStrategy[Any] = st.one_of(
    st.builds(ButtonPressed, st.sampled_from(ButtonName)),
    st.builds(ButtonReleased, st.sampled_from(ButtonName)),
    st.builds(ButtonHeld, st.sampled_from(ButtonName)),
    st.builds(Command, st.sampled_from(COMMAND_NAMES) | st.text(max_size=8)),
    st.builds(SessionConnecting, st.integers(-3, 10 ** 9)),
    st.builds(SessionStarted, st.text(max_size=6), st.text(max_size=6),
              st.builds(StreamFormat, st.sampled_from(SESSION_RATES), st.integers(0, 10 ** 6))),
    st.builds(SessionEnded, st.text(max_size=12)),
    st.builds(ConnectionLost, st.text(max_size=12), st.floats()),
    st.builds(AuthRejected, st.text(max_size=12)),
    st.just(AgentStartedTalking()), st.just(AgentStoppedTalking()), st.just(AgentInterrupted()),
    st.builds(HardwareLost, devices, st.text(max_size=12)),
    st.builds(HardwareBack, devices),
    st.just(Reload()),
    st.just(Shutdown()),
    st.builds(object),  # an event type this machine predates
)
configs = st.builds(MachineConfig, st.sampled_from(CallMode), st.booleans(), st.booleans())


@settings(max_examples=300, deadline=None, database=None)
@given(configs, st.booleans(), st.lists(any_events, max_size=50))
def test_any_event_values_keep_the_machine_invariants(config: MachineConfig, muted: bool, events: list[Any]) -> None:
    state = state_machine.boot(config, muted).state
    for event in events:
        transition = state_machine.step(config, state, event)
        check_transition(config, state, event, transition)  # the invariants of test_state_machine
        state = transition.state


def service_for(tmp: Path, config: MachineConfig, muted: bool) -> ApplianceService:
    """The real service object, threads not started: `handle` runs the machine and its actions
    on the real pipeline, session client, controls and persistent state."""
    settings_ = load_settings(
        api_key="k", agent_id="a", url="ws://127.0.0.1:9/atoms/v1/agent/connect", audio_backend="fake",
        gpio_backend="none", call_mode=config.mode, half_duplex=config.half_duplex, earcons=config.earcons,
        control_socket=tmp / "control.sock", state_dir=tmp / "state", aec="off", noise_suppression=0)
    PersistentState(settings_.state_dir).save_muted(muted)
    service = ApplianceService(settings_, backend=FakeAudioBackend(), controls=NoControls(), install_signals=False)
    boot = state_machine.boot(service.config, service.persist.load_muted())
    service._apply(boot.state, boot.actions)  # what start() does once audio and controls are up
    return service


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs, st.booleans(), st.lists(any_events, max_size=40))
def test_the_service_outputs_follow_the_state(config: MachineConfig, muted: bool, events: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        service = service_for(Path(tmp), config, muted)
        controls = service.controls
        assert isinstance(controls, NoControls)
        try:
            for event in events:
                old = service.state
                service.uplink.put(UplinkChunk(b"\x01\x00" * 320, 0.0))  # audio waiting to be sent
                service.handle(event)
                state = service.state
                leds = leds_for(service.config, state)
                # (before the first change the service has shown nothing: the LEDs start off anyway)
                assert service.leds == leds and (controls.leds or LedState()) == leds
                assert service.pipeline.mic_gate == mic_gate_open(service.config, state)
                assert service.session.downlink_open == (not state.talking)
                assert state.muted == expected_muted(service.config, old, event)
                assert service.persist.load_muted() == state.muted
                if state.muted:
                    # Privacy: the gate is shut, the red LED is on, and nothing is left to send.
                    assert not service.pipeline.mic_gate and len(service.uplink) == 0
                    shown = controls.leds or LedState()
                    assert shown.mute or (state.shutting_down and shown == LedState())
                status = service.status()
                assert status["muted"] == state.muted and status["call_state"] == state.call.value
        finally:
            service.dsp.close()


"""The local agent simulator: handshake rules, turns, barge-in, faults, recording and the CLI.

The client side is websocket-client, as in the device. Agent audio is paced faster than real time
(`realtime_factor`) and spoken as tones unless a test needs otherwise; every wait is bounded by a
socket timeout or `Simulator.wait_for*`.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import websocket

from device.session.protocol import InputAudioCommit, InputTextSend, SessionClose, encode, encode_audio
from device.sim import SimOptions, Simulator
from device.sim.faults import GARBAGE_KINDS
from device.sim.vad import EnergyVad
from device.sim.voice import espeak_available, espeak_speech, tone_speech

KEY = "test-key-5f2c"
AGENT = "agent-under-test"
TIMEOUT = 5.0
REPO = Path(__file__).resolve().parents[2]

SimFactory = Callable[..., Simulator]


# -- helpers -------------------------------------------------------------------------------------
def speech(rate: int, seconds: float, f0: float = 140.0) -> bytes:
    """A voiced-like signal: harmonics under a syllable-rate envelope, about -14 dBFS."""
    t = np.arange(int(rate * seconds)) / rate
    voice = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 7))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t)
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)  # 10 ms fades: no clicks at the edges
    return (0.3 * voice / 2.5 * envelope * ramp * 32767).astype("<i2").tobytes()


def silence(rate: int, seconds: float) -> bytes:
    return bytes(2 * int(rate * seconds))


def send_pcm(ws: websocket.WebSocket, pcm: bytes, rate: int, chunk_ms: int = 20) -> None:
    step = rate * chunk_ms // 1000 * 2
    for offset in range(0, len(pcm), step):
        ws.send(encode_audio(pcm[offset:offset + step]))


def connect(sim: Simulator, query: str = "", *, rate: int | None = 16000, key: str | None = KEY,
            agent: str = AGENT, token: bool = False) -> websocket.WebSocket:
    params = [f"agent_id={agent}"]
    if rate is not None:
        params.append(f"sample_rate={rate}")
    header = []
    if key is not None:
        if token:
            params.append(f"token={key}")
        else:
            header.append(f"Authorization: Bearer {key}")
    if query:
        params.append(query)
    return websocket.create_connection(f"{sim.url}?{'&'.join(params)}", header=header, timeout=TIMEOUT)


def refused_status(sim: Simulator, query: str = "", **kwargs: Any) -> websocket.WebSocketBadStatusException:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        connect(sim, query, **kwargs)
    return info.value


def next_message(ws: websocket.WebSocket) -> dict[str, Any]:
    """The next text frame as JSON (skipping nothing: garbage tests read frames themselves)."""
    opcode, data = ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_TEXT, f"unexpected opcode {opcode}"
    message = json.loads(data)
    assert isinstance(message, dict)
    return message


def messages_until(ws: websocket.WebSocket, done: Callable[[dict[str, Any]], bool],
                   limit: int = 5000) -> list[dict[str, Any]]:
    """Messages up to and including the first for which `done` holds (each recv is time-bounded)."""
    seen: list[dict[str, Any]] = []
    for _ in range(limit):
        seen.append(next_message(ws))
        if done(seen[-1]):
            return seen
    raise AssertionError(f"no terminating message within {limit} messages")


def is_agent_transcript(m: dict[str, Any]) -> bool:
    return m["type"] == "transcript" and m["role"] == "agent"


def audio_bytes(messages: list[dict[str, Any]]) -> int:
    return sum(len(base64.b64decode(m["audio"])) for m in messages if m["type"] == "output_audio.delta")


def close_frame(ws: websocket.WebSocket) -> int:
    """Read until the server's close frame (websocket-client answers it), close the socket; the code."""
    for _ in range(1000):
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            ws.shutdown()  # as a real client would; else the server waits close_timeout for the FIN
            return int(struct.unpack("!H", data[:2])[0])
    raise AssertionError("no close frame")


@pytest.fixture
def make_sim() -> Iterator[SimFactory]:
    sims: list[Simulator] = []

    def factory(**overrides: Any) -> Simulator:
        options: dict[str, Any] = {"api_key": KEY, "agent_id": AGENT, "tts": "tone",
                                   "realtime_factor": 20.0}
        options.update(overrides)
        sim = Simulator(SimOptions(**options))
        sim.start()
        sims.append(sim)
        return sim

    yield factory
    for sim in sims:
        sim.stop()
    for sim in sims:
        assert sim.join(5.0), "simulator thread did not stop"


@pytest.fixture
def sim(make_sim: SimFactory) -> Simulator:
    return make_sim()


# -- handshake -----------------------------------------------------------------------------------
def test_bad_key_missing_key_and_bad_agent_are_401(sim: Simulator) -> None:
    assert refused_status(sim, key="wrong").status_code == 401
    assert refused_status(sim, key="wrong", token=True).status_code == 401
    assert refused_status(sim, key=None).status_code == 401
    assert refused_status(sim, agent="someone-else").status_code == 401
    assert [c["status"] for c in sim.connections] == [401, 401, 401, 401]


def test_header_and_token_together_is_400(sim: Simulator) -> None:
    assert refused_status(sim, f"token={KEY}").status_code == 400


@pytest.mark.parametrize("query", ["sample_rate=44100", "sample_rate=fast", "mode=voice",
                                   "variables=not-json", "variables=" + quote("[1, 2]"),
                                   "variables=" + quote('{"nested": {"a": 1}}')])
def test_bad_parameters_are_400(sim: Simulator, query: str) -> None:
    rate = None if query.startswith("sample_rate") else 16000
    assert refused_status(sim, query, rate=rate).status_code == 400


def test_session_created_with_requested_rate_and_token_auth(sim: Simulator) -> None:
    variables = quote(json.dumps({"customer_name": "Tanay", "vip": True}))
    ws = connect(sim, f"mode=webcall&variables={variables}", rate=8000, token=True)
    created = next_message(ws)
    ws.close()
    assert created["type"] == "session.created"
    assert created["sample_rate"] == 8000 and created["channels"] == 1
    assert created["session_id"] and created["call_id"]
    event = sim.wait_for_event("created", TIMEOUT)
    assert event is not None and event["variables"] == {"customer_name": "Tanay", "vip": True}
    record = sim.connections[0]
    assert record["status"] == 101 and record["auth_query"] and not record["auth_header"]
    assert record["query"]["token"] == "***"
    assert KEY not in json.dumps(sim.events) + json.dumps(sim.connections)


def test_default_rate_is_24000(sim: Simulator) -> None:
    ws = connect(sim, rate=None)
    assert next_message(ws)["sample_rate"] == 24000
    ws.close()


def test_force_rate_answers_a_different_rate(make_sim: SimFactory) -> None:
    sim = make_sim(force_rate=8000)
    ws = connect(sim, rate=16000)
    assert next_message(ws)["sample_rate"] == 8000
    ws.send(encode(InputTextSend(text="hello")))
    first_delta = messages_until(ws, lambda m: m["type"] == "output_audio.delta")[-1]
    assert len(base64.b64decode(first_delta["audio"])) == 8000 * 40 // 1000 * 2  # 40 ms at 8 kHz
    ws.close()


# -- turns ---------------------------------------------------------------------------------------
def test_speech_then_silence_is_answered(sim: Simulator) -> None:
    ws = connect(sim)
    next_message(ws)
    send_pcm(ws, speech(16000, 1.0) + silence(16000, 1.0), 16000)
    turn = messages_until(ws, is_agent_transcript)
    kinds = [m["type"] for m in turn if m["type"] != "output_audio.delta"]
    assert kinds == ["transcript", "agent_start_talking", "agent_stop_talking", "transcript"]
    assert turn[0]["role"] == "user"
    heard = float(turn[0]["text"].split()[1])
    assert turn[0]["text"].startswith("(heard ") and 0.8 <= heard <= 1.2
    assert audio_bytes(turn) >= 16000 * 2  # at least 1 s of agent audio
    assert turn[-1]["text"] == sim.options.reply
    assert sim.audio_bytes_received == 2 * 16000 * 2
    ws.close()


def test_commit_is_answered_at_once_even_without_speech(sim: Simulator) -> None:
    ws = connect(sim)
    next_message(ws)
    started = time.monotonic()
    ws.send(encode(InputAudioCommit()))
    first = next_message(ws)
    assert time.monotonic() - started < 1.0
    assert first == {"type": "transcript", "role": "user", "text": "(heard 0.0 s of speech)"}
    assert next_message(ws)["type"] == "agent_start_talking"
    # Push to talk: half a second of speech, no trailing silence, then a commit.
    messages_until(ws, is_agent_transcript)
    send_pcm(ws, speech(16000, 0.5), 16000)
    ws.send(encode(InputAudioCommit()))
    assert next_message(ws)["text"] == "(heard 0.5 s of speech)"
    assert sim.wait_for(lambda: sim.commits == 2, TIMEOUT)
    ws.close()


def test_text_is_answered_like_an_utterance(sim: Simulator) -> None:
    ws = connect(sim)
    next_message(ws)
    ws.send(encode(InputTextSend(text="what's the weather?")))
    turn = messages_until(ws, is_agent_transcript)
    assert turn[0] == {"type": "transcript", "role": "user", "text": "what's the weather?"}
    assert turn[1]["type"] == "agent_start_talking"
    ws.close()


def test_barge_in_interrupts_and_stops_the_audio(make_sim: SimFactory) -> None:
    sim = make_sim(realtime_factor=1.0)  # a reply of ~3 s, so the user can talk over it
    ws = connect(sim)
    next_message(ws)
    ws.send(encode(InputTextSend(text="tell me a story")))
    messages_until(ws, lambda m: m["type"] == "output_audio.delta")
    send_pcm(ws, speech(16000, 0.4), 16000)
    before = messages_until(ws, lambda m: m["type"] == "interruption")
    assert audio_bytes(before) < 3 * 16000 * 2
    after = messages_until(ws, lambda m: m["type"] == "agent_stop_talking")
    assert [m["type"] for m in after] == ["agent_stop_talking"]  # not one more audio chunk
    # The user's utterance is then handled normally.
    send_pcm(ws, silence(16000, 0.7), 16000)
    turn = messages_until(ws, lambda m: m["type"] == "agent_start_talking")
    assert turn[0]["type"] == "transcript" and turn[0]["text"] == "(heard 0.4 s of speech)"
    assert all(m["type"] != "output_audio.delta" for m in turn)
    assert sim.wait_for_event("interrupt", TIMEOUT) is not None
    ws.close()


def test_greeting_is_spoken_after_session_created(make_sim: SimFactory) -> None:
    sim = make_sim(greeting="Welcome to the lobby.")
    ws = connect(sim)
    next_message(ws)
    turn = messages_until(ws, is_agent_transcript)
    assert turn[0]["type"] == "agent_start_talking" and turn[-1]["text"] == "Welcome to the lobby."
    ws.close()


def test_chat_mode_answers_in_text_only(sim: Simulator) -> None:
    ws = connect(sim, "mode=chat")
    next_message(ws)
    ws.send(encode(InputTextSend(text="hi")))
    assert [m["type"] for m in messages_until(ws, is_agent_transcript)] == ["transcript", "transcript"]
    ws.close()


def test_flood_sends_the_first_reply_as_fast_as_possible(make_sim: SimFactory) -> None:
    sim = make_sim(realtime_factor=1.0, flood_seconds=3.0)
    ws = connect(sim)
    next_message(ws)
    ws.send(encode(InputTextSend(text="flood me")))
    started = time.monotonic()
    turn = messages_until(ws, is_agent_transcript)
    assert time.monotonic() - started < 1.5
    assert audio_bytes(turn) == 3 * 16000 * 2
    ws.close()


def test_session_close_is_answered_then_closed_1000(sim: Simulator) -> None:
    ws = connect(sim)
    next_message(ws)
    ws.send(encode(SessionClose()))
    assert next_message(ws) == {"type": "session.closed", "reason": "client_requested"}
    assert close_frame(ws) == 1000
    assert sim.session_closes == 1


def test_malformed_client_messages_get_errors_and_the_session_goes_on(sim: Simulator) -> None:
    ws = connect(sim)
    next_message(ws)
    bad: list[str | bytes] = [
        "not json", "[1, 2]", '{"type": "no.such.type"}', '{"type": "input_text.send"}',
        '{"type": "input_audio_buffer.append", "audio": "%%%"}',
        '{"type": "input_audio_buffer.append", "audio": "AAAA"}', b"\x00\x01\x02",
    ]
    for frame in bad:
        if isinstance(frame, bytes):
            ws.send_binary(frame)
        else:
            ws.send(frame)
        error = next_message(ws)
        assert error["type"] == "error" and error["code"] == "invalid_event", frame
    ws.send('{"type": "session.update", "voice": "x"}')  # ignored: no answer
    ws.send(encode(InputTextSend(text="still there?")))
    assert next_message(ws)["text"] == "still there?"
    assert sim.received["session.update"] == 1
    ws.close()


# -- faults --------------------------------------------------------------------------------------
def test_503_with_retry_after_then_accepts(make_sim: SimFactory) -> None:
    sim = make_sim(reject_status=503, reject_count=2, retry_after=7)
    for _ in range(2):
        refusal = refused_status(sim)
        assert refusal.status_code == 503
        assert refusal.resp_headers is not None and refusal.resp_headers["retry-after"] == "7"
    ws = connect(sim)
    assert next_message(ws)["type"] == "session.created"
    ws.close()
    assert [c["status"] for c in sim.connections] == [503, 503, 101]


def test_drop_after_aborts_the_tcp_connection_without_a_close_frame(make_sim: SimFactory) -> None:
    sim = make_sim(drop_after=0.1)
    ws = connect(sim)
    opcodes: list[int] = []
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        for _ in range(1000):
            opcodes.append(ws.recv_data(control_frame=True)[0])
    assert websocket.ABNF.OPCODE_CLOSE not in opcodes
    assert sim.wait_for_event("drop", TIMEOUT) is not None
    # drop_count defaults to 1: the next session lives on.
    ws = connect(sim)
    next_message(ws)
    ws.send(encode(SessionClose()))
    assert next_message(ws)["type"] == "session.closed"
    ws.close()


@pytest.mark.parametrize("code", [4401, 1011])
def test_close_code(make_sim: SimFactory, code: int) -> None:
    sim = make_sim(close_code=code, close_after=0.05)
    ws = connect(sim)
    assert next_message(ws)["type"] == "session.created"
    assert close_frame(ws) == code
    assert sim.wait_for_event("close_fault", TIMEOUT, code=code) is not None


def test_session_timeout(make_sim: SimFactory) -> None:
    sim = make_sim(session_timeout=0.1)
    ws = connect(sim)
    next_message(ws)
    assert next_message(ws) == {"type": "session.closed", "reason": "timeout"}
    assert close_frame(ws) == 1000


def classify(opcode: int, data: bytes) -> str | None:
    """The garbage kind of a server frame, or None for a well-formed one."""
    if opcode == websocket.ABNF.OPCODE_BINARY:
        return "binary_frame"
    if len(data) > 1 << 20:
        return "oversized"
    try:
        message = json.loads(data)
    except ValueError:
        return "invalid_json"
    if not isinstance(message, dict):
        return "json_array"
    kind = message.get("type")
    if kind == "session.created":
        return None if "session_id" in message else "session_created_missing_fields"
    if kind == "output_audio.delta":
        try:
            pcm = base64.b64decode(message["audio"], validate=True)
        except binascii.Error:
            return "audio_bad_base64"
        return "audio_odd_length" if len(pcm) % 2 else None
    return None if kind in {"transcript", "agent_start_talking", "agent_stop_talking"} else "unknown_type"


def test_garbage_sends_one_of_each_kind_then_again_between_audio(make_sim: SimFactory) -> None:
    sim = make_sim(garbage=True)
    ws = connect(sim)
    assert next_message(ws)["type"] == "session.created"
    first = [classify(*ws.recv_data()) for _ in GARBAGE_KINDS]
    assert sorted(k for k in first if k) == sorted(GARBAGE_KINDS)
    ws.send(encode(InputTextSend(text="talk through the noise")))
    kinds: list[str | None] = []
    for _ in range(5000):
        opcode, data = ws.recv_data()
        kinds.append(classify(opcode, data))
        if kinds[-1] is None and json.loads(data).get("role") == "agent":
            break
    assert sorted(k for k in kinds if k) == sorted(GARBAGE_KINDS)
    assert kinds.count(None) > 10  # good audio chunks kept flowing between them
    ws.close()


def test_stop_reading_backs_up_the_client(make_sim: SimFactory) -> None:
    sim = make_sim(stop_reading=True)
    ws = connect(sim)
    next_message(ws)
    ws.settimeout(0.5)
    chunk = encode_audio(silence(16000, 1.0))  # ~43 kB per message
    with pytest.raises(websocket.WebSocketTimeoutException):
        for _ in range(2000):  # at most ~85 MB: far more than any socket buffer
            ws.send(chunk)
    assert sim.received == {}
    ws.shutdown()


# -- recording and the CLI -----------------------------------------------------------------------
def test_events_file_and_wait_helpers(tmp_path: Path, make_sim: SimFactory) -> None:
    path = tmp_path / "events.jsonl"
    sim = make_sim(events_file=str(path))
    ws = connect(sim)
    next_message(ws)
    send_pcm(ws, silence(16000, 0.2), 16000)
    ws.send(encode(SessionClose()))
    assert sim.wait_for(lambda: sim.audio_bytes_received == 6400 and sim.session_closes == 1, TIMEOUT)
    ws.close()
    assert sim.wait_for_event("disconnect", TIMEOUT) is not None
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["kind"] for e in lines] == [e["kind"] for e in sim.events]
    assert {"connect", "created", "close_requested", "disconnect"} <= {e["kind"] for e in lines}
    assert KEY not in path.read_text()
    assert list(sim.audio_bytes_by_session.values()) == [6400]
    # The events file alone tells what one session sent (the system test reads only the file).
    assert [e["audio_bytes"] for e in lines if e["kind"] == "disconnect"] == [6400]


def test_vad_finds_start_and_end_in_stream_time() -> None:
    vad = EnergyVad(16000)
    pcm = silence(16000, 0.3) + speech(16000, 1.0) + silence(16000, 1.0)
    events = [e for i in range(0, len(pcm), 999) for e in vad.feed(pcm[i:i + 999])]  # odd pieces
    assert [e.kind for e in events] == ["start", "end"]
    assert events[0].at == pytest.approx(0.3, abs=0.04)
    assert events[1].seconds == pytest.approx(1.0, abs=0.06)
    assert EnergyVad(16000).feed(speech(16000, 0.1) + silence(16000, 1.0)) == []  # a click is no speech


def test_voices_have_whole_samples_at_the_rate() -> None:
    tone = tone_speech("Hello there", 24000)
    assert len(tone) % 2 == 0 and len(tone) >= 24000 * 2
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    spoken = espeak_speech("Hello there", 16000)
    assert len(spoken) % 2 == 0 and 0.3 * 32000 < len(spoken) < 5 * 32000


def test_main_prints_the_listening_line_and_stops_on_sigterm(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    argv = ["--port", "0", "--api-key", KEY, "--agent-id", AGENT, "--tts", "tone",
            "--realtime-factor", "20", "--log-level", "DEBUG", "--events-file", str(events)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", f"from device.sim.server import main; main({argv!r})"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20.0)
        assert ready, "no listening line within 20 s"
        line = proc.stdout.readline().strip()
        assert line.startswith("sim listening on ws://127.0.0.1:") and line.endswith("/atoms/v1/agent/connect")
        url = line.removeprefix("sim listening on ")
        ws = websocket.create_connection(f"{url}?agent_id={AGENT}&sample_rate=16000",
                                         header=[f"Authorization: Bearer {KEY}"], timeout=TIMEOUT)
        assert next_message(ws)["type"] == "session.created"
        ws.send(encode(SessionClose()))
        assert next_message(ws)["type"] == "session.closed"
        ws.close()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert KEY not in stderr, "the API key leaked into the log"
    assert "created" in {json.loads(line)["kind"] for line in events.read_text().splitlines()}

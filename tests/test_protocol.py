"""The protocol models: what we send matches the spec; nothing the server sends can raise."""
from __future__ import annotations

import base64
import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.session.protocol import (
    CLIENT_TYPES,
    AgentStartTalking,
    AgentStopTalking,
    AudioDelta,
    InputAudioAppend,
    InputAudioCommit,
    InputTextSend,
    Interruption,
    ServerError,
    ServerMessageDecoder,
    SessionClose,
    SessionClosed,
    SessionCreated,
    SessionUpdate,
    Transcript,
    encode,
    encode_audio,
)

# The spec's required fields per client message (atoms-agent-websocket-api.md, components.schemas).
CLIENT_REQUIRED = {
    "input_audio_buffer.append": {"type", "audio"},
    "input_audio_buffer.commit": {"type"},
    "input_text.send": {"type", "text"},
    "session.update": {"type"},
    "session.close": {"type"},
}


@pytest.mark.parametrize("message", [
    InputAudioAppend(audio=base64.b64encode(b"\x01\x00").decode()), InputAudioCommit(),
    InputTextSend(text="hi"), SessionUpdate(), SessionClose(),
])
def test_client_messages_match_the_spec(message: object) -> None:
    data = json.loads(encode(message))  # type: ignore[arg-type]
    assert data["type"] in CLIENT_TYPES
    assert set(data) == CLIENT_REQUIRED[data["type"]]


def test_audio_fast_path_equals_the_model() -> None:
    pcm = bytes(range(256)) * 3
    fast = json.loads(encode_audio(pcm))
    model = json.loads(encode(InputAudioAppend(audio=base64.b64encode(pcm).decode())))
    assert fast == model
    assert base64.b64decode(fast["audio"]) == pcm


@pytest.mark.parametrize("raw, expected", [
    ({"type": "session.created", "session_id": "s", "call_id": "c", "sample_rate": 24000, "channels": 1},
     SessionCreated),
    ({"type": "session.closed", "reason": "timeout"}, SessionClosed),
    ({"type": "transcript", "role": "agent", "text": "hi"}, Transcript),
    ({"type": "agent_start_talking"}, AgentStartTalking),
    ({"type": "agent_stop_talking", "timestamp": "2026-01-01T00:00:00Z"}, AgentStopTalking),
    ({"type": "interruption"}, Interruption),
    ({"type": "error", "code": "invalid_event", "message": "bad"}, ServerError),
])
def test_every_server_message_decodes(raw: dict, expected: type) -> None:
    decoder = ServerMessageDecoder()
    assert isinstance(decoder.decode(json.dumps(raw)), expected)
    assert decoder.malformed == {}


def test_audio_delta_decodes_to_pcm() -> None:
    pcm = b"\x10\x00\x20\x00"
    message = ServerMessageDecoder().decode(json.dumps({"type": "output_audio.delta",
                                                        "audio": base64.b64encode(pcm).decode()}))
    assert isinstance(message, AudioDelta) and message.pcm == pcm


@pytest.mark.parametrize("frame, kind", [
    (b"\x00\x01binary", "binary_frame"),
    ("{not json", "invalid_json"),
    ("[1, 2]", "not_an_object"),
    ('{"type": "no.such.type"}', "unknown_type"),
    ('{"audio": "AAAA"}', "unknown_type"),
    ('{"type": "session.created", "session_id": "s"}', "invalid_session.created"),
    ('{"type": "transcript", "role": "robot", "text": "x"}', "invalid_transcript"),
    ('{"type": "session.created", "session_id": 1, "call_id": "c", "sample_rate": "fast", "channels": 1}',
     "invalid_session.created"),
    ('{"type": "output_audio.delta", "audio": "!!!not base64"}', "bad_base64"),
    ('{"type": "output_audio.delta", "audio": 12}', "invalid_output_audio.delta"),
    ('{"type": "output_audio.delta"}', "invalid_output_audio.delta"),
])
def test_malformed_frames_are_counted_not_raised(frame: str | bytes, kind: str) -> None:
    decoder = ServerMessageDecoder()
    assert decoder.decode(frame) is None
    assert decoder.malformed == {kind: 1}


def test_odd_audio_length_keeps_whole_samples() -> None:
    decoder = ServerMessageDecoder()
    message = decoder.decode(json.dumps({"type": "output_audio.delta",
                                         "audio": base64.b64encode(b"\x01\x02\x03").decode()}))
    assert isinstance(message, AudioDelta) and message.pcm == b"\x01\x02"
    assert decoder.malformed == {"odd_audio_length": 1}


def test_oversized_message_is_dropped() -> None:
    decoder = ServerMessageDecoder(max_message_bytes=1024)
    assert decoder.decode('{"type": "transcript", "role": "agent", "text": "' + "x" * 2000 + '"}') is None
    assert decoder.malformed == {"oversized": 1}


def test_each_kind_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    decoder = ServerMessageDecoder()
    with caplog.at_level(logging.WARNING, logger="device.session.protocol"):
        for _ in range(50):
            decoder.decode("{garbage")
            decoder.decode('{"type": "bogus"}')
    assert decoder.malformed == {"invalid_json": 50, "unknown_type": 50}
    assert len(caplog.records) == 2


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=200), st.text(max_size=200),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                 max_leaves=12).map(json.dumps),
    st.fixed_dictionaries({"type": st.sampled_from(["session.created", "output_audio.delta", "transcript",
                                                    "error", "session.closed"])},
                          optional={"audio": st.text(max_size=30), "role": st.text(max_size=8),
                                    "text": st.integers(), "sample_rate": st.text(max_size=5),
                                    "session_id": st.integers(), "call_id": st.none()}).map(json.dumps),
))
def test_decoder_never_raises(frame: str | bytes) -> None:
    ServerMessageDecoder().decode(frame)

"""The Atoms Agent WebSocket protocol: typed client and server messages and a tolerant decoder.

What we send is built from models that match the spec exactly (`encode`). What we receive is
parsed tolerantly by `ServerMessageDecoder`: anything malformed is logged once per kind, counted
and dropped, so nothing a server sends can raise out of the receiver thread.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections import Counter
from typing import Annotated, Any, Final, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, ValidationError, field_validator

from device.audio.formats import SESSION_RATES

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES: Final = 1 << 20  # 1 MiB: ~20 s of 24 kHz audio in one delta
# Close codes by which the server refuses the credentials (unauthorised, forbidden): never retried.
AUTH_CLOSE_CODES: Final = frozenset({4401, 4403})


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# -- client -> server (5) -----------------------------------------------------------------------
class InputAudioAppend(_Message):
    type: Literal["input_audio_buffer.append"] = "input_audio_buffer.append"
    audio: str  # base64 PCM16 LE mono at the negotiated rate


class InputAudioCommit(_Message):
    type: Literal["input_audio_buffer.commit"] = "input_audio_buffer.commit"


class InputTextSend(_Message):
    type: Literal["input_text.send"] = "input_text.send"
    text: str


class SessionUpdate(_Message):
    type: Literal["session.update"] = "session.update"


class SessionClose(_Message):
    type: Literal["session.close"] = "session.close"


ClientMessage = Union[InputAudioAppend, InputAudioCommit, InputTextSend, SessionUpdate, SessionClose]


# -- server -> client (8) -----------------------------------------------------------------------
class SessionCreated(_Message):
    type: Literal["session.created"] = "session.created"
    session_id: str
    call_id: str
    # Strict: only the spec's rates, never a bool or a string coerced into an int; anything else
    # is an invalid session.created (counted), and the client retries after its deadline.
    sample_rate: StrictInt

    @field_validator("sample_rate")
    @classmethod
    def _spec_rate(cls, value: int) -> int:
        if value not in SESSION_RATES:
            raise ValueError(f"not one of the spec's rates {', '.join(map(str, SESSION_RATES))}")
        return value
    channels: int = Field(default=1, ge=1)


class SessionClosed(_Message):
    type: Literal["session.closed"] = "session.closed"
    reason: str = "unknown"


class OutputAudioDelta(_Message):
    type: Literal["output_audio.delta"] = "output_audio.delta"
    audio: str


class Transcript(_Message):
    type: Literal["transcript"] = "transcript"
    role: Literal["user", "agent"]
    text: str


class AgentStartTalking(_Message):
    type: Literal["agent_start_talking"] = "agent_start_talking"
    timestamp: str | None = None


class AgentStopTalking(_Message):
    type: Literal["agent_stop_talking"] = "agent_stop_talking"
    timestamp: str | None = None


class Interruption(_Message):
    type: Literal["interruption"] = "interruption"


class ServerError(_Message):
    type: Literal["error"] = "error"
    code: str = "unknown"
    message: str = ""


ServerMessage = Annotated[
    SessionCreated | SessionClosed | OutputAudioDelta | Transcript | AgentStartTalking | AgentStopTalking | Interruption | ServerError,
    Field(discriminator="type"),
]
SERVER_TYPES: Final = frozenset({
    "session.created", "session.closed", "output_audio.delta", "transcript",
    "agent_start_talking", "agent_stop_talking", "interruption", "error",
})
CLIENT_TYPES: Final = frozenset({
    "input_audio_buffer.append", "input_audio_buffer.commit", "input_text.send",
    "session.update", "session.close",
})
_server_adapter: TypeAdapter[Any] = TypeAdapter(ServerMessage)


def encode(message: ClientMessage) -> str:
    """Serialise a client message as the JSON text frame the spec defines."""
    return message.model_dump_json()


def encode_audio(pcm: bytes) -> str:
    """`input_audio_buffer.append` for a PCM16 chunk (the sender's hot path: no model round trip)."""
    return '{"type":"input_audio_buffer.append","audio":"' + base64.b64encode(pcm).decode("ascii") + '"}'


class AudioDelta:
    """A decoded `output_audio.delta`: PCM16 LE bytes (whole samples only)."""

    __slots__ = ("pcm",)

    def __init__(self, pcm: bytes) -> None:
        self.pcm = pcm


Decoded = Union[AudioDelta, SessionCreated, SessionClosed, Transcript, AgentStartTalking,
                AgentStopTalking, Interruption, ServerError]


class ServerMessageDecoder:
    """Turns server frames into typed messages; malformed input is counted, logged once per kind.

    Used by the receiver thread; `malformed` may be read from any thread (a `Counter` snapshot
    under a lock). Kinds: `binary_frame`, `oversized`, `invalid_json`, `not_an_object`,
    `unknown_type`, `invalid_<type>` (a known type with missing or wrong fields), `bad_base64`,
    `odd_audio_length` (the trailing half sample is dropped, the rest played).
    """

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self._malformed: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def malformed(self) -> dict[str, int]:
        with self._lock:
            return dict(self._malformed)

    def _reject(self, kind: str, detail: str) -> None:
        with self._lock:
            self._malformed[kind] += 1
            first = self._malformed[kind] == 1
        if first:
            log.warning("ignoring malformed server message (%s): %s; further ones are only counted",
                        kind, detail[:200])

    def decode(self, frame: str | bytes) -> Decoded | None:
        if isinstance(frame, (bytes, bytearray, memoryview)):
            self._reject("binary_frame", f"{len(frame)} bytes")
            return None
        if len(frame) > self.max_message_bytes:
            self._reject("oversized", f"{len(frame)} characters > {self.max_message_bytes}")
            return None
        try:
            raw = json.loads(frame)
        except (ValueError, RecursionError) as exc:
            self._reject("invalid_json", str(exc))
            return None
        if not isinstance(raw, dict):
            self._reject("not_an_object", type(raw).__name__)
            return None
        kind = raw.get("type")
        if kind == "output_audio.delta":
            return self._decode_audio(raw)
        if not isinstance(kind, str) or kind not in SERVER_TYPES:
            self._reject("unknown_type", repr(kind)[:80])
            return None
        try:
            message: Decoded = _server_adapter.validate_python(raw)
        except ValidationError as exc:
            self._reject(f"invalid_{kind}", "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                     for e in exc.errors()))
            return None
        return message

    def _decode_audio(self, raw: dict[str, Any]) -> AudioDelta | None:
        audio = raw.get("audio")
        if not isinstance(audio, str):
            self._reject("invalid_output_audio.delta", "audio: missing or not a string")
            return None
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            self._reject("bad_base64", str(exc))
            return None
        if len(pcm) % 2:
            self._reject("odd_audio_length", f"{len(pcm)} bytes")
            pcm = pcm[:-1]
        return AudioDelta(pcm) if pcm else None

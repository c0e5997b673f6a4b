"""The live event stream's schema (`{"cmd": "subscribe"}` on the control socket), version 1.

One place for it: these pydantic models are what `EventHub` builds every line from, what
docs/control-api.md documents, and what the tests validate every emitted line against
(`parse_event`). Every line carries `v` (the schema version: a consumer checks it and ignores
types it does not know), `seq` (per subscriber, from 1, no gaps: a gap cannot happen, a stalled
subscriber is disconnected instead) and `t` (Unix time, seconds). Fields are never removed
within a version; new event types or optional fields may be added.
"""
from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION: Final = 1


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = SCHEMA_VERSION
    seq: int = Field(default=0, ge=0)
    t: float = 0.0


class CallStateEvent(_Event):
    """The call state changed (idle, connecting, in_call, reconnecting, auth_error)."""

    type: Literal["call_state"] = "call_state"
    state: Literal["idle", "connecting", "in_call", "reconnecting", "auth_error"]


class MutedEvent(_Event):
    """The mic mute changed (true: no audio leaves the device)."""

    type: Literal["muted"] = "muted"
    muted: bool


class AgentSpeakingEvent(_Event):
    type: Literal["agent_speaking"] = "agent_speaking"
    speaking: bool


class TalkingEvent(_Event):
    """Push-to-talk: the talk button went down (true) or up (false)."""

    type: Literal["talking"] = "talking"
    held: bool


class VolumeEvent(_Event):
    type: Literal["volume"] = "volume"
    level: int = Field(ge=0, le=100)


class TranscriptEvent(_Event):
    """A transcript as the agent sent it (`user`: what it heard, `agent`: what it said)."""

    type: Literal["transcript"] = "transcript"
    role: Literal["user", "agent"]
    text: str


class CallStartedEvent(_Event):
    """session.created: a call is established (also after a reconnect: `resumed` true)."""

    type: Literal["call_started"] = "call_started"
    session_id: str
    call_id: str
    sample_rate: int
    resumed: bool


class CallEndedEvent(_Event):
    type: Literal["call_ended"] = "call_ended"
    reason: Literal["person", "idle", "max_duration", "server", "error", "shutdown"]
    duration_s: float = Field(ge=0)
    call_id: str | None


class CallWarningEvent(_Event):
    """A call limit is near (the warning earcon): `limit` idle or max_duration."""

    type: Literal["call_warning"] = "call_warning"
    limit: Literal["idle", "max_duration"]


class ErrorEvent(_Event):
    """Something a person should know failed (auth rejected, the session's last error)."""

    type: Literal["error"] = "error"
    message: str


class HardwareEvent(_Event):
    """A sound device was lost (`lost` true, with the reason) or is back."""

    type: Literal["hardware"] = "hardware"
    device: str
    lost: bool
    reason: str = ""


class LevelsEvent(_Event):
    """Mic (processed) and speaker levels in dBFS, about 10 per second, only when subscribed with
    `"levels": true`; -120 is digital silence."""

    type: Literal["levels"] = "levels"
    mic_dbfs: float
    speaker_dbfs: float


class WakeWordEvent(_Event):
    """`wake_word` mode: the local detector heard `model`'s wake word with probability `score`
    (0-1); `started_call` false when it raced mute or a call and was ignored."""

    type: Literal["wake_word"] = "wake_word"
    model: str
    score: float = Field(ge=0, le=1)
    started_call: bool


class WakeListeningEvent(_Event):
    """`wake_word` mode: the detector started (true) or stopped (false) listening (a call, mute)."""

    type: Literal["wake_listening"] = "wake_listening"
    listening: bool


class DuplexEvent(_Event):
    """The adaptive half-duplex switched: `half` while the agent's echo is audible in this room
    and the uplink is gated while the agent talks (a person speaking up still gets through),
    `full` otherwise. `residual_echo_db`: the echo left after cancellation over the background."""

    type: Literal["duplex"] = "duplex"
    mode: Literal["full", "half"]
    residual_echo_db: float | None = None


StreamEvent = Annotated[
    CallStateEvent | MutedEvent | AgentSpeakingEvent | TalkingEvent | VolumeEvent | TranscriptEvent
    | CallStartedEvent | CallEndedEvent | CallWarningEvent | ErrorEvent | HardwareEvent | LevelsEvent
    | WakeWordEvent | WakeListeningEvent | DuplexEvent,
    Field(discriminator="type"),
]
EVENT_TYPES: Final = (CallStateEvent, MutedEvent, AgentSpeakingEvent, TalkingEvent, VolumeEvent,
                      TranscriptEvent, CallStartedEvent, CallEndedEvent, CallWarningEvent, ErrorEvent,
                      HardwareEvent, LevelsEvent, WakeWordEvent, WakeListeningEvent, DuplexEvent)
_ADAPTER: Final = TypeAdapter(StreamEvent)


def parse_event(data: dict[str, Any]) -> _Event:
    """Validate one received line against the schema (raises pydantic.ValidationError)."""
    event: _Event = _ADAPTER.validate_python(data)
    return event

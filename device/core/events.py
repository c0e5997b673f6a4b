"""The vocabulary of the state machine: events in, actions out, and the states in between.

Everything here is an immutable value. Producers (buttons, the control socket, the session
client, the audio threads, signal handlers) only build events and put them on the main thread's
queue; the pure `device.core.state_machine.step` turns each into a new state plus actions, and the
service (`device.service.supervisor`) carries the actions out.

The button events and the LED state belong to the controls interface (`hw.controls`, which
depends on nothing here); they are imported from there and are part of `Event` and `ShowLeds`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Union

from device.audio.formats import StreamFormat
from hw.controls import ButtonHeld, ButtonPressed, ButtonReleased, LedState


class CallMode(StrEnum):
    BUTTON = "button"              # press: call; press again: hang up
    PUSH_TO_TALK = "push_to_talk"  # connected; mic sent only while held; release commits
    ALWAYS = "always"              # connected from boot, reconnects forever; the button is mute
    WAKE_WORD = "wake_word"        # a call starts on the local wake word (or a press); ends like `button`


class CallState(StrEnum):
    IDLE = "idle"
    CONNECTING = "connecting"
    IN_CALL = "in_call"
    RECONNECTING = "reconnecting"
    AUTH_ERROR = "auth_error"


@dataclass(frozen=True)
class MachineConfig:
    """Settings the state machine depends on (fixed for the life of the service)."""

    mode: CallMode = CallMode.BUTTON
    half_duplex: bool = False   # gate the mic while the agent talks
    earcons: bool = True
    # Call limits (seconds, 0 = off). `button` and `wake_word` modes use all three; `push_to_talk` only the idle
    # time (the session closes without a warning and the next press reopens it); `always` none.
    idle_hangup_seconds: float = 0.0   # no user speech, no agent audio (and in PTT no press)
    max_call_seconds: float = 0.0      # from session.created to hang-up, reconnects included
    call_warning_seconds: float = 10.0  # the warning earcon comes this long before either limit


# Why a call ended: the person (button, `ctl hangup`), the idle limit, the duration limit, the
# server (`session.closed`), an error (auth rejected) or the service stopping.
EndReason = Literal["person", "idle", "max_duration", "server", "error", "shutdown"]
END_REASONS: tuple[EndReason, ...] = ("person", "idle", "max_duration", "server", "error", "shutdown")

# The supervisor's timers, started and cancelled by the machine (see `StartTimer`):
# "idle_warning"/"idle" restart on activity; "max_warning"/"max_call" run from the call's start.
TimerName = Literal["idle_warning", "idle", "max_warning", "max_call"]
TIMER_NAMES: tuple[TimerName, ...] = ("idle_warning", "idle", "max_warning", "max_call")


@dataclass(frozen=True)
class MachineState:
    call: CallState = CallState.IDLE
    muted: bool = False
    agent_speaking: bool = False
    talking: bool = False                          # push-to-talk held
    hardware_faults: frozenset[str] = frozenset()  # devices currently lost ("capture", "playback")
    shutting_down: bool = False
    last_error: str | None = None
    # `always` mode: what the call button press in progress did to mute ("muted": this press muted
    # and a hold restores unmuted; "unmute_pending": the user was muted and the release unmutes).
    call_press: Literal["none", "muted", "unmute_pending"] = "none"
    # A call is established: session.created arrived and the call has not ended since (it stays
    # set through a reconnect). Its end emits `CallEnded` with the reason, kept in `end_reason`.
    call_up: bool = False
    end_reason: EndReason | None = None


# -- events --------------------------------------------------------------------------------------
CommandName = Literal["call", "hangup", "mute", "unmute", "talk_start", "talk_stop"]
COMMAND_NAMES: tuple[CommandName, ...] = ("call", "hangup", "mute", "unmute", "talk_start", "talk_stop")


@dataclass(frozen=True)
class Command:
    """A control-socket command (a kiosk screen, home automation, tests)."""

    name: CommandName


@dataclass(frozen=True)
class SessionConnecting:
    attempt: int = 1


@dataclass(frozen=True)
class SessionStarted:
    """`session.created` arrived: the agent is on the line. `format` is the session's stream
    (its negotiated rate, and its generation: the count of sessions so far)."""

    session_id: str
    call_id: str
    format: StreamFormat

    @property
    def sample_rate(self) -> int:
        return self.format.rate


@dataclass(frozen=True)
class SessionEnded:
    """The session ended for good (`session.closed`, or the close we asked for completed)."""

    reason: str


@dataclass(frozen=True)
class ConnectionLost:
    """The network failed or the server refused for now (503); the client retries by itself."""

    reason: str
    retry_in: float


@dataclass(frozen=True)
class AuthRejected:
    """HTTP 401 or close code 4401/4403: no retry until a user action or SIGHUP."""

    reason: str


@dataclass(frozen=True)
class AgentStartedTalking:
    pass


@dataclass(frozen=True)
class AgentStoppedTalking:
    pass


@dataclass(frozen=True)
class AgentInterrupted:
    """The server's `interruption`: the user talked over the agent."""


@dataclass(frozen=True)
class HardwareLost:
    device: str
    reason: str = ""


@dataclass(frozen=True)
class HardwareBack:
    device: str


@dataclass(frozen=True)
class TimerExpired:
    """A timer the machine started (`StartTimer`) ran out; the supervisor's clock decides when."""

    name: TimerName


@dataclass(frozen=True)
class Activity:
    """Someone is still there: the local VAD heard the user ("speech") or agent audio played
    ("agent"). The supervisor posts at most one per kind per tick while it lasts."""

    source: Literal["speech", "agent"]


@dataclass(frozen=True)
class WakeWordDetected:
    """The local wake word detector heard `model` (its wake word) with probability `score`, on the
    processed mic (device/audio/wake_tap.py). Only posted while `wake_listening` holds."""

    model: str
    score: float


@dataclass(frozen=True)
class VolumeCommand:
    """`ctl volume N|+N|-N`: set the speaker level (`level`, 0-100) or move it by `delta`.
    Handled by the supervisor's volume control; the call state machine ignores it, as it does
    the volume buttons."""

    level: int | None = None
    delta: int = 0


@dataclass(frozen=True)
class Reload:
    """SIGHUP: retry after an auth error (the operator fixed the key)."""


@dataclass(frozen=True)
class Shutdown:
    """SIGTERM / SIGINT: end the call politely and turn everything off."""


Event = Union[
    ButtonPressed, ButtonReleased, ButtonHeld, Command, SessionConnecting, SessionStarted,
    SessionEnded, ConnectionLost, AuthRejected, AgentStartedTalking, AgentStoppedTalking,
    AgentInterrupted, HardwareLost, HardwareBack, TimerExpired, Activity, WakeWordDetected, VolumeCommand,
    Reload, Shutdown,
]


# -- actions -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Connect:
    """Start a session (or retry after an auth error). No-op if one is already up or coming."""


@dataclass(frozen=True)
class Disconnect:
    """Send `session.close`, wait up to 1 s for `session.closed`, close the socket; no reconnect."""


@dataclass(frozen=True)
class SetMicGate:
    """Whether captured audio may leave the device. Closed means not one frame is sent.

    `hold` (only with `open=False`): the call the person just started is still connecting, so
    keep what the mic hears (bounded, oldest dropped first) and send it first, in order, when the
    gate opens; a gate that closes without opening discards it (mute, hang-up, failure).
    """

    open: bool
    hold: bool = False


@dataclass(frozen=True)
class SetDownlinkGate:
    """Whether agent audio is played (closed while push-to-talk is held: local barge-in)."""

    open: bool


@dataclass(frozen=True)
class SendCommit:
    """`input_audio_buffer.commit` (push-to-talk release)."""


@dataclass(frozen=True)
class FlushPlayback:
    """Clear the jitter buffer and drop the device buffer: the speaker is silent within a period."""


@dataclass(frozen=True)
class ShowLeds:
    leds: LedState


EarconName = Literal["connected", "ended", "muted", "unmuted", "error", "warning", "volume", "wake"]


@dataclass(frozen=True)
class PlayEarcon:
    name: EarconName


@dataclass(frozen=True)
class PersistMute:
    muted: bool


@dataclass(frozen=True)
class StartTimer:
    """(Re)start the timer `name`: it expires `seconds` from now (replacing one still running)."""

    name: TimerName
    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    name: TimerName


@dataclass(frozen=True)
class CallEnded:
    """An established call ended (status, stats and the log record the reason and duration)."""

    reason: EndReason


@dataclass(frozen=True)
class StopService:
    """Everything is shut down: the main loop may exit."""


Action = Union[
    Connect, Disconnect, SetMicGate, SetDownlinkGate, SendCommit, FlushPlayback, ShowLeds,
    PlayEarcon, PersistMute, StartTimer, CancelTimer, CallEnded, StopService,
]


@dataclass(frozen=True)
class Transition:
    state: MachineState
    actions: tuple[Action, ...] = field(default_factory=tuple)

"""Shared by the state machine tests: the event and state grids, the per-step invariant
check, short names for states and actions, and `Device`, a stand-in for the service that
applies the machine's outputs in order."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

from device.audio.formats import StreamFormat
from device.core.events import (
    COMMAND_NAMES,
    TIMER_NAMES,
    Action,
    Activity,
    AgentInterrupted,
    AgentStartedTalking,
    AgentStoppedTalking,
    AuthRejected,
    CallEnded,
    CallMode,
    CallState,
    CancelTimer,
    Command,
    Connect,
    ConnectionLost,
    Disconnect,
    Event,
    FlushPlayback,
    HardwareBack,
    HardwareLost,
    MachineConfig,
    MachineState,
    PersistMute,
    PlayEarcon,
    Reload,
    SendCommit,
    SessionConnecting,
    SessionEnded,
    SessionStarted,
    SetDownlinkGate,
    SetMicGate,
    ShowLeds,
    Shutdown,
    StartTimer,
    StopService,
    TimerExpired,
    TimerName,
    Transition,
    VolumeCommand,
    WakeWordDetected,
)
from device.core.state_machine import boot, leds_for, mic_gate_open, mic_hold, step, wake_listening
from hw.controls import (
    ButtonHeld,
    ButtonName,
    ButtonPressed,
    ButtonReleased,
    Indicator,
    LedState,
    StatusPattern,
)

B, P, A, W = CallMode.BUTTON, CallMode.PUSH_TO_TALK, CallMode.ALWAYS, CallMode.WAKE_WORD
PERSON_STARTED = (B, W)  # a person starts each call (press or wake word); the limits end it
IDLE, CONN, IN, RECO, AUTH = (
    CallState.IDLE, CallState.CONNECTING, CallState.IN_CALL, CallState.RECONNECTING, CallState.AUTH_ERROR,
)
WANTED = (CONN, IN, RECO)

PRESS, RELEASE, HOLD = ButtonPressed(ButtonName.CALL), ButtonReleased(ButtonName.CALL), ButtonHeld(ButtonName.CALL)
MUTE_PRESS = ButtonPressed(ButtonName.MUTE)
STARTED = SessionStarted(session_id="s1", call_id="c1", format=StreamFormat(16000, 1))
TIMEOUT = SessionEnded(reason="timeout")
LOST = ConnectionLost(reason="network", retry_in=1.0)
REJECTED = AuthRejected(reason="401")
WAKE = WakeWordDetected(model="okay_nabu", score=0.97)

# Every event class with representative arguments.
EVENTS: tuple[Event, ...] = (
    *(cls(button) for cls in (ButtonPressed, ButtonReleased, ButtonHeld) for button in ButtonName),
    *(Command(name) for name in COMMAND_NAMES),
    SessionConnecting(attempt=1), SessionConnecting(attempt=4), STARTED,
    TIMEOUT, SessionEnded(reason="closed"), LOST, REJECTED,
    AgentStartedTalking(), AgentStoppedTalking(), AgentInterrupted(),
    HardwareLost("capture", "unplugged"), HardwareLost("playback"),
    HardwareBack("capture"), HardwareBack("playback"),
    *(TimerExpired(name) for name in TIMER_NAMES), Activity("speech"), Activity("agent"),
    VolumeCommand(level=50), VolumeCommand(delta=-10), WAKE,
    Reload(), Shutdown(),
)

LIMITS: dict[str, float] = {"idle_hangup_seconds": 60.0, "max_call_seconds": 900.0,
                            "call_warning_seconds": 10.0}
CONFIGS: tuple[MachineConfig, ...] = (
    # wake_word differs from button only while no call is up (where half_duplex means nothing) and
    # in the wake word events, so its half-duplex and earcon-less limit variants are left out.
    *(MachineConfig(mode=mode, half_duplex=half_duplex, earcons=earcons)
      for mode, half_duplex, earcons in itertools.product(CallMode, (False, True), (True, False))
      if not (mode is W and half_duplex)),
    # The call limits on (the service's defaults), and a warning that does not fit before them.
    *(MachineConfig(mode=mode, earcons=earcons, **LIMITS)
      for mode, earcons in itertools.product(CallMode, (True, False)) if not (mode is W and not earcons)),
    MachineConfig(mode=B, idle_hangup_seconds=5.0, max_call_seconds=8.0, call_warning_seconds=8.0),
)

CALL_PRESSES: tuple[Literal["none", "muted", "unmute_pending"], ...] = ("none", "muted", "unmute_pending")

# Every CallState x muted x agent_speaking x talking x hardware fault x shutting_down x call_press
# x call_up, including combinations the machine never produces (talking outside push-to-talk, a
# pending call press while unmuted, an established call while idle...): totality is for all.
STATES: tuple[MachineState, ...] = tuple(
    MachineState(call=call, muted=muted, agent_speaking=speaking, talking=talking,
                 hardware_faults=faults, shutting_down=down, call_press=press, call_up=up)
    for call, muted, speaking, talking, faults, down, press, up in itertools.product(
        CallState, (False, True), (False, True), (False, True),
        (frozenset(), frozenset({"capture"})), (False, True), CALL_PRESSES, (False, True),
    )
)

LIMIT_ACTIONS = (StartTimer, CancelTimer, CallEnded)

USER_CONNECT_EVENTS = (PRESS, Command("call"), Command("talk_start"))
EXPLICIT_MUTE_EVENTS = (MUTE_PRESS, Command("mute"), Command("unmute"))


def key_actions(transition: Transition) -> tuple[Action, ...]:
    """The actions other than the LED and mic gate outputs every transition carries and the call
    limit bookkeeping (timers, CallEnded), which `limit_actions` returns."""
    return tuple(a for a in transition.actions if not isinstance(a, (ShowLeds, SetMicGate, *LIMIT_ACTIONS)))


def limit_actions(transition: Transition) -> tuple[Action, ...]:
    return tuple(a for a in transition.actions if isinstance(a, LIMIT_ACTIONS))


def expected_end_reason(config: MachineConfig, state: MachineState, event: Event) -> str | None:
    """Why an established call ends on this step (None: it does not): written independently."""
    if not state.call_up or state.shutting_down:
        return None
    if isinstance(event, Shutdown):
        return "shutdown"
    if isinstance(event, SessionEnded) and state.call in WANTED:
        return "server"
    if isinstance(event, AuthRejected) and state.call is not IDLE:
        return "error"
    if state.call not in WANTED:
        return None
    hangup = event in (Command("hangup"),) or (event == HOLD and config.mode is not P) \
        or (event == PRESS and config.mode in PERSON_STARTED)
    if hangup:
        return "person"
    if isinstance(event, TimerExpired):
        if config.mode in PERSON_STARTED and event.name == "idle":
            return "idle"
        if config.mode in PERSON_STARTED and event.name == "max_call":
            return "max_duration"
        if config.mode is P and event.name == "idle" and not state.talking:
            return "idle"
    return None


def expected_muted(config: MachineConfig, state: MachineState, event: Event) -> bool:
    """Mute changes only on a user mute action: written independently of the implementation."""
    if state.shutting_down:
        return state.muted
    if event == MUTE_PRESS:
        return not state.muted
    if event in (Command("mute"), Command("unmute")):
        return event == Command("mute")
    if config.mode is A:
        # The call button is mute, privacy first: a press mutes at once, never unmutes; a click's
        # release unmutes if the press found it muted; a long press undoes the mute its press made.
        if event == PRESS and state.call in WANTED:
            return True
        if event == RELEASE and state.call_press == "unmute_pending":
            return False
        if event == HOLD and state.call_press == "muted":
            return False
    return state.muted


def expected_call_press(config: MachineConfig, state: MachineState, event: Event) -> str:
    """What the call button press in progress did (only `always` mode sets it)."""
    if state.shutting_down:
        return state.call_press
    if event in EXPLICIT_MUTE_EVENTS:
        return "none"  # the newest explicit choice wins over a pending press
    if config.mode is not A:
        return state.call_press
    if event == PRESS:
        if state.call not in WANTED:
            return "none"  # the press started a call
        return "unmute_pending" if state.muted else "muted"
    if event in (RELEASE, HOLD):
        return "none"
    return state.call_press


def check_transition(config: MachineConfig, old: MachineState, event: Event, t: Transition) -> None:
    """Invariants that hold for every single step, whatever the state and event."""
    new, actions = t.state, t.actions
    assert isinstance(t, Transition)
    leds, gate = leds_for(config, new), mic_gate_open(config, new)
    shutting_now = isinstance(event, Shutdown) and not old.shutting_down

    # The outputs always end the transition, so nothing can stick (Shutdown then stops the loop).
    hold = mic_hold(config, new)
    tail = (ShowLeds(leds), SetMicGate(gate, hold=hold))
    assert (actions[-3:] == (*tail, StopService())) if shutting_now else (actions[-2:] == tail)
    assert sum(isinstance(a, StopService) for a in actions) == (1 if shutting_now else 0)

    # Privacy: mute is only changed by the user, is persisted, and always closes the gate.
    assert new.muted == expected_muted(config, old, event)
    assert new.call_press == expected_call_press(config, old, event)
    persisted = [a for a in actions if isinstance(a, PersistMute)]
    assert persisted == ([PersistMute(new.muted)] if new.muted != old.muted else [])
    if new.muted:
        assert not gate
        assert leds.mute or new.shutting_down
    if gate:
        assert new.call is IN and not new.muted and not new.shutting_down
    # The first words: held only for a call a person started in button, wake word or push-to-talk
    # mode, only while it connects, never while muted; never both held and open.
    if hold:
        assert new.call is CONN and not new.muted and not gate and config.mode is not A
        assert config.mode in PERSON_STARTED or new.talking
    # The wake word detector listens only in wake_word mode with no call up or coming, never
    # while muted (it gets nothing) or without a mic; then the LEDs say so, unless an error shows.
    listening = wake_listening(config, new)
    if listening:
        assert config.mode is W and new.call in (IDLE, AUTH) and not new.muted and not gate
        assert not new.shutting_down and "capture" not in new.hardware_faults
    if listening and new.call is IDLE and not new.hardware_faults:
        assert (leds.status, leds.indicator) == (StatusPattern.WAKE_LISTENING, Indicator.WAKE_LISTENING)
    elif not listening:
        assert StatusPattern.WAKE_LISTENING not in (leds.status,) and leds.indicator is not Indicator.WAKE_LISTENING
    # A detection starts a call (with the "wake" chime) exactly when the machine was listening.
    if isinstance(event, WakeWordDetected):
        if wake_listening(config, old):
            assert new.call is CONN and Connect() in actions and hold
            assert (PlayEarcon("wake") in actions) is config.earcons
        else:
            assert new == old and actions == (ShowLeds(leds), SetMicGate(gate, hold=hold))
    if mic_hold(config, old) and not hold and not gate:
        assert actions[0] == SetMicGate(False)  # held audio is discarded before anything else
    # In always mode the mic never opens while the call button goes down or is held.
    if config.mode is A and event in (PRESS, HOLD):
        assert not gate
    # In push_to_talk holding is talking: a long press changes nothing.
    if config.mode is P and event == HOLD:
        assert new == old
    # Closing comes first: not one frame after a mute, before a commit or a slow disconnect.
    if mic_gate_open(config, old) and not gate:
        assert actions[0] == SetMicGate(False, hold=hold)
    if SendCommit() in actions:
        assert old.talking and not new.talking and old.call is IN and not old.muted
        assert actions.index(SetMicGate(False)) < actions.index(SendCommit()) or not mic_gate_open(config, old)

    # Shutdown turns everything off and freezes the state.
    if new.shutting_down:
        assert leds == LedState() and not gate
    if old.shutting_down:
        assert new == old and actions == (ShowLeds(LedState()), SetMicGate(False))

    # The downlink gate follows talking exactly, and closes before any flush.
    downlink = not old.talking
    for action in actions:
        if isinstance(action, SetDownlinkGate):
            downlink = action.open
    assert downlink == (not new.talking)
    if FlushPlayback() in actions and SetDownlinkGate(False) in actions:
        assert actions.index(SetDownlinkGate(False)) < actions.index(FlushPlayback())

    # Session requests agree with the new state; idle/auth_error only connect on a user action.
    assert not (Connect() in actions and Disconnect() in actions)
    if Connect() in actions:
        assert new.call is CONN
        wake = isinstance(event, WakeWordDetected) and config.mode is W
        if old.call is IDLE:
            assert event in USER_CONNECT_EVENTS or wake
        if old.call is AUTH:
            assert event in (*USER_CONNECT_EVENTS, Reload()) or wake
    if Disconnect() in actions:
        assert new.call in (IDLE, AUTH)
    if new.call is IDLE and old.call is not IDLE and not new.shutting_down:
        assert Disconnect() in actions or isinstance(event, SessionEnded)

    # Call limits: an established call's end is reported once with its reason and every timer is
    # cancelled; timers run only for an established call, never in always mode.
    reason = expected_end_reason(config, old, event)
    ended = [a for a in actions if isinstance(a, CallEnded)]
    assert ended == ([CallEnded(reason)] if reason else []), (reason, ended)  # type: ignore[arg-type]
    established = isinstance(event, SessionStarted) and not old.shutting_down and old.call in (CONN, RECO)
    assert new.call_up == (established or (old.call_up and reason is None))
    if reason:
        assert new.end_reason == reason
        if not shutting_now:
            assert all(CancelTimer(n) in actions for n in TIMER_NAMES)
    starts = [a for a in actions if isinstance(a, StartTimer)]
    if starts:
        assert new.call_up and config.mode is not A and not reason
        assert all(a.seconds > 0 for a in starts)
        if config.mode is P:  # no idle limit while the talk button is held
            assert [a.name for a in starts] == ["idle"] and not new.talking
    if (not old.call_up or old.call in WANTED) and not new.shutting_down:
        assert not new.call_up or new.call in WANTED  # a consistent state stays consistent
    if PlayEarcon("warning") in actions:
        assert config.mode in PERSON_STARTED and isinstance(event, TimerExpired) and event.name.endswith("warning")

    if not config.earcons:
        assert not any(isinstance(a, PlayEarcon) for a in actions)
    elif new.muted != old.muted and event == HOLD:
        # A long press undoing its own press's mute: the hang-up is the feedback, not "unmuted".
        assert not new.muted and PlayEarcon("unmuted") not in actions
    elif new.muted != old.muted:
        assert PlayEarcon("muted" if new.muted else "unmuted") in actions


def s(call: CallState, **flags: Any) -> MachineState:
    return MachineState(call=call, **flags)


ENDED, CONNECTED, ERROR = PlayEarcon("ended"), PlayEarcon("connected"), PlayEarcon("error")
MUTED = (PersistMute(True), PlayEarcon("muted"))
UNMUTED = (PersistMute(False), PlayEarcon("unmuted"))
DL_CLOSE, DL_OPEN = SetDownlinkGate(False), SetDownlinkGate(True)
HW = frozenset({"capture"})

# -- scenarios: apply actions like the service does ------------------------------------------------
@dataclass
class Device:
    """A stand-in for the service: runs the machine and applies its outputs in order."""

    config: MachineConfig
    muted_at_boot: bool = False
    state: MachineState = field(init=False)
    leds: LedState = field(init=False, default_factory=LedState)
    mic_open: bool = field(init=False, default=False)
    mic_held: bool = field(init=False, default=False)
    downlink_open: bool = field(init=False, default=True)
    log: list[Action] = field(init=False, default_factory=list)
    last: tuple[Action, ...] = field(init=False, default=())
    timers: dict[TimerName, float] = field(init=False, default_factory=dict)  # running: name -> seconds

    def __post_init__(self) -> None:
        t = boot(self.config, self.muted_at_boot)
        self.state = t.state
        self._apply(t.actions)

    def send(self, *events: Event) -> Device:
        for event in events:
            old = self.state
            t = step(self.config, old, event)
            check_transition(self.config, old, event, t)
            self.state = t.state
            self._apply(t.actions)
            assert self.leds == leds_for(self.config, self.state)
            assert self.mic_open == mic_gate_open(self.config, self.state)
            assert self.mic_held == mic_hold(self.config, self.state)
            assert self.downlink_open == (not self.state.talking)
            if not self.state.call_up:
                assert not self.timers or self.state.shutting_down, self.timers  # none left behind
        return self

    def expire(self, name: TimerName) -> Device:
        """The supervisor's clock ran `name` out (only a running timer can expire)."""
        assert name in self.timers, (name, self.timers)
        del self.timers[name]
        return self.send(TimerExpired(name))

    def _apply(self, actions: tuple[Action, ...]) -> None:
        self.last = actions
        self.log.extend(actions)
        for action in actions:
            if isinstance(action, ShowLeds):
                self.leds = action.leds
            elif isinstance(action, SetMicGate):
                self.mic_open = action.open
                self.mic_held = action.hold
            elif isinstance(action, SetDownlinkGate):
                self.downlink_open = action.open
            elif isinstance(action, StartTimer):
                self.timers[action.name] = action.seconds
            elif isinstance(action, CancelTimer):
                self.timers.pop(action.name, None)

    def key(self) -> tuple[Action, ...]:
        return tuple(a for a in self.last if not isinstance(a, (ShowLeds, SetMicGate, *LIMIT_ACTIONS)))

    def limits(self) -> tuple[Action, ...]:
        return tuple(a for a in self.last if isinstance(a, LIMIT_ACTIONS))



"""Tests for the pure state machine (`device.state_machine`).

Three layers: invariants checked for every (config, state, event) pair of a representative grid
(so no LED or gate can stick and mute is never changed behind the user's back), a literal table
of expected transitions per mode, and scenarios plus a hypothesis property test that walk event
sequences from `boot` while applying the actions like the service does.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.events import (
    COMMAND_NAMES,
    Action,
    AgentInterrupted,
    AgentStartedTalking,
    AgentStoppedTalking,
    AuthRejected,
    ButtonHeld,
    ButtonName,
    ButtonPressed,
    ButtonReleased,
    CallMode,
    CallState,
    Command,
    Connect,
    ConnectionLost,
    Disconnect,
    Event,
    FlushPlayback,
    HardwareBack,
    HardwareLost,
    Indicator,
    LedState,
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
    StatusPattern,
    StopService,
    Transition,
)
from device.state_machine import boot, leds_for, mic_gate_open, step

B, P, A = CallMode.BUTTON, CallMode.PUSH_TO_TALK, CallMode.ALWAYS
IDLE, CONN, IN, RECO, AUTH = (
    CallState.IDLE, CallState.CONNECTING, CallState.IN_CALL, CallState.RECONNECTING, CallState.AUTH_ERROR,
)
WANTED = (CONN, IN, RECO)

PRESS, RELEASE, HOLD = ButtonPressed(ButtonName.CALL), ButtonReleased(ButtonName.CALL), ButtonHeld(ButtonName.CALL)
MUTE_PRESS = ButtonPressed(ButtonName.MUTE)
STARTED = SessionStarted(session_id="s1", call_id="c1", sample_rate=16000)
TIMEOUT = SessionEnded(reason="timeout")
LOST = ConnectionLost(reason="network", retry_in=1.0)
REJECTED = AuthRejected(reason="401")

# Every event class with representative arguments.
EVENTS: tuple[Event, ...] = (
    *(cls(button) for cls in (ButtonPressed, ButtonReleased, ButtonHeld) for button in ButtonName),
    *(Command(name) for name in COMMAND_NAMES),
    SessionConnecting(attempt=1), SessionConnecting(attempt=4), STARTED,
    TIMEOUT, SessionEnded(reason="closed"), LOST, REJECTED,
    AgentStartedTalking(), AgentStoppedTalking(), AgentInterrupted(),
    HardwareLost("capture", "unplugged"), HardwareLost("playback"),
    HardwareBack("capture"), HardwareBack("playback"),
    Reload(), Shutdown(),
)

CONFIGS: tuple[MachineConfig, ...] = tuple(
    MachineConfig(mode=mode, half_duplex=half_duplex, earcons=earcons)
    for mode, half_duplex, earcons in itertools.product(CallMode, (False, True), (True, False))
)

CALL_PRESSES: tuple[Literal["none", "muted", "unmute_pending"], ...] = ("none", "muted", "unmute_pending")

# Every CallState x muted x agent_speaking x talking x hardware fault x shutting_down x call_press,
# including combinations the machine never produces (talking outside push-to-talk, a pending call
# press while unmuted...): totality is for all.
STATES: tuple[MachineState, ...] = tuple(
    MachineState(call=call, muted=muted, agent_speaking=speaking, talking=talking,
                 hardware_faults=faults, shutting_down=down, call_press=press)
    for call, muted, speaking, talking, faults, down, press in itertools.product(
        CallState, (False, True), (False, True), (False, True),
        (frozenset(), frozenset({"capture"})), (False, True), CALL_PRESSES,
    )
)

USER_CONNECT_EVENTS = (PRESS, Command("call"), Command("talk_start"))
EXPLICIT_MUTE_EVENTS = (MUTE_PRESS, Command("mute"), Command("unmute"))


def key_actions(transition: Transition) -> tuple[Action, ...]:
    """The actions other than the LED and mic gate outputs every transition carries."""
    return tuple(a for a in transition.actions if not isinstance(a, (ShowLeds, SetMicGate)))


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
    tail = (ShowLeds(leds), SetMicGate(gate))
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
    # In always mode the mic never opens while the call button goes down or is held.
    if config.mode is A and event in (PRESS, HOLD):
        assert not gate
    # In push_to_talk holding is talking: a long press changes nothing.
    if config.mode is P and event == HOLD:
        assert new == old
    # Closing comes first: not one frame after a mute, before a commit or a slow disconnect.
    if mic_gate_open(config, old) and not gate:
        assert actions[0] == SetMicGate(False)
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
        if old.call is IDLE:
            assert event in USER_CONNECT_EVENTS
        if old.call is AUTH:
            assert event in (*USER_CONNECT_EVENTS, Reload())
    if Disconnect() in actions:
        assert new.call in (IDLE, AUTH)
    if new.call is IDLE and old.call is not IDLE and not new.shutting_down:
        assert Disconnect() in actions or isinstance(event, SessionEnded)

    if not config.earcons:
        assert not any(isinstance(a, PlayEarcon) for a in actions)
    elif new.muted != old.muted and event == HOLD:
        # A long press undoing its own press's mute: the hang-up is the feedback, not "unmuted".
        assert not new.muted and PlayEarcon("unmuted") not in actions
    elif new.muted != old.muted:
        assert PlayEarcon("muted" if new.muted else "unmuted") in actions


# -- every (config, state, event) pair -------------------------------------------------------------
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.mode}-hd{int(c.half_duplex)}-ec{int(c.earcons)}")
def test_every_state_event_pair_keeps_the_invariants(config: MachineConfig) -> None:
    failures: list[str] = []
    for state, event in itertools.product(STATES, EVENTS):
        try:
            check_transition(config, state, event, step(config, state, event))
        except Exception as exc:  # noqa: BLE001 - collect all: one failing pair must not hide others
            failures.append(f"{state} + {event}: {type(exc).__name__} {exc}")
    assert not failures, f"{len(failures)} failing pairs, first:\n" + "\n".join(failures[:10])


def test_grid_size() -> None:
    # 3 modes x 2 half_duplex x 2 earcons; 5 call states x 2^5 flags x 3 call presses; 28 events.
    assert (len(CONFIGS), len(STATES), len(EVENTS)) == (12, 480, 28)


def test_unknown_event_type_is_ignored() -> None:
    config, state = MachineConfig(), MachineState(call=IN)
    t = step(config, state, object())  # type: ignore[arg-type]
    assert t.state == state and t.actions == (ShowLeds(leds_for(config, state)), SetMicGate(True))


# -- the expected transitions, per mode ------------------------------------------------------------
def s(call: CallState, **flags: Any) -> MachineState:
    return MachineState(call=call, **flags)


ENDED, CONNECTED, ERROR = PlayEarcon("ended"), PlayEarcon("connected"), PlayEarcon("error")
MUTED = (PersistMute(True), PlayEarcon("muted"))
UNMUTED = (PersistMute(False), PlayEarcon("unmuted"))
DL_CLOSE, DL_OPEN = SetDownlinkGate(False), SetDownlinkGate(True)
HW = frozenset({"capture"})

# (mode, state, event, expected call state, expected actions besides LEDs/mic gate, expected fields)
TABLE: list[tuple[CallMode, MachineState, Event, CallState, tuple[Action, ...], dict[str, Any]]] = [
    # button: press toggles the call
    (B, s(IDLE), PRESS, CONN, (Connect(),), {}),
    (B, s(AUTH), PRESS, CONN, (Connect(),), {}),
    (B, s(CONN), PRESS, IDLE, (Disconnect(),), {}),
    (B, s(IN, agent_speaking=True), PRESS, IDLE, (Disconnect(), ENDED), {"agent_speaking": False}),
    (B, s(RECO), PRESS, IDLE, (Disconnect(),), {}),
    (B, s(IN), RELEASE, IN, (), {}),
    (B, s(IN), HOLD, IDLE, (Disconnect(), ENDED), {}),
    (B, s(IDLE), HOLD, IDLE, (), {}),
    (B, s(AUTH), HOLD, AUTH, (), {}),
    (B, s(IN), MUTE_PRESS, IN, MUTED, {"muted": True}),
    (B, s(IN, muted=True), MUTE_PRESS, IN, UNMUTED, {"muted": False}),
    (B, s(IDLE), MUTE_PRESS, IDLE, MUTED, {"muted": True}),
    (B, s(IN, muted=True), Command("mute"), IN, (), {"muted": True}),
    (B, s(AUTH), Command("mute"), AUTH, MUTED, {"muted": True}),
    (B, s(IN, muted=True), Command("unmute"), IN, UNMUTED, {"muted": False}),
    (B, s(IDLE), Command("call"), CONN, (Connect(),), {}),
    (B, s(AUTH), Command("call"), CONN, (Connect(),), {}),
    (B, s(IN), Command("call"), IN, (), {}),
    (B, s(RECO), Command("call"), RECO, (), {}),
    (B, s(IN), Command("hangup"), IDLE, (Disconnect(), ENDED), {}),
    (B, s(CONN), Command("hangup"), IDLE, (Disconnect(),), {}),
    (B, s(IDLE), Command("hangup"), IDLE, (), {}),
    (B, s(IN), Command("talk_start"), IN, (), {"talking": False}),
    (B, s(IN), Command("talk_stop"), IN, (), {}),
    # button: session events
    (B, s(CONN), SessionConnecting(2), CONN, (), {}),
    (B, s(RECO), SessionConnecting(2), RECO, (), {}),
    (B, s(IN, agent_speaking=True), SessionConnecting(1), RECO, (), {"agent_speaking": False}),
    (B, s(IDLE), SessionConnecting(1), IDLE, (Disconnect(),), {}),
    (B, s(CONN), STARTED, IN, (CONNECTED,), {}),
    (B, s(RECO), STARTED, IN, (CONNECTED,), {}),
    (B, s(IN), STARTED, IN, (), {}),
    (B, s(IDLE), STARTED, IDLE, (Disconnect(),), {}),
    (B, s(AUTH), STARTED, AUTH, (Disconnect(),), {}),
    (B, s(IN), TIMEOUT, IDLE, (ENDED,), {}),
    (B, s(RECO), TIMEOUT, IDLE, (ENDED,), {}),
    (B, s(IDLE), TIMEOUT, IDLE, (), {}),
    (B, s(AUTH), TIMEOUT, AUTH, (), {}),
    (B, s(IN, agent_speaking=True), LOST, RECO, (), {"agent_speaking": False}),
    (B, s(CONN), LOST, RECO, (), {}),
    (B, s(IDLE), LOST, IDLE, (), {}),
    (B, s(AUTH), LOST, AUTH, (), {}),
    (B, s(CONN), REJECTED, AUTH, (ERROR,), {"last_error": "auth rejected: 401"}),
    (B, s(IN), REJECTED, AUTH, (ERROR,), {}),
    (B, s(AUTH), REJECTED, AUTH, (), {}),
    (B, s(IDLE), REJECTED, IDLE, (), {}),
    (B, s(AUTH), Reload(), CONN, (Connect(),), {}),
    (B, s(IN), Reload(), IN, (), {}),
    (B, s(IDLE), Reload(), IDLE, (), {}),
    # button: agent and hardware
    (B, s(IN), AgentStartedTalking(), IN, (), {"agent_speaking": True}),
    (B, s(RECO), AgentStartedTalking(), RECO, (), {"agent_speaking": False}),
    (B, s(IN, agent_speaking=True), AgentStoppedTalking(), IN, (), {"agent_speaking": False}),
    (B, s(IN, agent_speaking=True), AgentInterrupted(), IN, (FlushPlayback(),), {"agent_speaking": False}),
    (B, s(IN), HardwareLost("capture", "x"), IN, (ERROR,), {"hardware_faults": HW, "last_error": "capture lost: x"}),
    (B, s(IN, hardware_faults=HW), HardwareLost("playback"), IN, (),
     {"hardware_faults": frozenset({"capture", "playback"})}),
    (B, s(IN, hardware_faults=HW), HardwareBack("capture"), IN, (), {"hardware_faults": frozenset()}),
    (B, s(IN), Shutdown(), IDLE, (Disconnect(), StopService()), {"shutting_down": True}),
    (B, s(IDLE, muted=True), Shutdown(), IDLE, (StopService(),), {"shutting_down": True, "muted": True}),
    (B, s(IN, shutting_down=True), PRESS, IN, (), {}),
    # push to talk
    (P, s(IN), PRESS, IN, (DL_CLOSE,), {"talking": True}),
    (P, s(IN, agent_speaking=True), PRESS, IN, (DL_CLOSE, FlushPlayback()), {"talking": True, "agent_speaking": False}),
    (P, s(IN, talking=True), RELEASE, IN, (SendCommit(), DL_OPEN), {"talking": False}),
    (P, s(IN, talking=True, muted=True), RELEASE, IN, (DL_OPEN,), {"talking": False}),
    (P, s(RECO, talking=True), RELEASE, RECO, (DL_OPEN,), {"talking": False}),
    (P, s(IN), RELEASE, IN, (), {}),
    (P, s(IDLE), PRESS, CONN, (DL_CLOSE, Connect()), {"talking": True}),
    (P, s(AUTH), PRESS, CONN, (DL_CLOSE, Connect()), {"talking": True}),
    (P, s(CONN), PRESS, CONN, (DL_CLOSE,), {"talking": True}),
    # push to talk: a long hold is a long turn, never a hang-up (that is `ctl hangup`)
    (P, s(IN, talking=True), HOLD, IN, (), {"talking": True}),
    (P, s(CONN, talking=True), HOLD, CONN, (), {"talking": True}),
    (P, s(IN, talking=True, muted=True), HOLD, IN, (), {"talking": True, "muted": True}),
    (P, s(IN), HOLD, IN, (), {}),
    (P, s(IDLE), RELEASE, IDLE, (), {}),
    (P, s(IN), Command("talk_start"), IN, (DL_CLOSE,), {"talking": True}),
    (P, s(IN, talking=True), Command("talk_stop"), IN, (SendCommit(), DL_OPEN), {"talking": False}),
    (P, s(IDLE), Command("call"), CONN, (Connect(),), {"talking": False}),
    (P, s(IN, talking=True), Command("hangup"), IDLE, (Disconnect(), ENDED, DL_OPEN), {"talking": False}),
    (P, s(IN), AgentStartedTalking(), IN, (), {"agent_speaking": True}),
    (P, s(IN, talking=True), AgentStartedTalking(), IN, (), {"agent_speaking": False}),
    (P, s(IN), TIMEOUT, CONN, (Connect(),), {}),
    (P, s(IN, talking=True), LOST, RECO, (), {"talking": True}),
    (P, s(IN), MUTE_PRESS, IN, MUTED, {}),
    # always on: the call button is mute while a call is up or coming; a press mutes at once,
    # unmuting waits for the release of a short click
    (A, s(IN), PRESS, IN, MUTED, {"muted": True, "call_press": "muted"}),
    (A, s(IN, muted=True), PRESS, IN, (), {"muted": True, "call_press": "unmute_pending"}),
    (A, s(CONN), PRESS, CONN, MUTED, {"muted": True, "call_press": "muted"}),
    (A, s(RECO, muted=True), PRESS, RECO, (), {"muted": True, "call_press": "unmute_pending"}),
    (A, s(IDLE), PRESS, CONN, (Connect(),), {"muted": False, "call_press": "none"}),
    (A, s(AUTH, muted=True), PRESS, CONN, (Connect(),), {"muted": True, "call_press": "none"}),
    (A, s(IDLE, muted=True, call_press="unmute_pending"), PRESS, CONN, (Connect(),), {"call_press": "none"}),
    (A, s(IN), RELEASE, IN, (), {}),
    (A, s(IN, muted=True, call_press="muted"), RELEASE, IN, (), {"muted": True, "call_press": "none"}),
    (A, s(IN, muted=True, call_press="unmute_pending"), RELEASE, IN, UNMUTED, {"muted": False, "call_press": "none"}),
    (A, s(RECO, muted=True, call_press="unmute_pending"), RELEASE, RECO, UNMUTED, {"muted": False}),
    (A, s(AUTH, muted=True, call_press="unmute_pending"), RELEASE, AUTH, UNMUTED, {"muted": False}),
    (A, s(IN, muted=True), RELEASE, IN, (), {"muted": True}),
    # always on: a long press hangs up, and undoes the mute its own press made
    (A, s(IN), HOLD, IDLE, (Disconnect(), ENDED), {}),
    (A, s(IN, muted=True, call_press="muted"), HOLD, IDLE, (Disconnect(), ENDED, PersistMute(False)),
     {"muted": False, "call_press": "none"}),
    (A, s(CONN, muted=True, call_press="muted"), HOLD, IDLE, (Disconnect(), PersistMute(False)), {"muted": False}),
    (A, s(AUTH, muted=True, call_press="muted"), HOLD, AUTH, (PersistMute(False),), {"muted": False}),
    (A, s(IN, muted=True, call_press="unmute_pending"), HOLD, IDLE, (Disconnect(), ENDED),
     {"muted": True, "call_press": "none"}),
    (A, s(IN, muted=True), HOLD, IDLE, (Disconnect(), ENDED), {"muted": True}),
    (A, s(IDLE, muted=True), RELEASE, IDLE, (), {"muted": True}),
    # always on: an explicit mute choice cancels the pending press; other events keep it
    (A, s(IN, muted=True, call_press="unmute_pending"), Command("mute"), IN, (), {"muted": True, "call_press": "none"}),
    (A, s(IN, muted=True, call_press="unmute_pending"), MUTE_PRESS, IN, UNMUTED, {"call_press": "none"}),
    (A, s(IN, muted=True, call_press="muted"), Command("unmute"), IN, UNMUTED, {"call_press": "none"}),
    (A, s(IN, muted=True, call_press="muted"), LOST, RECO, (), {"call_press": "muted"}),
    (A, s(IN, muted=True, call_press="muted"), ButtonHeld(ButtonName.MUTE), IN, (), {"call_press": "muted"}),
    (A, s(IN), TIMEOUT, CONN, (Connect(),), {}),
    (A, s(RECO), TIMEOUT, CONN, (Connect(),), {}),
    (A, s(CONN), TIMEOUT, CONN, (Connect(),), {}),
    (A, s(IDLE), TIMEOUT, IDLE, (), {}),
    (A, s(IN), LOST, RECO, (), {}),
    (A, s(IN), Command("talk_start"), IN, (), {"talking": False}),
    (A, s(IN, muted=True), STARTED, IN, (), {"muted": True}),
    (A, s(RECO, muted=True), STARTED, IN, (CONNECTED,), {"muted": True}),
    (A, s(AUTH), Reload(), CONN, (Connect(),), {}),
]


@pytest.mark.parametrize(("mode", "state", "event", "call", "actions", "fields"), TABLE)
def test_expected_transition(mode: CallMode, state: MachineState, event: Event, call: CallState,
                             actions: tuple[Action, ...], fields: dict[str, Any]) -> None:
    config = MachineConfig(mode=mode)
    t = step(config, state, event)
    assert t.state.call is call
    assert key_actions(t) == actions
    for name, value in fields.items():
        assert getattr(t.state, name) == value, name
    check_transition(config, state, event, t)


# -- LEDs and gate ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("state", "status", "indicator"), [
    (s(IDLE), StatusPattern.OFF, Indicator.IDLE),
    (s(CONN), StatusPattern.BLINK, Indicator.CONNECTING),
    (s(RECO), StatusPattern.BLINK, Indicator.CONNECTING),
    (s(IN), StatusPattern.ON, Indicator.LISTENING),
    (s(IN, agent_speaking=True), StatusPattern.ON, Indicator.AGENT_SPEAKING),
    (s(AUTH), StatusPattern.AUTH_ERROR, Indicator.ERROR),
    (s(IN, hardware_faults=HW, agent_speaking=True), StatusPattern.FAST_BLINK, Indicator.ERROR),
    (s(RECO, hardware_faults=HW), StatusPattern.FAST_BLINK, Indicator.ERROR),
    (s(AUTH, hardware_faults=HW), StatusPattern.AUTH_ERROR, Indicator.ERROR),
    (s(AUTH, muted=True), StatusPattern.AUTH_ERROR, Indicator.MUTED),
    (s(RECO, muted=True), StatusPattern.BLINK, Indicator.MUTED),
    (s(IN, muted=True, agent_speaking=True), StatusPattern.ON, Indicator.MUTED),
    (s(IDLE, agent_speaking=True), StatusPattern.OFF, Indicator.IDLE),
])
def test_leds(state: MachineState, status: StatusPattern, indicator: Indicator) -> None:
    leds = leds_for(MachineConfig(), state)
    assert (leds.status, leds.indicator) == (status, indicator)
    assert leds.mute is state.muted
    assert leds.speaking is (state.agent_speaking and state.call is IN)
    assert leds_for(MachineConfig(), replace(state, shutting_down=True)) == LedState()


@pytest.mark.parametrize(("mode", "half_duplex", "state", "is_open"), [
    (B, False, s(IN), True),
    (B, False, s(IN, muted=True), False),
    (B, False, s(CONN), False),
    (B, False, s(RECO), False),
    (B, False, s(IN, agent_speaking=True), True),
    (B, True, s(IN, agent_speaking=True), False),
    (B, False, s(IN, shutting_down=True), False),
    (P, False, s(IN), False),
    (P, False, s(IN, talking=True), True),
    (P, True, s(IN, talking=True, agent_speaking=True), False),
    (P, False, s(IN, talking=True, muted=True), False),
    (A, False, s(IN, hardware_faults=HW), True),
])
def test_mic_gate(mode: CallMode, half_duplex: bool, state: MachineState, is_open: bool) -> None:
    assert mic_gate_open(MachineConfig(mode=mode, half_duplex=half_duplex), state) is is_open


# -- boot ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "muted"), list(itertools.product(CallMode, (False, True))))
def test_boot(mode: CallMode, muted: bool) -> None:
    config = MachineConfig(mode=mode)
    t = boot(config, muted)
    assert t.state.muted is muted and not t.state.talking and not t.state.agent_speaking
    assert t.actions[:3] == (ShowLeds(leds_for(config, t.state)), SetMicGate(False), SetDownlinkGate(True))
    if mode is B:
        assert t.state.call is IDLE and Connect() not in t.actions
    else:
        assert t.state.call is CONN and t.actions[3:] == (Connect(),)
    assert t.actions[0].leds.mute is muted  # type: ignore[union-attr]


# -- scenarios: apply actions like the service does ------------------------------------------------
@dataclass
class Device:
    """A stand-in for the service: runs the machine and applies its outputs in order."""

    config: MachineConfig
    muted_at_boot: bool = False
    state: MachineState = field(init=False)
    leds: LedState = field(init=False, default_factory=LedState)
    mic_open: bool = field(init=False, default=False)
    downlink_open: bool = field(init=False, default=True)
    log: list[Action] = field(init=False, default_factory=list)
    last: tuple[Action, ...] = field(init=False, default=())

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
            assert self.downlink_open == (not self.state.talking)
        return self

    def _apply(self, actions: tuple[Action, ...]) -> None:
        self.last = actions
        self.log.extend(actions)
        for action in actions:
            if isinstance(action, ShowLeds):
                self.leds = action.leds
            elif isinstance(action, SetMicGate):
                self.mic_open = action.open
            elif isinstance(action, SetDownlinkGate):
                self.downlink_open = action.open

    def key(self) -> tuple[Action, ...]:
        return tuple(a for a in self.last if not isinstance(a, (ShowLeds, SetMicGate)))


def test_button_call_talk_hangup() -> None:
    d = Device(MachineConfig(mode=B))
    assert d.state.call is IDLE and d.leds.status is StatusPattern.OFF
    d.send(PRESS)
    assert d.key() == (Connect(),) and d.leds.status is StatusPattern.BLINK and not d.mic_open
    d.send(SessionConnecting(1), STARTED)
    assert d.key() == (CONNECTED,) and d.leds.status is StatusPattern.ON and d.mic_open
    d.send(AgentStartedTalking())
    assert d.leds.speaking and d.leds.indicator is Indicator.AGENT_SPEAKING and d.mic_open  # full duplex
    d.send(AgentStoppedTalking(), PRESS)
    assert d.key() == (Disconnect(), ENDED) and d.last[0] == SetMicGate(False)
    assert d.state.call is IDLE and d.leds == LedState() and not d.mic_open
    d.send(TIMEOUT, STARTED)  # the close we asked for completes; a late session.created is refused
    assert d.key() == (Disconnect(),) and d.state.call is IDLE


def test_ptt_press_release_commits() -> None:
    d = Device(MachineConfig(mode=P)).send(STARTED)
    assert d.state.call is IN and not d.mic_open and d.leds.status is StatusPattern.ON
    d.send(PRESS)
    assert d.mic_open and not d.downlink_open
    d.send(RELEASE)
    assert d.last[:3] == (SetMicGate(False), SendCommit(), DL_OPEN)  # gate closed before the commit
    assert not d.mic_open and d.downlink_open
    d.send(MUTE_PRESS, PRESS)
    assert not d.mic_open and d.leds.mute
    d.send(RELEASE)
    assert SendCommit() not in d.last  # nothing was sent while muted, so nothing to commit


def test_ptt_barge_in_flushes_the_agent() -> None:
    d = Device(MachineConfig(mode=P, half_duplex=True)).send(STARTED, AgentStartedTalking())
    assert d.leds.speaking
    d.send(PRESS)
    assert d.key() == (DL_CLOSE, FlushPlayback())
    assert not d.leds.speaking and d.mic_open  # half duplex must not silence a user holding talk
    d.send(AgentStartedTalking())
    assert d.mic_open and not d.downlink_open and not d.leds.speaking
    d.send(RELEASE)
    assert SendCommit() in d.last and d.downlink_open


def test_server_interruption_flushes_in_hands_free_mode() -> None:
    d = Device(MachineConfig(mode=B)).send(PRESS, STARTED, AgentStartedTalking(), AgentInterrupted())
    assert FlushPlayback() in d.last and not d.leds.speaking and d.mic_open


def test_auth_error_waits_for_a_user_action_or_reload() -> None:
    d = Device(MachineConfig(mode=A))
    d.send(REJECTED)
    assert d.state.call is AUTH and d.key() == (ERROR,) and d.leds.status is StatusPattern.AUTH_ERROR
    assert d.state.last_error == "auth rejected: 401"
    before = len(d.log)
    d.send(LOST, TIMEOUT, SessionConnecting(2), AgentStartedTalking(), RELEASE, Command("hangup"))
    assert Connect() not in d.log[before:] and d.state.call is AUTH
    d.send(Reload())
    assert d.key() == (Connect(),) and d.leds.status is StatusPattern.BLINK
    d.send(REJECTED, Command("call"))
    assert d.key() == (Connect(),)
    d.send(STARTED)
    assert d.state.call is IN and d.mic_open


def test_always_mode_reconnects_after_a_server_timeout() -> None:
    d = Device(MachineConfig(mode=A)).send(STARTED)
    d.send(TIMEOUT)
    assert d.key() == (Connect(),) and d.state.call is CONN and not d.mic_open
    d.send(SessionConnecting(1), STARTED)
    assert d.state.call is IN and d.mic_open
    d.send(LOST)
    assert d.state.call is RECO and d.leds.status is StatusPattern.BLINK and Connect() not in d.last
    d.send(SessionConnecting(2), STARTED)
    assert d.state.call is IN and d.key() == (CONNECTED,)


def mic_ever_opened(d: Device, since: int) -> bool:
    return SetMicGate(True) in d.log[since:]


def test_always_click_mutes_and_a_second_click_unmutes_on_release() -> None:
    d = Device(MachineConfig(mode=A)).send(STARTED)
    assert d.mic_open and not d.leds.mute
    d.send(PRESS)
    assert d.last[0] == SetMicGate(False) and d.key() == MUTED  # closed before persisting
    assert d.state.muted and d.leds.mute and not d.mic_open and d.state.call_press == "muted"
    d.send(RELEASE)
    assert d.key() == () and d.state.muted and d.state.call_press == "none"
    before = len(d.log)
    d.send(PRESS)  # muted: the press alone does nothing, it might be the start of a long press
    assert d.key() == () and d.state.muted and d.leds.mute and d.state.call_press == "unmute_pending"
    assert not mic_ever_opened(d, before)
    d.send(RELEASE)
    assert d.key() == UNMUTED and not d.state.muted and not d.leds.mute and d.mic_open
    assert d.state.call_press == "none" and d.state.call is IN


def test_always_long_press_from_unmuted_ends_the_call_and_leaves_it_unmuted() -> None:
    d = Device(MachineConfig(mode=A)).send(STARTED)
    before = len(d.log)
    d.send(PRESS)
    assert d.key() == MUTED and not d.mic_open  # closed for the whole hold
    d.send(HOLD)
    assert d.key() == (Disconnect(), ENDED, PersistMute(False)) and d.state.call is IDLE
    assert not d.state.muted and not d.leds.mute and d.state.call_press == "none"
    d.send(RELEASE)
    assert d.key() == () and not d.state.muted
    assert not mic_ever_opened(d, before)
    assert [a for a in d.log if isinstance(a, PersistMute)] == [PersistMute(True), PersistMute(False)]
    d.send(TIMEOUT, LOST, STARTED)  # nothing revives it
    assert d.state.call is IDLE and not d.mic_open
    d.send(PRESS)
    assert d.key() == (Connect(),) and not d.state.muted
    d.send(RELEASE, STARTED)
    assert d.state.call is IN and d.mic_open


def test_always_long_press_from_muted_ends_the_call_and_stays_muted() -> None:
    d = Device(MachineConfig(mode=A), muted_at_boot=True).send(STARTED)
    assert d.state.muted and not d.mic_open
    d.send(PRESS)
    assert d.key() == () and d.state.call_press == "unmute_pending"
    d.send(HOLD)
    assert d.key() == (Disconnect(), ENDED) and d.state.call is IDLE
    assert d.state.muted and d.leds.mute and d.state.call_press == "none"
    d.send(RELEASE)
    assert d.key() == () and d.state.muted
    d.send(PRESS, RELEASE, STARTED)  # a new call starts, still muted
    assert d.state.call is IN and d.state.muted and not d.mic_open
    assert not mic_ever_opened(d, 0) and not any(isinstance(a, PersistMute) for a in d.log)


def test_always_explicit_mute_wins_over_a_pending_press() -> None:
    d = Device(MachineConfig(mode=A), muted_at_boot=True).send(STARTED, PRESS, Command("mute"), RELEASE)
    assert d.state.muted and not d.mic_open  # the release does not unmute after `ctl mute`
    d = Device(MachineConfig(mode=A)).send(STARTED, PRESS, Command("mute"), HOLD, RELEASE)
    assert d.state.call is IDLE and d.state.muted  # nor does the long press
    assert PersistMute(False) not in d.log


def test_ptt_hold_beyond_long_press_keeps_talking_and_the_call() -> None:
    d = Device(MachineConfig(mode=P)).send(STARTED, PRESS)
    talking = d.state
    d.send(HOLD)
    assert d.key() == () and d.state == talking and d.mic_open and not d.downlink_open
    d.send(AgentStartedTalking(), RELEASE)
    assert d.key() == (SendCommit(), DL_OPEN) and d.state.call is IN and not d.mic_open
    d.send(Command("hangup"))  # `ctl hangup` is how push_to_talk hangs up
    assert d.key() == (Disconnect(), ENDED) and d.state.call is IDLE


def test_mute_survives_reconnects_and_new_sessions() -> None:
    d = Device(MachineConfig(mode=A), muted_at_boot=True)
    assert d.leds.mute and d.state.muted
    steps: list[Event] = [STARTED, LOST, SessionConnecting(2), STARTED, TIMEOUT, STARTED, AgentStartedTalking(),
                          AgentInterrupted(), HardwareLost("capture"), HardwareBack("capture"), Reload(),
                          Command("call"), REJECTED, Reload(), STARTED, HOLD, RELEASE, PRESS, STARTED]
    for event in steps:
        d.send(event)
        assert d.state.muted and d.leds.mute and not d.mic_open, event
    assert not any(isinstance(a, PersistMute) for a in d.log)
    d.send(Command("unmute"))
    assert d.key() == UNMUTED and d.mic_open
    d.send(Shutdown())
    assert not d.state.muted  # shutdown never touches mute


def test_hardware_fault_keeps_the_call() -> None:
    d = Device(MachineConfig(mode=B)).send(PRESS, STARTED, HardwareLost("capture", "unplugged"))
    assert d.key() == (ERROR,) and d.state.call is IN and d.leds.status is StatusPattern.FAST_BLINK
    d.send(HardwareLost("playback"))
    assert d.key() == ()  # one chime per fault episode
    d.send(HardwareBack("capture"), HardwareBack("playback"))
    assert d.leds.status is StatusPattern.ON


def test_shutdown_in_a_call() -> None:
    d = Device(MachineConfig(mode=P)).send(STARTED, PRESS, Shutdown())
    assert d.last == (SetMicGate(False), Disconnect(), ShowLeds(LedState()), SetMicGate(False), StopService())
    assert d.leds == LedState() and not d.mic_open
    frozen = d.state
    d.send(*EVENTS)
    assert d.state == frozen and StopService() not in d.last


def test_earcons_can_be_disabled() -> None:
    d = Device(MachineConfig(mode=B, earcons=False)).send(PRESS, STARTED, MUTE_PRESS, REJECTED)
    assert not any(isinstance(a, PlayEarcon) for a in d.log)
    assert PersistMute(True) in d.log


# -- property: random event sequences from boot ----------------------------------------------------
@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(config=st.sampled_from(CONFIGS), muted=st.booleans(),
       events=st.lists(st.sampled_from(EVENTS), max_size=60))
def test_random_event_sequences_keep_the_invariants(config: MachineConfig, muted: bool,
                                                    events: list[Event]) -> None:
    d = Device(config, muted_at_boot=muted)  # send() checks every step and the applied outputs
    for event in events:
        d.send(event)
        if d.state.muted:
            assert not d.mic_open and (d.leds.mute or d.state.shutting_down)
        # Only always mode has a pending call press, and the mic is closed while it is pending.
        if d.state.call_press != "none":
            assert config.mode is A and d.state.muted and not d.mic_open

"""Call limits in the pure state machine: which timers each transition starts or cancels, what
their expiry does, and the reason an established call ended. The grid test in
test_state_machine.py checks the invariants for every (state, event) pair with limits on."""
from __future__ import annotations

from typing import Any

import pytest

from device.core.events import (
    TIMER_NAMES,
    Action,
    Activity,
    CallEnded,
    CallMode,
    CallState,
    CancelTimer,
    Command,
    Connect,
    Disconnect,
    Event,
    MachineConfig,
    MachineState,
    PlayEarcon,
    SendCommit,
    SessionConnecting,
    StartTimer,
    TimerExpired,
)
from device.core.state_machine import step
from tests.state_machine_support import (
    AUTH,
    CONN,
    CONNECTED,
    DL_CLOSE,
    DL_OPEN,
    ENDED,
    ERROR,
    IDLE,
    IN,
    LIMITS,
    LOST,
    PRESS,
    RECO,
    REJECTED,
    RELEASE,
    STARTED,
    TIMEOUT,
    A,
    B,
    Device,
    P,
    check_transition,
    key_actions,
    limit_actions,
    s,
)

WARNING = PlayEarcon("warning")
CANCEL_ALL = tuple(CancelTimer(n) for n in TIMER_NAMES)
IDLE_TIMERS = (StartTimer("idle_warning", 50.0), StartTimer("idle", 60.0))
MAX_TIMERS = (StartTimer("max_warning", 890.0), StartTimer("max_call", 900.0))
SPEECH, AGENT = Activity("speech"), Activity("agent")

# (mode, state, event, call state after, key actions, limit actions, fields after)
Row = tuple[CallMode, MachineState, Event, CallState, tuple[Action, ...], tuple[Action, ...], dict[str, Any]]
TABLE: list[Row] = [
    # button: a new call starts both limits; a reconnect restarts only the idle one
    (B, s(CONN), STARTED, IN, (CONNECTED,), (*IDLE_TIMERS, *MAX_TIMERS), {"call_up": True}),
    (B, s(RECO, call_up=True), STARTED, IN, (CONNECTED,), IDLE_TIMERS, {"call_up": True}),
    (B, s(RECO), STARTED, IN, (CONNECTED,), (*IDLE_TIMERS, *MAX_TIMERS), {"call_up": True}),
    (B, s(IN, call_up=True), STARTED, IN, (), (), {}),
    # button: activity restarts the idle pair, only while in the call
    (B, s(IN, call_up=True), SPEECH, IN, (), IDLE_TIMERS, {}),
    (B, s(IN, call_up=True), AGENT, IN, (), IDLE_TIMERS, {}),
    (B, s(RECO, call_up=True), SPEECH, RECO, (), (), {}),
    (B, s(IN), SPEECH, IN, (), (), {}),
    (B, s(IDLE), AGENT, IDLE, (), (), {}),
    # button: the warnings chime, the limits hang up with their reason
    (B, s(IN, call_up=True), TimerExpired("idle_warning"), IN, (WARNING,), (), {}),
    (B, s(IN, call_up=True), TimerExpired("max_warning"), IN, (WARNING,), (), {}),
    (B, s(IN, call_up=True), TimerExpired("idle"), IDLE, (Disconnect(), ENDED),
     (CallEnded("idle"), *CANCEL_ALL), {"call_up": False, "end_reason": "idle"}),
    (B, s(IN, call_up=True), TimerExpired("max_call"), IDLE, (Disconnect(), ENDED),
     (CallEnded("max_duration"), *CANCEL_ALL), {"end_reason": "max_duration"}),
    (B, s(RECO, call_up=True), TimerExpired("max_call"), IDLE, (Disconnect(),),
     (CallEnded("max_duration"), *CANCEL_ALL), {}),
    (B, s(IDLE), TimerExpired("idle"), IDLE, (), (), {}),  # a stale expiry
    (B, s(CONN), TimerExpired("max_call"), CONN, (), (), {}),
    # button: every other end of an established call, with its reason
    (B, s(IN, call_up=True), PRESS, IDLE, (Disconnect(), ENDED), (CallEnded("person"), *CANCEL_ALL),
     {"end_reason": "person"}),
    (B, s(IN, call_up=True), Command("hangup"), IDLE, (Disconnect(), ENDED),
     (CallEnded("person"), *CANCEL_ALL), {}),
    (B, s(IN, call_up=True), TIMEOUT, IDLE, (ENDED,), (CallEnded("server"), *CANCEL_ALL),
     {"end_reason": "server"}),
    (B, s(RECO, call_up=True), REJECTED, AUTH, (ERROR,), (CallEnded("error"), *CANCEL_ALL),
     {"end_reason": "error"}),
    (B, s(CONN), PRESS, IDLE, (Disconnect(),), (), {"end_reason": None}),  # never established
    (B, s(IN, call_up=True), LOST, RECO, (), (), {"call_up": True}),
    (B, s(IN, call_up=True), SessionConnecting(1), RECO, (), (), {"call_up": True}),
    # push to talk: the idle limit only, held off while talking, and a quiet close
    (P, s(CONN), STARTED, IN, (CONNECTED,), (StartTimer("idle", 60.0),), {"call_up": True}),
    (P, s(CONN, talking=True), STARTED, IN, (CONNECTED,), (), {"call_up": True}),
    (P, s(IN, call_up=True), PRESS, IN, (DL_CLOSE,), (CancelTimer("idle"),), {"talking": True}),
    (P, s(IN, call_up=True, talking=True), RELEASE, IN, (SendCommit(), DL_OPEN), (StartTimer("idle", 60.0),),
     {"talking": False}),
    (P, s(IN, call_up=True), AGENT, IN, (), (StartTimer("idle", 60.0),), {}),
    (P, s(IN, call_up=True, talking=True), SPEECH, IN, (), (), {}),
    (P, s(IN, call_up=True), TimerExpired("idle"), IDLE, (Disconnect(),), (CallEnded("idle"), *CANCEL_ALL),
     {"end_reason": "idle"}),
    (P, s(IN, call_up=True, talking=True), TimerExpired("idle"), IN, (), (), {}),
    (P, s(IN, call_up=True), TimerExpired("max_call"), IN, (), (), {}),
    (P, s(IN, call_up=True), TIMEOUT, CONN, (Connect(),), (CallEnded("server"), *CANCEL_ALL),
     {"call_up": False}),
    # always: no limits
    (A, s(CONN), STARTED, IN, (CONNECTED,), (), {"call_up": True}),
    (A, s(IN, call_up=True), SPEECH, IN, (), (), {}),
    (A, s(IN, call_up=True), TimerExpired("idle"), IN, (), (), {}),
    (A, s(IN, call_up=True), TIMEOUT, CONN, (Connect(),), (CallEnded("server"), *CANCEL_ALL), {}),
]


@pytest.mark.parametrize(("mode", "state", "event", "call", "actions", "limits", "fields"), TABLE)
def test_limit_transition(mode: CallMode, state: MachineState, event: Event, call: CallState,
                          actions: tuple[Action, ...], limits: tuple[Action, ...],
                          fields: dict[str, Any]) -> None:
    config = MachineConfig(mode=mode, **LIMITS)
    t = step(config, state, event)
    assert t.state.call is call
    assert key_actions(t) == actions
    assert limit_actions(t) == limits
    for name, value in fields.items():
        assert getattr(t.state, name) == value, name
    check_transition(config, state, event, t)


def test_limits_off_start_no_timers() -> None:
    for mode in CallMode:
        d = Device(MachineConfig(mode=mode)).send(Command("call"), STARTED, SPEECH)
        assert d.timers == {}


def test_warning_without_room_is_left_out() -> None:
    d = Device(MachineConfig(mode=B, idle_hangup_seconds=5, max_call_seconds=8, call_warning_seconds=8))
    d.send(PRESS, STARTED)
    assert d.timers == {"idle": 5.0, "max_call": 8.0}


def test_idle_call_warns_then_ends_and_speech_resets_it() -> None:
    d = Device(MachineConfig(mode=B, **LIMITS)).send(PRESS, STARTED)
    assert d.timers == {"idle_warning": 50.0, "idle": 60.0, "max_warning": 890.0, "max_call": 900.0}
    d.expire("idle_warning")
    assert d.key() == (WARNING,) and d.state.call is IN
    d.send(SPEECH)  # the person answered the warning: a fresh idle period
    assert d.timers["idle_warning"] == 50.0 and d.timers["idle"] == 60.0
    d.expire("idle_warning").expire("idle")
    assert d.key() == (Disconnect(), ENDED) and d.limits()[0] == CallEnded("idle")
    assert d.state.call is IDLE and d.state.end_reason == "idle" and d.timers == {}
    d.send(PRESS, STARTED)  # the next call starts afresh
    assert d.state.call_up and set(d.timers) == set(TIMER_NAMES)


def test_long_call_ends_at_the_limit_through_a_reconnect() -> None:
    d = Device(MachineConfig(mode=B, **LIMITS)).send(PRESS, STARTED, LOST, STARTED)
    assert d.limits() == IDLE_TIMERS  # the reconnect kept the duration limit running
    d.expire("max_warning")
    assert d.key() == (WARNING,)
    d.expire("max_call")
    assert d.state.call is IDLE and d.state.end_reason == "max_duration" and d.timers == {}


def test_push_to_talk_closes_when_idle_and_the_next_press_reopens() -> None:
    d = Device(MachineConfig(mode=P, **LIMITS))  # boot connects
    d.send(STARTED)
    assert d.timers == {"idle": 60.0}
    d.send(PRESS)
    assert d.timers == {}  # held: never idle
    d.send(RELEASE)
    assert d.timers == {"idle": 60.0}
    d.expire("idle")
    assert d.state.call is IDLE and d.key() == (Disconnect(),) and d.state.end_reason == "idle"
    d.send(PRESS)
    assert d.state.call is CONN and Connect() in d.key() and d.state.talking
    d.send(STARTED)
    assert d.state.call is IN and d.mic_open and d.timers == {}


@pytest.mark.parametrize("mode", list(CallMode))
def test_volume_controls_never_touch_the_call(mode: CallMode) -> None:
    from device.core.events import VolumeCommand
    from hw.controls import ButtonHeld, ButtonName, ButtonPressed, ButtonReleased

    for state in (s(IDLE), s(IN, call_up=True), s(IN, call_up=True, talking=True), s(CONN, muted=True)):
        for event in (*(cls(b) for cls in (ButtonPressed, ButtonReleased, ButtonHeld)
                        for b in (ButtonName.VOLUME_UP, ButtonName.VOLUME_DOWN)),
                      VolumeCommand(level=10), VolumeCommand(delta=5)):
            t = step(MachineConfig(mode=mode, **LIMITS), state, event)
            assert t.state == state and key_actions(t) == () and limit_actions(t) == ()


# -- the first words: the mic is held while a call the person started connects ----------------------
def test_button_press_holds_the_mic_until_the_session_exists() -> None:
    from device.core.events import SetMicGate

    d = Device(MachineConfig(mode=B)).send(PRESS)
    assert d.state.call is CONN and d.mic_held and not d.mic_open
    assert d.last[-1] == SetMicGate(False, hold=True)
    d.send(STARTED)
    assert d.mic_open and not d.mic_held  # opened: the held audio goes first
    d.send(LOST)
    assert not d.mic_open and not d.mic_held  # a reconnect holds nothing
    d.send(PRESS, PRESS)  # hang up, call again, then mute while connecting
    assert d.mic_held
    d.send(Command("mute"))
    assert not d.mic_held and d.last[0] == SetMicGate(False)  # discarded: privacy first


def test_push_to_talk_press_that_reopens_holds_only_while_held() -> None:
    d = Device(MachineConfig(mode=P, **LIMITS)).send(STARTED)
    d.expire("idle")
    assert d.state.call is IDLE and not d.mic_held
    d.send(PRESS)
    assert d.state.call is CONN and d.mic_held
    d.send(RELEASE)  # let go before the session came: nothing more is held, what was is dropped
    assert not d.mic_held
    d.send(PRESS, STARTED)
    assert d.mic_open and not d.mic_held


def test_always_mode_never_holds() -> None:
    d = Device(MachineConfig(mode=A))
    assert d.state.call is CONN and not d.mic_held
    d.send(STARTED, LOST, TIMEOUT)
    assert not d.mic_held

"""The wake word call mode in the pure state machine: when the detector listens, what a detection
does, how the call ends and that the device then listens again. The grid test in
test_state_machine.py checks the invariants (listening only when idle and unmuted, a detection
acting only while listening) for every (state, event) pair in this mode too."""
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
    Command,
    Connect,
    Disconnect,
    Event,
    HardwareBack,
    HardwareLost,
    MachineConfig,
    MachineState,
    PersistMute,
    PlayEarcon,
    SetMicGate,
    StartTimer,
)
from device.core.state_machine import leds_for, mic_hold, step, wake_listening
from hw.controls import Indicator, StatusPattern
from tests.state_machine_support import (
    AUTH,
    CONN,
    CONNECTED,
    ENDED,
    HOLD,
    HW,
    IDLE,
    IN,
    LIMITS,
    MUTE_PRESS,
    MUTED,
    PRESS,
    RECO,
    STARTED,
    TIMEOUT,
    WAKE,
    B,
    Device,
    W,
    check_transition,
    key_actions,
    s,
)

CHIME = PlayEarcon("wake")
WAKE_CONFIG = MachineConfig(mode=W, **LIMITS)

# (state, event, call state after, key actions, fields after): wake_word mode, earcons on.
TABLE: list[tuple[MachineState, Event, CallState, tuple[Action, ...], dict[str, Any]]] = [
    # a detection while listening starts a call with the chime; the mic is held meanwhile
    (s(IDLE), WAKE, CONN, (Connect(), CHIME), {}),
    (s(AUTH), WAKE, CONN, (Connect(), CHIME), {}),   # the wake word retries like a press
    # a detection that raced a change does nothing
    (s(IDLE, muted=True), WAKE, IDLE, (), {"muted": True}),
    (s(CONN), WAKE, CONN, (), {}),
    (s(IN, call_up=True), WAKE, IN, (), {}),
    (s(IN, call_up=True, agent_speaking=True), WAKE, IN, (), {"agent_speaking": True}),
    (s(RECO, call_up=True), WAKE, RECO, (), {}),
    (s(IDLE, hardware_faults=HW), WAKE, IDLE, (), {}),
    (s(IDLE, shutting_down=True), WAKE, IDLE, (), {}),
    # the call button still works as in button mode
    (s(IDLE), PRESS, CONN, (Connect(),), {}),
    (s(IN, call_up=True), PRESS, IDLE, (Disconnect(), ENDED), {"end_reason": "person"}),
    (s(IN, call_up=True), HOLD, IDLE, (Disconnect(), ENDED), {"end_reason": "person"}),
    (s(IN, call_up=True), Command("hangup"), IDLE, (Disconnect(), ENDED), {"end_reason": "person"}),
    # the server ending the session ends the call: back to idle (listening), no reconnect
    (s(IN, call_up=True), TIMEOUT, IDLE, (ENDED,), {"end_reason": "server"}),
    (s(CONN), STARTED, IN, (CONNECTED,), {"call_up": True}),
    (s(IDLE), MUTE_PRESS, IDLE, MUTED, {"muted": True}),
]


@pytest.mark.parametrize(("state", "event", "call", "actions", "fields"), TABLE)
def test_wake_word_transition(state: MachineState, event: Event, call: CallState,
                              actions: tuple[Action, ...], fields: dict[str, Any]) -> None:
    t = step(WAKE_CONFIG, state, event)
    assert t.state.call is call
    assert key_actions(t) == actions
    for name, value in fields.items():
        assert getattr(t.state, name) == value, name
    check_transition(WAKE_CONFIG, state, event, t)


@pytest.mark.parametrize("mode", [m for m in CallMode if m is not W])
def test_other_modes_ignore_a_detection(mode: CallMode) -> None:
    for state in (s(IDLE), s(AUTH), s(IN, call_up=True)):
        config = MachineConfig(mode=mode)
        t = step(config, state, WAKE)
        assert t.state == state and key_actions(t) == ()
        assert not wake_listening(config, state)


@pytest.mark.parametrize(("state", "listening"), [
    (s(IDLE), True), (s(AUTH), True),
    (s(CONN), False), (s(IN), False), (s(IN, agent_speaking=True), False), (s(RECO), False),
    (s(IDLE, muted=True), False), (s(IDLE, hardware_faults=HW), False),
    (s(IDLE, hardware_faults=frozenset({"playback"})), True),   # a lost speaker: still listens
    (s(IDLE, shutting_down=True), False),
])
def test_when_the_detector_listens(state: MachineState, listening: bool) -> None:
    assert wake_listening(WAKE_CONFIG, state) is listening


@pytest.mark.parametrize(("state", "status", "indicator"), [
    (s(IDLE), StatusPattern.WAKE_LISTENING, Indicator.WAKE_LISTENING),
    (s(IDLE, muted=True), StatusPattern.OFF, Indicator.MUTED),          # the mute LED rules stay
    (s(AUTH), StatusPattern.AUTH_ERROR, Indicator.ERROR),
    (s(IDLE, hardware_faults=HW), StatusPattern.FAST_BLINK, Indicator.ERROR),
    (s(CONN), StatusPattern.BLINK, Indicator.CONNECTING),
    (s(IN), StatusPattern.ON, Indicator.LISTENING),
])
def test_leds_say_listening_for_the_wake_word(state: MachineState, status: StatusPattern,
                                              indicator: Indicator) -> None:
    leds = leds_for(WAKE_CONFIG, state)
    assert (leds.status, leds.indicator) == (status, indicator)
    assert leds.mute is state.muted
    # the same state in button mode is plain idle: the two are told apart
    if state == s(IDLE):
        button = leds_for(MachineConfig(mode=B), state)
        assert (button.status, button.indicator) == (StatusPattern.OFF, Indicator.IDLE)


def test_boot_listens_without_connecting() -> None:
    d = Device(WAKE_CONFIG)
    assert d.state.call is IDLE and Connect() not in d.log
    assert wake_listening(WAKE_CONFIG, d.state) and d.leds.status is StatusPattern.WAKE_LISTENING
    assert not wake_listening(WAKE_CONFIG, Device(WAKE_CONFIG, muted_at_boot=True).state)


def test_wake_call_ends_on_idle_and_the_next_wake_word_starts_a_new_one() -> None:
    d = Device(WAKE_CONFIG).send(WAKE)
    assert d.key() == (Connect(), CHIME) and d.mic_held and not d.mic_open
    assert not wake_listening(WAKE_CONFIG, d.state)
    d.send(STARTED)
    assert d.mic_open and not d.mic_held and d.state.call_up
    assert set(d.timers) == set(TIMER_NAMES)      # idle and duration limits, as in button mode
    d.send(Activity("speech"))
    assert d.timers["idle"] == LIMITS["idle_hangup_seconds"]
    d.send(WAKE)                                   # "okay nabu" again mid-call: nothing
    assert d.key() == () and d.state.call is IN
    d.expire("idle_warning")
    assert d.key() == (PlayEarcon("warning"),)
    d.expire("idle")
    assert d.state.call is IDLE and d.state.end_reason == "idle" and d.timers == {}
    assert CallEnded("idle") in d.last and Disconnect() in d.key()
    assert wake_listening(WAKE_CONFIG, d.state) and d.leds.indicator is Indicator.WAKE_LISTENING
    d.send(WAKE, STARTED)
    assert d.state.call is IN and d.state.call_up and d.mic_open


def test_mute_stops_listening_and_a_detection_then_does_nothing() -> None:
    d = Device(WAKE_CONFIG).send(MUTE_PRESS)
    assert not wake_listening(WAKE_CONFIG, d.state) and d.leds.mute
    d.send(WAKE)
    assert d.state.call is IDLE and d.key() == () and not d.mic_held and not d.mic_open
    d.send(MUTE_PRESS)
    assert wake_listening(WAKE_CONFIG, d.state) and PersistMute(False) in d.key()


def test_mute_while_connecting_discards_the_held_words_first() -> None:
    d = Device(WAKE_CONFIG).send(WAKE)
    assert d.mic_held
    d.send(MUTE_PRESS)
    assert d.last[0] == SetMicGate(False) and not d.mic_held
    assert not mic_hold(WAKE_CONFIG, d.state)


def test_lost_mic_stops_listening_until_it_is_back() -> None:
    d = Device(WAKE_CONFIG).send(HardwareLost("capture", "unplugged"))
    assert not wake_listening(WAKE_CONFIG, d.state)
    d.send(WAKE)
    assert d.state.call is IDLE
    d.send(HardwareBack("capture"))
    assert wake_listening(WAKE_CONFIG, d.state)


def test_earcons_off_no_chime() -> None:
    t = step(MachineConfig(mode=W, earcons=False), s(IDLE), WAKE)
    assert key_actions(t) == (Connect(),)


def test_duration_limit_ends_a_wake_call() -> None:
    d = Device(WAKE_CONFIG).send(WAKE, STARTED)
    assert d.timers["max_call"] == LIMITS["max_call_seconds"]
    assert StartTimer("max_call", LIMITS["max_call_seconds"]) in d.log
    d.expire("max_warning").expire("max_call")
    assert d.state.call is IDLE and d.state.end_reason == "max_duration"
    assert wake_listening(WAKE_CONFIG, d.state)

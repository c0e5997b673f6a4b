"""Tests for the pure state machine (`device.core.state_machine`).

Three layers: invariants checked for every (config, state, event) pair of a representative grid
(so no LED or gate can stick and mute is never changed behind the user's back), a literal table
of expected transitions per mode, and scenarios plus a hypothesis property test that walk event
sequences from `boot` while applying the actions like the service does.
"""
from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.core.events import (
    Action,
    AgentInterrupted,
    AgentStartedTalking,
    AgentStoppedTalking,
    CallMode,
    CallState,
    Command,
    Connect,
    Disconnect,
    Event,
    FlushPlayback,
    HardwareBack,
    HardwareLost,
    MachineConfig,
    MachineState,
    PersistMute,
    Reload,
    SendCommit,
    SessionConnecting,
    SetDownlinkGate,
    SetMicGate,
    ShowLeds,
    Shutdown,
    StopService,
)
from device.core.state_machine import boot, leds_for, mic_gate_open, step
from hw.controls import ButtonHeld, ButtonName, Indicator, LedState, StatusPattern
from tests.state_machine_support import (
    AUTH,
    CONFIGS,
    CONN,
    CONNECTED,
    DL_CLOSE,
    DL_OPEN,
    ENDED,
    ERROR,
    EVENTS,
    HOLD,
    HW,
    IDLE,
    IN,
    LOST,
    MUTE_PRESS,
    MUTED,
    PRESS,
    RECO,
    REJECTED,
    RELEASE,
    STARTED,
    STATES,
    TIMEOUT,
    UNMUTED,
    A,
    B,
    Device,
    P,
    check_transition,
    key_actions,
    s,
)


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
    # 3 modes x 2 half_duplex x 2 earcons + wake_word x 2 earcons, + 3 modes x 2 earcons with
    # limits + wake_word with them, + 1 odd warning; 5 call states x 2^6 flags x 3 call presses;
    # 43 events (4 buttons x 3, 31 others).
    assert (len(CONFIGS), len(STATES), len(EVENTS)) == (22, 960, 43)


def test_unknown_event_type_is_ignored() -> None:
    config, state = MachineConfig(), MachineState(call=IN)
    t = step(config, state, object())  # type: ignore[arg-type]
    assert t.state == state and t.actions == (ShowLeds(leds_for(config, state)), SetMicGate(True))


# -- the expected transitions, per mode ------------------------------------------------------------
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
    if mode in (B, CallMode.WAKE_WORD):
        assert t.state.call is IDLE and Connect() not in t.actions
    else:
        assert t.state.call is CONN and t.actions[3:] == (Connect(),)
    assert t.actions[0].leds.mute is muted  # type: ignore[union-attr]


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

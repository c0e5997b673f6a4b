"""`ctl` commands that do nothing say so (issue 13, item 7), and `last_error` clears on recovery.

`describe_command` is pure and derived from `step`: the table below is checked against the
machine itself for every command in every state of a representative grid, so a note appears
exactly when the command changes nothing.
"""
from __future__ import annotations

import itertools
import queue
from pathlib import Path

import pytest

from device.core import state_machine
from device.core.events import (
    COMMAND_NAMES,
    AuthRejected,
    CallMode,
    CallState,
    Command,
    Event,
    HardwareBack,
    HardwareLost,
    MachineConfig,
    MachineState,
    SessionStarted,
    SetMicGate,
    ShowLeds,
)
from device.service.control import ControlServer, send_command

BUTTON = MachineConfig(mode=CallMode.BUTTON)
PTT = MachineConfig(mode=CallMode.PUSH_TO_TALK)


@pytest.mark.parametrize("config, state, cmd, note", [
    (BUTTON, MachineState(), "hangup", "nothing to do: there is no call to hang up (idle)"),
    (BUTTON, MachineState(), "talk_start", "talk-start works only in push_to_talk mode (call_mode is button)"),
    (BUTTON, MachineState(), "talk_stop", "talk-stop works only in push_to_talk mode"),
    (BUTTON, MachineState(muted=True), "mute", "already muted"),
    (BUTTON, MachineState(), "unmute", "already unmuted"),
    (BUTTON, MachineState(call=CallState.IN_CALL), "call", "a call is already in call"),
    (PTT, MachineState(call=CallState.IN_CALL), "talk_stop", "not talking"),
    (BUTTON, MachineState(), "call", None),
    (BUTTON, MachineState(call=CallState.IN_CALL), "hangup", None),
    (PTT, MachineState(call=CallState.IN_CALL), "talk_start", None),
    (BUTTON, MachineState(shutting_down=True), "call", "the service is stopping"),
    (BUTTON, MachineState(hardware_faults=frozenset({"capture"}), last_error="capture lost: thread crashed"),
     "call", "no call: the microphone is not working (capture lost: thread crashed)"),
    (BUTTON, MachineState(hardware_faults=frozenset({"playback"})), "call", None),
])
def test_notes(config: MachineConfig, state: MachineState, cmd: str, note: str | None) -> None:
    got = state_machine.describe_command(config, state, cmd)
    assert (got is None) if note is None else (got is not None and note in got)


STATES = [MachineState(call=call, muted=muted, talking=talking)
          for call, muted, talking in itertools.product(CallState, (False, True), (False, True))]


@pytest.mark.parametrize("mode", list(CallMode))
def test_a_note_exactly_when_the_command_changes_nothing(mode: CallMode) -> None:
    config = MachineConfig(mode=mode)
    for state, cmd in itertools.product(STATES, COMMAND_NAMES):
        t = state_machine.step(config, state, Command(cmd))
        idle = t.state == state and all(isinstance(a, (ShowLeds, SetMicGate)) for a in t.actions)
        assert (state_machine.describe_command(config, state, cmd) is not None) == idle, (mode, state, cmd)


def test_the_control_reply_carries_the_note(tmp_path: Path) -> None:
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    srv = ControlServer(tmp_path / "c.sock", events.put, dict,
                        note=lambda cmd: state_machine.describe_command(BUTTON, MachineState(), cmd))
    srv.bind()
    srv.start()
    try:
        reply = send_command(srv.path, "hangup")
        assert reply["ok"] is True and "no call to hang up" in reply["note"]
        assert send_command(srv.path, "call") == {"ok": True, "cmd": "call"}
        assert events.get(timeout=2) == Command("hangup")   # still posted: the machine decides
    finally:
        srv.stop()
        assert srv.join(3)


def test_last_error_clears_once_recovered() -> None:
    step = state_machine.step
    s = step(BUTTON, MachineState(call=CallState.CONNECTING), AuthRejected("401")).state
    assert s.last_error == "auth rejected: 401"
    s = step(BUTTON, MachineState(call=CallState.CONNECTING, last_error=s.last_error),
             SessionStarted("s", "c", 16000)).state
    assert s.call is CallState.IN_CALL and s.last_error is None
    s = step(BUTTON, s, HardwareLost("capture", "gone")).state
    s = step(BUTTON, s, HardwareLost("playback", "gone")).state
    s = step(BUTTON, s, HardwareBack("capture")).state
    assert s.last_error == "playback lost: gone"       # one device still lost
    assert step(BUTTON, s, HardwareBack("playback")).state.last_error is None
    # A fault still on survives a reconnect.
    lost = step(BUTTON, MachineState(call=CallState.RECONNECTING), HardwareLost("capture", "x")).state
    assert step(BUTTON, lost, SessionStarted("s", "c", 16000)).state.last_error == "capture lost: x"


def test_no_call_starts_without_a_microphone_but_one_in_progress_goes_on() -> None:
    from device.core.events import Connect, PlayEarcon

    lost = MachineState(hardware_faults=frozenset({"capture"}))
    for config in (MachineConfig(mode=CallMode.BUTTON, earcons=True), MachineConfig(mode=CallMode.ALWAYS)):
        t = state_machine.step(config, lost, Command("call"))
        assert t.state.call is CallState.IDLE and not any(isinstance(a, Connect) for a in t.actions)
    t = state_machine.step(MachineConfig(mode=CallMode.BUTTON, earcons=True), lost, Command("call"))
    assert PlayEarcon("error") in t.actions
    in_call = MachineState(call=CallState.IN_CALL)
    t = state_machine.step(BUTTON, in_call, HardwareLost("capture", "thread crashed"))
    assert t.state.call is CallState.IN_CALL and t.state.hardware_faults == {"capture"}
    back = state_machine.step(BUTTON, lost, HardwareBack("capture")).state
    assert state_machine.step(BUTTON, back, Command("call")).state.call is CallState.CONNECTING


def test_no_note_while_an_earlier_command_is_still_queued(tmp_path: Path) -> None:
    """`hangup` then `call` back to back: the call is judged against the state after the hangup,
    which the main thread has not published yet, so it gets no (wrong) "already in call" note."""
    from device.service.settings import load_settings
    from device.service.supervisor import ApplianceService
    from hw.controls import NoControls
    from hw.fake_audio import FakeAudioBackend

    settings = load_settings(api_key="sk-notes-1234", agent_id="a", audio_backend="fake",
                             gpio_backend="none", control_socket=tmp_path / "c.sock",
                             state_dir=tmp_path / "state")
    svc = ApplianceService(settings, backend=FakeAudioBackend(), controls=NoControls(), install_signals=False)
    svc.state = MachineState(call=CallState.IN_CALL)
    assert svc.command_note("call") is not None             # nothing queued: judged now
    svc._control_event(Command("hangup"))                   # queued, not handled yet
    assert svc.command_note("call") is None
    svc.handle(svc.events.get(timeout=1))                   # the main thread catches up
    assert svc.state.call is CallState.IDLE
    assert svc.command_note("hangup") is not None and "no call" in svc.command_note("hangup")  # type: ignore[operator]
    svc.shutdown()

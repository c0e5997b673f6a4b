"""State machine scenarios: event sequences from `boot`, applied the way the service applies
actions (`Device` checks every step and the resulting outputs)."""
from __future__ import annotations

from device.core.events import (
    AgentInterrupted,
    AgentStartedTalking,
    AgentStoppedTalking,
    CallEnded,
    Command,
    Connect,
    Disconnect,
    Event,
    FlushPlayback,
    HardwareBack,
    HardwareLost,
    MachineConfig,
    PersistMute,
    PlayEarcon,
    Reload,
    SendCommit,
    SessionConnecting,
    SetMicGate,
    ShowLeds,
    Shutdown,
    StopService,
)
from hw.controls import Indicator, LedState, StatusPattern
from tests.state_machine_support import (
    AUTH,
    CONN,
    CONNECTED,
    DL_CLOSE,
    DL_OPEN,
    ENDED,
    ERROR,
    EVENTS,
    HOLD,
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
    TIMEOUT,
    UNMUTED,
    A,
    B,
    Device,
    P,
)


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
    assert d.last == (SetMicGate(False), Disconnect(), CallEnded("shutdown"), ShowLeds(LedState()),
                      SetMicGate(False), StopService())
    assert d.leds == LedState() and not d.mic_open
    frozen = d.state
    d.send(*EVENTS)
    assert d.state == frozen and StopService() not in d.last


def test_earcons_can_be_disabled() -> None:
    d = Device(MachineConfig(mode=B, earcons=False)).send(PRESS, STARTED, MUTE_PRESS, REJECTED)
    assert not any(isinstance(a, PlayEarcon) for a in d.log)
    assert PersistMute(True) in d.log

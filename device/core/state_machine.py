"""The pure state machine: `(config, state, event) -> Transition(new state, actions)`.

Nothing here does I/O, reads a clock or keeps hidden state, so every behaviour is a table lookup
the tests can enumerate. The service (`device.service.supervisor`) feeds events in on the main thread and
carries out the actions in order.

Conventions every transition follows (the tests check them for every (state, event) pair):
- It ends with `ShowLeds(leds_for(new))` and `SetMicGate(mic_gate_open(new), hold=mic_hold(new))`,
  whether or not they changed (the service applies only changes), so no LED or gate can stick.
  `Shutdown` is the one exception: `StopService` comes after them.
- Closing comes first: when the mic gate closes (or a hold ends unopened), `SetMicGate(False)` is
  also the *first* action,
  before anything slow (persisting mute, `Disconnect`) and before `SendCommit`, so no frame
  leaves after the user muted and the commit covers exactly the audio that was sent. Likewise
  `SetDownlinkGate(False)` comes before `FlushPlayback`, so nothing is queued after the flush.
- The downlink gate is open exactly when push-to-talk is not held (`not state.talking`).
- `muted` changes only on a user action (mute button, `mute`/`unmute` commands, a press, release
  or long press of the call button in `always` mode), and each change emits `PersistMute` and an
  earcon, except that a long press undoing its own press's mute (below) plays no "unmuted": the
  hang-up is what the user asked for, and its "ended" chime and the mute LED going off say so.

The call button, per mode (`ButtonHeld` is the long press, `long_press_seconds`):
- `button`: a press starts a call when idle and hangs up otherwise; a long press also hangs up.
- `push_to_talk`: it is the talk button. A press starts a session if there is none and opens the
  mic; the release closes the mic and commits. Holding it past the long-press time is just a long
  turn, so `ButtonHeld` is ignored. Hanging up is `ctl hangup` (`Command("hangup")`); the next
  press or `ctl call` starts a session again.
- `always`: a press when idle starts a call. While a call is up or coming the button is mute, and
  a press never opens the mic (it may be the start of a long press), so `state.call_press`
  remembers what the press did until its release or long press:
  - press while unmuted: mute at once (`SetMicGate(False)` first), `call_press = "muted"`; the
    release of a short click keeps it muted.
  - press while muted: nothing yet, `call_press = "unmute_pending"`; the release unmutes.
  - long press: hang up (`Disconnect`, idle); if this press muted, unmute again with
    `PersistMute(False)` (the user meant to hang up, not to mute), else stay muted. The release
    after it does nothing.
  The mute button and the `mute`/`unmute` commands cancel a pending press (`call_press = "none"`):
  the newest explicit choice wins, so neither the release nor the long press then unmutes.

- `wake_word`: as `button` (a press starts a call when idle and hangs up otherwise), and while
  idle the local wake word detector listens (`wake_listening`: not in a call, not muted, a mic
  present). `WakeWordDetected` then starts a call as a press would, with the "wake" chime, and
  the mic is held (`mic_hold`) from the end of the wake word until the session exists, so what
  follows the wake word in the same breath reaches the agent first. A detection that raced a
  change (mute, a call already coming) does nothing. The call ends like a `button` call (idle
  or duration limit, the call button, the server) and the device is back to listening.

Call limits (no clock in here): the machine asks the supervisor for named timers
(`StartTimer(name, seconds)` restarts one, `CancelTimer(name)` removes it) and the supervisor,
which owns the injected clock, feeds `TimerExpired(name)` back on the main thread. It checks its
timers on the main thread and handles an expiry at once, so a cancelled timer can never fire
late. Liveness comes in as `Activity("speech" | "agent")` (the local VAD on the processed mic,
agent audio reaching the speaker), posted at most once per kind per supervisor tick.
- `call_up` is set by the `session.created` that establishes a call and kept through reconnects;
  clearing it (the call ends for any reason) emits `CallEnded(reason)` and a `CancelTimer` for
  every timer, and `end_reason` keeps the reason (person, idle, max_duration, server, error,
  shutdown) for status and stats.
- `button` (and `wake_word`): the call's start starts "max_warning" (at max - warning) and "max_call" (at max), and
  "idle_warning"/"idle" likewise from `idle_hangup_seconds`; activity and a reconnect restart the
  idle pair. A warning timer plays the "warning" earcon; "idle" and "max_call" hang up (reason
  idle / max_duration) like a press would.
- `push_to_talk`: only "idle", no warning: stopped while the button is held, restarted on the
  release, on activity and on a reconnect. Its expiry closes the session quietly (idle, no
  earcon); the next press opens a new one.
- `wake_word`: as `button` (a person starts each call, the limits end it).
- `always`: no timers. A limit of 0 turns it off; a warning time that does not fit before the
  limit (>= it, or 0) means no warning.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

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
    EarconName,
    EndReason,
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
    WakeWordDetected,
)
from device.core.outputs import (
    CALL_STARTABLE,
    CALL_WANTED,
    NO_CALL_WITHOUT,
    leds_for,
    mic_gate_open,
    mic_hold,
    wake_listening,
)
from hw.controls import ButtonHeld, ButtonName, ButtonPressed, ButtonReleased, LedState

__all__ = ["NO_CALL_WITHOUT", "boot", "leds_for", "mic_gate_open", "mic_hold", "step", "wake_listening"]

# A handler's result before the common outputs are added: the new state and its own actions.
_Step = tuple[MachineState, tuple[Action, ...]]
_Handler = Callable[[MachineConfig, MachineState, Any], _Step]

_CALL_WANTED: Final = CALL_WANTED
_CALL_STARTABLE: Final = CALL_STARTABLE
_NOTHING: Final[tuple[Action, ...]] = ()
_CALL_BUTTONS: Final = frozenset({ButtonName.CALL, ButtonName.MUTE})
# Modes where a person starts each call (a press, or the wake word) and the limits end it.
_PERSON_STARTED: Final = frozenset({CallMode.BUTTON, CallMode.WAKE_WORD})


# -- outputs (device/core/outputs.py) --------------------------------------------------------------
def _mic(config: MachineConfig, state: MachineState) -> SetMicGate:
    return SetMicGate(mic_gate_open(config, state), hold=mic_hold(config, state))


def _earcon(config: MachineConfig, name: EarconName) -> tuple[Action, ...]:
    return (PlayEarcon(name),) if config.earcons else _NOTHING


def _finish(config: MachineConfig, old: MachineState, new: MachineState,
            body: tuple[Action, ...]) -> Transition:
    """Wrap a handler's actions with the gate and LED outputs (see the module docstring)."""
    gate = mic_gate_open(config, new)
    first: list[Action] = []
    last: list[Action] = []
    hold = mic_hold(config, new)
    if mic_gate_open(config, old) and not gate:
        first.append(SetMicGate(False, hold=hold))  # (push-to-talk held through a reconnect: holds)
    elif mic_hold(config, old) and not hold and not gate:
        first.append(SetMicGate(False))  # a hold ends first too: held audio is discarded at once
    if new.talking and not old.talking:
        first.append(SetDownlinkGate(False))
    elif old.talking and not new.talking:
        last.append(SetDownlinkGate(True))
    if old.call_up and not new.call_up:
        assert new.end_reason is not None, "a handler ended a call without a reason"
        last[:0] = [CallEnded(new.end_reason), *(CancelTimer(name) for name in TIMER_NAMES)]
    return Transition(new, (*first, *body, *last, ShowLeds(leds_for(config, new)), _mic(config, new)))


# -- building blocks -------------------------------------------------------------------------------
def _timer(name: TimerName, seconds: float) -> tuple[Action, ...]:
    return (StartTimer(name, seconds),) if seconds > 0 else _NOTHING


def _limit_timers(config: MachineConfig, limit: float, warning: TimerName,
                  final: TimerName) -> tuple[Action, ...]:
    """The warning and final timers of one limit (`button` mode), nothing when it is off."""
    if limit <= 0:
        return _NOTHING
    warn = config.call_warning_seconds
    early = _timer(warning, limit - warn) if 0 < warn < limit else _NOTHING
    return (*early, *_timer(final, limit))


def _idle_timers(config: MachineConfig, state: MachineState) -> tuple[Action, ...]:
    """(Re)start the idle limit: on a call's start, on activity and after a reconnect."""
    if config.mode in _PERSON_STARTED:
        return _limit_timers(config, config.idle_hangup_seconds, "idle_warning", "idle")
    if config.mode is CallMode.PUSH_TO_TALK and not state.talking:
        return _timer("idle", config.idle_hangup_seconds)
    return _NOTHING


def _call_over(state: MachineState, reason: EndReason) -> MachineState:
    """Mark an established call as ended (`_finish` then emits CallEnded and cancels the timers)."""
    return replace(state, call_up=False, end_reason=reason) if state.call_up else state


def _start_call(config: MachineConfig, state: MachineState) -> _Step:
    """Ask for a session; only from idle/auth_error (elsewhere one is already up or coming).

    Not while the microphone is lost (its thread crashed or the device is gone): a call without
    a microphone would only pretend to work. The error chime says no; the LED already blinks fast.
    A call already up when the mic goes goes on (most losses are a second's USB glitch)."""
    if state.call not in _CALL_STARTABLE:
        return state, _NOTHING
    if NO_CALL_WITHOUT in state.hardware_faults:
        return state, _earcon(config, "error")
    return replace(state, call=CallState.CONNECTING, agent_speaking=False), (Connect(),)


def _end_call(config: MachineConfig, state: MachineState, reason: EndReason = "person",
              chime: bool = True) -> _Step:
    """Hang up on purpose (the person, or a call limit): the device stays idle until the user
    starts a call again."""
    if state.call not in _CALL_WANTED:
        return state, _NOTHING
    ended = _earcon(config, "ended") if chime and state.call is CallState.IN_CALL else _NOTHING
    # talking is cleared so the downlink reopens; a later release of a still-held button is a no-op.
    new = replace(state, call=CallState.IDLE, agent_speaking=False, talking=False)
    return _call_over(new, reason), (Disconnect(), *ended)


def _set_muted(config: MachineConfig, state: MachineState, muted: bool) -> _Step:
    if state.muted == muted:
        return state, _NOTHING
    return replace(state, muted=muted), (PersistMute(muted), *_earcon(config, "muted" if muted else "unmuted"))


def _user_set_muted(config: MachineConfig, state: MachineState, muted: bool) -> _Step:
    """The mute button or a `mute`/`unmute` command: also cancels the call button press in
    progress (`always` mode), so its release or long press cannot undo this explicit choice."""
    return _set_muted(config, replace(state, call_press="none"), muted)


def _always_call_press(config: MachineConfig, state: MachineState) -> _Step:
    """`always` mode, call button down: privacy first, a press never opens the mic.

    Whether this is a click (mute toggle) or a long press (hang up) is only known later, so a
    press mutes at once but defers unmuting to the release (see the module docstring).
    """
    if state.call in _CALL_STARTABLE:
        return _start_call(config, replace(state, call_press="none"))
    if state.muted:
        return replace(state, call_press="unmute_pending"), _NOTHING
    return _set_muted(config, replace(state, call_press="muted"), True)


def _talk_start(config: MachineConfig, state: MachineState) -> _Step:
    """Push-to-talk pressed: open the mic (if in a call) and silence the agent (local barge-in)."""
    state, actions = _start_call(config, state)
    # agent_speaking is cleared too: its audio is discarded while the button is held, and with
    # half_duplex a stale flag would keep the mic closed while the user holds talk.
    flush = (FlushPlayback(),) if state.agent_speaking else _NOTHING
    # No idle limit while the button is held: a long turn is not an abandoned session.
    hold = (CancelTimer("idle"),) if state.call_up and config.idle_hangup_seconds > 0 else _NOTHING
    return replace(state, talking=True, agent_speaking=False), (*actions, *flush, *hold)


def _talk_stop(config: MachineConfig, state: MachineState) -> _Step:
    """Push-to-talk released: close the mic and commit what was sent (never while muted)."""
    if not state.talking:
        return state, _NOTHING
    commit = (SendCommit(),) if state.call is CallState.IN_CALL and not state.muted else _NOTHING
    new = replace(state, talking=False)
    return new, (*commit, *(_idle_timers(config, new) if new.call_up else _NOTHING))


# -- handlers, one per event type ------------------------------------------------------------------
def _on_pressed(config: MachineConfig, state: MachineState, event: ButtonPressed) -> _Step:
    if event.button not in _CALL_BUTTONS:
        return state, _NOTHING  # volume buttons: the supervisor's volume control, not call state
    if event.button is ButtonName.MUTE:
        return _user_set_muted(config, state, not state.muted)
    if config.mode is CallMode.PUSH_TO_TALK:
        return _talk_start(config, state)
    if config.mode is CallMode.ALWAYS:
        return _always_call_press(config, state)
    if state.call in _CALL_STARTABLE:
        return _start_call(config, state)  # a short press when idle starts a call in every mode
    return _end_call(config, state)


def _on_released(config: MachineConfig, state: MachineState, event: ButtonReleased) -> _Step:
    if event.button is not ButtonName.CALL:
        return state, _NOTHING
    if config.mode is CallMode.PUSH_TO_TALK:
        return _talk_stop(config, state)
    if config.mode is CallMode.ALWAYS:
        # The end of a short click ("muted": it stays muted) or of a long press (already "none").
        pending, state = state.call_press, replace(state, call_press="none")
        if pending == "unmute_pending":
            return _set_muted(config, state, False)
    return state, _NOTHING


def _on_held(config: MachineConfig, state: MachineState, event: ButtonHeld) -> _Step:
    if event.button is not ButtonName.CALL or config.mode is CallMode.PUSH_TO_TALK:
        return state, _NOTHING  # in push_to_talk holding is talking: a long turn, not a hang-up
    if config.mode is not CallMode.ALWAYS:
        return _end_call(config, state)
    # The press muted only in case it was a click; a long press means hang up, so undo it.
    restore = state.call_press == "muted" and state.muted
    new, actions = _end_call(config, replace(state, call_press="none"))
    if restore:
        new, actions = replace(new, muted=False), (*actions, PersistMute(False))
    return new, actions


def _on_command(config: MachineConfig, state: MachineState, event: Command) -> _Step:
    name = event.name
    if name == "call":
        return _start_call(config, state)
    if name == "hangup":
        return _end_call(config, state)
    if name in ("mute", "unmute"):
        return _user_set_muted(config, state, name == "mute")
    if config.mode is not CallMode.PUSH_TO_TALK:
        return state, _NOTHING  # talk_start/talk_stop mean nothing outside push-to-talk
    if name == "talk_start":
        return _talk_start(config, state)
    if name == "talk_stop":
        return _talk_stop(config, state)
    return state, _NOTHING  # an unknown name (the socket should have refused it)


def _on_session_connecting(config: MachineConfig, state: MachineState, event: SessionConnecting) -> _Step:
    if state.call in _CALL_STARTABLE:
        # Every Connect we emit moves us to connecting first, so here the attempt is one we did
        # not ask for (a retry racing the user's hang-up): repeat the Disconnect, never revive.
        return state, (Disconnect(),)
    if state.call is CallState.IN_CALL:
        return replace(state, call=CallState.RECONNECTING, agent_speaking=False), _NOTHING
    return state, _NOTHING


def _on_session_started(config: MachineConfig, state: MachineState, event: SessionStarted) -> _Step:
    if state.call in _CALL_STARTABLE:
        return state, (Disconnect(),)  # a session nobody wants any more (see above)
    if state.call is CallState.IN_CALL:
        return state, _NOTHING  # a duplicate session.created changes nothing
    # Recovered from an auth or network error: `last_error` clears (a hardware fault still on stays).
    error = state.last_error if state.hardware_faults else None
    new = replace(state, call=CallState.IN_CALL, agent_speaking=False, call_up=True, last_error=error)
    # A new call starts every limit; a reconnect restarts only the idle one (the call goes on).
    limits = _NOTHING if state.call_up or config.mode not in _PERSON_STARTED else \
        _limit_timers(config, config.max_call_seconds, "max_warning", "max_call")
    return new, (*_earcon(config, "connected"), *_idle_timers(config, new), *limits)


def _on_session_ended(config: MachineConfig, state: MachineState, event: SessionEnded) -> _Step:
    if state.call not in _CALL_WANTED:
        return state, _NOTHING  # the close we asked for completed, or nothing was up
    ended = _call_over(state, "server")
    if config.mode in _PERSON_STARTED:
        return replace(ended, call=CallState.IDLE, agent_speaking=False), _earcon(config, "ended")
    # always/push_to_talk keep a session up: a server-side end (e.g. timeout) just starts another.
    return replace(ended, call=CallState.CONNECTING, agent_speaking=False), (Connect(),)


def _on_connection_lost(config: MachineConfig, state: MachineState, event: ConnectionLost) -> _Step:
    if state.call not in _CALL_WANTED:
        return state, _NOTHING
    return replace(state, call=CallState.RECONNECTING, agent_speaking=False), _NOTHING


def _on_auth_rejected(config: MachineConfig, state: MachineState, event: AuthRejected) -> _Step:
    if state.call is CallState.IDLE:
        return state, _NOTHING  # a rejection of a session the user already hung up
    error = _earcon(config, "error") if state.call is not CallState.AUTH_ERROR else _NOTHING
    new = replace(state, call=CallState.AUTH_ERROR, agent_speaking=False,
                  last_error=f"auth rejected: {event.reason}")
    return _call_over(new, "error"), error


def _on_agent_started(config: MachineConfig, state: MachineState, event: AgentStartedTalking) -> _Step:
    # While push-to-talk is held the agent's audio is discarded (local barge-in), so it is not
    # "speaking" as far as the user, the speaking LED or the half-duplex gate are concerned.
    if state.call is not CallState.IN_CALL or state.talking:
        return state, _NOTHING
    return replace(state, agent_speaking=True), _NOTHING


def _on_agent_stopped(config: MachineConfig, state: MachineState, event: AgentStoppedTalking) -> _Step:
    return replace(state, agent_speaking=False), _NOTHING


def _on_agent_interrupted(config: MachineConfig, state: MachineState, event: AgentInterrupted) -> _Step:
    # Flushing is harmless in any state and stale audio is never wanted.
    return replace(state, agent_speaking=False), (FlushPlayback(),)


def _on_hardware_lost(config: MachineConfig, state: MachineState, event: HardwareLost) -> _Step:
    # One chime when the device becomes faulty, not one per lost device; the call goes on.
    error = _earcon(config, "error") if not state.hardware_faults else _NOTHING
    detail = f"{event.device} lost: {event.reason}" if event.reason else f"{event.device} lost"
    return replace(state, hardware_faults=state.hardware_faults | {event.device}, last_error=detail), error


def _on_hardware_back(config: MachineConfig, state: MachineState, event: HardwareBack) -> _Step:
    faults = state.hardware_faults - {event.device}
    # The last device back: its error clears (unless the call is stuck on a rejected key).
    keep = bool(faults) or state.call is CallState.AUTH_ERROR
    return replace(state, hardware_faults=faults, last_error=state.last_error if keep else None), _NOTHING


def _on_timer(config: MachineConfig, state: MachineState, event: TimerExpired) -> _Step:
    if not state.call_up:
        return state, _NOTHING  # the call it was for has ended (its timers were cancelled)
    name = event.name
    if config.mode in _PERSON_STARTED:
        if name in ("idle_warning", "max_warning"):
            return state, _earcon(config, "warning")
        return _end_call(config, state, "idle" if name == "idle" else "max_duration")
    if config.mode is CallMode.PUSH_TO_TALK and name == "idle" and not state.talking:
        # Quietly: nobody is using it, and the next press opens a session again.
        return _end_call(config, state, "idle", chime=False)
    return state, _NOTHING


def _on_activity(config: MachineConfig, state: MachineState, event: Activity) -> _Step:
    if not state.call_up or state.call is not CallState.IN_CALL:
        return state, _NOTHING
    return state, _idle_timers(config, state)


def _on_wake_word(config: MachineConfig, state: MachineState, event: WakeWordDetected) -> _Step:
    """The wake word was heard: the "wake" chime and a call, whose first words (from the end of
    the wake word on) are held until the session exists. A detection the machine was not
    listening for (muted, in a call, no mic, another mode: it raced the change) does nothing."""
    if not wake_listening(config, state):
        return state, _NOTHING
    new, actions = _start_call(config, state)
    return new, (*actions, *_earcon(config, "wake"))


def _on_reload(config: MachineConfig, state: MachineState, event: Reload) -> _Step:
    if state.call is CallState.AUTH_ERROR:
        return _start_call(config, state)
    return state, _NOTHING


_HANDLERS: Final[dict[type, _Handler]] = {
    ButtonPressed: _on_pressed,
    ButtonReleased: _on_released,
    ButtonHeld: _on_held,
    Command: _on_command,
    SessionConnecting: _on_session_connecting,
    SessionStarted: _on_session_started,
    SessionEnded: _on_session_ended,
    ConnectionLost: _on_connection_lost,
    AuthRejected: _on_auth_rejected,
    AgentStartedTalking: _on_agent_started,
    AgentStoppedTalking: _on_agent_stopped,
    AgentInterrupted: _on_agent_interrupted,
    HardwareLost: _on_hardware_lost,
    HardwareBack: _on_hardware_back,
    TimerExpired: _on_timer,
    Activity: _on_activity,
    WakeWordDetected: _on_wake_word,
    Reload: _on_reload,
}


def _shutdown(config: MachineConfig, state: MachineState) -> Transition:
    """End the call politely, turn every output off, then let the main loop exit."""
    disconnect = (Disconnect(),) if state.call in _CALL_WANTED else _NOTHING
    # muted and talking are kept: mute is persisted separately and the state is frozen from here.
    stopped = replace(state, shutting_down=True, call=CallState.IDLE, agent_speaking=False)
    new = _call_over(stopped, "shutdown")
    sending = mic_gate_open(config, state) or mic_hold(config, state)
    first = (SetMicGate(False),) if sending else _NOTHING
    ended: tuple[Action, ...] = (CallEnded("shutdown"),) if state.call_up else _NOTHING
    return Transition(new, (*first, *disconnect, *ended, ShowLeds(LedState()), SetMicGate(False),
                            StopService()))


# -- public API ------------------------------------------------------------------------------------
def boot(config: MachineConfig, muted: bool) -> Transition:
    """The initial state at service start; `muted` is the persisted mute setting.

    All outputs are set to known values first. `always` and `push_to_talk` keep a session up,
    so they connect at once; `button` waits for a press, `wake_word` for a press or the wake word.
    """
    connect = config.mode not in _PERSON_STARTED
    state = MachineState(call=CallState.CONNECTING if connect else CallState.IDLE, muted=muted)
    actions: tuple[Action, ...] = (
        ShowLeds(leds_for(config, state)), SetMicGate(False), SetDownlinkGate(True),
    )
    return Transition(state, (*actions, Connect()) if connect else actions)


def step(config: MachineConfig, state: MachineState, event: Event) -> Transition:
    """Handle one event. Pure and total: every (state, event) pair gives a Transition."""
    if state.shutting_down:
        return _finish(config, state, state, _NOTHING)  # frozen; outputs stay off (no hold either)
    if isinstance(event, Shutdown):
        return _shutdown(config, state)
    handler = _HANDLERS.get(type(event))
    if handler is None:
        return _finish(config, state, state, _NOTHING)  # an event type this machine predates
    new, body = handler(config, state, event)
    return _finish(config, state, new, body)


def describe_command(config: MachineConfig, state: MachineState, name: str) -> str | None:
    """What a `ctl` command would not do in `state`: a note for the reply, or None when it acts.

    Pure, and derived from `step` itself (a command that changes neither the state nor starts
    anything does nothing), so the note can never disagree with what the machine then does. The
    control thread calls it with the state the main thread last published.
    """
    if name not in COMMAND_NAMES or state.shutting_down:
        return "the service is stopping" if state.shutting_down else None
    if name == "call" and state.call in _CALL_STARTABLE and NO_CALL_WITHOUT in state.hardware_faults:
        # Refused by _start_call (only the error chime plays).
        return f"no call: the microphone is not working ({state.last_error or 'capture lost'})"
    transition = step(config, state, Command(name))
    if transition.state != state or any(not isinstance(a, (ShowLeds, SetMicGate)) for a in transition.actions):
        return None
    where = state.call.value.replace("_", " ")
    if name in ("talk_start", "talk_stop") and config.mode is not CallMode.PUSH_TO_TALK:
        return f"nothing to do: {name.replace('_', '-')} works only in push_to_talk mode (call_mode is {config.mode.value})"
    notes = {
        "call": f"nothing to do: a call is already {where}",
        "hangup": f"nothing to do: there is no call to hang up ({where})",
        "mute": "nothing to do: already muted",
        "unmute": "nothing to do: already unmuted",
        "talk_start": "nothing to do: already talking",
        "talk_stop": "nothing to do: not talking",
    }
    return notes.get(name, f"nothing to do ({where})")

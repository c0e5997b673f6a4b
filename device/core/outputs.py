"""What a machine state shows and lets through: the LEDs, the mic gate, the first-words hold and
the wake word listener. Pure functions of `(config, state)`, so no output can stick; the state
machine (`device.core.state_machine`) emits them at the end of every transition, and the
supervisor's wake word wiring reads `wake_listening` after each one.
"""
from __future__ import annotations

from typing import Final

from device.core.events import CallMode, CallState, MachineConfig, MachineState
from hw.controls import Indicator, LedState, StatusPattern

__all__ = ["CALL_STARTABLE", "CALL_WANTED", "NO_CALL_WITHOUT", "leds_for", "mic_gate_open", "mic_hold",
           "wake_listening"]

# A call is "up or coming": the session client is connected or trying to be.
CALL_WANTED: Final = frozenset({CallState.CONNECTING, CallState.IN_CALL, CallState.RECONNECTING})
# No session is wanted: a short press (or the `call` command, or the wake word) starts one.
CALL_STARTABLE: Final = frozenset({CallState.IDLE, CallState.AUTH_ERROR})
# A device without which no call is started (HardwareLost device names).
NO_CALL_WITHOUT: Final = "capture"


def mic_gate_open(config: MachineConfig, state: MachineState) -> bool:
    """Whether captured audio may leave the device. Mute and shutdown close it unconditionally."""
    return (
        state.call is CallState.IN_CALL
        and not state.muted
        and not state.shutting_down
        and (config.mode is not CallMode.PUSH_TO_TALK or state.talking)
        and not (config.half_duplex and state.agent_speaking)
    )


def mic_hold(config: MachineConfig, state: MachineState) -> bool:
    """Whether the mic is held for a call the person started and that is still connecting (the
    first words, spoken right after the press or the wake word, are sent once the session
    exists). `button` and `wake_word` modes, and `push_to_talk` while the talk button is held:
    `always` connects by itself, not because someone is about to speak, and a reconnect mid-call
    holds nothing (the mic was closed by the outage, not opened by a person). Mute and shutdown
    forbid it."""
    if state.call is not CallState.CONNECTING or state.muted or state.shutting_down:
        return False
    if config.mode is CallMode.PUSH_TO_TALK:
        return state.talking
    return config.mode in (CallMode.BUTTON, CallMode.WAKE_WORD)


def wake_listening(config: MachineConfig, state: MachineState) -> bool:
    """Whether the wake word detector gets the processed mic: `wake_word` mode with no call up or
    coming (in a call, and so while the agent talks, it is off altogether), not muted (mute
    stops detection: the detector gets nothing), a working microphone, not stopping."""
    return (config.mode is CallMode.WAKE_WORD and state.call in CALL_STARTABLE and not state.muted
            and not state.shutting_down and NO_CALL_WITHOUT not in state.hardware_faults)


def _status(config: MachineConfig, state: MachineState) -> StatusPattern:
    if state.call is CallState.AUTH_ERROR:
        return StatusPattern.AUTH_ERROR
    if state.hardware_faults:
        return StatusPattern.FAST_BLINK
    if state.call in (CallState.CONNECTING, CallState.RECONNECTING):
        return StatusPattern.BLINK
    if state.call is CallState.IN_CALL:
        return StatusPattern.ON
    return StatusPattern.WAKE_LISTENING if wake_listening(config, state) else StatusPattern.OFF


def _indicator(config: MachineConfig, state: MachineState, speaking: bool) -> Indicator:
    # Priority from DESIGN.md: muted > error > offline/connecting > agent speaking > listening >
    # listening for the wake word > idle.
    if state.muted:
        return Indicator.MUTED
    if state.call is CallState.AUTH_ERROR or state.hardware_faults:
        return Indicator.ERROR
    if state.call in (CallState.CONNECTING, CallState.RECONNECTING):
        return Indicator.CONNECTING
    if speaking:
        return Indicator.AGENT_SPEAKING
    if state.call is CallState.IN_CALL:
        return Indicator.LISTENING
    return Indicator.WAKE_LISTENING if wake_listening(config, state) else Indicator.IDLE


def leds_for(config: MachineConfig, state: MachineState) -> LedState:
    """What the LEDs show in `state`: a pure function of the state, so they can never stick."""
    if state.shutting_down:
        return LedState()
    speaking = state.agent_speaking and state.call is CallState.IN_CALL
    return LedState(
        status=_status(config, state), mute=state.muted, speaking=speaking,
        indicator=_indicator(config, state, speaking),
    )

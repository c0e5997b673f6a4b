"""device.service.wake_word.WakeWordService: what it tells systemd and how it ends."""
from __future__ import annotations

from device.core.events import CallMode, CallState, MachineConfig, MachineState
from device.service.event_hub import EventHub
from device.service.wake_word import NoWakeWord, WakeWordService
from hw.clock import ManualClock
from tests.test_wake_tap import ScriptedDetector


def service(detector: ScriptedDetector) -> WakeWordService:
    return WakeWordService(MachineConfig(mode=CallMode.WAKE_WORD), detector, lambda event: None, EventHub(),
                           ManualClock(), {"model": "okay_nabu", "cutoff": None, "refractory_s": 2.0})


def test_listening_for_names_the_model_only_while_listening() -> None:
    wake = service(ScriptedDetector())
    assert wake.listening_for is None
    wake.after(MachineState(call=CallState.IDLE))
    assert wake.listening_for == "okay_nabu"
    in_call = MachineState(call=CallState.IN_CALL)
    wake.before(in_call)
    wake.after(in_call)
    assert wake.listening_for is None
    muted = MachineState(call=CallState.IDLE, muted=True)
    wake.after(muted)
    assert wake.listening_for is None


def test_close_releases_the_detector() -> None:
    detector = ScriptedDetector()
    service(detector).close()
    assert detector.closed and not detector.frames


def test_other_modes_listen_for_nothing() -> None:
    NoWakeWord().close()
    assert NoWakeWord().listening_for is None

"""The one-line STATUS= for `systemctl status` (device.service.report.status_text)."""
from __future__ import annotations

from device.core.events import CallState, MachineState
from device.service.report import status_text


def test_idle_listening_for_the_wake_word_says_so() -> None:
    assert status_text(MachineState(call=CallState.IDLE), "okay_nabu") == "idle, listening for okay_nabu"


def test_not_listening_says_nothing_of_a_wake_word() -> None:
    assert status_text(MachineState(call=CallState.IDLE)) == "idle"


def test_flags_and_faults_in_order() -> None:
    state = MachineState(call=CallState.IN_CALL, muted=True, hardware_faults=frozenset({"gpio"}))
    assert status_text(state) == "in call, muted, gpio lost"

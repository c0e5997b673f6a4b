"""Buttons, LEDs, push-to-talk and mute through the real service, gpiozero MockFactory pins and the
local agent simulator."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from hw.clock import RealClock
from hw.controls import ButtonName, StatusPattern
from hw.fake_audio import FakeAudioBackend
from hw.gpio import MockGpioControls
from tests.e2e.inprocess import InProcessService, InProcessServices
from tools.polling import wait_until

pytestmark = pytest.mark.slow
CHUNK = 16000 * 20 // 1000 * 2  # one 20 ms uplink chunk at 16 kHz


def talking_mic() -> FakeAudioBackend:
    """A fake mic with a steady voiced-like tone (audio that a server would hear as speech)."""
    backend = FakeAudioBackend(clock_factory=RealClock, keep_history=True)
    t = np.arange(16000 * 60) / 16000
    backend.inject((3000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes())
    return backend


@pytest.fixture
def run_service(tmp_path: Path) -> Iterator[Callable[..., InProcessService]]:
    with InProcessServices(tmp_path, lambda: MockGpioControls(hold_seconds=0.5)) as services:
        yield services.start


def led(svc: InProcessService, part: str) -> int:
    return int(svc.controls.pin(part).state > 0)


def test_buttons_and_leds_through_a_call_and_a_reconnect(start_sim, run_service) -> None:
    sim = start_sim(drop_after=1.0, drop_count=1)
    svc = run_service(sim.url, call_mode="button")
    assert svc.wait_state(call="idle", muted=False) or svc.state == {}
    assert (led(svc, "status_led"), led(svc, "mute_led"), led(svc, "speaking_led")) == (0, 0, 0)
    svc.controls.press(ButtonName.CALL)
    svc.controls.release(ButtonName.CALL)
    assert svc.wait_state(call="in_call")
    assert wait_until(lambda: led(svc, "status_led") == 1, 10)  # solid in a call
    svc.controls.press(ButtonName.MUTE)
    svc.controls.release(ButtonName.MUTE)
    assert svc.wait_state(call="in_call", muted=True)
    assert wait_until(lambda: led(svc, "mute_led") == 1, 10)
    # The simulator drops the socket: blinking while reconnecting, mute stays on.
    assert svc.wait_state(call="reconnecting", muted=True)
    assert svc.service.leds.status == StatusPattern.BLINK and led(svc, "mute_led") == 1
    assert svc.wait_state(call="in_call", muted=True)
    assert wait_until(lambda: led(svc, "status_led") == 1, 10) and led(svc, "mute_led") == 1
    svc.controls.press(ButtonName.CALL)
    svc.controls.release(ButtonName.CALL)
    assert svc.wait_state(call="idle", muted=True)
    assert sim.wait_for(lambda: sim.session_closes == 1, 5)
    assert wait_until(lambda: led(svc, "status_led") == 0, 10) and led(svc, "mute_led") == 1
    svc.stop()
    assert (led(svc, "status_led"), led(svc, "mute_led"), led(svc, "speaking_led")) == (0, 0, 0)


def test_push_to_talk_sends_only_while_held_and_commits_on_release(start_sim, run_service) -> None:
    sim = start_sim(reply="Here is a fairly long answer so that there is time to talk over it. " * 2)
    svc = run_service(sim.url, backend=talking_mic(), call_mode="push_to_talk")
    assert svc.wait_state(call="in_call")
    p = svc.service.pipeline
    assert wait_until(lambda: p.counters()["frames_gated"] > 50, 10)
    assert sim.audio_bytes_received == 0  # connected, but nothing leaves before the press
    svc.controls.press(ButtonName.CALL)
    assert svc.wait_state(talking=True)
    assert sim.wait_for(lambda: sim.audio_bytes_received > 25 * CHUNK, 5)
    svc.controls.release(ButtonName.CALL)
    commit = sim.wait_for_event("commit", 5)
    assert commit is not None
    assert svc.wait_state(agent_speaking=True, timeout=15)
    assert sim.audio_bytes_received == commit["audio_bytes"]  # not one byte after the commit
    # A press while the agent talks silences it at once (local barge-in) ...
    played_before = p.counters()["agent_periods_played"]
    p.flushed_event.clear()
    svc.controls.press(ButtonName.CALL)
    assert p.flushed_event.wait(2)
    flushed_at = p.counters()["agent_periods_played"]
    assert flushed_at >= played_before
    frames = p.counters()["frames_captured"]
    assert wait_until(lambda: p.counters()["frames_captured"] > frames + 50, 10)  # hold for 0.5 s more
    assert p.counters()["agent_periods_played"] <= flushed_at + 1  # ... and stays silent while held
    svc.controls.release(ButtonName.CALL)
    assert sim.wait_for_event("commit", 5, count=2)
    svc.stop()


def test_mute_holds_across_reconnect_and_restart(start_sim, run_service, tmp_path: Path) -> None:
    sim = start_sim(drop_after=2.0, drop_count=1)
    state_dir = tmp_path / "state"
    svc = run_service(sim.url, backend=talking_mic(), state_dir=state_dir, call_mode="always")
    assert svc.wait_state(call="in_call", muted=False)
    assert sim.wait_for(lambda: sim.audio_bytes_received > 10 * CHUNK, 5)
    svc.controls.press(ButtonName.MUTE)
    svc.controls.release(ButtonName.MUTE)
    assert svc.wait_state(muted=True)
    first_session = dict(sim.audio_bytes_by_session)
    assert sim.wait_for_event("created", 10, count=2)  # the drop, then a new session
    assert svc.wait_state(call="in_call", muted=True)
    frames = svc.service.pipeline.counters()["frames_captured"]
    assert wait_until(lambda: svc.service.pipeline.counters()["frames_captured"] > frames + 100, 10)
    second = [k for k in sim.audio_bytes_by_session if k not in first_session]
    assert all(sim.audio_bytes_by_session[k] == 0 for k in second)
    assert svc.controls.pin("mute_led").state > 0
    svc.stop()
    # A restart: the device comes back muted, and nothing leaves until a person unmutes.
    again = run_service(sim.url, backend=talking_mic(), state_dir=state_dir, call_mode="always")
    assert again.wait_state(call="in_call", muted=True)
    assert wait_until(lambda: again.controls.pin("mute_led").state > 0, 10)
    bytes_before = sim.audio_bytes_received
    frames = again.service.pipeline.counters()["frames_captured"]
    assert wait_until(lambda: again.service.pipeline.counters()["frames_captured"] > frames + 100, 10)
    assert sim.audio_bytes_received == bytes_before
    again.controls.press(ButtonName.MUTE)
    again.controls.release(ButtonName.MUTE)
    assert again.wait_state(muted=False)
    assert sim.wait_for(lambda: sim.audio_bytes_received > bytes_before + 10 * CHUNK, 5)
    again.stop()

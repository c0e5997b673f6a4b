"""Hardware faults, in-process (the fakes must be reachable): a device that vanishes and comes
back, and a speaker starved of CPU. The call must go on, the LEDs must say what happened, and
audio must resume by itself."""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from device.sim.server import Simulator
from hw.clock import RealClock
from hw.controls import NoControls, StatusPattern
from hw.fake_audio import FakeAudioBackend
from tests.e2e.inprocess import InProcessService, InProcessServices
from tests.faults import pick
from tools.polling import wait_until

pytestmark = pytest.mark.slow

CHUNK = 16000 * 20 // 1000 * 2  # one 20 ms uplink chunk at 16 kHz
SimFactory = Callable[..., Simulator]
RecordFault = Callable[..., None]


def talking_backend() -> FakeAudioBackend:
    """Fake audio whose mic carries a steady tone, so the uplink is never silent (easy to see)."""
    backend = FakeAudioBackend(clock_factory=RealClock, keep_history=False)
    t = np.arange(16000 * 120) / 16000
    backend.inject((3000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes())
    return backend


@pytest.fixture
def run_service(tmp_path: Path) -> Iterator[Callable[..., InProcessService]]:
    with InProcessServices(tmp_path, NoControls) as services:
        yield services.start


def faults(svc: InProcessService) -> list[str]:
    faults_now: list[str] = svc.service.status().get("hardware_faults", [])
    return faults_now


@pytest.mark.parametrize("device", ["capture", "playback"])
def test_device_vanishes_and_comes_back(device: str, start_sim: SimFactory, run_service: Callable[..., InProcessService],
                                        record_fault: RecordFault) -> None:
    sim = start_sim()
    backend = talking_backend()
    svc = run_service(sim.url, backend, call_mode="always")
    assert svc.wait_state(call="in_call")
    p = svc.service.pipeline
    assert sim.wait_for(lambda: sim.audio_bytes_received > 10 * CHUNK, 5)
    plug = backend.capture_plug if device == "capture" else backend.playback_plug
    unplugged = time.time()
    plug.unplug()
    assert wait_until(lambda: faults(svc) == [device], 3), svc.service.status()
    status = svc.service.status()
    assert status["call_state"] == "in_call"  # the call goes on
    assert status["leds"]["status"] == "fast_blink" and svc.service.leds.status == StatusPattern.FAST_BLINK
    assert device in (status["last_error"] or "")
    if device == "capture":
        # Nothing comes from a missing mic: the uplink stops (what was queued drains first).
        assert wait_until(lambda: len(svc.service.uplink) == 0, 2)
        stopped_at = sim.audio_bytes_received
        assert not sim.wait_for(lambda: sim.audio_bytes_received > stopped_at + CHUNK, 0.3)
    else:
        played = p.counters()["periods_played"]
        assert not wait_until(lambda: p.counters()["periods_played"] > played + 1, 0.3)
    # Keep it away long enough for the reopen backoff to grow in the full form (0.5 s doubling).
    assert not wait_until(lambda: not svc.service.pipeline.alive, pick(0.2, 3.0))
    replugged = time.time()
    plug.replug()
    # Recovered at the first audio through again; then it must keep flowing.
    if device == "capture":
        before = sim.audio_bytes_received
        assert sim.wait_for(lambda: sim.audio_bytes_received > before, 8)
        recovery = time.time() - replugged
        assert sim.wait_for(lambda: sim.audio_bytes_received > before + 10 * CHUNK, 3)
    else:
        before = p.counters()["periods_played"]
        assert wait_until(lambda: p.counters()["periods_played"] > before, 8, interval=0.005)
        recovery = time.time() - replugged
        assert wait_until(lambda: p.counters()["periods_played"] > before + 10, 3)
    assert wait_until(lambda: faults(svc) == [], 2), svc.service.status()
    status = svc.service.status()
    assert status["call_state"] == "in_call" and status["leds"]["status"] == "on"
    assert svc.service.leds.status == StatusPattern.ON
    assert p.alive and svc.service.session.alive
    reopens = p.counters()["capture_reopens"] if device == "capture" else p.counters()["playback_reopens"]
    assert reopens == 2  # the first open and one reopen
    svc.stop()
    record_fault(f"{device}_lost", recovery, outage_s=round(replugged - unplugged, 1))


def hog_gil(seconds: float) -> int:
    """Hold the GIL in long C calls (a list sort never releases it) for about `seconds`.

    Each call must outlast the speaker's buffer (4 periods of 10 ms) to starve the render clock,
    as a CPU-bound Python thread does on a slow Pi. Returns the number of calls made.
    """
    rng = random.Random(7)
    data = [rng.random() for _ in range(200_000)]
    start = time.monotonic()
    sorted(data)
    while time.monotonic() - start < 0.1 and len(data) < 20_000_000:  # one call >= 100 ms
        data = data * 2
        start = time.monotonic()
        sorted(data)
    calls = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sorted(data)
        calls += 1
    return calls


def test_playback_underruns_under_cpu_starvation(start_sim: SimFactory, run_service: Callable[..., InProcessService],
                                                 record_fault: RecordFault) -> None:
    sim = start_sim(greeting="This greeting keeps the speaker busy while the processor is starved. " * 3)
    svc = run_service(sim.url, FakeAudioBackend(clock_factory=RealClock, keep_history=False),
                      call_mode="always")
    assert svc.wait_state(call="in_call")
    p = svc.service.pipeline
    assert wait_until(lambda: p.counters()["agent_periods_played"] > 20, 10)  # the agent is talking
    device = p.playback.device
    assert device is not None
    before = device.underruns
    load = threading.Thread(target=hog_gil, args=(pick(1.0, 3.0),), name="cpu-hog")
    load.start()
    load.join(30)
    assert not load.is_alive()
    ended = time.time()
    played = p.counters()["periods_played"]
    assert wait_until(lambda: p.counters()["periods_played"] > played, 5, interval=0.005)
    recovery = time.time() - ended
    assert wait_until(lambda: p.counters()["periods_played"] > played + 50, 5)  # and 0.5 s of audio after it
    underruns = device.underruns - before
    assert underruns > 0, "a starved speaker must count its underruns"
    assert p.playback.device is device  # no reopen: an underrun is not a hardware fault
    status = svc.service.status()
    assert status["call_state"] == "in_call" and status["hardware_faults"] == []
    assert svc.service.counters()["playback_underruns"] >= underruns
    assert p.alive
    svc.stop()
    record_fault("underrun", recovery, underruns=underruns, load_s=pick(1.0, 3.0))

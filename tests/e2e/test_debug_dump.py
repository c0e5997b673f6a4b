"""Debug recordings on demand through the real service: `ctl dump-audio`, SIGUSR1 and a lost device.

The capture DSP is a passthrough here (AEC off, no NS/AGC), so the processed stream is exactly the
mic, and the fake mic plays a known ramp: every dumped file is compared sample for sample.
"""
from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device.cli import main as cli_main
from device.core.events import HardwareBack, HardwareLost
from device.diagnostics.dumper import OUTAGE_DUMP_INTERVAL
from device.service.control import send_command
from device.service.settings import load_settings
from device.service.supervisor import ApplianceService
from hw.clock import RealClock, UnpacedClock
from hw.fake_audio import FakeAudioBackend
from hw.gpio import MockGpioControls
from hw.wavio import write_wav_mono16
from tests.e2e.inprocess import InProcessService, InProcessServices
from tools.polling import wait_until
from tools.service_process import TEST_KEY
from tools.signals import ramp, read_wav

RATE = 16000
PASSTHROUGH: dict[str, Any] = {"aec": "off", "noise_suppression": 0, "auto_gain_dbfs": 0}
FILES = ["mic-raw.wav", "mic-processed.wav", "reference.wav"]


def write_wav(path: Path, pcm: np.ndarray) -> Path:
    write_wav_mono16(path, pcm.tobytes(), RATE)
    return path


def assert_mic_then_silence(data: np.ndarray, mic: np.ndarray) -> None:
    """The fake mic plays `mic` once from its first sample, then silence: the dump holds a prefix."""
    expected = np.concatenate([mic, np.zeros(max(0, len(data) - len(mic)), "<i2")])[:len(data)]
    np.testing.assert_array_equal(data, expected)


@pytest.fixture
def run_service(tmp_path: Path) -> Iterator[Callable[..., InProcessService]]:
    with InProcessServices(tmp_path, lambda: MockGpioControls(hold_seconds=0.5)) as services:
        def start(url: str, backend: FakeAudioBackend, **overrides: Any) -> InProcessService:
            svc = services.start(url, backend, **overrides)
            assert wait_until(lambda: svc.service.control.alive, 10), "the control socket never came up"
            return svc

        yield start


def recording_service(start_sim, run_service, tmp_path: Path,  # type: ignore[no-untyped-def]
                      mic: np.ndarray) -> tuple[Any, FakeAudioBackend]:
    """The in-process service against a new simulator, its fake mic playing `mic`, recording on."""
    sim = start_sim()
    backend = FakeAudioBackend(capture_file=write_wav(tmp_path / "mic.wav", mic), clock_factory=RealClock)
    return run_service(sim.url, backend, debug_record_dir=tmp_path / "rec", **PASSTHROUGH), backend


@pytest.mark.slow
def test_ctl_dump_audio_writes_exactly_what_was_fed(start_sim, run_service, tmp_path: Path) -> None:
    mic = ramp(1, 8000)   # 0.5 s
    svc, _ = recording_service(start_sim, run_service, tmp_path, mic)
    pipeline = svc.service.pipeline
    assert wait_until(lambda: pipeline.counters()["frames_captured"] * 160 >= len(mic) + 1600, 10)
    tone = ramp(20000, 4000)   # 25 periods of 10 ms through the speaker, so into the reference
    before = pipeline.counters()["periods_played"]
    assert pipeline.play_local(tone.tobytes(), RATE)
    assert wait_until(lambda: pipeline.counters()["periods_played"] >= before + 27, 10)

    reply = send_command(svc.service.settings.control_socket, "dump_audio")

    assert reply["ok"] and reply["cmd"] == "dump_audio" and reply["directory"] == str(tmp_path / "rec")
    assert [f["path"] for f in reply["files"]] == [str(tmp_path / "rec" / name) for name in FILES]
    data = {}
    for f in reply["files"]:
        pcm, rate = read_wav(f["path"])
        assert rate == f["sample_rate"] == RATE and f["seconds"] == round(len(pcm) / rate, 3)
        data[f["stream"]] = pcm
    assert len(data["raw"]) >= len(mic) + 1600
    assert_mic_then_silence(data["raw"], mic)
    assert_mic_then_silence(data["processed"], mic)   # the passthrough DSP
    ref = data["reference"]
    start = int(np.flatnonzero(ref)[0])
    np.testing.assert_array_equal(ref[start:start + len(tone)], tone)
    assert not ref[:start].any() and not ref[start + len(tone):].any()   # silence around it
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == sorted(FILES)   # no temporary files


@pytest.mark.slow
def test_a_lost_device_is_recorded_once_per_outage(start_sim, run_service, tmp_path: Path) -> None:
    mic = ramp(1, 24000)   # 1.5 s
    svc, backend = recording_service(start_sim, run_service, tmp_path, mic)
    service, pipeline = svc.service, svc.service.pipeline
    dumper = service.dumper
    assert dumper is not None
    dumper.outage_interval = 0.0   # the rate limit has its own test below
    # Over MIN_OUTAGE_SECONDS of mic recorded.
    assert wait_until(lambda: pipeline.counters()["frames_captured"] * 160 >= 1.2 * RATE, 10)

    backend.capture_plug.unplug()
    assert wait_until(lambda: dumper.dumps == 1, 10)
    lost = tmp_path / "rec" / "hardware-lost"
    raw, _ = read_wav(lost / "mic-raw.wav")
    assert len(raw) >= 1.2 * RATE
    assert_mic_then_silence(raw, mic)   # the audio leading up to the unplug
    assert_mic_then_silence(read_wav(lost / "mic-processed.wav")[0], mic)

    backend.playback_plug.unplug()   # the same outage: no second dump
    assert wait_until(lambda: service.state.hardware_faults == {"capture", "playback"}, 10)
    backend.capture_plug.replug()
    backend.playback_plug.replug()
    assert wait_until(lambda: not service.state.hardware_faults, 10)
    assert dumper.requested == 1

    backend.playback_plug.unplug()   # a new outage
    assert wait_until(lambda: dumper.dumps == 2, 10)
    assert dumper.requested == 2 and dumper.failures == 0
    assert not (tmp_path / "rec" / "mic-raw.wav").exists()   # only the outage folder so far


def test_outage_recordings_follow_the_fault_set(tmp_path: Path) -> None:
    """The main thread's rule, without threads: the first lost device of an outage asks for one
    dump, unless less than a second of audio was recorded (a device absent at boot)."""
    settings = load_settings(api_key=TEST_KEY, agent_id="sim-agent", url="ws://127.0.0.1:9/x",
                             audio_backend="fake", gpio_backend="none", earcons=False,
                             control_socket=tmp_path / "c.sock", state_dir=tmp_path / "state",
                             debug_record_dir=tmp_path / "rec")
    clock = UnpacedClock()
    svc = ApplianceService(settings, backend=FakeAudioBackend(), install_signals=False, clock=clock)
    assert svc.dumper is not None and svc.recorder is not None
    try:
        svc.handle(HardwareLost("capture", "absent at boot"))
        assert svc.dumper.requested == 0
        svc.handle(HardwareBack("capture"))
        svc.recorder.raw(ramp(1, RATE).tobytes(), RATE)   # one second of mic
        requested = []
        for event in [HardwareLost("capture", "unplugged"), HardwareLost("playback"), HardwareBack("capture"),
                      HardwareLost("capture"), HardwareBack("playback"), HardwareBack("capture"),
                      HardwareLost("playback"), HardwareLost("playback")]:
            svc.handle(event)
            requested.append(svc.dumper.requested)
            clock.advance(OUTAGE_DUMP_INTERVAL / 4)
        assert requested == [1, 1, 1, 1, 1, 1, 2, 2]
        # A device that keeps dropping out: at most one recording per OUTAGE_DUMP_INTERVAL.
        svc.handle(HardwareBack("playback"))
        svc.handle(HardwareLost("playback"))   # half an interval after the last recording
        assert svc.dumper.requested == 2 and svc.dumper.skipped_outages == 1
        clock.advance(OUTAGE_DUMP_INTERVAL * 3 / 4)   # now 1.25 intervals after it
        svc.handle(HardwareBack("playback"))
        svc.handle(HardwareLost("playback"))
        assert svc.dumper.requested == 3 and svc.dumper.skipped_outages == 1
    finally:
        svc.shutdown()
    # The dumper thread never ran, so its requests wrote nothing; the exit dump wrote the files.
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == sorted(FILES)


@pytest.mark.slow
def test_sigusr1_and_ctl_dump_audio_in_a_real_service_process(
        start_sim, start_service, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sim = start_sim()
    mic = ramp(1, 8000)
    rec = tmp_path / "rec"
    service = start_service(sim.url, debug_record_dir=rec, fake_capture_file=write_wav(tmp_path / "mic.wav", mic),
                            **PASSTHROUGH)

    assert cli_main(["ctl", "dump-audio", "--socket", str(service.socket)]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["ok"] and [f["path"] for f in reply["files"]] == [str(rec / name) for name in FILES]
    for f in reply["files"]:
        pcm, rate = read_wav(f["path"])
        assert f["seconds"] == round(len(pcm) / rate, 3)
        if f["stream"] != "reference":
            assert_mic_then_silence(pcm, mic)

    service.signal(signal.SIGUSR1)
    line = service.wait_for_log(r"debug recording \(SIGUSR1\) written to ", 10)
    assert line is not None and str(rec) in line, service.output()
    for name in FILES[:2]:
        assert_mic_then_silence(read_wav(rec / name)[0], mic)
    assert service.status()["call_state"] == "idle"   # still running
    assert service.stop() == 0
    assert service.wait_for_log(r"debug recording \(exit\) written to ", 5), service.output()
    assert service.count_log(r"debug recording \(SIGUSR1\)") == 1
    assert sorted(p.name for p in rec.iterdir()) == sorted(FILES)


@pytest.mark.slow
def test_with_recording_off_dump_audio_fails_and_sigusr1_only_warns(
        start_sim, start_service, capsys: pytest.CaptureFixture[str]) -> None:
    sim = start_sim()
    service = start_service(sim.url)

    assert cli_main(["ctl", "dump-audio", "--socket", str(service.socket)]) == 1
    reply = json.loads(capsys.readouterr().out)
    assert reply["ok"] is False and "ATOMS_DEBUG_RECORD_DIR" in reply["error"]

    service.signal(signal.SIGUSR1)   # must not kill the service (SIGUSR1's default action)
    assert service.wait_for_log(r"SIGUSR1: debug recording is off", 5), service.output()
    assert service.status()["call_state"] == "idle"
    assert service.stop() == 0

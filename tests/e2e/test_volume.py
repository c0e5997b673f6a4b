"""Volume with the real service: `ctl volume` and the keys of `run --keys` on the service process
(the level survives a restart; the confirmation tone is played at the new level), the volume pins
and the rotary encoder on gpiozero mock pins with the service in this process."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from device.audio.earcons import PEAK_DBFS
from device.audio.volume import level_db
from hw.clock import RealClock
from hw.controls import ButtonName
from hw.fake_audio import FakeAudioBackend
from hw.gpio import MockGpioControls
from tests.e2e.inprocess import InProcessService
from tools.polling import wait_until

pytestmark = pytest.mark.slow


def _bursts(path: Path) -> list[int]:
    """Peak of each sound in the fake speaker's recording (sounds separated by >= 50 ms of silence)."""
    with wave.open(str(path), "rb") as w:
        pcm = np.abs(np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int32))
    loud = np.flatnonzero(pcm > 20)
    if not len(loud):
        return []
    splits = np.flatnonzero(np.diff(loud) > 800) + 1
    return [int(pcm[seg].max()) for seg in np.split(loud, splits)]


def _tone_peak(level: int) -> float:
    return 32767 * 10 ** ((PEAK_DBFS + level_db(level)) / 20)


def _played_after(service, periods: int) -> bool:  # type: ignore[no-untyped-def]
    """Wait (bounded) until the speaker has played `periods` more 10 ms periods."""
    start = service.status()["counters"]["periods_played"]
    return wait_until(lambda: service.status()["counters"]["periods_played"] >= start + periods,
                      interval=0.02)


def test_ctl_volume_tone_at_the_new_level_and_kept_across_a_restart(start_sim, start_service) -> None:
    sim = start_sim()
    service = start_service(sim.url, earcons="true")
    assert (service.status()["volume"], service.status()["volume_control"]) == (100, "software")
    assert service.ctl("volume") == {"ok": True, "cmd": "volume", "volume": 100}
    assert service.ctl("volume", level="50") == {"ok": True, "cmd": "volume", "volume": 50}
    assert service.wait_for_log(r"volume 50 %", 5)
    assert _played_after(service, 20)
    assert service.ctl("volume", level="+10")["volume"] == 60
    assert service.wait_for_log(r"volume 60 %", 5)
    assert _played_after(service, 20)
    for bad in ("101", "loud", "+"):
        reply = service.ctl("volume", level=bad)
        assert reply["ok"] is False and reply["error"].startswith("volume"), reply
    assert service.ctl("volume", level="-100")["volume"] == 0
    assert service.wait_for_log(r"volume 0 %", 5)
    assert service.stop() == 0
    peaks = _bursts(service.playback_file)
    assert len(peaks) == 2, peaks  # one tone per change, none for silence
    for peak, level in zip(peaks, (50, 60)):
        assert abs(peak - _tone_peak(level)) <= 0.03 * _tone_peak(level), (peaks, level)

    again = start_service(sim.url)
    assert again.status()["volume"] == 0  # the saved level wins over ATOMS_VOLUME's default
    assert again.stop() == 0


def test_volume_keys_in_run_keys(start_sim, start_service) -> None:
    sim = start_sim()
    service = start_service(sim.url, "--keys", volume="70", volume_step="5")
    service.keys("--+=\n")
    assert service.wait_for_log(r"volume 70 %", 5, count=1)  # 65, 60, 65, 70
    assert service.count_log(r"volume (65|60) %") == 3
    service.wait_status_where(lambda st: st["volume"] == 70)
    assert service.stop() == 0


def test_volume_pins_and_encoder(start_sim, tmp_path: Path) -> None:
    sim = start_sim()
    controls = MockGpioControls(volume_up_pin=5, volume_down_pin=6, encoder_a_pin=20, encoder_b_pin=21,
                                bounce_ms=0)
    svc = InProcessService(tmp_path, sim.url, controls, FakeAudioBackend(clock_factory=RealClock),
                           volume=50).start()
    try:
        volume = svc.service.volume
        assert wait_until(lambda: svc.service.status().get("volume") == 50, 5)
        controls.press(ButtonName.VOLUME_UP)
        controls.release(ButtonName.VOLUME_UP)
        assert wait_until(lambda: volume.level == 60, 5)
        a, b = controls.pin("encoder_a"), controls.pin("encoder_b")
        for _ in range(2):  # two detents counter-clockwise
            for step in (b.drive_low, a.drive_low, b.drive_high, a.drive_high):
                step()
        assert wait_until(lambda: volume.level == 40, 5)
        controls.press(ButtonName.VOLUME_DOWN)
        controls.release(ButtonName.VOLUME_DOWN)
        assert wait_until(lambda: volume.level == 30, 5)
        assert svc.service.pipeline.gain.gain == pytest.approx(10 ** (level_db(30) / 20))
        assert svc.service.state.call.value == "idle"  # volume never starts a call
    finally:
        svc.stop()
    assert '"volume": 30' in (tmp_path / "state" / "state.json").read_text()

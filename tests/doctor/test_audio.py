"""`doctor --audio`: the mic meter and the echo test on fake devices with a known room, run unpaced.

'Echo delay' is measured between stream positions (what was written to the speaker against what
was read from the mic), so on the fake room it is the room's bulk delay: the room takes samples
when they are written, and the test loop writes one period and reads one period in turn.
"""
from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from device.doctor.audio import AudioOptions, advise_echo, advise_mic, run_audio
from device.doctor.core import Status
from device.doctor.echo import ChirpPlan, EchoMeasurement, EchoRecording, analyse, record_echo, sweep_signal
from device.doctor.meter import LiveLine, MeterResult, format_reading, level_bar, measure_levels, run_meter
from device.service.settings import load_settings
from hw.clock import LockstepClock, UnpacedClock
from hw.fake_audio import FakeAudioBackend, FakeRoom
from hw.registry import audio_backend_from_settings

pytestmark = pytest.mark.timeout(60)

PLAN = ChirpPlan()


def fake_pair(delay_ms: float = 37.0, gain_db: float | None = -12.0,
              clock: Callable[[], object] | None = None) -> FakeAudioBackend:
    room = FakeRoom(16000, delay_ms=delay_ms, gain_db=gain_db) if gain_db is not None else None
    return FakeAudioBackend(clock_factory=clock or LockstepClock().member, room=room)  # type: ignore[arg-type]


def tone(seconds: float, peak_dbfs: float, hz: float = 440.0) -> bytes:
    t = np.arange(int(seconds * 16000)) / 16000
    x = np.sin(2 * np.pi * hz * t) * 32768 * 10 ** (peak_dbfs / 20)
    return np.round(x).astype("<i2").tobytes()


# -- the echo measurement -------------------------------------------------------------------------
@pytest.mark.parametrize(("play_rate", "clock"), [(16000, None), (24000, UnpacedClock), (48000, None)])
def test_the_fake_room_is_measured_within_2_ms_and_1_db(play_rate: int, clock: Callable[[], object] | None) -> None:
    backend = fake_pair(37.0, -12.0, clock)
    m = analyse(record_echo(backend, play_rate, PLAN), PLAN)
    assert m.found
    assert m.delay_ms is not None and abs(m.delay_ms - 37.0) <= 2.0, m
    assert m.level_db is not None and abs(m.level_db + 12.0) <= 1.0, m
    assert m.drift_ppm is not None and abs(m.drift_ppm) < 5, m
    assert m.erle_db is not None and m.erle_db >= 25.0, m     # measured ~54 dB
    assert m.clipped == 0


def test_a_longer_louder_room_is_measured_too() -> None:
    m = analyse(record_echo(fake_pair(180.0, 0.0), 16000, PLAN), PLAN)
    assert m.delay_ms is not None and abs(m.delay_ms - 180.0) <= 2.0
    assert m.level_db is not None and abs(m.level_db) <= 1.0


@pytest.mark.parametrize(("gain_db", "noise_dbfs"), [(-30.0, -50.0), (-40.0, -45.0)])
def test_background_noise_is_measured_and_kept_out_of_the_echo_level(gain_db: float, noise_dbfs: float) -> None:
    """Above the noise the level comes from power minus noise; under it (-40 dB gain is an echo at
    -55 dBFS RMS in -45 dBFS of noise) from the matched filter. Either way within 1 dB."""
    backend = fake_pair(80.0, gain_db)
    rng = np.random.default_rng(3)
    noise = rng.standard_normal(int(16000 * (PLAN.total_seconds + 1))) * 32768 * 10 ** (noise_dbfs / 20)
    backend.inject(pcm(noise))
    m = analyse(record_echo(backend, 16000, PLAN), PLAN)
    assert abs(m.noise_dbfs - noise_dbfs) < 1.0
    assert m.delay_ms is not None and abs(m.delay_ms - 80.0) <= 2.0
    assert m.level_db is not None and abs(m.level_db - gain_db) <= 1.0
    if gain_db == -40.0:   # nothing to cancel that the noise does not already hide
        assert m.erle_db is None
        lines = {r.name: r for r in advise_echo(m, "webrtc", False)}
        assert lines["echo reduction"].status is Status.SKIP


def test_no_echo_is_not_found() -> None:
    m = analyse(record_echo(fake_pair(gain_db=None), 16000, PLAN), PLAN)
    assert not m.found and m.delay_ms is None
    assert advise_echo(m, "webrtc", False)[0].status is Status.WARN
    assert advise_echo(m, "off", False)[0].status is Status.PASS


def drifting_recording(ppm: float, delay_s: float = 0.05, gain_db: float = -6.0) -> EchoRecording:
    """A recording whose mic clock runs `ppm` fast: mic sample c holds speaker time c/(rate*(1+ppm))."""
    played = np.concatenate([np.zeros(320), sweep_signal(16000, PLAN)])
    c = np.arange(len(played))
    source = c / (1 + ppm * 1e-6) - delay_s * 16000
    echo = np.interp(source, np.arange(len(played)), played, left=0.0, right=0.0) * 10 ** (gain_db / 20)
    return EchoRecording(pcm(played), 16000, pcm(echo), 16000, 0.02, 320, 320)


def pcm(x: np.ndarray) -> bytes:
    return np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()


@pytest.mark.parametrize("ppm", [0.0, 60.0, -120.0])
def test_clock_drift_is_measured_in_ppm(ppm: float) -> None:
    m = analyse(drifting_recording(ppm), PLAN, cancel=False)
    assert m.drift_ppm is not None and abs(m.drift_ppm - ppm) < 5.0, m
    lines = {r.name: r for r in advise_echo(m, "webrtc", False)}
    expected = Status.WARN if abs(ppm) > 20 else Status.PASS
    assert lines["clock drift"].status is expected
    if expected is Status.WARN:
        assert "one card" in lines["clock drift"].fix


# -- advice ---------------------------------------------------------------------------------------
GOOD_ECHO = EchoMeasurement(found=True, delay_ms=40.0, level_db=-12.0, echo_peak_dbfs=-24.0, noise_dbfs=-70.0,
                            drift_ppm=0.0, erle_db=50.0, erle_limited=False, detection_db=90.0, clipped=0,
                            decay_ms=200.0, direct_to_reverb_db=10.0, distortion_db=-40.0)


def measurement(**changes: Any) -> EchoMeasurement:
    return dataclasses.replace(GOOD_ECHO, **changes)


def test_advice_names_what_to_change() -> None:
    def by_name(m: EchoMeasurement, aec: str = "webrtc", half: bool = False) -> dict[str, tuple[Status, str]]:
        return {r.name: (r.status, r.fix) for r in advise_echo(m, aec, half)}

    assert all(status is Status.PASS for status, _ in by_name(measurement()).values())
    assert "ATOMS_PLAYBACK_BUFFER_PERIODS" in by_name(measurement(delay_ms=480.0))["echo"][1]
    assert "speaker volume" in by_name(measurement(clipped=12))["echo"][1]
    low = by_name(measurement(erle_db=12.0))["echo reduction"]
    assert low[0] is Status.WARN and "ATOMS_HALF_DUPLEX=true" in low[1]
    assert "half_duplex is on" in by_name(measurement(erle_db=12.0), half=True)["echo reduction"][1]
    assert by_name(measurement(erle_db=8.0, erle_limited=True))["echo reduction"][0] is Status.PASS
    assert by_name(measurement(erle_db=8.0, noise_dbfs=-30.0))["echo reduction"][0] is Status.SKIP
    loud_off = by_name(measurement(level_db=-10.0), aec="off")["echo reduction"]
    assert loud_off[0] is Status.WARN and "ATOMS_AEC=webrtc" in loud_off[1]
    assert by_name(measurement(level_db=-45.0), aec="off")["echo reduction"][0] is Status.PASS


GOOD_MIC = MeterResult(seconds=3.0, peak_dbfs=-10.0, rms_dbfs=-30.0, loudest_rms_dbfs=-20.0, floor_dbfs=-65.0,
                       clipped=0, readings=30)


def meter_result(**changes: Any) -> MeterResult:
    return dataclasses.replace(GOOD_MIC, **changes)


def test_mic_advice() -> None:
    assert advise_mic(meter_result()).status is Status.PASS
    silent = advise_mic(meter_result(peak_dbfs=-120.0, loudest_rms_dbfs=-120.0, floor_dbfs=-120.0))
    assert silent.status is Status.FAIL and "ATOMS_CAPTURE_DEVICE" in silent.fix
    assert advise_mic(meter_result(peak_dbfs=-120.0), fake=True).status is Status.WARN
    assert "lower the mic gain" in advise_mic(meter_result(clipped=3, peak_dbfs=0.0)).fix
    assert "NOISE_SUPPRESSION" in advise_mic(meter_result(floor_dbfs=-35.0)).fix
    assert "raise the mic gain" in advise_mic(meter_result(loudest_rms_dbfs=-55.0, peak_dbfs=-45.0)).fix


# -- the meter ------------------------------------------------------------------------------------
def test_levels_of_a_sine_and_a_clipped_square() -> None:
    sine = measure_levels(np.frombuffer(tone(0.1, -6.0), dtype="<i2"))
    assert sine.peak_dbfs == pytest.approx(-6.0, abs=0.05)
    assert sine.rms_dbfs == pytest.approx(-9.01, abs=0.05)
    assert not sine.clipping
    square = measure_levels(np.array([32767, -32768] * 80, dtype="<i2"))
    assert square.clipped == 160 and "CLIP" in format_reading(square)
    assert level_bar(sine, 20).count("#") == 17    # -9 dBFS of a -60..0 scale
    assert measure_levels(np.zeros(0)).rms_dbfs == -120.0


def test_the_meter_reads_the_mic_for_the_given_seconds() -> None:
    backend = FakeAudioBackend(clock_factory=UnpacedClock)
    backend.inject(bytes(16000) + tone(1.0, -6.0))        # 0.5 s silence, then 1 s of tone
    seen: list[float] = []
    with backend.capture(16000, 160) as mic:
        result = run_meter(mic, 2.0, lambda reading, fraction: seen.append(fraction))
    assert result.seconds == pytest.approx(2.0)
    assert result.readings == 20 and seen[-1] == 1.0
    assert result.peak_dbfs == pytest.approx(-6.0, abs=0.05)
    assert result.loudest_rms_dbfs == pytest.approx(-9.0, abs=0.1)
    assert result.floor_dbfs == -120.0 and result.clipped == 0


# -- the whole audio part, from settings ----------------------------------------------------------
def test_run_audio_measures_the_room_from_settings() -> None:
    settings = load_settings(audio_backend="fake", fake_echo_delay_ms=37, fake_echo_gain_db=-12,
                             fake_realtime=False)
    out = io.StringIO()
    options = AudioOptions("fake", settings.sample_rate, settings.period_ms, settings.playback_buffer_periods,
                           settings.aec, settings.half_duplex, seconds=1.0)
    results, data = run_audio(options, lambda: audio_backend_from_settings(settings),
                              LiveLine(out, tty=False))
    by_name = {r.name: r for r in results}
    assert list(by_name) == ["mic level", "echo", "reverberation", "speaker distortion", "clock drift",
                             "echo reduction", "echo handling"]
    assert by_name["mic level"].status is Status.WARN          # the fake mic is silent
    assert by_name["echo"].status is Status.PASS, by_name["echo"]
    assert abs(data["echo"]["delay_ms"] - 37) <= 2 and abs(data["echo"]["level_db"] + 12) <= 1
    assert by_name["echo reduction"].status is Status.PASS
    text = out.getvalue()
    assert "\r" not in text                                    # not a terminal: plain lines only
    assert text.count("mic [") == 1                            # one meter line per second
    assert "Echo test" in text


def test_a_missing_speaker_still_meters_the_mic() -> None:
    def backend() -> FakeAudioBackend:
        b = FakeAudioBackend(clock_factory=UnpacedClock)
        b.playback_plug.unplug()
        return b

    results, data = run_audio(AudioOptions("fake", seconds=0.5), backend, LiveLine(io.StringIO()))
    assert [r.name for r in results] == ["mic level", "echo"]
    assert results[1].status is Status.FAIL and "unplugged" in results[1].detail
    assert "meter" in data and "echo" not in data


def test_progress_is_drawn_in_place_on_a_terminal() -> None:
    out = io.StringIO()
    live = LiveLine(out, tty=True)
    live.update("a long progress line")
    live.update("short")
    live.note("done")
    text = out.getvalue()
    assert text.startswith("\ra long progress line\rshort" + " " * 15)
    assert text.endswith("done\n")
    assert math.isclose(len("a long progress line") - len("short"), 15)

"""`doctor --audio` says which room it is: the fake room with reverberation (pyroomacoustics),
speaker distortion, clock drift and noise, and what the service will do about each."""
from __future__ import annotations

import numpy as np
import pytest

from device.audio.echo_control import EchoControlSettings
from device.doctor.audio import advise_echo
from device.doctor.core import Status
from device.doctor.echo import ChirpPlan, EchoMeasurement, analyse, record_echo
from hw.clock import LockstepClock
from hw.fake_audio import FakeAudioBackend
from hw.room import FakeRoom

pytestmark = [pytest.mark.timeout(120)]
PLAN = ChirpPlan()


def _measure(rt60_s: float, distance_m: float, gain_db: float = -20.0, clip_dbfs: float | None = None,
             drift_ppm: float = 0.0, noise_dbfs: float = -62.0,
             stages: EchoControlSettings | None = None, cancel: bool = True) -> EchoMeasurement:
    from tools.room_ir import reverberant_ir

    ir, _ = reverberant_ir(rt60_s, distance_m, 16000)
    room = FakeRoom(16000, delay_ms=30.0, gain_db=gain_db, impulse_response=ir / np.max(np.abs(ir)),
                    speaker_clip_dbfs=clip_dbfs, drift_ppm=drift_ppm, noise_dbfs=noise_dbfs)
    backend = FakeAudioBackend(clock_factory=LockstepClock().member, room=room)  # type: ignore[arg-type]
    return analyse(record_echo(backend, 16000, PLAN), PLAN, cancel=cancel, stages=stages)


def _lines(m: EchoMeasurement, stages: EchoControlSettings | None = None) -> dict[str, object]:
    return {r.name: r for r in advise_echo(m, "webrtc", False, stages)}


def test_a_dry_near_room_is_full_duplex_with_nothing_to_fix() -> None:
    m = _measure(0.2, 0.3)
    assert m.decay_ms is not None and 80 <= m.decay_ms <= 400, m
    assert m.direct_to_reverb_db is not None and m.direct_to_reverb_db > 5
    assert m.distortion_db is not None and m.distortion_db < -28
    lines = _lines(m)
    for name in ("echo", "reverberation", "speaker distortion", "clock drift", "echo handling"):
        assert lines[name].status is Status.PASS, lines[name]   # type: ignore[attr-defined]
    assert "full duplex" in lines["echo handling"].detail   # type: ignore[attr-defined]


def test_a_far_reverberant_room_is_named_and_handled_by_adaptive_half_duplex() -> None:
    m = _measure(0.9, 2.0, gain_db=-8.0)
    assert m.direct_to_reverb_db is not None and m.direct_to_reverb_db < 0, m
    assert m.duplex == "half"
    off = _lines(m, EchoControlSettings(adaptive_half_duplex=False))["echo handling"]   # turned off: say what to set
    assert off.status is Status.WARN and "ATOMS_ADAPTIVE_HALF_DUPLEX=true" in off.fix  # type: ignore[attr-defined]
    lines = _lines(m)   # the default: on
    reverb, handling = lines["reverberation"], lines["echo handling"]
    assert reverb.status is Status.WARN and "move the mic" in reverb.fix   # type: ignore[attr-defined]
    assert handling.status is Status.WARN and "adaptive half-duplex" in handling.detail   # type: ignore[attr-defined]
    assert "speaker volume" in handling.fix   # type: ignore[attr-defined]


def test_a_distorting_speaker_is_named_with_the_volume_as_the_fix() -> None:
    m = _measure(0.3, 0.3, gain_db=-10.0, clip_dbfs=-30.0, cancel=False)
    assert m.distortion_db is not None and m.distortion_db > -28, m
    line = _lines(m)["speaker distortion"]
    assert line.status is Status.WARN and "volume" in line.fix   # type: ignore[attr-defined]


def test_drift_is_measured_and_its_setting_named() -> None:
    room_ppm = 150.0
    m = _measure(0.2, 0.3, drift_ppm=room_ppm, cancel=False)
    # The room's positive ppm is a fast speaker clock: the echo comes earlier, the delay shrinks.
    assert m.drift_ppm is not None and abs(m.drift_ppm + room_ppm) < 10, m
    line = _lines(m)["clock drift"]
    assert line.status is Status.WARN
    assert f"ATOMS_ECHO_DRIFT_PPM={m.drift_ppm:.0f}" in line.fix   # type: ignore[attr-defined]
    stages = EchoControlSettings(drift_ppm=round(m.drift_ppm))
    compensated = _measure(0.2, 0.3, drift_ppm=room_ppm, stages=stages, cancel=False)
    line = _lines(compensated, stages)["clock drift"]
    assert line.status is Status.PASS and "compensated" in line.detail   # type: ignore[attr-defined]
    assert "drift compensation on" in _lines(compensated, stages)["echo handling"].detail  # type: ignore[attr-defined]


def test_the_echo_left_after_noise_suppression_is_measured_and_what_the_gate_does_is_said() -> None:
    """With the service's noise suppressor in the canceller's run, the doctor reads the echo
    reduction where the uplink is and reports what the residual echo gate after NS will take off
    (device/audio/residual_gate.py): nothing in a room the canceller handles, the shortfall from
    38 dB where the residual stands out of NS's output."""
    from device.audio.residual_gate import attenuation_for
    from tools.room_ir import reverberant_ir

    def measure(rt60_s: float, distance_m: float, gain_db: float) -> EchoMeasurement:
        ir, _ = reverberant_ir(rt60_s, distance_m, 16000)
        room = FakeRoom(16000, delay_ms=30.0, gain_db=gain_db, impulse_response=ir / np.max(np.abs(ir)),
                        noise_dbfs=-62.0)
        backend = FakeAudioBackend(clock_factory=LockstepClock().member, room=room)  # type: ignore[arg-type]
        return analyse(record_echo(backend, 16000, PLAN), PLAN, noise_suppression=2)

    good = measure(0.2, 0.3, -20.0)
    assert good.erle_after_ns_db is not None and good.residual_attenuation_db == 0.0
    assert "turned down" not in _lines(good)["echo handling"].detail   # type: ignore[attr-defined]
    reverberant = measure(0.6, 0.5, -14.0)
    assert reverberant.erle_after_ns_db is not None and not reverberant.erle_after_ns_limited
    assert reverberant.residual_attenuation_db == attenuation_for(reverberant.erle_after_ns_db) > 0
    without_ns = analyse(record_echo(FakeAudioBackend(), 16000, PLAN), PLAN)
    assert without_ns.erle_after_ns_db is None and without_ns.residual_attenuation_db == 0.0


def test_echo_handling_says_how_far_the_uplink_is_turned_down_in_full_duplex() -> None:
    import dataclasses

    from device.doctor.echo import EchoMeasurement as M

    base = M(True, 30.0, -20.0, -30.0, -62.0, 0.0, 40.0, False, 30.0, 0, duplex="full")
    gated = dataclasses.replace(base, erle_after_ns_db=30.0, residual_attenuation_db=8.0)
    line = _lines(gated)["echo handling"]
    assert line.status is Status.PASS   # type: ignore[attr-defined]
    assert "full duplex" in line.detail and "turned down 8 dB" in line.detail   # type: ignore[attr-defined]
    off = _lines(gated, EchoControlSettings(adaptive_half_duplex=False))["echo handling"]
    assert "turned down" not in off.detail   # type: ignore[attr-defined]
    assert "turned down" not in _lines(base)["echo handling"].detail   # type: ignore[attr-defined]

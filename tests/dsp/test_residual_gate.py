"""The residual echo gate after NS: measured where the uplink is, only as deep as the room needs,
never over a person talking, and wired after the noise suppressor in the echo control."""
from __future__ import annotations

import numpy as np
import pytest

from device.audio.duplex import CONVERGE_FRAMES, MEDIAN_EVERY, MIN_ECHO_FRAMES, MIN_FRAMES
from device.audio.echo_control import EchoControl, EchoControlSettings
from device.audio.formats import FRAME_SAMPLES
from device.audio.residual_gate import INITIAL_FRAMES, MAX_ATTENUATION_DB, TARGET_DB, ResidualEchoGate

FULL = 32768.0
ECHO = (FULL * 10 ** (-30 / 20)) ** 2      # the echo at the mic, -30 dBFS mean square
FLOOR = (FULL * 10 ** (-75 / 20)) ** 2     # NS's output background, -75 dBFS


def _power(dbfs: float) -> float:
    return (FULL * 10 ** (dbfs / 20)) ** 2


DEEPEST = 10 ** (-MAX_ATTENUATION_DB / 20)


def _room(gate: ResidualEchoGate, reduction_db: float, frames: int = INITIAL_FRAMES + 200,
          quiet: int = 50) -> list[float]:
    """`quiet` frames of the agent silent, then `frames` of it talking with `reduction_db` of its
    echo taken off by the time it leaves NS. Returns the gains of the talking frames."""
    for _ in range(quiet):
        assert gate.gain(FLOOR, None, far_active=False, talking=False) == 1.0
    left = ECHO * 10 ** (-reduction_db / 10)
    return [gate.gain(FLOOR + left, ECHO, far_active=True, talking=False) for _ in range(frames)]


@pytest.mark.parametrize("reduction", [20.0, 25.0, 30.0, 34.0, 35.5])
def test_a_shortfall_after_ns_is_made_up_by_exactly_that_much(reduction: float) -> None:
    gate = ResidualEchoGate()
    gains = _room(gate, reduction)
    assert gate.echo_reduction_db is not None and abs(gate.echo_reduction_db - reduction) < 0.5
    expected = min(TARGET_DB - reduction, MAX_ATTENUATION_DB)
    assert abs(gate.attenuation_db - expected) < 0.5
    assert abs(-20 * np.log10(gains[-1]) - expected) < 0.5
    assert set(gains[:INITIAL_FRAMES - 1]) == {DEEPEST}   # the canceller's first seconds: deepest
    assert gate.attenuated_frames == sum(g < 1.0 for g in gains) > 0


def test_a_room_the_canceller_handles_is_never_touched() -> None:
    gate = ResidualEchoGate()
    gains = _room(gate, 45.0)
    assert gate.echo_reduction_db is not None and gate.echo_reduction_db >= TARGET_DB
    assert set(gains[INITIAL_FRAMES - 1:]) == {1.0} and gate.attenuation_db == 0.0
    assert gate.attenuated_frames == INITIAL_FRAMES - 1   # only while the canceller converged


def test_a_room_at_the_edge_does_not_flap() -> None:
    """A measurement hovering around the target: the gate turns on only with 2 dB missing and off
    only under 0.5 dB, so the uplink's level (and the log) does not flip every 100 ms."""
    gate = ResidualEchoGate()
    _room(gate, 39.0)   # converged: off
    assert gate.attenuation_db == 0.0
    _room(gate, 36.5, quiet=0)   # 1.5 dB short: still off
    assert gate.attenuation_db == 0.0
    _room(gate, 35.0, quiet=0)   # 3 dB short: on
    assert abs(gate.attenuation_db - 3.0) < 0.5
    _room(gate, 37.0, quiet=0)   # 1 dB short: stays on, at 1 dB
    assert abs(gate.attenuation_db - 1.0) < 0.5


def test_the_deepest_cut_is_capped() -> None:
    gate = ResidualEchoGate()
    gains = _room(gate, 5.0)
    assert gate.attenuation_db == MAX_ATTENUATION_DB
    assert abs(-20 * np.log10(gains[-1]) - MAX_ATTENUATION_DB) < 1e-6


def test_a_person_talking_over_the_agent_and_the_silence_after_are_untouched() -> None:
    gate = ResidualEchoGate()
    _room(gate, 25.0)
    assert gate.attenuation_db > 0
    before = gate.attenuated_frames
    assert gate.gain(_power(-26), None, far_active=True, talking=True) == 1.0
    assert gate.gain(FLOOR, None, far_active=False, talking=False) == 1.0
    assert gate.attenuated_frames == before


def test_disabled_measures_but_never_attenuates() -> None:
    gate = ResidualEchoGate(enabled=False)
    gains = _room(gate, 20.0)
    assert gate.echo_reduction_db is not None and abs(gate.echo_reduction_db - 20.0) < 0.5
    assert set(gains) == {1.0} and gate.attenuated_frames == 0
    assert gate.attenuation_db == MAX_ATTENUATION_DB   # what it would do (reported)


def test_an_agent_that_greets_at_once_is_measured_against_the_background_it_reaches() -> None:
    """No silence before the agent talks, and NS's first frames digital silence: the background
    comes from the quietest stretches of the call (the gaps in the echo), not from the zeros."""
    gate = ResidualEchoGate()
    for _ in range(5):
        gate.gain(0.0, None, far_active=True, talking=False)
    left = ECHO * 10 ** (-25 / 10)
    for i in range(600):
        gap = i % 50 >= 40   # 100 ms between words, each 400 ms: only the background is there
        gate.gain(FLOOR if gap else FLOOR + left, 0.0 if gap else ECHO, far_active=True, talking=False)
    assert gate.echo_reduction_db is not None and abs(gate.echo_reduction_db - 25.0) < 2.0


def test_measuring_starts_only_with_enough_frames() -> None:
    gate = ResidualEchoGate()
    gains = _room(gate, 20.0, frames=MIN_ECHO_FRAMES - 1, quiet=30)
    assert gate.echo_reduction_db is None and set(gains) == {DEEPEST}
    assert MIN_ECHO_FRAMES >= MEDIAN_EVERY


def test_a_room_where_nothing_is_measured_is_left_alone_after_the_first_seconds() -> None:
    """An echo the mic hardly hears: the half-duplex never hands over a measured frame, so after
    the canceller's first seconds the uplink is not turned down at all."""
    gate = ResidualEchoGate()
    gains = [gate.gain(FLOOR, None, far_active=True, talking=False) for _ in range(INITIAL_FRAMES + 100)]
    assert set(gains[:INITIAL_FRAMES - 1]) == {DEEPEST}
    assert set(gains[INITIAL_FRAMES - 1:]) == {1.0} and gate.attenuation_db == 0.0


def test_what_was_measured_holds_into_the_next_call() -> None:
    """The capture DSP lives as long as the service: a second call in the same room starts at the
    measured depth, not at the deepest."""
    gate = ResidualEchoGate()
    _room(gate, 30.0)
    for _ in range(200):
        gate.gain(FLOOR, None, far_active=False, talking=False)   # between calls
    first = gate.gain(FLOOR + ECHO * 1e-3, None, far_active=True, talking=False)
    assert abs(-20 * np.log10(first) - (TARGET_DB - 30.0)) < 0.5


def _noise_frame(level_dbfs: float, seed: int) -> bytes:
    x = np.random.default_rng(seed).standard_normal(FRAME_SAMPLES) * FULL * 10 ** (level_dbfs / 20)
    return np.clip(x, -32768, 32767).astype("<i2").tobytes()


def _db(pcm: bytes) -> float:
    x = np.frombuffer(pcm, "<i2").astype(float)
    return 10 * float(np.log10(np.mean(x ** 2) / FULL ** 2 + 1e-15))


def test_echo_control_turns_the_noise_suppressors_output_down_in_full_duplex() -> None:
    """AEC3 seemingly perfect ahead of NS (its output is the room's noise: the half-duplex stays
    full), while NS's output keeps a residual 25 dB under the echo: the gate after NS takes off
    the 13 dB that is missing, and the mode stays full duplex."""
    assert (CONVERGE_FRAMES + MIN_FRAMES + 300 - 1) % 30 < 20
    control = EchoControl(EchoControlSettings())
    far = _noise_frame(-20.0, 0)
    frames = CONVERGE_FRAMES + MIN_FRAMES + 300
    out = b""
    for i in range(frames):
        control.reference(far, 16000)
        noise = np.random.default_rng(1000 + i).standard_normal(FRAME_SAMPLES) * FULL * 10 ** (-60 / 20)
        level = -30 if i % 30 < 20 else -50   # in syllables: the mic's background shows between them
        echo = np.random.default_rng(5000 + i).standard_normal(FRAME_SAMPLES) * FULL * 10 ** (level / 20)
        mic = np.clip(noise + echo, -32768, 32767).astype("<i2").tobytes()
        aec_out = np.clip(noise, -32768, 32767).astype("<i2").tobytes()
        control.process(mic, aec_out)
        out = control.gate(_noise_frame(level - 25.0, 9000 + i))   # NS: noise gone, 25 dB of echo off
    assert control.mode == "full"
    assert control.echo_reduction_after_ns_db is not None and abs(control.echo_reduction_after_ns_db - 25) < 1.5
    assert abs(control.residual_attenuation_db - (TARGET_DB - 25)) < 1.5
    assert abs(_db(out) - (-55.0 - control.residual_attenuation_db)) < 1.0   # the last frame: a loud one
    assert control.stats()["residual_gated_frames"] > 0


def test_echo_control_measuring_only_never_turns_down() -> None:
    control = EchoControl(EchoControlSettings(measure_only=True))
    far = _noise_frame(-20.0, 0)
    for i in range(CONVERGE_FRAMES + MIN_FRAMES + 300):
        control.reference(far, 16000)
        mic = _noise_frame(-30.0, 5000 + i)
        control.process(mic, _noise_frame(-60.0, 1000 + i))
        ns_out = _noise_frame(-55.0, 9000 + i)
        assert control.gate(ns_out) == ns_out
    assert control.residual_attenuation_db == 0.0 and control.stats()["residual_gated_frames"] == 0

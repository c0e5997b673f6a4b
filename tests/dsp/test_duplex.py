"""The adaptive half-duplex: decided from the measured residual echo, with double-talk detection."""
from __future__ import annotations

import numpy as np

from device.audio.duplex import CONVERGE_FRAMES, GATE_DB, MIN_FRAMES, TAIL_FRAMES, AdaptiveDuplex
from device.audio.formats import FRAME_SAMPLES

FULL = 32768.0
FAR_POWER = (FULL * 0.1) ** 2        # the agent talking at -20 dBFS


def _noise(level_dbfs: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(FRAME_SAMPLES) * FULL * 10 ** (level_dbfs / 20)


def _level(x: np.ndarray) -> float:
    return 10 * float(np.log10(np.mean(x ** 2) / FULL ** 2))


def _quiet_room(duplex: AdaptiveDuplex, frames: int = 50) -> None:
    for i in range(frames):   # the agent silent: the background is measured
        duplex.process(_noise(-65, i), 0.0)


def _agent_talks(duplex: AdaptiveDuplex, residual_dbfs: float, frames: int) -> list[np.ndarray]:
    return [duplex.process(_noise(-65, 1000 + i) + _noise(residual_dbfs, 5000 + i), FAR_POWER)
            for i in range(frames)]


def test_an_audible_residual_echo_switches_to_half_duplex_and_is_gated() -> None:
    duplex = AdaptiveDuplex()
    _quiet_room(duplex)
    out = _agent_talks(duplex, -45.0, CONVERGE_FRAMES + MIN_FRAMES + 50)
    assert duplex.mode == "half" and duplex.switches == 1
    assert duplex.residual_echo_db is not None and duplex.residual_echo_db > 15
    assert duplex.gated_frames > 0
    assert _level(out[-1]) < -45.0 + GATE_DB + 3


def test_a_residual_under_the_background_stays_full_duplex_untouched() -> None:
    duplex = AdaptiveDuplex()
    _quiet_room(duplex)
    frames = [_noise(-65, 1000 + i) + _noise(-80, 5000 + i) for i in range(CONVERGE_FRAMES + MIN_FRAMES + 100)]
    out = [duplex.process(f, FAR_POWER) for f in frames]
    assert duplex.mode == "full" and duplex.gated_frames == 0
    assert all(np.array_equal(a, b) for a, b in zip(frames, out))


def test_a_loud_talker_gets_through_half_duplex() -> None:
    duplex = AdaptiveDuplex()
    _quiet_room(duplex)
    _agent_talks(duplex, -45.0, CONVERGE_FRAMES + MIN_FRAMES + 50)
    assert duplex.mode == "half"
    talker = [_noise(-25, 9000 + i) for i in range(40)]
    out = [duplex.process(t + _noise(-45, 7000 + i), FAR_POWER, echo_estimate=(FULL * 10 ** (-45 / 20)) ** 2)
           for i, t in enumerate(talker)]
    assert duplex.double_talk_frames >= 35
    assert all(abs(_level(o) - _level(t)) < 1.0 for o, t in zip(out, talker))


def test_the_gate_opens_after_the_agents_tail() -> None:
    duplex = AdaptiveDuplex()
    _quiet_room(duplex)
    _agent_talks(duplex, -45.0, CONVERGE_FRAMES + MIN_FRAMES + 50)
    frames = [_noise(-40, 100 + i) for i in range(TAIL_FRAMES + 5)]
    out = [duplex.process(f, 0.0) for f in frames]
    assert np.array_equal(out[-1], frames[-1])
    assert _level(out[0]) < -60   # still within the tail: gated


def test_the_room_getting_better_goes_back_to_full_duplex() -> None:
    duplex = AdaptiveDuplex()
    _quiet_room(duplex)
    _agent_talks(duplex, -45.0, CONVERGE_FRAMES + MIN_FRAMES + 50)
    assert duplex.mode == "half"
    _agent_talks(duplex, -90.0, 400)   # the volume was turned down
    assert duplex.mode == "full" and duplex.switches == 2


def test_disabled_measures_but_never_gates() -> None:
    duplex = AdaptiveDuplex(enabled=False)
    _quiet_room(duplex)
    out = _agent_talks(duplex, -45.0, CONVERGE_FRAMES + MIN_FRAMES + 50)
    assert duplex.mode == "half"   # what it would do
    assert duplex.gated_frames == 0
    assert _level(out[-1]) > -50


def test_a_canceller_that_removes_enough_keeps_full_duplex() -> None:
    """An echo 40 dB down after cancellation stays full duplex even if what is left shows over a
    very quiet background; 20 dB down with the same residual goes half."""
    for mic_dbfs, expected in ((-5.0, "full"), (-25.0, "half")):
        duplex = AdaptiveDuplex()
        _quiet_room(duplex)
        mic_power = (FULL * 10 ** (mic_dbfs / 20)) ** 2
        for i in range(CONVERGE_FRAMES + MIN_FRAMES + 50):
            duplex.process(_noise(-65, 1000 + i) + _noise(-45, 5000 + i), FAR_POWER, mic_power=mic_power)
        assert duplex.mode == expected, (mic_dbfs, duplex.echo_reduction_db)
        assert duplex.steady_mode == expected

"""The adaptive half-duplex: decided from the measured residual echo, with double-talk detection."""
from __future__ import annotations

import numpy as np

from device.audio.duplex import CONVERGE_FRAMES, ERLE_ON_DB, GATE_DB, MIN_FRAMES, TAIL_FRAMES, AdaptiveDuplex
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
    assert _level(out[0]) < _level(talker[0]) - 30   # confirmed on its second frame: 10 ms gated
    assert all(abs(_level(o) - _level(t)) < 1.0 for o, t in zip(out[1:], talker[1:]))


def test_a_single_frame_over_the_threshold_does_not_open_the_gate() -> None:
    """A distorting, drifting echo spikes past the double-talk threshold for single frames: each
    stays gated, and none opens the 300 ms hold."""
    duplex = AdaptiveDuplex()
    _quiet_room(duplex)
    _agent_talks(duplex, -45.0, CONVERGE_FRAMES + MIN_FRAMES + 50)
    assert duplex.mode == "half"
    for i in range(20):
        spike = _noise(-25, 9000 + i) if i % 4 == 0 else _noise(-45, 7000 + i)
        out = duplex.process(spike + _noise(-65, 3000 + i), FAR_POWER)
        assert _level(out) < _level(spike) - 30, i
    assert duplex.double_talk_frames == 0


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


def _call(duplex: AdaptiveDuplex, echo_dbfs: float, reduction_db: float, frames: int, quiet: int = 0,
          noise_dbfs: float = -60.0) -> None:
    """A call as the canceller sees it: the agent's echo at the mic in syllables (200 ms loud,
    100 ms at -20 dB, so there are gaps as in speech), the room's noise on both sides, and the
    echo `reduction_db` down in the output. `quiet` frames of the agent silent first."""
    for i in range(quiet):
        n = _noise(noise_dbfs, i)
        duplex.process(n, 0.0, mic_power=float(np.mean(n ** 2)))
    for i in range(frames):
        level = echo_dbfs if i % 30 < 20 else echo_dbfs - 20
        echo, noise = _noise(level, 20000 + i), _noise(noise_dbfs, 40000 + i)
        mic = echo + noise
        out = echo * 10 ** (-reduction_db / 20) + noise
        duplex.process(out, FAR_POWER, mic_power=float(np.mean(mic ** 2)))


def test_the_echo_reduction_is_measured_with_the_background_taken_out() -> None:
    """A canceller that takes 45 dB off an echo 30 dB over the room's noise leaves the output at
    the noise: that is a good canceller (full duplex, the reduction read as at least 35 dB), not
    a 30 dB one. One that takes 15 dB off the same echo goes half."""
    for reduction, expected in ((45.0, "full"), (15.0, "half")):
        duplex = AdaptiveDuplex()
        _call(duplex, -30.0, reduction, CONVERGE_FRAMES + MIN_FRAMES + 300, quiet=50)
        assert duplex.mode == expected, (reduction, duplex.echo_reduction_db)
        assert duplex.steady_mode == expected
        assert duplex.echo_reduction_db is not None
        if expected == "full":
            assert duplex.echo_reduction_db >= ERLE_ON_DB and duplex.switches == 0
        else:
            assert abs(duplex.echo_reduction_db - reduction) < 3.0


def test_an_agent_that_greets_at_once_is_still_measured() -> None:
    """No silence before the agent talks (it greets as the call opens): the backgrounds come from
    the gaps between its words, and the decision is the same."""
    for reduction, expected in ((45.0, "full"), (15.0, "half")):
        duplex = AdaptiveDuplex()
        _call(duplex, -30.0, reduction, CONVERGE_FRAMES + MIN_FRAMES + 300, quiet=0)
        assert duplex.mode == expected, (reduction, duplex.echo_reduction_db)


def test_an_echo_the_mic_hardly_hears_stays_full_duplex() -> None:
    """The agent's echo 10 dB under the room's noise at the mic, not cancelled at all: nothing of it
    stands out of the background, so there is nothing to gate."""
    duplex = AdaptiveDuplex()
    _call(duplex, -70.0, 0.0, CONVERGE_FRAMES + MIN_FRAMES + 300, quiet=50)
    assert duplex.mode == "full" and duplex.gated_frames == 0


def test_the_reduction_sums_only_the_frames_whose_echo_stands_out() -> None:
    """The documented rule: echo in and echo left over the same frames, those where the mic stands
    3 dB over its background. Between the agent's words the mic hears hardly any echo while the
    canceller's output still carries a reverberant tail; counting that tail without its echo (an
    edit once paired the two sums wrongly) reads a 45 dB canceller as a 30 dB one."""
    duplex = AdaptiveDuplex()
    _quiet_room(duplex)
    for i in range(CONVERGE_FRAMES + MIN_FRAMES + 300):
        noise = _noise(-65, 40000 + i)
        if i % 10 < 5:   # a word: the echo at -30 dBFS, 45 dB of it taken off
            echo = _noise(-30, 20000 + i)
            mic, out = echo + noise, echo * 10 ** (-45 / 20) + noise
        else:            # between words: no echo to speak of at the mic, a -58 dBFS tail left
            mic, out = noise, noise + _noise(-58, 60000 + i)
        duplex.process(out, FAR_POWER, mic_power=float(np.mean(mic ** 2)))
    assert duplex.echo_reduction_db is not None and duplex.echo_reduction_db >= ERLE_ON_DB, duplex.echo_reduction_db
    assert duplex.mode == "full"


def test_the_hold_grows_with_how_long_a_person_was_heard() -> None:
    """A brief burst that passes for a person (two frames) opens the gate for 120 ms; a person
    heard for 80 ms and more keeps it open 300 ms after the last word."""
    from device.audio.duplex import HOLD_FRAMES, HOLD_MIN_FRAMES, HOLD_PER_FRAME

    def open_frames_after(loud_frames: int, seed: int) -> int:
        duplex = AdaptiveDuplex()
        _quiet_room(duplex)
        _agent_talks(duplex, -45.0, CONVERGE_FRAMES + MIN_FRAMES + 50)
        assert duplex.mode == "half"
        for i in range(loud_frames):
            duplex.process(_noise(-25, seed + i) + _noise(-45, 7000 + i), FAR_POWER)
        opened = 0
        for i in range(HOLD_FRAMES + 10):
            residual = _noise(-45, 8000 + i)
            opened += _level(duplex.process(residual, FAR_POWER)) > _level(residual) - 3
        return opened

    assert open_frames_after(2, 9000) == HOLD_MIN_FRAMES + 2 * HOLD_PER_FRAME - 1
    assert open_frames_after(20, 9100) == HOLD_FRAMES - 1

"""The room matrix's measurements (tools/room_metrics.py) on scenes whose answers are known: an
output made by hand from the echo, noise and talker a scene would have had at the mic."""
from __future__ import annotations

import numpy as np
import pytest

from tools import bench_room
from tools import room_metrics as m
from tools.room_scene import RATE, RoomCell, SceneRecording
from tools.signals import speech

AGENT_S = 6.0
TAIL_S = m.scene_tail_s()


def _scene(gain_echo: float, noise_dbfs: float = -60.0, near_gain: float | None = None,
           during_gain: float = 1.0, seed: int = 0) -> SceneRecording:
    """A scene 0.2 s of silence, a 6 s greeting and the tail; the output is
    `gain_echo * echo + noise` (+ the talker, scaled by `during_gain` while the agent talks)."""
    start = int(0.2 * RATE)
    n = start + int((AGENT_S + TAIL_S) * RATE)
    agent = speech("Thanks for calling the shop, we are open from nine to six every day of the week.",
                   RATE, level=-20.0)[:int(AGENT_S * RATE)]
    echo = np.zeros(n)
    echo[start + 640:start + 640 + len(agent)] = agent[:n - start - 640] * 0.3
    noise = np.random.default_rng(seed).standard_normal(n) * 10 ** (noise_dbfs / 20)
    near = np.zeros(n)
    out = gain_echo * echo + noise
    if near_gain is not None:
        clip = m.near_talker() / 32768.0
        for offset, scale in ((m.near_at_s(AGENT_S), during_gain), (AGENT_S + m.NEAR_AFTER_S, 1.0)):
            at = start + int(offset * RATE)
            near[at:at + len(clip)] += clip
            out[at:at + len(clip)] += clip * near_gain * scale
    return SceneRecording(cell=RoomCell("synthetic"), aec="synthetic", echo=echo, near=near, noise=noise,
                          processed=out, uplink=out, speaker=np.concatenate([agent, np.zeros(RATE)]),
                          agent_start=start, capture_cpu_s=0.1, dsp_cpu_s=0.05, audio_s=n / RATE, wall_s=0.0)


@pytest.mark.parametrize("reduction_db", [10.0, 20.0, 30.0])
def test_echo_reduction_is_off_over_on_less_the_noise(reduction_db: float) -> None:
    off, on = _scene(1.0, seed=1), _scene(10 ** (-reduction_db / 20), seed=2)
    result = m.echo_reduction(off, on)
    assert result.db == pytest.approx(reduction_db, abs=0.5) and not result.at_least
    assert result.echo_to_noise_db > 15


def test_echo_reduction_under_the_noise_is_a_lower_bound_and_an_echo_under_it_has_none() -> None:
    bound = m.echo_reduction(_scene(1.0, seed=1), _scene(1e-4, seed=2))
    assert bound.at_least and bound.db is not None and 15 < bound.db < 40
    buried = m.echo_reduction(_scene(1.0, noise_dbfs=-30.0, seed=1), _scene(0.1, noise_dbfs=-30.0, seed=2))
    assert buried.db is None and buried.echo_to_noise_db < 0


@pytest.mark.parametrize("loss_db", [0.0, 6.0, 12.0])
def test_double_talk_loss_is_the_talker_during_the_agent_against_alone(loss_db: float) -> None:
    quiet = _scene(0.05, seed=3)
    talk = _scene(0.05, near_gain=1.0, during_gain=10 ** (-loss_db / 20), seed=3)
    result = m.double_talk(talk, quiet, AGENT_S)
    assert result.loss_db == pytest.approx(loss_db, abs=0.7)
    assert result.alone_dbfs == pytest.approx(m.NEAR_LEVEL_DBFS, abs=1.5)


def test_self_speech_counts_what_silero_hears_in_the_uplink_per_10_s_of_agent_speech() -> None:
    silent = _scene(0.0)
    per10, heard, agent = m.self_speech_per_10s(silent)
    assert heard == 0.0 and per10 == 0.0 and agent > 3.0
    loud = _scene(1.0)
    per10, heard, agent = m.self_speech_per_10s(loud)
    assert heard > 0.5 * agent and per10 == pytest.approx(10 * heard / agent)


def test_cells_are_marked_against_the_issue_targets() -> None:
    clean, drifting = RoomCell("a"), RoomCell("b", drift_ppm=50.0)
    good = m.EchoReduction(36.0, False, 30.0)
    middling = m.EchoReduction(32.0, False, 30.0)
    assert all(bench_room.targets(clean, good, 0.2, 5.0, "full duplex").values())
    assert not bench_room.targets(clean, middling, 0.2, 5.0, "full duplex")["echo_reduction"]
    assert bench_room.targets(drifting, middling, 0.2, 5.0, "full duplex")["echo_reduction"]
    marks = bench_room.targets(clean, good, 0.3, 7.0, "full duplex")
    assert not marks["self_speech"] and not marks["double_talk"]
    assert bench_room.targets(clean, m.EchoReduction(None, False, -3.0), 0.0, 0.0, "full duplex")["echo_reduction"]


def test_the_matrix_is_one_factor_at_a_time_plus_corners_at_both_volumes() -> None:
    cells = bench_room.matrix()
    names = [c.name for c in cells]
    assert len(set(names)) == len(names)
    base = bench_room.BASELINE
    ofat = [c for c in cells if not c.name.startswith(("far", "mid", "near")) and c is not base]
    for c in ofat:   # exactly one factor differs from the baseline
        differs = [k for k in ("rt60_s", "distance_m", "drift_ppm", "distortion", "noise_dbfs", "volume")
                   if getattr(c, k) != getattr(base, k)]
        assert len(differs) == 1, c
    assert {c.rt60_s for c in cells} >= {0.2, 0.9} and {c.distance_m for c in cells} >= {0.05, 2.0}
    assert {c.drift_ppm for c in cells} >= {0.0, 50.0, -50.0, 150.0, -150.0}
    assert {c.distortion for c in cells} == {"off", "moderate", "strong"}
    assert min(c.noise_dbfs for c in cells) == -65 and max(c.noise_dbfs for c in cells) == -45
    assert {c.volume for c in cells} == {100, 50}
    hard = [c for c in cells if c.distance_m == 2.0 and c.rt60_s >= 0.6 and c.drift_ppm and c.distortion != "off"]
    assert {c.volume for c in hard} == {100, 50}
    assert bench_room.select("baseline,far-reverb", quick=False) == [base, cells[names.index("far-reverb")]]
    with pytest.raises(SystemExit):
        bench_room.select("no-such-room", quick=False)

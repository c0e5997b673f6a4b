"""Echo cancellation (livekit's WebRTC AEC3) on a simulated room, driven as the audio threads drive it.

Scene (tools/signals.py): espeak-ng far-end speech at -20 dBFS active level goes to a speaker
that soft-clips at -6 dBFS, through a room (RT60 200 ms, 3 dB direct-to-reverberant, bulk delay)
into the mic at 0 dB echo path gain, plus white noise at -70 dBFS. The noise sits ~50 dB under the
echo so the measurement is not capped by it: ERLE counts everything in the output, and with the
noise at -60 dBFS the figure would read the noise floor (~34 dB), not the canceller.
"""
from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

from device.audio.dsp import make_capture_dsp, reference_frame_bytes
from device.audio.echo_control import EchoControlSettings
from device.audio.formats import FRAME_BYTES
from tools.signals import (
    AEC_SCENE_ECHO_GAIN_DB,
    AEC_SCENE_NOISE_DBFS,
    FAR_TEXT,
    MIN_ERLE_DB,
    NEAR_TEXT,
    band_limit,
    erle_db,
    level_dbfs,
    run_echo_scene,
    speech,
    with_pauses,
)


def _far(rate: int) -> np.ndarray:
    return speech(FAR_TEXT, rate, level=-20.0)


@pytest.mark.parametrize("delay_ms", [40, 140])
@pytest.mark.parametrize("far_rate", [16000, 24000])
def test_echo_is_reduced_after_one_second(far_rate: int, delay_ms: int) -> None:
    dsp = make_capture_dsp("webrtc", 0, 0)
    far = _far(far_rate)
    run = run_echo_scene(dsp.process, dsp.reference, far, far_rate, delay_ms=delay_ms,
                         gain_db=AEC_SCENE_ECHO_GAIN_DB, noise_dbfs=AEC_SCENE_NOISE_DBFS)
    erle = erle_db(run, start_s=1.0)
    assert erle >= MIN_ERLE_DB, f"echo reduction {erle:.1f} dB after 1 s"
    assert erle_db(run, start_s=3.0) >= 30.0   # steady state (measured ~44 dB)
    stats = dsp.stats()
    frames = len(far) // (far_rate // 100)
    assert stats["frames_processed"] == frames
    assert stats["reference_frames"] == frames
    assert stats["reference_pending_bytes"] == 0
    dsp.close()


def test_near_end_talker_alone_passes_through() -> None:
    """With the speaker silent (zero reference frames) the canceller must leave the talker alone.

    Measured in 200-7000 Hz (the high-pass filter removes the bottom on purpose) after 0.5 s.
    """
    dsp = make_capture_dsp("webrtc", 0, 0)
    near = speech(NEAR_TEXT, 16000, voice="en-us+f3", level=-26.0)
    run = run_echo_scene(dsp.process, dsp.reference, np.zeros(len(near)), 16000, near=near,
                         gain_db=AEC_SCENE_ECHO_GAIN_DB, noise_dbfs=AEC_SCENE_NOISE_DBFS)
    settled = slice(8000, None)
    before = level_dbfs(band_limit(run.near[settled], 16000, 200, 7000))
    after = level_dbfs(band_limit(run.out[settled], 16000, 200, 7000))
    assert abs(after - before) < 3.0, f"near-end level changed by {after - before:.1f} dB"


def test_silence_must_reach_the_canceller_as_zero_frames() -> None:
    """Why the playback thread hands over its silence too: skipping all-zero reference frames leaves
    the canceller with a reference timeline that has holes, and echo reduction falls (measured
    ~45 dB fed vs ~29 dB skipped)."""
    far = with_pauses([speech(t, 16000, level=-20.0) for t in
                       ("Hello, thanks for calling.", "I can help you book a table.",
                        "What would you like to do today?", "Our opening hours are nine to five.")],
                      16000, pause_s=0.8)
    results = {}
    for skip_silence in (False, True):
        # The canceller alone: the residual echo gate after it would turn the worse run down more
        # and hide what the holes cost the canceller.
        dsp = make_capture_dsp("webrtc", 0, 0, echo=EchoControlSettings(adaptive_half_duplex=False))

        def reference(pcm: bytes, rate: int, dsp=dsp, skip=skip_silence) -> None:
            if skip and not any(pcm):
                return
            dsp.reference(pcm, rate)

        run = run_echo_scene(dsp.process, reference, far, 16000, gain_db=AEC_SCENE_ECHO_GAIN_DB,
                             noise_dbfs=AEC_SCENE_NOISE_DBFS)
        results[skip_silence] = erle_db(run, start_s=1.0)
    assert results[False] >= MIN_ERLE_DB
    assert results[False] - results[True] >= 6.0, results


def test_wrong_sizes_raise_value_error_instead_of_aborting() -> None:
    """The native APM aborts the whole process on a partial frame; if any of these reached it,
    pytest itself would die here rather than report a failure."""
    dsp = make_capture_dsp("webrtc", 2, 0)
    for size in (0, 2, FRAME_BYTES - 2, FRAME_BYTES + 2, 2 * FRAME_BYTES):
        with pytest.raises(ValueError, match="320 bytes"):
            dsp.process(bytes(size))
    with pytest.raises(ValueError, match="rate"):
        dsp.reference(bytes(882), 44100)
    with pytest.raises(ValueError, match="whole PCM16 samples"):
        dsp.reference(bytes(481), 24000)
    # Still healthy afterwards, and nothing bad was counted as processed.
    assert dsp.process(bytes(FRAME_BYTES)) == bytes(FRAME_BYTES)
    dsp.reference(bytes(480), 24000)
    stats = dsp.stats()
    assert stats["frames_processed"] == 1
    assert stats["reference_frames"] == 1
    assert stats["rejected_frames"] == 7


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 32000, 48000])
def test_reference_in_odd_pieces_reaches_the_canceller_in_whole_frames(rate: int) -> None:
    """Periods that are not whole 10 ms (ALSA may pick 341 frames) are split; the rest waits."""
    dsp = make_capture_dsp("webrtc", 0, 0)
    frame = reference_frame_bytes(rate)
    piece = 2 * 341
    total = 0
    for _ in range(25):
        dsp.reference(bytes(piece), rate)
        total += piece
        stats = dsp.stats()
        assert stats["reference_frames"] == total // frame
        assert stats["reference_pending_bytes"] == total % frame


def test_reference_rate_change_drops_the_partial_frame() -> None:
    dsp = make_capture_dsp("webrtc", 0, 0)
    dsp.reference(bytes(480 + 100), 24000)
    assert dsp.stats()["reference_pending_bytes"] == 100
    dsp.reference(bytes(320), 16000)
    stats = dsp.stats()
    assert stats["reference_frames"] == 2
    assert stats["reference_pending_bytes"] == 0
    assert stats["reference_rate"] == 16000
    assert stats["reference_rate_changes"] == 1


def test_full_chain_cancels_and_detects_speech() -> None:
    """AEC + noise suppression + auto gain: the echo stays down and the talker is flagged as speech."""
    dsp = make_capture_dsp("webrtc", 2, 3)
    far = _far(24000)
    run = run_echo_scene(dsp.process, dsp.reference, far, 24000, gain_db=AEC_SCENE_ECHO_GAIN_DB,
                         noise_dbfs=AEC_SCENE_NOISE_DBFS)
    assert erle_db(run, start_s=1.0) >= MIN_ERLE_DB
    near = speech(NEAR_TEXT, 16000, voice="en-us+f3", level=-26.0)
    speech_flags: list[bool] = []

    def process(pcm: bytes) -> bytes:
        out = dsp.process(pcm)
        speech_flags.append(dsp.last_is_speech)
        return out

    silent_speaker = np.zeros(len(near) * 24000 // 16000)
    run_echo_scene(process, dsp.reference, silent_speaker, 24000, near=near, noise_dbfs=AEC_SCENE_NOISE_DBFS)
    # The talker speaks in about 70% of the frames: the flag follows speech, not just "on".
    assert 0.3 < np.mean(speech_flags) < 0.95


def test_the_documentation_figure_can_be_regenerated(tmp_path: Path) -> None:
    from tools.plot_echo_reduction import main

    out = tmp_path / "echo-reduction.svg"
    assert main(["--out", str(out)]) == 0
    root = ElementTree.parse(out).getroot()
    assert root.tag.endswith("svg")
    assert len(root.findall(".//{http://www.w3.org/2000/svg}polyline")) > 10

"""The capture chain's contract (sizes, settings, close, threads, counters) and the Resampler."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soxr

from device.audio.dsp import CaptureDsp, make_capture_dsp
from device.audio.formats import FRAME_BYTES
from device.audio.resampler import Resampler
from tools.signals import white_noise


def _frame(seed: int = 1) -> bytes:
    return (white_noise(160, -30.0, seed) * 32768).astype("<i2").tobytes()


@pytest.mark.parametrize(("aec", "ns", "agc"), [("speex", 0, 0), ("webrtc", 5, 0), ("off", -1, 0),
                                                ("off", 0, 32), ("off", 0, -3)])
def test_bad_settings_are_refused(aec: str, ns: int, agc: int) -> None:
    with pytest.raises(ValueError):
        make_capture_dsp(aec, ns, agc)  # type: ignore[arg-type]


def test_passthrough_checks_sizes_and_returns_the_input() -> None:
    dsp = make_capture_dsp("off", 0, 0)
    frame = _frame()
    assert dsp.process(frame) == frame
    assert dsp.process(bytearray(frame)) == frame  # type: ignore[arg-type]  # any bytes-like frame
    with pytest.raises(ValueError):
        dsp.process(frame[:-2])
    dsp.reference(bytes(480), 24000)                  # accepted and ignored: nothing to cancel
    with pytest.raises(ValueError):
        dsp.reference(bytes(480), 22050)
    assert dsp.stats()["frames_processed"] == 2
    assert dsp.stats()["reference_frames"] == 0


def test_close_is_idempotent_and_process_after_close_fails_loudly() -> None:
    dsp = make_capture_dsp("webrtc", 2, 0)
    dsp.process(_frame())
    dsp.close()
    dsp.close()
    dsp.reference(bytes(320), 16000)     # the playback thread may be a frame late at shutdown
    with pytest.raises(RuntimeError):
        dsp.process(_frame())


def test_reference_and_process_on_two_threads() -> None:
    """The playback thread feeds the reference while the capture thread processes, as in service."""
    dsp: CaptureDsp = make_capture_dsp("webrtc", 2, 3)
    frames = 600
    reference = (white_noise(240, -20.0, 2) * 32768).astype("<i2").tobytes()

    def playback() -> None:
        for _ in range(frames):
            dsp.reference(reference, 24000)

    frame = _frame()
    with ThreadPoolExecutor(max_workers=1) as pool:
        playing = pool.submit(playback)
        outputs = [dsp.process(frame) for _ in range(frames)]
        playing.result(timeout=30)   # re-raises anything the playback thread raised
    assert all(len(out) == FRAME_BYTES for out in outputs)
    stats = dsp.stats()
    assert stats["frames_processed"] == frames and stats["reference_frames"] == frames
    dsp.close()


# -- Resampler -------------------------------------------------------------------------------------
def test_resampler_identity_is_a_fifo() -> None:
    r = Resampler(16000, 16000)
    r.push(b"\x01\x00" * 100)
    assert r.pop(320) is None
    r.push(b"\x02\x00" * 100)
    assert r.pop(320) == b"\x01\x00" * 100 + b"\x02\x00" * 60
    assert r.buffered == 80
    r.reset()
    assert r.buffered == 0


@pytest.mark.parametrize(("in_rate", "out_rate"), [(16000, 24000), (16000, 48000), (24000, 16000),
                                                   (48000, 16000)])
def test_streamed_chunks_equal_resampling_the_whole_signal(in_rate: int, out_rate: int) -> None:
    """No chunk-edge artefacts: 10 ms pushes popped as 10 ms chunks match a one-shot conversion of
    the whole signal (same soxr quality) to within rounding, and come out ~11 ms late at most."""
    t = np.arange(in_rate) / in_rate
    x = np.round(np.sin(2 * np.pi * 1000 * t) * 10000 + white_noise(in_rate, -40, 3) * 32768)
    pcm = x.astype("<i2").tobytes()
    r = Resampler(in_rate, out_rate)
    chunk_in, chunk_out = in_rate // 100 * 2, r.frame_bytes(10)
    out = []
    for start in range(0, len(pcm), chunk_in):
        r.push(pcm[start:start + chunk_in])
        while (chunk := r.pop(chunk_out)) is not None:
            out.append(chunk)
    y = np.frombuffer(b"".join(out), dtype="<i2").astype(np.float64)
    whole = soxr.resample(x, in_rate, out_rate, quality="LQ")
    assert len(y) >= out_rate - out_rate * 25 // 1000   # held back: the filter's ~11 ms + one chunk
    np.testing.assert_allclose(y, whole[:len(y)], atol=2.0)


def test_resampler_refuses_partial_samples() -> None:
    r = Resampler(16000, 24000)
    with pytest.raises(ValueError):
        r.push(b"\x00" * 3)
    with pytest.raises(ValueError):
        r.pop(3)
    with pytest.raises(ValueError):
        r.pop(0)
    with pytest.raises(ValueError):
        Resampler(16000, 44100).frame_bytes(1)   # 44.1 samples
    assert Resampler(16000, 44100).frame_bytes(10) == 882
    with pytest.raises(ValueError):
        Resampler(0, 16000)


def test_resampler_reset_forgets_everything() -> None:
    r = Resampler(16000, 24000)
    r.push(bytes(3200))
    assert r.buffered > 0
    r.reset()
    assert r.buffered == 0 and r.pop(2) is None

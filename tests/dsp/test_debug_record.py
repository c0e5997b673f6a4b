"""The DSP flight recorder: bounded rings, valid WAV files, and the capture chain feeding it."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from device.audio.dsp import make_capture_dsp
from device.audio.formats import FRAME_BYTES
from device.diagnostics.recorder import DebugRecorder
from tools.signals import ramp, read_wav


def test_ring_keeps_only_the_last_seconds(tmp_path: Path) -> None:
    rec = DebugRecorder(tmp_path, seconds=0.5)
    for i in range(200):                        # 2 s of 10 ms frames at 16 kHz
        rec.raw(ramp(i * 160, 160).tobytes(), 16000)
    files = rec.dump()
    assert [f.path.name for f in files] == ["mic-raw.wav", "mic-processed.wav", "reference.wav"]
    data, rate = read_wav(tmp_path / "mic-raw.wav")
    assert rate == 16000
    np.testing.assert_array_equal(data, ramp(200 * 160 - 8000, 8000))


def test_before_the_ring_wraps_everything_is_kept(tmp_path: Path) -> None:
    rec = DebugRecorder(tmp_path, seconds=1.0)
    rec.processed(ramp(0, 1000).tobytes(), 16000)
    rec.processed(ramp(1000, 500).tobytes(), 16000)
    rec.dump()
    data, _ = read_wav(tmp_path / "mic-processed.wav")
    np.testing.assert_array_equal(data, ramp(0, 1500))


def test_one_write_longer_than_the_ring(tmp_path: Path) -> None:
    rec = DebugRecorder(tmp_path, seconds=0.1)
    rec.reference(ramp(0, 1000).tobytes(), 8000)   # 1000 samples into an 800-sample ring
    rec.reference(ramp(1000, 100).tobytes(), 8000)
    rec.dump()
    data, rate = read_wav(tmp_path / "reference.wav")
    assert rate == 8000
    np.testing.assert_array_equal(data, ramp(300, 800))


def test_each_stream_keeps_its_own_rate_and_an_unused_stream_is_an_empty_file(tmp_path: Path) -> None:
    rec = DebugRecorder(tmp_path / "new-dir", seconds=1.0)
    rec.raw(ramp(0, 160).tobytes(), 16000)
    rec.reference(ramp(0, 480).tobytes(), 48000)
    rec.dump()
    assert read_wav(tmp_path / "new-dir" / "mic-raw.wav")[1] == 16000
    assert read_wav(tmp_path / "new-dir" / "reference.wav")[1] == 48000
    data, rate = read_wav(tmp_path / "new-dir" / "mic-processed.wav")
    assert len(data) == 0 and rate == 16000


def test_a_rate_change_restarts_that_ring(tmp_path: Path) -> None:
    rec = DebugRecorder(tmp_path, seconds=1.0)
    rec.reference(ramp(0, 240).tobytes(), 24000)
    rec.reference(ramp(5000, 160).tobytes(), 16000)
    rec.dump()
    data, rate = read_wav(tmp_path / "reference.wav")
    assert rate == 16000
    np.testing.assert_array_equal(data, ramp(5000, 160))


def test_dump_twice_overwrites_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    rec = DebugRecorder(tmp_path, seconds=1.0)
    rec.raw(ramp(0, 160).tobytes(), 16000)
    rec.dump()
    rec.raw(ramp(160, 160).tobytes(), 16000)
    rec.dump()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mic-processed.wav", "mic-raw.wav",
                                                           "reference.wav"]
    assert len(read_wav(tmp_path / "mic-raw.wav")[0]) == 320


def test_rejects_a_non_positive_length(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        DebugRecorder(tmp_path, seconds=0)


def test_capture_chain_records_raw_processed_and_reference(tmp_path: Path) -> None:
    rec = DebugRecorder(tmp_path, seconds=1.0)
    dsp = make_capture_dsp("off", 0, 6, recorder=rec)
    quiet = (ramp(0, 160) // 64).tobytes()
    for _ in range(50):
        dsp.reference(bytes(480), 24000)
        dsp.process(quiet)
    rec.dump()
    raw, _ = read_wav(tmp_path / "mic-raw.wav")
    processed, _ = read_wav(tmp_path / "mic-processed.wav")
    reference, ref_rate = read_wav(tmp_path / "reference.wav")
    assert raw.tobytes() == quiet * 50
    assert len(processed) == len(raw) and processed.tobytes() != raw.tobytes()   # the gain acted
    assert ref_rate == 24000 and len(reference) == 50 * 240


def test_dump_while_the_audio_threads_write(tmp_path: Path) -> None:
    rec = DebugRecorder(tmp_path, seconds=0.2)
    frame = ramp(0, 160).tobytes()

    def writer() -> None:
        for _ in range(3000):
            rec.raw(frame, 16000)
            rec.reference(frame, 16000)

    with ThreadPoolExecutor(max_workers=1) as pool:
        writing = pool.submit(writer)
        for _ in range(5):
            for dumped in rec.dump():
                data, _ = read_wav(dumped.path)
                assert len(data) <= 3200
        writing.result(timeout=30)   # re-raises anything the writer thread raised
    data, _ = read_wav(rec.dump()[0].path)
    assert len(data) == 3200 and data.tobytes() == frame * 20
    assert FRAME_BYTES == len(frame)


def test_dump_reports_each_file_with_its_length(tmp_path: Path) -> None:
    rec = DebugRecorder(tmp_path, seconds=1.0)
    rec.raw(ramp(0, 4000).tobytes(), 16000)
    rec.reference(ramp(0, 12000).tobytes(), 48000)
    files = rec.dump()
    assert [(f.stream, f.sample_rate, f.samples, f.seconds) for f in files] == [
        ("raw", 16000, 4000, 0.25), ("processed", 16000, 0, 0.0), ("reference", 48000, 12000, 0.25)]
    assert files[2].as_dict() == {"stream": "reference", "path": str(tmp_path / "reference.wav"),
                                  "seconds": 0.25, "sample_rate": 48000}
    assert rec.held_seconds() == 0.25


def test_dump_into_another_directory_leaves_the_recorder_directory_alone(tmp_path: Path) -> None:
    rec = DebugRecorder(tmp_path / "rec", seconds=1.0)
    rec.processed(ramp(7, 320).tobytes(), 16000)
    files = rec.dump(tmp_path / "rec" / "elsewhere")
    assert {f.path.parent for f in files} == {tmp_path / "rec" / "elsewhere"}
    assert not (tmp_path / "rec" / "mic-processed.wav").exists()
    np.testing.assert_array_equal(read_wav(files[1].path)[0], ramp(7, 320))


def test_dump_removes_temporary_files_a_killed_process_left(tmp_path: Path) -> None:
    (tmp_path / ".mic-raw.wav.abc123").write_bytes(b"half a file")
    rec = DebugRecorder(tmp_path, seconds=1.0)
    rec.dump()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mic-processed.wav", "mic-raw.wav",
                                                           "reference.wav"]


def test_a_failed_dump_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from device.diagnostics import recorder as debug_record

    def disk_full(path: object, pcm: bytes, rate: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(debug_record, "write_wav_mono16", disk_full)
    rec = DebugRecorder(tmp_path, seconds=1.0)
    with pytest.raises(OSError, match="No space"):
        rec.dump()
    assert list(tmp_path.iterdir()) == []

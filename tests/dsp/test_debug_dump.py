"""The dump thread behind SIGUSR1, `ctl dump-audio` and a lost device: exact files, batching,
failures it survives, and requests cancelled at stop."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from device.diagnostics.dumper import DebugDumper
from device.diagnostics.recorder import DebugRecorder, DumpedFile
from tests.conftest import ThreadOwner
from tools.signals import ramp, read_wav


def test_a_request_writes_the_three_streams_sample_exact(tmp_path: Path, started: list[ThreadOwner]) -> None:
    rec = DebugRecorder(tmp_path, seconds=1.0)
    rec.raw(ramp(0, 16000).tobytes(), 16000)            # fills the ring exactly
    rec.processed(ramp(100, 8000).tobytes(), 16000)     # half of it
    rec.reference(ramp(0, 30000).tobytes(), 24000)      # wraps: the last 24000 are kept
    dumper = DebugDumper(rec)
    started.append(dumper)
    dumper.start()
    files = dumper.request("test").result(5)
    expected = {"raw": (ramp(0, 16000), 16000), "processed": (ramp(100, 8000), 16000),
                "reference": (ramp(6000, 24000), 24000)}
    for f in files:
        data, rate = read_wav(f.path)
        np.testing.assert_array_equal(data, expected[f.stream][0])
        assert rate == f.sample_rate == expected[f.stream][1] and f.samples == len(data)
    assert (dumper.requested, dumper.dumps, dumper.failures) == (1, 1, 0)


def test_dumps_while_the_audio_threads_write_are_whole_runs_of_what_was_fed(
        tmp_path: Path, started: list[ThreadOwner]) -> None:
    rec = DebugRecorder(tmp_path, seconds=0.5)
    dumper = DebugDumper(rec)
    started.append(dumper)
    dumper.start()
    rec.raw(ramp(0, 160).tobytes(), 16000)
    rec.reference(ramp(0, 480).tobytes(), 48000)
    stop = threading.Event()

    def capture() -> None:   # consecutive 10 ms frames of one long ramp, as a mic thread would
        n = 160
        while not stop.is_set():
            rec.raw(ramp(n, 160).tobytes(), 16000)
            n += 160

    def playback() -> None:
        n = 480
        while not stop.is_set():
            rec.reference(ramp(n, 480).tobytes(), 48000)
            n += 480

    with ThreadPoolExecutor(max_workers=2) as pool:
        writers = [pool.submit(capture), pool.submit(playback)]
        try:
            for _ in range(10):
                for f in dumper.request("test").result(5):
                    data, _ = read_wav(f.path)
                    if f.stream == "processed":
                        assert len(data) == 0
                        continue
                    # No torn frame, no gap: exactly the ramp from some sample on.
                    start = (int(data[0]) + 30000) % 60000
                    np.testing.assert_array_equal(data, ramp(start, len(data)))
        finally:
            stop.set()
        for writer in writers:
            writer.result(timeout=10)
    assert dumper.dumps == 10


def test_requests_waiting_together_share_one_dump_per_directory(tmp_path: Path,
                                                                started: list[ThreadOwner]) -> None:
    rec = DebugRecorder(tmp_path / "rec", seconds=1.0)
    rec.raw(ramp(0, 320).tobytes(), 16000)
    dumper = DebugDumper(rec)
    started.append(dumper)
    a = dumper.request("SIGUSR1")              # before the thread runs: all three wait together
    b = dumper.request("ctl dump-audio")
    c = dumper.request("capture lost", tmp_path / "rec" / "hardware-lost")
    dumper.start()
    assert a.result(5) == b.result(5)
    assert [f.path.parent for f in c.result(5)] == [tmp_path / "rec" / "hardware-lost"] * 3
    assert dumper.dumps == 2


def test_a_failed_dump_is_reported_and_the_thread_goes_on(tmp_path: Path, started: list[ThreadOwner]) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    rec = DebugRecorder(tmp_path / "a-file", seconds=1.0)
    dumper = DebugDumper(rec)
    started.append(dumper)
    dumper.start()
    with pytest.raises(OSError):
        dumper.request("test").result(5)
    files = dumper.request("test", tmp_path / "good").result(5)
    assert all(f.path.exists() for f in files)
    assert (dumper.dumps, dumper.failures) == (1, 1) and dumper.alive


class _HeldRecorder(DebugRecorder):
    """A recorder whose dumps wait for the test to let them go."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, seconds=1.0)
        self.entered = threading.Event()
        self.release = threading.Event()

    def dump(self, directory: Path | None = None, reason: str = "") -> list[DumpedFile]:
        self.entered.set()
        assert self.release.wait(5)
        return super().dump(directory, reason)


def test_stop_finishes_the_dump_in_progress_and_cancels_the_rest(tmp_path: Path) -> None:
    rec = _HeldRecorder(tmp_path)
    dumper = DebugDumper(rec)
    dumper.start()
    first = dumper.request("first")
    assert rec.entered.wait(5)
    second = dumper.request("second")
    dumper.stop()
    rec.release.set()
    assert dumper.join(5)
    assert len(first.result(5)) == 3
    assert second.cancelled()

"""The dump thread behind SIGUSR1, `ctl dump-audio` and a lost device: exact files, batching,
failures it survives, and requests cancelled at stop."""
from __future__ import annotations

import threading
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from device.debug_dump import DebugDumper
from device.debug_record import DebugRecorder, DumpedFile


def _ramp(start: int, n: int) -> np.ndarray:
    """Distinct, recognisable samples: a counter folded into the PCM16 range."""
    return ((np.arange(start, start + n) % 60000) - 30000).astype("<i2")


def _read(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2"), wav.getframerate()


@pytest.fixture
def dumpers() -> Iterator[list[DebugDumper]]:
    started: list[DebugDumper] = []
    yield started
    for dumper in started:
        dumper.stop()
        assert dumper.join(5)


def test_a_request_writes_the_three_streams_sample_exact(tmp_path: Path, dumpers: list[DebugDumper]) -> None:
    rec = DebugRecorder(tmp_path, seconds=1.0)
    rec.raw(_ramp(0, 16000).tobytes(), 16000)            # fills the ring exactly
    rec.processed(_ramp(100, 8000).tobytes(), 16000)     # half of it
    rec.reference(_ramp(0, 30000).tobytes(), 24000)      # wraps: the last 24000 are kept
    dumper = DebugDumper(rec)
    dumpers.append(dumper)
    dumper.start()
    files = dumper.request("test").result(5)
    expected = {"raw": (_ramp(0, 16000), 16000), "processed": (_ramp(100, 8000), 16000),
                "reference": (_ramp(6000, 24000), 24000)}
    for f in files:
        data, rate = _read(f.path)
        np.testing.assert_array_equal(data, expected[f.stream][0])
        assert rate == f.sample_rate == expected[f.stream][1] and f.samples == len(data)
    assert (dumper.requested, dumper.dumps, dumper.failures) == (1, 1, 0)


def test_dumps_while_the_audio_threads_write_are_whole_runs_of_what_was_fed(
        tmp_path: Path, dumpers: list[DebugDumper]) -> None:
    rec = DebugRecorder(tmp_path, seconds=0.5)
    dumper = DebugDumper(rec)
    dumpers.append(dumper)
    dumper.start()
    rec.raw(_ramp(0, 160).tobytes(), 16000)
    rec.reference(_ramp(0, 480).tobytes(), 48000)
    stop = threading.Event()

    def capture() -> None:   # consecutive 10 ms frames of one long ramp, as a mic thread would
        n = 160
        while not stop.is_set():
            rec.raw(_ramp(n, 160).tobytes(), 16000)
            n += 160

    def playback() -> None:
        n = 480
        while not stop.is_set():
            rec.reference(_ramp(n, 480).tobytes(), 48000)
            n += 480

    with ThreadPoolExecutor(max_workers=2) as pool:
        writers = [pool.submit(capture), pool.submit(playback)]
        try:
            for _ in range(10):
                for f in dumper.request("test").result(5):
                    data, _ = _read(f.path)
                    if f.stream == "processed":
                        assert len(data) == 0
                        continue
                    # No torn frame, no gap: exactly the ramp from some sample on.
                    start = (int(data[0]) + 30000) % 60000
                    np.testing.assert_array_equal(data, _ramp(start, len(data)))
        finally:
            stop.set()
        for writer in writers:
            writer.result(timeout=10)
    assert dumper.dumps == 10


def test_requests_waiting_together_share_one_dump_per_directory(tmp_path: Path,
                                                                dumpers: list[DebugDumper]) -> None:
    rec = DebugRecorder(tmp_path / "rec", seconds=1.0)
    rec.raw(_ramp(0, 320).tobytes(), 16000)
    dumper = DebugDumper(rec)
    dumpers.append(dumper)
    a = dumper.request("SIGUSR1")              # before the thread runs: all three wait together
    b = dumper.request("ctl dump-audio")
    c = dumper.request("capture lost", tmp_path / "rec" / "hardware-lost")
    dumper.start()
    assert a.result(5) == b.result(5)
    assert [f.path.parent for f in c.result(5)] == [tmp_path / "rec" / "hardware-lost"] * 3
    assert dumper.dumps == 2


def test_a_failed_dump_is_reported_and_the_thread_goes_on(tmp_path: Path, dumpers: list[DebugDumper]) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    rec = DebugRecorder(tmp_path / "a-file", seconds=1.0)
    dumper = DebugDumper(rec)
    dumpers.append(dumper)
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

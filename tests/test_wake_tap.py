"""The wake word tap (device/audio/wake_tap.py): the detector hears the processed mic only while
the device listens; a detection latches, and from that frame on the capture thread holds the mic
in the first-words buffer until the main thread hands over to the call's own hold, or refuses.

The detector here is a scripted double with the real one's interface (`process(pcm, now)`,
`reset()`): it "hears" the wake word in a frame whose samples all carry a marker value, so the
tests can say exactly which frame ended the wake word. The real detector on real speech is
tested in tests/e2e/test_wake_word.py.
"""
from __future__ import annotations

import logging
import queue
from dataclasses import dataclass

import numpy as np
import pytest

from device.audio.buffers import JitterBuffer, UplinkQueue
from device.audio.dsp import make_capture_dsp
from device.audio.formats import FRAME_SAMPLES, bytes_for
from device.audio.pipeline import AudioPipeline
from device.audio.wake_tap import Detection, WakeTap
from device.core.events import Event
from hw.clock import ManualClock, UnpacedClock
from hw.fake_audio import FakeAudioBackend
from tools.polling import wait_until

WAKE_VALUE = 1234   # a frame of this value ends the wake word


@dataclass(frozen=True)
class Heard:
    model: str
    score: float


class ScriptedDetector:
    """Fires on a frame whose samples are all WAKE_VALUE; records what it was given (the capture
    thread writes, the test reads after waiting)."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.frames: list[int] = []   # the first sample of each frame processed
        self.resets = 0
        self.closed = False
        self.fail_on = fail_on

    def process(self, pcm: bytes, now: float) -> Detection | None:
        samples = np.frombuffer(pcm, "<i2")
        self.frames.append(int(samples[0]))
        if self.fail_on is not None and int(samples[0]) == self.fail_on:
            raise RuntimeError("detector bug")
        return Heard("okay_nabu", 0.93) if np.all(samples == WAKE_VALUE) else None

    def reset(self) -> None:
        self.resets += 1

    def close(self) -> None:
        self.closed = True


def frame(value: int) -> bytes:
    return np.full(FRAME_SAMPLES, value, "<i2").tobytes()


def make_tap(detector: ScriptedDetector) -> tuple[WakeTap, list[Detection]]:
    heard: list[Detection] = []
    return WakeTap(detector, heard.append, ManualClock()), heard


def test_nothing_reaches_the_detector_unless_listening() -> None:
    detector = ScriptedDetector()
    tap, heard = make_tap(detector)
    for value in (1, WAKE_VALUE, 2):
        tap.observe(frame(value))
    assert detector.frames == [] and heard == [] and tap.frames_heard == 0
    tap.listen(True)
    tap.observe(frame(3))
    tap.listen(False)            # mute, a call: stops at once
    tap.observe(frame(WAKE_VALUE))
    assert detector.frames == [3] and heard == [] and not tap.holding


def test_a_detection_latches_and_is_reported_once() -> None:
    detector = ScriptedDetector()
    tap, heard = make_tap(detector)
    tap.listen(True)
    for value in (1, 2, WAKE_VALUE, 5, WAKE_VALUE):
        tap.observe(frame(value))
    assert heard == [Heard("okay_nabu", 0.93)] and tap.detections == 1
    assert tap.holding
    assert detector.frames == [1, 2, WAKE_VALUE]   # latched: the detector gets nothing more
    tap.listen(True)             # another event while the detection is queued: still latched
    assert tap.holding


def test_stopping_or_refusing_releases_the_latch_and_listening_again_starts_fresh() -> None:
    detector = ScriptedDetector()
    tap, heard = make_tap(detector)
    tap.listen(True)
    tap.observe(frame(WAKE_VALUE))
    resets = detector.resets
    tap.refuse()                 # the machine ignored it (it raced mute)
    assert not tap.holding and tap.listening
    tap.observe(frame(7))
    assert detector.resets == resets + 1 and detector.frames[-1] == 7   # reset on its own thread
    tap.observe(frame(WAKE_VALUE))
    tap.listen(False)            # the call it started: stops, latch released
    assert not tap.holding and not tap.listening
    tap.listen(True)             # the call ended: listening again, from a clean detector
    tap.observe(frame(8))
    assert detector.resets == resets + 2 and len(heard) == 2


def test_a_failing_detector_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "device.audio.wake_tap")
    detector = ScriptedDetector(fail_on=9)
    tap, heard = make_tap(detector)
    tap.listen(True)
    for value in (9, 9, 9, WAKE_VALUE):
        tap.observe(frame(value))
    assert tap.detector_errors == 3 and len(heard) == 1
    assert sum("wake word detector failed" in r.message for r in caplog.records) == 1


# -- in the capture pipeline ------------------------------------------------------------------------
@pytest.fixture
def events() -> queue.SimpleQueue[Event]:
    return queue.SimpleQueue()


def wake_pipeline(tap: WakeTap, events: queue.SimpleQueue[Event]) -> tuple[AudioPipeline, FakeAudioBackend]:
    backend = FakeAudioBackend(clock_factory=UnpacedClock)
    pipeline = AudioPipeline(backend, make_capture_dsp("off", 0, 0), UplinkQueue(100_000),
                             JitterBuffer(bytes_for(16000, 1000)), events.put, clock=UnpacedClock(),
                             preroll_frames=100_000, on_frame=tap.observe, held=lambda: tap.holding)
    return pipeline, backend


def spoken(values: list[int]) -> bytes:
    return b"".join(frame(v) for v in values)


QUESTION = list(range(100, 140))   # what follows the wake word in the same breath


def test_the_words_after_the_wake_word_are_held_from_the_detection_on(events, started) -> None:
    detector = ScriptedDetector()
    tap, heard = make_tap(detector)
    pipeline, backend = wake_pipeline(tap, events)
    started.append(pipeline)
    backend.inject(spoken([1, 2, 3, WAKE_VALUE, *QUESTION]))
    tap.listen(True)
    pipeline.start()
    assert wait_until(lambda: len(pipeline.preroll) > len(QUESTION) + 10, 10)
    assert len(heard) == 1 and pipeline.uplink.dropped_chunks == 0
    # Another transition before the detection is handled does not discard what is held...
    pipeline.set_mic_gate(False)
    # ...then the main thread handles it: the call's own hold first, then the latch released.
    pipeline.set_mic_gate(False, hold=True)
    tap.listen(False)
    held = [int(np.frombuffer(f, "<i2")[0]) for f in pipeline.preroll.take(len(QUESTION) + 1)]
    assert held == [WAKE_VALUE, *QUESTION]   # from the end of the wake word, in order, nothing lost
    assert len(pipeline.uplink) == 0          # and nothing left for the network


def test_a_refused_detection_sends_nothing(events, started) -> None:
    detector = ScriptedDetector()
    tap, heard = make_tap(detector)
    pipeline, backend = wake_pipeline(tap, events)
    started.append(pipeline)
    backend.inject(spoken([WAKE_VALUE, *QUESTION]))
    tap.listen(True)
    pipeline.start()
    assert wait_until(lambda: len(pipeline.preroll) > len(QUESTION), 10)
    assert len(heard) == 1
    # Muted in the meantime: the tap stops first, then the gate's close discards the held audio.
    tap.listen(False)
    pipeline.set_mic_gate(False)
    assert len(pipeline.preroll) == 0
    captured = pipeline.counters()["frames_captured"]
    assert wait_until(lambda: pipeline.counters()["frames_captured"] > captured + 20, 10)
    assert len(pipeline.preroll) == 0 and len(pipeline.uplink) == 0


def test_after_close_no_frame_reaches_the_detector() -> None:
    """Shutdown releases the detector; a capture thread that outlived its join and hands in
    another frame is refused, and a second close is harmless."""
    detector = ScriptedDetector()
    tap, heard = make_tap(detector)
    tap.listen(True)
    tap.observe(frame(1))
    tap.close()
    assert detector.closed and not tap.listening
    tap.listen(True)   # as a capture thread sees it that read `listening` before the close
    tap.observe(frame(WAKE_VALUE))
    tap.close()
    assert detector.frames == [1] and heard == []

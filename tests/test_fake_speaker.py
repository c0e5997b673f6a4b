"""The fake speaker's own log of writes and drops (hw.fake_audio): what tests assert barge-in on."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from hw.clock import ManualClock, UnpacedClock
from hw.fake_audio import SPEAKER_LOG_OPS, FakeAudioBackend, SpeakerOp

PERIOD = 160


def period(value: int) -> bytes:
    return np.full(PERIOD, value, "<i2").tobytes()


def test_writes_and_drops_are_logged_in_order_with_what_was_discarded() -> None:
    clock = ManualClock()
    backend = FakeAudioBackend(clock_factory=lambda: clock)
    speaker = backend.playback(16000, PERIOD, buffer_periods=4)
    speaker.open()
    for value in (1, 2, 3):
        speaker.write(period(value))      # three periods queued, none played yet
    clock.advance(0.01)                   # one period plays
    speaker.drop()                        # the other two are discarded
    speaker.write(period(4))
    speaker.close()
    assert backend.speaker_history() == [
        SpeakerOp(0, "write", 16000, period(1)), SpeakerOp(1, "write", 16000, period(2)),
        SpeakerOp(2, "write", 16000, period(3)), SpeakerOp(3, "drop", 16000, discarded_frames=2 * PERIOD),
        SpeakerOp(4, "write", 16000, period(4)),
    ]
    assert backend.speaker_ops == 5
    assert [op.seq for op in backend.speaker_history(since=3)] == [3, 4]
    assert bytes(backend.played) == period(1)   # what was played, as before


def test_the_log_is_bounded_and_says_when_ops_were_forgotten() -> None:
    backend = FakeAudioBackend(clock_factory=UnpacedClock)
    speaker = backend.playback(16000, PERIOD)
    speaker.open()
    for _ in range(SPEAKER_LOG_OPS + 10):
        speaker.write(period(0))
    speaker.close()
    assert backend.speaker_ops == SPEAKER_LOG_OPS + 10
    kept = backend.speaker_history(since=10)
    assert len(kept) == SPEAKER_LOG_OPS and kept[0].seq == 10
    with pytest.raises(LookupError, match="forgotten"):
        backend.speaker_history()
    with pytest.raises(LookupError, match="forgotten"):
        backend.wait_speaker(lambda op: True, timeout=0, since=5)


def test_no_log_without_history() -> None:
    backend = FakeAudioBackend(clock_factory=UnpacedClock, keep_history=False)
    speaker = backend.playback(16000, PERIOD)
    speaker.open()
    speaker.write(period(1))
    speaker.drop()
    speaker.close()
    assert backend.speaker_ops == 0 and backend.speaker_history() == [] and not backend.played


def test_a_test_waits_for_an_op_written_on_another_thread() -> None:
    backend = FakeAudioBackend(clock_factory=UnpacedClock)
    speaker = backend.playback(16000, PERIOD)
    speaker.open()
    go = threading.Event()

    def writer() -> None:
        assert go.wait(5)
        for value in (0, 0, 9000, 0):
            speaker.write(period(value))

    thread = threading.Thread(target=writer)
    thread.start()
    def loud(op: SpeakerOp) -> bool:
        return max(np.frombuffer(op.pcm, "<i2"), default=0) > 0

    assert backend.wait_speaker(loud, timeout=0) is None
    go.set()
    found = backend.wait_speaker(loud, timeout=5)
    assert found is not None and found.seq == 2 and found.pcm == period(9000)
    assert backend.wait_speaker_ops(4, timeout=5)
    thread.join(5)
    assert not thread.is_alive()
    assert backend.wait_speaker(lambda op: op.seq == 2, timeout=0, since=3) is None   # `since` is honoured
    speaker.close()

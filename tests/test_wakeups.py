"""The wake-up cuts of issue 16: the uplink queue's signal, the call timers' next deadline, and the
kernel names of the service's threads (what the bench's per-thread table reads)."""
from __future__ import annotations

import threading
from pathlib import Path

from device.audio.buffers import UplinkChunk, UplinkQueue
from device.core.threads import OwnedThread, name_os_thread
from device.service.timers import CallTimers, earliest_due
from hw.clock import ManualClock


def _getter(queue: UplinkQueue, out: list[UplinkChunk | None]) -> threading.Thread:
    thread = threading.Thread(target=lambda: out.append(queue.get(30.0)))
    thread.start()
    return thread


def test_a_put_from_another_thread_ends_a_waiting_get() -> None:
    queue = UplinkQueue(4)
    got: list[UplinkChunk | None] = []
    thread = _getter(queue, got)
    chunk = UplinkChunk(b"\x01\x00" * 4, 1.0)
    queue.put(chunk)
    thread.join(10)
    assert got == [chunk]


def test_wake_ends_a_waiting_get_with_nothing_queued() -> None:
    queue = UplinkQueue(4)
    got: list[UplinkChunk | None] = []
    thread = _getter(queue, got)
    while thread.is_alive():   # a wake before the get started waiting is forgotten: repeat it
        queue.wake()
        thread.join(0.01)
    assert got == [None]


def test_a_leftover_wake_up_loses_no_chunk_and_invents_none() -> None:
    queue = UplinkQueue(4)
    first, second = UplinkChunk(b"\x01\x00", 1.0), UplinkChunk(b"\x02\x00", 2.0)
    queue.put(first)
    assert queue.get(0.0) is first       # taken without waiting: the put's signal is left over
    assert queue.get(0.0) is None        # the leftover signal brings no chunk
    queue.put(second)
    assert queue.get(0.0) is second
    assert len(queue) == 0


def test_full_queue_still_drops_the_oldest_audio_and_keeps_commits() -> None:
    queue = UplinkQueue(2)
    commit = UplinkChunk(b"", 0.0, commit=True)
    queue.put(commit)
    queue.put(UplinkChunk(b"\x01\x00", 1.0))
    queue.put(UplinkChunk(b"\x02\x00", 2.0))
    assert queue.dropped_chunks == 1
    assert queue.get(0.0) is commit
    assert queue.get(0.0).pcm == b"\x02\x00"   # type: ignore[union-attr]


def test_due_in_is_the_earliest_timer_on_the_injected_clock() -> None:
    clock = ManualClock(100.0)
    timers = CallTimers(clock)
    assert timers.due_in() == float("inf")
    timers.start("max_call", 30.0)
    timers.start("idle", 5.0)
    assert timers.due_in() == 5.0
    clock.advance(7.0)
    assert timers.due_in() == 0.0
    assert timers.pop_due() == "idle"
    assert timers.due_in() == 23.0


def _comm() -> str:
    return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()


def test_an_owned_thread_carries_its_name_in_the_kernel() -> None:
    seen: list[str] = []

    class Named(OwnedThread):
        def run(self) -> None:
            seen.append(_comm())

    thread = Named("audio-capture-long-name")
    thread.start()
    assert thread.join(10)
    assert seen == ["audio-capture-l"]   # the kernel keeps 15 bytes


def test_name_os_thread_names_only_the_calling_thread() -> None:
    before = _comm()
    names: list[str] = []

    def run() -> None:
        assert name_os_thread("helper")
        names.append(_comm())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert names == ["helper"]
    assert _comm() == before


def test_earliest_due_counts_only_what_runs_and_is_never_negative() -> None:
    assert earliest_due(10.0, ()) == float("inf")
    assert earliest_due(10.0, ((12.5, True), (11.0, False), (15.0, True))) == 2.5
    assert earliest_due(10.0, ((9.0, True),)) == 0.0
    assert earliest_due(10.0, ((11.0, False),)) == float("inf")

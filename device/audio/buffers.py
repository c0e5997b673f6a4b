"""Bounded hand-over buffers between the audio threads and the network threads.

Every bound is explicit: a full queue drops (the oldest mic audio, the newest agent audio) and
counts what it dropped, so nothing grows without limit and no loss is silent.
"""
from __future__ import annotations

import bisect
import threading
from collections import deque
from dataclasses import dataclass

from device.audio.formats import BYTES_PER_SAMPLE


@dataclass(frozen=True, slots=True)
class UplinkChunk:
    """20 ms of processed mic audio at the session rate, stamped when its last frame was read.

    A chunk with `commit=True` (and no audio) is the push-to-talk commit: it travels through the
    same queue so that it can never overtake audio captured before it. `generation` is that of the
    `StreamFormat` the audio was made for (0: before any session); when a new session starts,
    chunks made for the previous one may still be in flight, and the sender drops them instead of
    sending audio made at another session's rate.
    """

    pcm: bytes
    captured_at: float
    commit: bool = False
    generation: int = 0


class UplinkQueue:
    """Mic chunks from the capture thread to the sender thread; drops the oldest when full.

    No wake-up into a held lock: a `threading.Condition` notifies while the putter still holds
    its lock, so the woken sender (on one pinned CPU it preempts the capture thread at once) can
    find that lock taken and sleep again until the put returns. Here the deque is guarded by a
    plain lock held only around the deque itself, and the wake-up is a separate one-permit signal
    released after that lock is let go. (The sender still waits once for the GIL per chunk, which
    no queue avoids: docs/benchmarks.md.) `queue.SimpleQueue` would do the same, but cannot drop
    the oldest chunk (sparing commits) or be cleared.
    """

    def __init__(self, max_chunks: int) -> None:
        self._chunks: deque[UplinkChunk] = deque()
        self._max = max_chunks
        self._lock = threading.Lock()
        self._signal = threading.Lock()   # locked: nothing new since the last get looked
        self._signal.acquire()
        self.dropped_chunks = 0
        self.dropped_bytes = 0

    def _notify(self) -> None:
        try:
            self._signal.release()
        except RuntimeError:
            pass   # already released: a wake-up is pending

    def put(self, chunk: UplinkChunk) -> None:
        with self._lock:
            if len(self._chunks) >= self._max:
                index = next((i for i, c in enumerate(self._chunks) if not c.commit), 0)
                old = self._chunks[index]
                del self._chunks[index]  # the oldest audio; a commit is never dropped
                self.dropped_chunks += 1
                self.dropped_bytes += len(old.pcm)
            self._chunks.append(chunk)
        self._notify()

    def get(self, timeout: float) -> UplinkChunk | None:
        """The oldest chunk, waiting up to `timeout` s for one (None: none came, or `wake`)."""
        chunks = self._chunks
        if not chunks:
            self._signal.acquire(False)   # forget a wake-up for a chunk already taken
            if not chunks:                # a put in between released the signal again
                self._signal.acquire(True, timeout)
        with self._lock:
            return chunks.popleft() if chunks else None

    def clear(self) -> int:
        """Discard everything queued (mute, new session). Returns the chunks discarded."""
        with self._lock:
            count = len(self._chunks)
            self._chunks.clear()
            return count

    def wake(self) -> None:
        """End a waiting `get` now (it returns None if nothing is queued)."""
        self._notify()

    @property
    def capacity(self) -> int:
        """The bound in chunks (a put beyond it drops the oldest)."""
        return self._max

    def __len__(self) -> int:
        return len(self._chunks)


class JitterBuffer:
    """Agent audio from the receiver thread to the playback thread, bounded in bytes.

    `push` appends (dropping what does not fit, counted as overflow: the audio already queued keeps
    playing without a hole), `pop` takes exactly one period, `clear` empties it at once
    (interruption). Holds whole PCM16 samples only.
    """

    def __init__(self, max_bytes: int) -> None:
        self._buf = bytearray()
        self._max = max_bytes
        self._lock = threading.Lock()
        self.overflow_bytes = 0
        self.overflow_events = 0
        self.flushed_bytes = 0
        self.high_water = 0

    @property
    def max_bytes(self) -> int:
        return self._max

    def set_limit(self, max_bytes: int) -> None:
        with self._lock:
            self._max = max_bytes

    def push(self, pcm: bytes) -> bool:
        """Queue agent audio; returns False when some of it did not fit."""
        with self._lock:
            room = self._max - len(self._buf)
            if len(pcm) > room:
                room -= room % BYTES_PER_SAMPLE
                self.overflow_bytes += len(pcm) - max(room, 0)
                self.overflow_events += 1
                if room > 0:
                    self._buf += pcm[:room]
                return False
            self._buf += pcm
            self.high_water = max(self.high_water, len(self._buf))
            return True

    def pop(self, nbytes: int) -> bytes | None:
        """Exactly `nbytes` (the tail padded with silence), or None when nothing is queued."""
        with self._lock:
            if not self._buf:
                return None
            out = bytes(self._buf[:nbytes])
            del self._buf[:nbytes]
        if len(out) < nbytes:
            out += bytes(nbytes - len(out))
        return out

    def clear(self) -> int:
        with self._lock:
            count = len(self._buf)
            self._buf.clear()
            self.flushed_bytes += count
            return count

    def __len__(self) -> int:
        return len(self._buf)


class LocalSoundQueue:
    """Local sounds (earcons) from the main thread to the playback thread, mixed over agent audio.

    Holds PCM16 at one rate, the session's: `reset` (on the connection thread, when the session
    rate changes) empties it and sets the new rate and bound, and a sound pushed for any other
    rate is refused, so a chime made just before a renegotiation never plays at the wrong speed.
    Bounded in bytes: once `max_bytes` are queued, further sounds are refused whole (counted);
    a sound is never cut.
    """

    def __init__(self, rate: int, max_bytes: int) -> None:
        self._buf = bytearray()
        self._rate = rate
        self._max = max_bytes
        self._lock = threading.Lock()
        self.refused_sounds = 0

    def reset(self, rate: int, max_bytes: int) -> None:
        with self._lock:
            self._buf.clear()
            self._rate = rate
            self._max = max_bytes

    def push(self, pcm: bytes, rate: int) -> bool:
        """Queue a whole sound made at `rate`; False (counted) when the rate is not the current
        one or the queue is full."""
        with self._lock:
            if rate != self._rate or len(self._buf) >= self._max:
                self.refused_sounds += 1
                return False
            self._buf += pcm
            return True

    def pop(self, nbytes: int) -> bytes | None:
        """Exactly `nbytes` (the tail padded with silence), or None when nothing is queued."""
        if not self._buf:   # the usual case, without the lock: only this thread takes from it
            return None
        with self._lock:
            out = bytes(self._buf[:nbytes])
            del self._buf[:nbytes]
        return out + bytes(nbytes - len(out)) if len(out) < nbytes else out

    def __len__(self) -> int:
        return len(self._buf)


class LatencyWindow:
    """The last N latency samples (seconds) for percentiles. Written by one thread, read by any.

    Kept sorted as it is written (a bisect insert and delete per sample, microseconds), so a
    percentile is an index: the service reads them in every status snapshot (several times a
    second, on the main thread), where sorting 5000 samples each time would cost milliseconds
    of GIL on a Pi.
    """

    def __init__(self, size: int = 5000) -> None:
        self._order: deque[float] = deque()   # arrival order: which sample to evict next
        self._sorted: list[float] = []        # the same samples, sorted
        self._size = size
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            if len(self._order) >= self._size:
                oldest = self._order.popleft()
                del self._sorted[bisect.bisect_left(self._sorted, oldest)]
            self._order.append(seconds)
            bisect.insort(self._sorted, seconds)

    def percentiles_ms(self, *quantiles: float) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        with self._lock:
            data = self._sorted
            for q in quantiles:
                key = f"p{int(q * 100)}"
                if not data:
                    out[key] = None
                    continue
                index = min(len(data) - 1, max(0, round(q * (len(data) - 1))))
                out[key] = round(data[index] * 1000, 3)
        return out

    def __len__(self) -> int:
        return len(self._order)

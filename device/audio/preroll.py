"""The first words: processed mic frames held while the call a person just started connects.

A person presses and starts talking at once, before the session exists. The capture thread keeps
the processed 16 kHz frames from the press on (`SetMicGate(hold=True)`), bounded (oldest dropped
first, counted), and once the gate opens sends them first, in order, then the live audio behind
them through the same FIFO until it has caught up, at most as fast as the uplink queue has room
(a 3 s burst into a 2 s queue would otherwise drop its own beginning). They are kept at the DSP
rate because the session's rate is not known until `session.created`; the resampler converts them
like any live frame.

Mute or a hang-up before the session comes discards them at once (`clear`); a frame the capture
thread was still processing when that happened carries the previous generation and is refused.
"""
from __future__ import annotations

import collections
import threading


class Preroll:
    """Bounded FIFO of 10 ms frames. `push`/`take` on the capture thread, `clear` on the main thread."""

    def __init__(self, max_frames: int) -> None:
        self.max_frames = max_frames
        self.dropped_frames = 0   # held too long: the oldest went first
        self.sent_frames = 0      # handed on to the uplink once the gate opened
        self.held_frames = 0      # ever held
        self._frames: collections.deque[bytes] = collections.deque()
        self._lock = threading.Lock()
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, frame: bytes, generation: int) -> bool:
        """Hold `frame` unless a `clear` happened since `generation` was read (then refuse it)."""
        if self.max_frames <= 0:
            return False
        with self._lock:
            if generation != self._generation:
                return False
            if len(self._frames) >= self.max_frames:
                self._frames.popleft()
                self.dropped_frames += 1
            self._frames.append(frame)
            self.held_frames += 1
            return True

    def take(self, max_frames: int) -> list[bytes]:
        """The oldest `max_frames` frames (fewer if fewer are held), removed."""
        with self._lock:
            count = min(max_frames, len(self._frames))
            out = [self._frames.popleft() for _ in range(count)]
            self.sent_frames += count
            return out

    def clear(self) -> int:
        """Discard everything held (mute, hang-up); returns how many frames went."""
        with self._lock:
            self._generation += 1
            count = len(self._frames)
            self._frames.clear()
            return count

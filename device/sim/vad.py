"""A deliberately simple energy VAD: finds where a user utterance starts and ends in a PCM16 stream.

Time is stream time (samples received), not wall-clock time, so a test may push a second of audio
in a millisecond and still get the same answer. Good enough to stand in for the cloud's VAD: the
device under test sends speech-like audio or silence, never a noisy room.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from device.audio.formats import BYTES_PER_SAMPLE

FRAME_MS: Final = 20
_FULL_SCALE: Final = 32768.0


@dataclass(frozen=True)
class VadEvent:
    """`start`: speech confirmed (`at` = stream seconds where it began). `end`: the utterance is
    over; `seconds` = its length from the first to the last voiced frame. An immutable value."""

    kind: Literal["start", "end"]
    at: float
    seconds: float = 0.0


class EnergyVad:
    """RMS over 20 ms frames against a dBFS threshold, with hangover.

    Speech starts after `min_speech_ms` of consecutive frames above the threshold and ends after
    `min_silence_ms` of consecutive frames below it. Owned by one session (the event-loop thread);
    not thread-safe.
    """

    def __init__(self, sample_rate: int, threshold_dbfs: float = -40.0,
                 min_speech_ms: int = 200, min_silence_ms: int = 550) -> None:
        self.sample_rate = sample_rate
        self._frame_samples = max(1, sample_rate * FRAME_MS // 1000)
        self._frame_s = self._frame_samples / sample_rate
        self._threshold = _FULL_SCALE * math.pow(10.0, threshold_dbfs / 20.0)
        self._min_speech = max(1, math.ceil(min_speech_ms / FRAME_MS))
        self._min_silence = max(1, math.ceil(min_silence_ms / FRAME_MS))
        self._pending = bytearray()  # a partial frame (or a dangling odd byte) between feeds
        self._frame = 0  # index of the next frame to classify
        self._run = 0  # consecutive voiced frames while not yet in speech
        self._in_speech = False
        self._start = 0
        self._last_voiced = 0
        self._silence = 0

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def feed(self, pcm: bytes) -> list[VadEvent]:
        """Classify the whole frames now available; returns the events they produced, in order."""
        self._pending += pcm
        frame_bytes = self._frame_samples * BYTES_PER_SAMPLE
        n = len(self._pending) // frame_bytes
        if n == 0:
            return []
        samples = np.frombuffer(bytes(self._pending[: n * frame_bytes]), dtype="<i2")
        del self._pending[: n * frame_bytes]
        frames = samples.astype(np.float64).reshape(n, self._frame_samples)
        voiced = np.sqrt(np.mean(frames * frames, axis=1)) >= self._threshold
        events: list[VadEvent] = []
        for is_voiced in voiced.tolist():
            event = self._step(bool(is_voiced))
            if event is not None:
                events.append(event)
        return events

    def _step(self, voiced: bool) -> VadEvent | None:
        index = self._frame
        self._frame += 1
        if not self._in_speech:
            self._run = self._run + 1 if voiced else 0
            if self._run >= self._min_speech:
                self._in_speech = True
                self._start = index - self._run + 1
                self._last_voiced = index
                self._silence = 0
                return VadEvent("start", at=self._start * self._frame_s)
            return None
        if voiced:
            self._last_voiced = index
            self._silence = 0
            return None
        self._silence += 1
        if self._silence >= self._min_silence:
            seconds = self._speech_seconds()
            self._reset_turn()
            return VadEvent("end", at=index * self._frame_s, seconds=seconds)
        return None

    def _speech_seconds(self) -> float:
        if self._in_speech:
            return (self._last_voiced - self._start + 1) * self._frame_s
        return self._run * self._frame_s

    def _reset_turn(self) -> None:
        self._in_speech = False
        self._run = 0
        self._silence = 0

    def flush(self) -> float:
        """End the current turn now (a client commit): returns the speech heard so far, then resets.

        Counts an utterance in progress, or a voiced run still too short to count as speech.
        """
        seconds = self._speech_seconds()
        self._reset_turn()
        return seconds

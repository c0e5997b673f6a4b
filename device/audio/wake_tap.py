"""The wake word tap: the processed mic (after echo cancellation and noise suppression, 16 kHz,
before the uplink resampler) handed to a wake word detector while the device listens for it.

Detection runs on the capture thread, in the same per-frame call as the local VAD: the detector
is a small streaming model (pymicro-wakeword: a 10 ms feature step, an inference every 30 ms)
and running it in line keeps the frame order exact, which the first words after the wake word
need. The main thread decides when it listens (`listen(on)`, from `wake_listening` after every
transition); while it does not, the detector gets nothing at all (mute, a call, shutdown).

At a detection the tap *latches*: from that frame on the capture thread holds the processed mic
in the first-words buffer (device/audio/preroll.py, `holding` is read per frame by the capture
thread) until the main thread has handled the detection, so nothing said right after the wake
word is lost in the moment between the detection and the call's `SetMicGate(hold=True)`.
`listen(False)` or `refuse()` releases the latch; the supervisor releases it *before* a closing
`SetMicGate` clears the buffer (privacy: a refused detection sends nothing), or after the machine's
own hold took over.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from hw.clock import Clock

log = logging.getLogger(__name__)


class Detection(Protocol):
    """What a detector reports (device.wake.detector.WakeDetection)."""

    @property
    def model(self) -> str: ...

    @property
    def score(self) -> float: ...


class StreamingDetector(Protocol):
    """The detector's interface (device.wake.detector.WakeWordDetector)."""

    def process(self, pcm: bytes, now: float) -> Detection | None: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


class WakeTap:
    """Feeds processed mic frames to a wake word detector while listening; latches on a detection.

    Threads: `observe` and `holding` on the capture thread (the detector is only ever called
    there, `reset` included: the main thread only asks for it); `listen`, `refuse` and the
    counters on the main thread (the counters are plain ints read by any thread).
    `on_detection(detection)` is called on the capture thread and must only enqueue.
    """

    def __init__(self, detector: StreamingDetector, on_detection: Callable[[Detection], None],
                 clock: Clock) -> None:
        self._detector = detector
        self._on_detection = on_detection
        self._clock = clock
        self._lock = threading.Lock()   # listening/latched/reset against the capture thread
        self._detector_lock = threading.Lock()   # a detector call against close()
        self._closed = False
        self._listening = False
        self._latched = False
        self._reset_pending = True
        self.frames_heard = 0      # frames the detector was given
        self.detections = 0        # detections reported to the main thread
        self.detector_errors = 0   # frames the detector raised on (logged once)

    # -- main thread ------------------------------------------------------------------------------
    def listen(self, on: bool) -> None:
        """Start or stop listening. Stopping also releases a latch; starting afresh resets the
        detector first (its features and refractory belong to the audio before the pause)."""
        with self._lock:
            if on == self._listening and (on or not self._latched):
                return
            self._listening = on
            self._latched = False
            self._reset_pending = True

    def refuse(self) -> None:
        """The machine did not act on the detection (it raced a change): release the latch."""
        with self._lock:
            self._latched = False
            self._reset_pending = True

    @property
    def listening(self) -> bool:
        return self._listening

    def close(self) -> None:
        """Release the detector at shutdown. A frame already in the detector finishes first; frames
        after it are ignored, so a capture thread that outlives its join (stuck in a read) never
        calls a released detector. Idempotent."""
        with self._detector_lock:
            if self._closed:
                return
            self._closed = True
            self._listening = False
            self._detector.close()

    # -- capture thread ---------------------------------------------------------------------------
    @property
    def holding(self) -> bool:
        """Whether the capture thread holds the mic for the call a detection is starting."""
        return self._latched

    def observe(self, frame: bytes) -> None:
        """One processed 10 ms frame (16 kHz PCM16), from the capture thread."""
        if not self._listening or self._latched:
            return
        with self._lock:
            reset, self._reset_pending = self._reset_pending, False
        with self._detector_lock:
            if self._closed:
                return
            if reset:
                self._detector.reset()
            try:
                detection = self._detector.process(frame, self._clock.monotonic())
            except Exception:   # a detector bug must not stop the mic: log once, count, go on
                self.detector_errors += 1
                if self.detector_errors == 1:
                    log.exception("wake word detector failed on a frame (counted as detector_errors)")
                return
        self.frames_heard += 1
        if detection is None:
            return
        with self._lock:
            if not self._listening:
                return   # stopped meanwhile (mute, a call): the detection is dropped
            self._latched = True
        self.detections += 1
        self._on_detection(detection)

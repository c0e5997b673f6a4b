"""`PipelineShared`: the few values the control side changes while the audio threads run."""
from __future__ import annotations

import threading

from device.audio.formats import StreamFormat


class PipelineShared:
    """The mic gate, the flush request and the current stream format: written by the control side,
    read by the audio threads once per period. Made by `AudioPipeline`, handed to both threads.

    Each field has one writer; the readers take one reference per period, so they need no lock (a
    single attribute assignment is atomic in CPython, and every value here is immutable):

    - `mic_gate` (bool): written by the main thread (`AudioPipeline.set_mic_gate`); read by the
      capture thread once per period, and again before each chunk it queues.
    - `mic_hold` (bool): likewise; while the gate is closed, hold the frames for the session
      being set up instead of dropping them.
    - `format` (`StreamFormat`): written by the connection thread (`AudioPipeline.set_stream_format`,
      at `session.created`); read by the capture and playback threads once per period, and by the
      main thread (earcons are made at its rate; the status shows it).
    - the flush request (`request_flush`/`take_flush`): set by the main thread; taken, and so
      cleared, by the playback thread once per period.

    A flush requested while the playback thread is taking the previous one is merged into it or
    taken at the next period, never lost: the request is an Event, set after its timestamp.
    """

    def __init__(self, fmt: StreamFormat) -> None:
        self.mic_gate = False
        self.mic_hold = False   # main thread: keep the first words (device/audio/preroll.py)
        self.format = fmt
        self._flush = threading.Event()
        self._flush_at = 0.0

    # -- main thread ----------------------------------------------------------------------------
    def request_flush(self, now: float) -> None:
        """Ask the playback thread to drop the device buffer; `now` is when (clock seconds)."""
        self._flush_at = now
        self._flush.set()

    # -- playback thread ------------------------------------------------------------------------
    def take_flush(self) -> float | None:
        """The time of a pending flush request (clearing it), or None when there is none."""
        if not self._flush.is_set():
            return None
        self._flush.clear()
        return self._flush_at

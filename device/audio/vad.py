"""Local voice activity: is the person in front of the device still talking?

The call limits (`idle_hangup_seconds`) need to know whether anyone is there; the server's VAD is
not told to us in a form we can rely on between turns, so this decides locally on the processed
mic (after echo cancellation, so the agent's own voice does not count as the user's).

Per 10 ms frame one raw decision, then a debounce: speech is "on" while at least
`MIN_SPEECH_FRAMES` of the last `WINDOW_FRAMES` frames were speech (100 ms in 300 ms), so a door
slam or a click is not a person. The raw decision is webrtc-noise-gain's `is_speech` when that
processor runs (noise suppression or auto gain on); without it, an energy detector: the frame's
level is compared with a tracked noise floor (follows a quieter room at once, a louder one slowly,
so steady fan noise becomes the floor and speech stands out). Hand-written because it is a few
lines of arithmetic per frame; a VAD library (webrtcvad, silero) would be a second model of the
same signal and a heavier dependency than the question needs.
"""
from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Final

import numpy as np

WINDOW_FRAMES: Final = 30
MIN_SPEECH_FRAMES: Final = 10
ENERGY_MARGIN_DB: Final = 12.0     # speech is this far above the noise floor...
ENERGY_MIN_DBFS: Final = -50.0     # ...and above this absolute level (a silent room is not speech)
FLOOR_RISE_DB: Final = 0.02        # per frame: 2 dB/s, so a sentence does not become the floor
SILENCE_DBFS: Final = -120.0


def frame_dbfs(frame: bytes) -> float:
    """RMS level of PCM16 `frame` in dB below full scale (-120 for digital silence)."""
    samples = np.frombuffer(frame, "<i2").astype(np.float32)
    if not len(samples):
        return SILENCE_DBFS
    rms = math.sqrt(float(np.mean(samples * samples)))
    return 20 * math.log10(rms / 32768) if rms > 0 else SILENCE_DBFS


class SpeechDetector:
    """Debounced speech decision per processed mic frame.

    `observe` is called by the capture thread for every 10 ms frame after the DSP; `speech_frames`
    (frames during which speech was on, never decreasing) and `active` may be read by any thread:
    the supervisor compares `speech_frames` between ticks to see whether the person spoke.
    `dsp_flag` returns the DSP's own decision for the frame just processed, or is None to use the
    energy detector.
    """

    def __init__(self, dsp_flag: Callable[[], bool] | None) -> None:
        self.dsp_flag = dsp_flag
        self.kind = "webrtc" if dsp_flag is not None else "energy"
        self.speech_frames = 0
        self.active = False
        self._last_frame = b""          # for `level_dbfs`, computed only when read
        self._window: collections.deque[bool] = collections.deque(maxlen=WINDOW_FRAMES)
        self._count = 0
        self._floor = ENERGY_MIN_DBFS - ENERGY_MARGIN_DB

    @property
    def level_dbfs(self) -> float:
        """The last frame's level (the event stream's mic meter, ~10 reads a second at most): with
        the DSP's own speech flag, computed here on demand rather than for every frame."""
        return frame_dbfs(self._last_frame)

    def _raw(self, frame: bytes) -> bool:
        self._last_frame = frame
        if self.dsp_flag is not None:
            return self.dsp_flag()
        level = frame_dbfs(frame)
        if level < self._floor:
            self._floor = level
        else:
            self._floor += FLOOR_RISE_DB
        return level > max(self._floor + ENERGY_MARGIN_DB, ENERGY_MIN_DBFS)

    def observe(self, frame: bytes) -> None:
        raw = self._raw(frame)
        if len(self._window) == WINDOW_FRAMES:
            self._count -= self._window[0]
        self._window.append(raw)
        self._count += raw
        self.active = self._count >= MIN_SPEECH_FRAMES
        if self.active:
            self.speech_frames += 1

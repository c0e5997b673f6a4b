"""The audio format facts, in one place: sample width, the DSP rate and frame, the wire rates.

Everything the application sends, plays or processes is PCM16 little-endian mono. Sizes are
derived here (never as a literal `* 2` elsewhere):

- the capture DSP runs at `DSP_RATE` in `FRAME_MS` frames (`FRAME_BYTES` per frame), because both
  native libraries (livekit's AEC3, webrtc-noise-gain) take exactly 10 ms per call;
- the wire carries `UPLINK_CHUNK_MS` chunks at the session's negotiated rate, one of
  `SESSION_RATES` (the Atoms spec's list);
- `StreamFormat` is the immutable description of one session's stream, handed from the session
  to the audio threads with a generation number, so a chunk made for an earlier session can be
  told from one made for the current one without comparing rates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from hw.audio import BYTES_PER_FRAME

BYTES_PER_SAMPLE: Final = BYTES_PER_FRAME    # mono: one frame is one sample
SAMPLE_DTYPE: Final = "<i2"                  # numpy dtype of PCM16 LE
DSP_RATE: Final = 16000
FRAME_MS: Final = 10
FRAME_SAMPLES: Final = DSP_RATE * FRAME_MS // 1000      # 160
FRAME_BYTES: Final = FRAME_SAMPLES * BYTES_PER_SAMPLE   # 320
UPLINK_CHUNK_MS: Final = 20
SESSION_RATES: Final = (8000, 16000, 24000, 48000)      # the spec's `sample_rate` values
DEFAULT_SESSION_RATE: Final = 16000


def samples_for(rate: int, ms: float) -> int:
    """Samples in `ms` milliseconds at `rate` Hz; ValueError unless it is a whole number."""
    samples = rate * ms / 1000
    if samples <= 0 or samples != int(samples):
        raise ValueError(f"{ms:g} ms is not a whole number of samples at {rate} Hz")
    return int(samples)


def bytes_for(rate: int, ms: float) -> int:
    """Bytes of PCM16 mono in `ms` milliseconds at `rate` Hz (whole samples only)."""
    return samples_for(rate, ms) * BYTES_PER_SAMPLE


def bytes_for_seconds(rate: int, seconds: float) -> int:
    """Bytes of PCM16 mono in `seconds` at `rate`, rounded down to whole samples (bounds, not frames)."""
    return int(seconds * rate) * BYTES_PER_SAMPLE


def duration_seconds(nbytes: int, rate: int) -> float:
    """How long `nbytes` of PCM16 mono last at `rate` Hz."""
    return nbytes / (rate * BYTES_PER_SAMPLE)


@dataclass(frozen=True, slots=True)
class StreamFormat:
    """One session's audio stream: the negotiated rate, and which session it belongs to.

    Immutable; made once per `session.created` (generation 0 is the format before any session)
    and handed to the audio threads as one reference, so a reader never sees a rate from one
    session with the sizes of another. Any thread may read it.
    """

    rate: int = DEFAULT_SESSION_RATE
    generation: int = 0

    def __post_init__(self) -> None:
        if self.rate not in SESSION_RATES:
            raise ValueError(f"session rate {self.rate} Hz is not one of {SESSION_RATES}")

    @property
    def chunk_bytes(self) -> int:
        """Bytes of one uplink chunk (`UPLINK_CHUNK_MS`) at the session rate."""
        return bytes_for(self.rate, UPLINK_CHUNK_MS)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one 10 ms frame at the session rate (the echo reference's unit)."""
        return bytes_for(self.rate, FRAME_MS)

    def period_bytes(self, period_ms: int) -> int:
        """Bytes of one playback period of `period_ms` at the session rate."""
        return bytes_for(self.rate, period_ms)

    def next(self, rate: int) -> StreamFormat:
        """The format of the next session, at `rate`."""
        return StreamFormat(rate, self.generation + 1)

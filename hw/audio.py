"""Audio device interfaces: a microphone and a speaker, PCM16 little-endian mono.

Implementations: `hw.alsa` (pyalsaaudio over real alsa-lib) and `hw.fake_audio` (WAV files paced by
an injectable clock, with an optional simulated room echo). `hw.registry` picks one by name from
settings.

Units everywhere: sample rate in Hz, period in frames (one frame = one mono sample = 2 bytes),
buffers as `bytes` of PCM16 LE mono.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from hw.errors import DeviceUnavailable

BYTES_PER_FRAME = 2


@dataclass(frozen=True)
class AudioFormat:
    """What a device was actually opened with (read back from the driver, not what was asked)."""

    sample_rate: int
    period_frames: int
    buffer_frames: int

    @property
    def period_bytes(self) -> int:
        return self.period_frames * BYTES_PER_FRAME

    @property
    def period_seconds(self) -> float:
        return self.period_frames / self.sample_rate


class AudioCapture(ABC):
    """A microphone. Used only by the capture thread, which owns it between `open` and `close`.

    An implementation must provide:
    - `open()`: acquire the device at the requested rate/period; raise `DeviceUnavailable` when it
      is missing or busy. Returns the real format.
    - `read()`: block until one period is captured and return exactly `period_bytes` bytes.
      Overruns are recovered inside (counted in `overruns`), never raised. A device that disappears
      raises `DeviceUnavailable`; the caller closes it and reopens with backoff.
    - `close()`: idempotent, safe after a failed `open`.
    """

    overruns: int = 0

    @abstractmethod
    def open(self) -> AudioFormat: ...

    @abstractmethod
    def read(self) -> bytes: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> AudioCapture:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AudioPlayback(ABC):
    """A speaker. Used only by the playback thread (the render clock) between `open` and `close`.

    An implementation must provide:
    - `open()`: acquire the device; raise `DeviceUnavailable` when missing or busy. Returns the
      real format. Implementations prefill nothing; the playback thread writes the prefill.
    - `write(pcm)`: block until the device accepted exactly one period (`period_bytes`); this
      blocking is what paces the whole downlink. Underruns are recovered inside (counted in
      `underruns`). A device that disappears raises `DeviceUnavailable`.
    - `drop()`: discard everything queued in the device at once (barge-in), leaving it ready
      for the next `write`.
    - `close()`: discard (never drain) and release; idempotent, safe after a failed `open`.
    """

    underruns: int = 0

    @abstractmethod
    def open(self) -> AudioFormat: ...

    @abstractmethod
    def write(self, pcm: bytes) -> None: ...

    @abstractmethod
    def drop(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> AudioPlayback:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VolumeControl(ABC):
    """A hardware output level: a mixer control of the sound card, for cards that have one.

    An implementation must provide:
    - `set_db(db)`: set the level to `db` dB relative to the control's maximum (<= 0; `-inf` or
      below the control's range: as quiet as it goes, muted when the control has a switch).
      Returns the dB actually set (controls move in steps). Raises `DeviceUnavailable`.
    - `close()`: idempotent.
    Called from the thread that changes the volume (the service's main thread), one at a time.
    """

    name: str = "abstract"

    @abstractmethod
    def set_db(self, db: float) -> float: ...

    @abstractmethod
    def close(self) -> None: ...


class AudioBackend(ABC):
    """Makes capture and playback devices at the rates the pipeline asks for.

    The pipeline asks for a capture device at the DSP rate and a playback device at the
    negotiated session rate; when the session renegotiates, it closes the old playback device and
    asks again. Backends are registered by name in `hw.registry` and chosen by settings (each
    class has a `from_settings(settings)` classmethod reading the fields listed in `hw.settings`).

    An implementation must provide:
    - `capture(...)` / `playback(...)`: a new, unopened device; any thread may call them, and
      each device is then used by one thread only.
    - `close()`: release what the backend itself holds (not the devices: their threads close
      them), after the devices are closed. Idempotent; the service calls it once at shutdown.
    It may override `call_started()` (a no-op here), told when a call starts.
    """

    name: str = "abstract"

    @abstractmethod
    def capture(self, sample_rate: int, period_frames: int) -> AudioCapture: ...

    @abstractmethod
    def playback(self, sample_rate: int, period_frames: int, buffer_periods: int = 4) -> AudioPlayback: ...

    @abstractmethod
    def close(self) -> None: ...

    def volume_control(self, control: str, device: str = "default") -> VolumeControl:
        """The hardware mixer control `control` (e.g. "PCM", "Speaker") of `device`.

        Raises `DeviceUnavailable` when there is none (the default: a backend without mixers)."""
        raise DeviceUnavailable(f"{self.name}:{device}",
                                f"no hardware mixer control {control!r} in this backend")

    def call_started(self) -> None:
        """The application started a call (any thread). Real devices have nothing to do; the fake
        mic starts its file here when told to (`capture_start="call"`). Not abstract: a no-op."""

"""Real microphone and speaker through alsa-lib (pyalsaaudio 0.11), PCM16 LE mono, blocking I/O.

Facts about pyalsaaudio 0.11 this module relies on (read in its `alsaaudio.c`, checked against
alsa-lib's `file`/`null` plugins by `tests/alsa`):
- `PCM(...)` arguments must go by keyword (the positional order is not the documented one); the
  period size and count are requests (`set_*_near`), and a rate, format or channel count the
  device cannot do is silently replaced by one it can: read the result back from `info()`.
- Every failure is an `ALSAAudioError` whose only argument is `"<strerror> [<device>]"`; there is
  no errno attribute, so `translate_alsa_error` recovers the errno from the message.
- `read()` returns `(-32, b'')` on an overrun after re-preparing the stream, and may return fewer
  frames than a period (or `(0, b'')`). `write()` returns -32 on an underrun after re-preparing
  and wrote nothing; it returns the frames written otherwise (0 only in nonblocking mode).
- `drop()` leaves the PCM in the SETUP state and `read()`/`write()` prepare a PCM found in SETUP,
  so a write after a barge-in drop just works. `close()` on playback calls `snd_pcm_drain`, which
  blocks until the queued audio has played, unless the stream was dropped first.
"""
from __future__ import annotations

import errno
import logging
import math
import os
from collections.abc import Callable
from typing import Any, Final, Protocol

import alsaaudio

from hw.alsa_devices import CardInfo, DeviceListing, PcmInfo, format_device_listing, list_devices
from hw.audio import BYTES_PER_FRAME, AudioBackend, AudioCapture, AudioFormat, AudioPlayback, VolumeControl
from hw.errors import DeviceUnavailable
from hw.settings import AlsaSettings

__all__ = [
    "AlsaAudioBackend", "AlsaCapture", "AlsaPcm", "AlsaPlayback", "CardInfo", "DeviceListing",
    "PcmFactory", "PcmInfo", "alsa_errno", "format_device_listing", "list_devices", "translate_alsa_error",
]

log = logging.getLogger(__name__)

SAMPLE_FORMAT: Final = alsaaudio.PCM_FORMAT_S16_LE
SAMPLE_FORMAT_NAME: Final = "S16_LE"
CHANNELS: Final = 1
MIN_PERIODS: Final = 2
# Overruns, underruns and empty results in a row before we call the device broken. Each one is a
# cheap call that returns at once, so a device stuck in that loop would spin the audio thread.
MAX_FRUITLESS_CALLS: Final = 100

# errno values that mean "this device is not there (any more)".
_GONE: Final = frozenset({errno.ENODEV, errno.ENXIO, errno.EIO, errno.EBADFD, errno.ESHUTDOWN})
_NOT_FOUND: Final = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO})
_ERRNO_BY_MESSAGE: Final = {os.strerror(code): code for code in sorted(errno.errorcode, reverse=True)}


class AlsaPcm(Protocol):
    """The part of `alsaaudio.PCM` we use; tests inject wrappers around real PCMs."""

    def read(self) -> tuple[int, bytes]: ...

    def write(self, data: bytes | memoryview) -> int: ...

    def drop(self) -> int: ...

    def close(self) -> None: ...

    def info(self) -> dict[str, Any]: ...


PcmFactory = Callable[..., AlsaPcm]


def alsa_errno(exc: BaseException) -> int | None:
    """The errno behind an `ALSAAudioError` (parsed from its `"<strerror> [<device>]"` text)."""
    for arg in exc.args[1:]:
        if isinstance(arg, int):  # in case a later pyalsaaudio passes the code along
            return abs(arg)
    message = str(exc.args[0]) if exc.args else ""
    text = message.rpartition(" [")[0] if message.endswith("]") else message
    return _ERRNO_BY_MESSAGE.get(text.strip())


def translate_alsa_error(exc: BaseException, device: str, operation: str) -> DeviceUnavailable:
    """Turn a driver error into `DeviceUnavailable` with the device, the operation and a hint.

    The one place where ALSA errors get their meaning: callers `raise translate_alsa_error(...)
    from exc`. The errno (when known) is kept on the result's `errno` attribute.
    """
    code = alsa_errno(exc)
    raw = str(exc.args[0]) if exc.args else type(exc).__name__
    opening = operation.startswith("open")
    if code == errno.EBUSY:
        what = "busy (another program holds it)"
    elif code in (errno.EACCES, errno.EPERM):
        what = "permission denied (is the service user in the 'audio' group?)"
    elif opening and code in _NOT_FOUND:
        what = "not found (no such PCM or card; `atoms-appliance devices` lists them)"
    elif opening and code == errno.EINVAL:
        what = f"cannot be set up for mono {SAMPLE_FORMAT_NAME} {_plug_hint(device)}"
    elif code in _GONE:
        what = "device gone (unplugged or the driver failed)"
    elif raw.startswith("PCM device is closed"):
        what = "device is closed"
    else:
        what = "ALSA error"
    error = DeviceUnavailable(device, f"{what}; while {operation}; ALSA said: {raw}")
    error.errno = code
    return error


def _plug_hint(device: str) -> str:
    if device.startswith("hw:"):
        return f"(a hw: PCM converts nothing; try plug{device} or default)"
    return "(try a plughw: PCM or default, which convert in alsa-lib)"


def _xrun_worth_logging(count: int) -> bool:
    # 1, 2, 4, 8...: a steady xrun storm stays visible without flooding the journal.
    return count & (count - 1) == 0


class _AlsaDevice:
    """Open/close and format checks shared by the capture and playback devices (one thread)."""

    kind = "pcm"
    pcm_type: int = alsaaudio.PCM_PLAYBACK

    def __init__(
        self,
        device: str,
        sample_rate: int,
        period_frames: int,
        hw_period_frames: int | None,
        buffer_periods: int,
        pcm_factory: PcmFactory,
    ) -> None:
        if sample_rate <= 0 or period_frames <= 0 or buffer_periods <= 0:
            raise ValueError("sample_rate, period_frames and buffer_periods must be positive")
        self.device = device
        self.sample_rate = sample_rate
        self.chunk_frames = period_frames  # what one read()/write() carries
        # The driver period we ask for; read()/write() re-chunk when it differs from chunk_frames.
        self.hw_period_frames = hw_period_frames or period_frames
        # Keep the buffer at least as long in time as the caller asked (buffer_periods chunks).
        self.hw_periods = max(MIN_PERIODS, math.ceil(buffer_periods * period_frames / self.hw_period_frames))
        self._pcm_factory = pcm_factory
        self._pcm: AlsaPcm | None = None
        self.format: AudioFormat | None = None

    @property
    def is_open(self) -> bool:
        return self._pcm is not None

    def _open_pcm(self) -> AudioFormat:
        if self._pcm is not None:
            self.close()  # a reopen starts from a clean device
        operation = f"opening {self.kind} at {self.sample_rate} Hz"
        try:
            pcm = self._pcm_factory(
                type=self.pcm_type,
                mode=alsaaudio.PCM_NORMAL,
                device=self.device,
                rate=self.sample_rate,
                channels=CHANNELS,
                format=SAMPLE_FORMAT,
                periodsize=self.hw_period_frames,
                periods=self.hw_periods,
            )
        except alsaaudio.ALSAAudioError as exc:
            raise translate_alsa_error(exc, self.device, operation) from exc
        try:
            fmt = self._check_format(pcm.info())
        except BaseException as exc:
            self._discard(pcm)
            if isinstance(exc, alsaaudio.ALSAAudioError):
                raise translate_alsa_error(exc, self.device, operation) from exc
            raise
        self._pcm = pcm
        self.format = fmt
        log.info(
            "ALSA %s %r open: %d Hz, period %d frames (%.1f ms), buffer %d frames (%.1f ms)",
            self.kind, self.device, fmt.sample_rate, fmt.period_frames, fmt.period_seconds * 1000,
            fmt.buffer_frames, fmt.buffer_frames * 1000 / fmt.sample_rate,
        )
        return fmt

    def _check_format(self, info: dict[str, Any]) -> AudioFormat:
        """The real format; refuse a device that did not take our rate, sample format or channels."""
        rate = int(info["rate"])
        if rate != self.sample_rate:
            raise DeviceUnavailable(
                self.device,
                f"runs at {rate} Hz, not the {self.sample_rate} Hz asked for {_plug_hint(self.device)}",
            )
        if int(info["format"]) != SAMPLE_FORMAT or int(info["channels"]) != CHANNELS:
            raise DeviceUnavailable(
                self.device,
                f"gave {info.get('format_name')} x {info['channels']} channels, not mono "
                f"{SAMPLE_FORMAT_NAME} {_plug_hint(self.device)}",
            )
        return AudioFormat(rate, int(info["period_size"]), int(info["buffer_size"]))

    def _require_pcm(self, operation: str) -> AlsaPcm:
        if self._pcm is None:
            raise DeviceUnavailable(self.device, f"{operation} on a closed device")
        return self._pcm

    def _discard(self, pcm: AlsaPcm) -> None:
        """Release a PCM without ever draining it or raising (close paths, failed opens)."""
        if self.pcm_type == alsaaudio.PCM_PLAYBACK:
            try:
                # pyalsaaudio's close() drains playback (blocks until played): drop makes it instant.
                pcm.drop()
            except alsaaudio.ALSAAudioError as exc:
                log.debug("ALSA %s %r: drop before close failed: %s", self.kind, self.device, exc)
        try:
            pcm.close()
        except alsaaudio.ALSAAudioError as exc:
            log.debug("ALSA %s %r: close failed: %s", self.kind, self.device, exc)

    def close(self) -> None:
        """Release the device. Idempotent, safe after a failed `open`; never raises ALSA errors.

        Call it from the thread that reads or writes: pyalsaaudio frees the handle at once, under
        a `read()`/`write()` that another thread may still be blocked in (with the GIL released).
        """
        pcm, self._pcm = self._pcm, None
        if pcm is not None:
            self._discard(pcm)
            log.debug("ALSA %s %r closed", self.kind, self.device)


class AlsaCapture(_AlsaDevice, AudioCapture):
    """An ALSA microphone. Used only by the capture thread, between `open` and `close`.

    `read()` blocks for one chunk of `period_frames` (as asked), re-chunking the driver's periods
    through a remainder buffer; overruns are counted in `overruns` and skipped over.
    """

    kind = "capture"
    pcm_type = alsaaudio.PCM_CAPTURE

    def __init__(
        self,
        device: str,
        sample_rate: int,
        period_frames: int,
        hw_period_frames: int | None = None,
        buffer_periods: int = 4,
        pcm_factory: PcmFactory = alsaaudio.PCM,
    ) -> None:
        super().__init__(device, sample_rate, period_frames, hw_period_frames, buffer_periods, pcm_factory)
        self.overruns = 0
        self._pending = bytearray()

    def open(self) -> AudioFormat:
        fmt = self._open_pcm()
        self._pending.clear()
        return fmt

    def read(self) -> bytes:
        pcm = self._require_pcm("read")
        need = self.chunk_frames * BYTES_PER_FRAME
        fruitless = 0
        while len(self._pending) < need:
            try:
                frames, data = pcm.read()
            except alsaaudio.ALSAAudioError as exc:
                raise translate_alsa_error(exc, self.device, "reading") from exc
            if frames < 0:
                # An overrun: pyalsaaudio has re-prepared the stream already; just read on.
                self.overruns += 1
                if _xrun_worth_logging(self.overruns):
                    log.warning("ALSA capture %r overrun (%d so far)", self.device, self.overruns)
            if frames > 0 and data:
                self._pending += data
                fruitless = 0
                continue
            fruitless += 1
            if fruitless >= MAX_FRUITLESS_CALLS:
                raise DeviceUnavailable(
                    self.device, f"stopped delivering audio ({fruitless} overruns or empty reads in a row)"
                )
        chunk = bytes(self._pending[:need])
        del self._pending[:need]
        return chunk

    def close(self) -> None:
        super().close()
        self._pending.clear()


class AlsaPlayback(_AlsaDevice, AudioPlayback):
    """An ALSA speaker. Used only by the playback thread (the render clock), open to close.

    `write()` blocks until alsa-lib took the whole chunk (that blocking paces the downlink);
    underruns are counted in `underruns` and the same data is written again. `drop()` discards
    what is queued (barge-in); `close()` drops, never drains.
    """

    kind = "playback"
    pcm_type = alsaaudio.PCM_PLAYBACK

    def __init__(
        self,
        device: str,
        sample_rate: int,
        period_frames: int,
        hw_period_frames: int | None = None,
        buffer_periods: int = 4,
        pcm_factory: PcmFactory = alsaaudio.PCM,
    ) -> None:
        super().__init__(device, sample_rate, period_frames, hw_period_frames, buffer_periods, pcm_factory)
        self.underruns = 0

    def open(self) -> AudioFormat:
        return self._open_pcm()

    def write(self, pcm: bytes) -> None:
        handle = self._require_pcm("write")
        if len(pcm) % BYTES_PER_FRAME:
            raise ValueError(f"PCM16 mono needs an even number of bytes, got {len(pcm)}")
        rest = memoryview(pcm)
        fruitless = 0
        while rest:
            try:
                frames = handle.write(rest)
            except alsaaudio.ALSAAudioError as exc:
                raise translate_alsa_error(exc, self.device, "writing") from exc
            if frames > 0:
                rest = rest[frames * BYTES_PER_FRAME:]
                fruitless = 0
                continue
            if frames < 0:
                # An underrun: the stream is re-prepared and nothing was written; write it again.
                self.underruns += 1
                if _xrun_worth_logging(self.underruns):
                    log.warning("ALSA playback %r underrun (%d so far)", self.device, self.underruns)
            fruitless += 1
            if fruitless >= MAX_FRUITLESS_CALLS:
                raise DeviceUnavailable(
                    self.device, f"stopped accepting audio ({fruitless} underruns or empty writes in a row)"
                )

    def drop(self) -> None:
        if self._pcm is None:
            return  # nothing queued on a closed device
        try:
            self._pcm.drop()
        except alsaaudio.ALSAAudioError as exc:
            raise translate_alsa_error(exc, self.device, "dropping queued audio") from exc


class AlsaMixer(Protocol):
    """The part of `alsaaudio.Mixer` we use (tests inject a recording stand-in)."""

    def getrange(self, pcmtype: int = ..., units: int = ...) -> list[int]: ...

    def setvolume(self, volume: int, pcmtype: int = ..., units: int = ...,
                  channel: int | None = ...) -> None: ...

    def getvolume(self, pcmtype: int = ..., units: int = ...) -> list[int]: ...

    def setmute(self, mute: bool, channel: int | None = ...) -> None: ...

    def switchcap(self) -> list[str]: ...

    def close(self) -> None: ...


MixerFactory = Callable[..., AlsaMixer]


class AlsaVolumeControl(VolumeControl):
    """A playback mixer control through `alsaaudio.Mixer`, set in dB (ALSA's unit: 1/100 dB).

    Opened in `__init__` (a missing card or control raises `DeviceUnavailable` at once). `set_db`
    is relative to the control's maximum; below its range (or -inf) it goes to the minimum and,
    when the control has a playback switch, mutes it. One thread at a time (the volume's owner).
    """

    name = "alsa"

    def __init__(self, control: str, device: str = "default",
                 mixer_factory: MixerFactory = alsaaudio.Mixer) -> None:
        self.control = control
        self.device = device
        self.where = f"mixer {control!r} on {device}"
        self._mixer: AlsaMixer | None = None
        try:
            self._mixer = mixer_factory(control=control, device=device)
            low, high = self._mixer.getrange(alsaaudio.PCM_PLAYBACK, alsaaudio.VOLUME_UNITS_DB)
            self._can_mute = "Playback Mute" in self._mixer.switchcap() or "Mute" in self._mixer.switchcap()
        except alsaaudio.ALSAAudioError as exc:
            self.close()
            raise translate_alsa_error(exc, self.where, "opening the mixer control") from exc
        self.min_db, self.max_db = low / 100, high / 100
        self.muted = False
        log.info("%s: %.1f to %.1f dB%s", self.where, self.min_db, self.max_db,
                 ", with a mute switch" if self._can_mute else "")

    def set_db(self, db: float) -> float:
        mixer = self._mixer
        if mixer is None:
            raise DeviceUnavailable(self.where, "closed")
        target = self.max_db + db
        silent = db == -math.inf or target < self.min_db
        target = max(self.min_db, min(self.max_db, target)) if not silent else self.min_db
        try:
            mixer.setvolume(round(target * 100), alsaaudio.PCM_PLAYBACK, alsaaudio.VOLUME_UNITS_DB)
            if self._can_mute and silent != self.muted:
                mixer.setmute(silent)
                self.muted = silent
            actual = mixer.getvolume(alsaaudio.PCM_PLAYBACK, alsaaudio.VOLUME_UNITS_DB)
        except alsaaudio.ALSAAudioError as exc:
            raise translate_alsa_error(exc, self.where, "setting the volume") from exc
        return (sum(actual) / len(actual) / 100 if actual else target) - self.max_db

    def close(self) -> None:
        mixer, self._mixer = getattr(self, "_mixer", None), None
        if mixer is not None:
            try:
                mixer.close()
            except alsaaudio.ALSAAudioError as exc:
                log.debug("closing %s: %s", self.where, exc)


class AlsaAudioBackend(AudioBackend):
    """Makes ALSA capture and playback devices by PCM name (`default`, `plughw:CARD=x,DEV=0`...).

    `period_ms` is the driver period we request (a multiple of 10 ms); each device then hands out
    or takes the `period_frames` chunks its caller asked for. `buffer_periods` sizes the capture
    buffer and is the playback default. Any thread may call the factories (they open nothing).
    """

    name = "alsa"

    def __init__(
        self,
        capture_device: str = "default",
        playback_device: str = "default",
        period_ms: int = 10,
        buffer_periods: int = 4,
        pcm_factory: PcmFactory = alsaaudio.PCM,
    ) -> None:
        if period_ms <= 0 or buffer_periods < MIN_PERIODS:
            raise ValueError(f"period_ms must be > 0 and buffer_periods >= {MIN_PERIODS}")
        self.capture_device = capture_device
        self.playback_device = playback_device
        self.period_ms = period_ms
        self.buffer_periods = buffer_periods
        self.pcm_factory = pcm_factory

    @classmethod
    def from_settings(cls, settings: AlsaSettings) -> AlsaAudioBackend:
        """The PCMs, driver period and playback buffer the settings name (`hw.registry`)."""
        return cls(capture_device=settings.capture_device, playback_device=settings.playback_device,
                   period_ms=settings.period_ms, buffer_periods=settings.playback_buffer_periods)

    def close(self) -> None:
        """Nothing to release: the backend opens no PCM itself; each device is closed by its thread."""

    def _hw_period(self, sample_rate: int) -> int:
        return max(1, sample_rate * self.period_ms // 1000)

    def capture(self, sample_rate: int, period_frames: int) -> AlsaCapture:
        return AlsaCapture(
            self.capture_device, sample_rate, period_frames, self._hw_period(sample_rate),
            self.buffer_periods, self.pcm_factory,
        )

    def playback(self, sample_rate: int, period_frames: int, buffer_periods: int | None = None) -> AlsaPlayback:
        return AlsaPlayback(
            self.playback_device, sample_rate, period_frames, self._hw_period(sample_rate),
            buffer_periods or self.buffer_periods, self.pcm_factory,
        )

    def volume_control(self, control: str, device: str = "default") -> AlsaVolumeControl:
        return AlsaVolumeControl(control, device)

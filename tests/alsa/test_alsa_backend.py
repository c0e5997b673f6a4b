"""The ALSA backend against real alsa-lib and pyalsaaudio, on test-local `file` PCMs (see conftest).

Error paths a file PCM cannot produce (overrun, underrun, short reads, a device that vanishes,
a busy card, a rate the card refuses) are driven by `ScriptedPcm`: a real `alsaaudio.PCM` with
scripted misbehaviour injected through `pcm_factory`, raising real `ALSAAudioError`s worded the
way pyalsaaudio words them ("<strerror> [<device>]").
"""
from __future__ import annotations

import errno
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import alsaaudio
import numpy as np
import pytest

from device.service.settings import load_settings
from hw.alsa import (
    MAX_FRUITLESS_CALLS,
    AlsaAudioBackend,
    AlsaCapture,
    AlsaPcm,
    AlsaPlayback,
    PcmFactory,
    alsa_errno,
    format_device_listing,
    list_devices,
    translate_alsa_error,
)
from hw.audio import AudioFormat
from hw.errors import DeviceUnavailable, HardwareError
from hw.registry import audio_backend, audio_backend_from_settings

if TYPE_CHECKING:
    from .conftest import AlsaTestConfig

pytestmark = pytest.mark.timeout(20)

RATE = 16000
PERIOD = 160  # 10 ms at 16 kHz
PERIOD_BYTES = PERIOD * 2


def ramp(frames: int, start: int = 0) -> bytes:
    """PCM16 where every frame differs from its neighbours, so any loss or reordering shows."""
    values = (np.arange(start, start + frames, dtype=np.int64) * 7919) % 65536 - 32768
    return values.astype("<i2").tobytes()


def alsa_error(text: str, device: str = "hw:1,0") -> alsaaudio.ALSAAudioError:
    return alsaaudio.ALSAAudioError(f"{text} [{device}]")


class ScriptedPcm:
    """A real PCM whose next calls follow a script: a value to return, an exception to raise,
    "split" (return half of a real read now, the rest on the next call) or "real" (pass through).
    """

    def __init__(self, real: AlsaPcm, reads: list[Any], writes: list[Any], info: dict[str, Any]) -> None:
        self.real = real
        self.reads: deque[Any] = deque(reads)
        self.writes: deque[Any] = deque(writes)
        self.info_overrides = info
        self.calls: list[str] = []
        self._carry = b""

    def read(self) -> tuple[int, bytes]:
        self.calls.append("read")
        if self._carry:
            data, self._carry = self._carry, b""
            return len(data) // 2, data
        action = self.reads.popleft() if self.reads else "real"
        if isinstance(action, BaseException):
            raise action
        if action == "split":
            frames, data = self.real.read()
            half = (frames // 2) * 2
            self._carry = data[half:]
            return half // 2, data[:half]
        if action == "real":
            return self.real.read()
        return cast(tuple[int, bytes], action)

    def write(self, data: bytes | memoryview) -> int:
        self.calls.append("write")
        action = self.writes.popleft() if self.writes else "real"
        if isinstance(action, BaseException):
            raise action
        if action == "real":
            return self.real.write(data)
        return cast(int, action)

    def drop(self) -> int:
        self.calls.append("drop")
        return self.real.drop()

    def close(self) -> None:
        self.calls.append("close")
        self.real.close()

    def info(self) -> dict[str, Any]:
        return {**self.real.info(), **self.info_overrides}


def scripted(
    made: list[ScriptedPcm],
    real_device: str | None = None,
    reads: list[Any] | None = None,
    writes: list[Any] | None = None,
    info: dict[str, Any] | None = None,
    open_error: BaseException | None = None,
) -> PcmFactory:
    """A pcm_factory opening real PCMs (on `real_device` if given) wrapped in a ScriptedPcm."""

    def factory(**kwargs: Any) -> ScriptedPcm:
        if open_error is not None:
            raise open_error
        if real_device is not None:
            kwargs["device"] = real_device
        pcm = ScriptedPcm(alsaaudio.PCM(**kwargs), reads or [], writes or [], info or {})
        made.append(pcm)
        return pcm

    return factory


# -- capture ---------------------------------------------------------------------------------


def test_capture_returns_the_infile_exactly_in_order(alsa: AlsaTestConfig) -> None:
    data = ramp(PERIOD * 12)
    alsa.set_capture(data)
    backend = AlsaAudioBackend(capture_device=alsa.capture_pcm)
    with backend.capture(RATE, PERIOD) as mic:
        chunks = [mic.read() for _ in range(10)]
    assert all(len(chunk) == PERIOD_BYTES for chunk in chunks)
    assert b"".join(chunks) == data[: 10 * PERIOD_BYTES]
    assert mic.overruns == 0


def test_open_reports_the_real_format_and_logs_it_once(alsa: AlsaTestConfig, caplog: pytest.LogCaptureFixture) -> None:
    backend = AlsaAudioBackend(capture_device=alsa.capture_pcm, playback_device=alsa.playback_pcm)
    caplog.set_level(logging.INFO, logger="hw.alsa")
    mic = backend.capture(RATE, PERIOD)
    speaker = backend.playback(24000, 240, buffer_periods=6)
    try:
        assert mic.open() == AudioFormat(RATE, PERIOD, PERIOD * 4)
        assert speaker.open() == AudioFormat(24000, 240, 240 * 6)
    finally:
        mic.close()
        speaker.close()
    opened = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "open" in r.getMessage()]
    assert len(opened) == 2
    assert alsa.capture_pcm in opened[0] and "16000 Hz" in opened[0]
    assert "period 160 frames" in opened[0] and "buffer 640 frames" in opened[0]
    assert alsa.playback_pcm in opened[1] and "buffer 1440 frames" in opened[1]


def test_driver_period_longer_than_the_chunk_is_rechunked(alsa: AlsaTestConfig) -> None:
    data = ramp(PERIOD * 10)
    alsa.set_capture(data)
    backend = AlsaAudioBackend(capture_device=alsa.capture_pcm, period_ms=20)
    mic = backend.capture(RATE, PERIOD)
    with mic:
        assert mic.format == AudioFormat(RATE, 2 * PERIOD, 2 * PERIOD * 2)  # 4 chunks = 2 driver periods
        chunks = [mic.read() for _ in range(7)]
    assert [len(c) for c in chunks] == [PERIOD_BYTES] * 7
    assert b"".join(chunks) == data[: 7 * PERIOD_BYTES]


def test_short_reads_are_accumulated_into_whole_chunks(alsa: AlsaTestConfig) -> None:
    data = ramp(PERIOD * 8)
    alsa.set_capture(data)
    made: list[ScriptedPcm] = []
    mic = AlsaCapture(alsa.capture_pcm, RATE, PERIOD, pcm_factory=scripted(made, reads=["split"] * 5))
    with mic:
        chunks = [mic.read() for _ in range(6)]
    assert b"".join(chunks) == data[: 6 * PERIOD_BYTES]
    assert made[0].calls.count("read") > 6  # the splits really happened


def test_overrun_is_counted_and_the_next_read_returns_data(alsa: AlsaTestConfig) -> None:
    data = ramp(PERIOD * 4)
    alsa.set_capture(data)
    made: list[ScriptedPcm] = []
    overrun = (-errno.EPIPE, b"")  # what pyalsaaudio 0.11 returns, the stream already re-prepared
    mic = AlsaCapture(alsa.capture_pcm, RATE, PERIOD, pcm_factory=scripted(made, reads=[overrun, "real", overrun]))
    with mic:
        first, second = mic.read(), mic.read()
    assert (first, second) == (data[:PERIOD_BYTES], data[PERIOD_BYTES: 2 * PERIOD_BYTES])
    assert mic.overruns == 2


def test_a_capture_that_never_delivers_is_reported_not_spun_on(alsa: AlsaTestConfig) -> None:
    made: list[ScriptedPcm] = []
    reads = [(0, b"")] * MAX_FRUITLESS_CALLS
    mic = AlsaCapture(alsa.capture_pcm, RATE, PERIOD, pcm_factory=scripted(made, reads=reads))
    with mic, pytest.raises(DeviceUnavailable, match="stopped delivering audio"):
        mic.read()


def test_capture_device_disappearing_mid_read_raises_device_unavailable(alsa: AlsaTestConfig) -> None:
    data = ramp(PERIOD * 6)
    alsa.set_capture(data)
    made: list[ScriptedPcm] = []
    gone = alsa_error("No such device", alsa.capture_pcm)
    mic = AlsaCapture(alsa.capture_pcm, RATE, PERIOD, pcm_factory=scripted(made, reads=["real"] * 3 + [gone]))
    mic.open()
    assert [mic.read() for _ in range(3)] == [data[i * PERIOD_BYTES: (i + 1) * PERIOD_BYTES] for i in range(3)]
    with pytest.raises(DeviceUnavailable) as caught:
        mic.read()
    assert caught.value.errno == errno.ENODEV
    assert caught.value.device == alsa.capture_pcm
    assert "device gone" in caught.value.reason and "reading" in caught.value.reason
    assert isinstance(caught.value.__cause__, alsaaudio.ALSAAudioError)
    mic.close()
    mic.close()
    assert made[0].calls[-1] == "close"


# -- playback --------------------------------------------------------------------------------


def test_playback_writes_every_sample_exactly(alsa: AlsaTestConfig) -> None:
    data = ramp(PERIOD * 12)
    backend = AlsaAudioBackend(playback_device=alsa.playback_pcm)
    with backend.playback(RATE, PERIOD) as speaker:
        for i in range(12):
            speaker.write(data[i * PERIOD_BYTES: (i + 1) * PERIOD_BYTES])
    assert alsa.played() == data
    assert speaker.underruns == 0


def test_drop_then_write_keeps_working_and_close_drops_first(alsa: AlsaTestConfig) -> None:
    data = ramp(PERIOD * 6)
    made: list[ScriptedPcm] = []
    speaker = AlsaPlayback(alsa.playback_pcm, RATE, PERIOD, pcm_factory=scripted(made))
    with speaker:
        for i in range(3):
            speaker.write(data[i * PERIOD_BYTES: (i + 1) * PERIOD_BYTES])
        speaker.drop()
        speaker.drop()  # a second barge-in in a row is harmless
        for i in range(3, 6):
            speaker.write(data[i * PERIOD_BYTES: (i + 1) * PERIOD_BYTES])
    # The null slave consumes at once, so nothing was still queued when drop() came.
    assert alsa.played() == data
    # pyalsaaudio's close() drains playback; ours must drop right before it so it cannot block.
    assert made[0].calls[-2:] == ["drop", "close"]


def test_underrun_is_counted_and_the_same_data_written_again(alsa: AlsaTestConfig) -> None:
    data = ramp(PERIOD * 4)
    made: list[ScriptedPcm] = []
    factory = scripted(made, writes=["real", -errno.EPIPE, "real", "real", -errno.EPIPE])
    with AlsaPlayback(alsa.playback_pcm, RATE, PERIOD, pcm_factory=factory) as speaker:
        for i in range(4):
            speaker.write(data[i * PERIOD_BYTES: (i + 1) * PERIOD_BYTES])
    assert speaker.underruns == 2
    assert alsa.played() == data


def test_playback_device_disappearing_mid_write_raises_device_unavailable(alsa: AlsaTestConfig) -> None:
    made: list[ScriptedPcm] = []
    factory = scripted(made, writes=["real", alsa_error("Input/output error", alsa.playback_pcm)])
    speaker = AlsaPlayback(alsa.playback_pcm, RATE, PERIOD, pcm_factory=factory)
    speaker.open()
    speaker.write(ramp(PERIOD))
    with pytest.raises(DeviceUnavailable) as caught:
        speaker.write(ramp(PERIOD))
    assert caught.value.errno == errno.EIO and "device gone" in caught.value.reason
    speaker.close()
    assert made[0].calls[-2:] == ["drop", "close"]


def test_playback_rejects_half_frames_and_closed_use(alsa: AlsaTestConfig) -> None:
    speaker = AlsaPlayback(alsa.playback_pcm, RATE, PERIOD)
    speaker.drop()  # nothing queued on a closed device: a no-op
    with pytest.raises(DeviceUnavailable, match="closed device"):
        speaker.write(ramp(PERIOD))
    with speaker, pytest.raises(ValueError, match="even number of bytes"):
        speaker.write(b"\x00" * 3)


# -- opening and closing -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["capture", "playback"])
def test_missing_pcm_is_reported_as_not_found(alsa: AlsaTestConfig, kind: str) -> None:
    backend = AlsaAudioBackend(capture_device="atoms_no_such_pcm", playback_device="atoms_no_such_pcm")
    device = backend.capture(RATE, PERIOD) if kind == "capture" else backend.playback(RATE, PERIOD)
    with pytest.raises(DeviceUnavailable) as caught:
        device.open()
    assert caught.value.errno == errno.ENOENT
    assert caught.value.device == "atoms_no_such_pcm"
    assert caught.value.reason.startswith("not found")
    assert isinstance(caught.value, HardwareError) and isinstance(caught.value, OSError)
    device.close()  # safe after a failed open, and idempotent
    device.close()


def test_busy_device_is_reported_as_busy(alsa: AlsaTestConfig) -> None:
    made: list[ScriptedPcm] = []
    factory = scripted(made, open_error=alsa_error("Device or resource busy", "hw:1,0"))
    mic = AlsaCapture("hw:1,0", RATE, PERIOD, pcm_factory=factory)
    with pytest.raises(DeviceUnavailable) as caught:
        mic.open()
    assert caught.value.errno == errno.EBUSY
    assert "busy (another program holds it)" in caught.value.reason
    mic.close()


def test_a_rate_the_device_does_not_take_is_refused_with_a_plughw_hint(alsa: AlsaTestConfig) -> None:
    made: list[ScriptedPcm] = []
    # A hw: PCM takes the nearest rate it can do instead of failing; pretend it chose 48 kHz.
    factory = scripted(made, real_device=alsa.capture_pcm, info={"rate": 48000})
    mic = AlsaCapture("hw:1,0", RATE, PERIOD, pcm_factory=factory)
    with pytest.raises(DeviceUnavailable) as caught:
        mic.open()
    assert "48000 Hz" in caught.value.reason and "plughw:1,0" in caught.value.reason
    assert made[0].calls[-1] == "close"  # the half-open PCM was released
    assert not mic.is_open
    mic.close()


def test_a_format_the_device_does_not_take_is_refused(alsa: AlsaTestConfig) -> None:
    made: list[ScriptedPcm] = []
    info = {"channels": 2, "format": alsaaudio.PCM_FORMAT_S32_LE, "format_name": "S32_LE"}
    factory = scripted(made, real_device=alsa.playback_pcm, info=info)
    speaker = AlsaPlayback("hw:1,0", RATE, PERIOD, pcm_factory=factory)
    with pytest.raises(DeviceUnavailable, match="S32_LE x 2 channels"):
        speaker.open()
    assert made[0].calls[-2:] == ["drop", "close"]


def test_close_is_idempotent_and_read_after_close_raises(alsa: AlsaTestConfig) -> None:
    alsa.set_capture(ramp(PERIOD * 4))
    mic = AlsaAudioBackend(capture_device=alsa.capture_pcm).capture(RATE, PERIOD)
    with mic:
        mic.read()
    mic.close()
    with pytest.raises(DeviceUnavailable, match="closed device"):
        mic.read()
    mic.open()  # reopening after close works (the file PCM starts its infile again)
    assert mic.read() == ramp(PERIOD)
    mic.close()


def test_registry_builds_the_alsa_backend(alsa: AlsaTestConfig) -> None:
    backend = audio_backend("alsa", capture_device=alsa.capture_pcm, period_ms=20, buffer_periods=3)
    assert isinstance(backend, AlsaAudioBackend)
    mic = backend.capture(RATE, PERIOD)
    assert (mic.hw_period_frames, mic.hw_periods) == (320, 2)


def test_the_alsa_backend_builds_itself_from_settings(alsa: AlsaTestConfig) -> None:
    settings = load_settings(audio_backend="alsa", capture_device=alsa.capture_pcm,
                             playback_device=alsa.playback_pcm, period_ms=20, playback_buffer_periods=5)
    backend = audio_backend_from_settings(settings)
    assert isinstance(backend, AlsaAudioBackend)
    assert (backend.capture_device, backend.playback_device) == (alsa.capture_pcm, alsa.playback_pcm)
    assert (backend.period_ms, backend.buffer_periods) == (20, 5)
    alsa.set_capture(ramp(PERIOD * 2))
    with backend.capture(RATE, PERIOD) as mic:
        assert mic.read() == ramp(PERIOD)
    backend.close()
    backend.close()  # idempotent, and the backend still makes devices (it holds no PCM itself)
    assert backend.playback(RATE, PERIOD).device == alsa.playback_pcm


@pytest.mark.parametrize(
    ("text", "operation", "code", "phrase"),
    [
        ("No such file or directory", "opening capture at 16000 Hz", errno.ENOENT, "not found"),
        ("No such device", "opening playback at 16000 Hz", errno.ENODEV, "not found"),
        ("Device or resource busy", "opening capture at 16000 Hz", errno.EBUSY, "busy (another program"),
        ("Permission denied", "opening capture at 16000 Hz", errno.EACCES, "'audio' group"),
        ("Invalid argument", "opening capture at 16000 Hz", errno.EINVAL, "try plughw:1,0"),
        ("No such device", "reading", errno.ENODEV, "device gone"),
        ("File descriptor in bad state", "writing", errno.EBADFD, "device gone"),
        ("Some new alsa-lib message", "reading", None, "ALSA error"),
    ],
)
def test_translate_alsa_error(text: str, operation: str, code: int | None, phrase: str) -> None:
    exc = alsa_error(text, "hw:1,0")
    assert alsa_errno(exc) == code
    error = translate_alsa_error(exc, "hw:1,0", operation)
    assert isinstance(error, DeviceUnavailable)
    assert error.errno == code
    assert phrase in error.reason and operation in error.reason and text in error.reason
    assert str(error).startswith("hw:1,0: ")


# -- listing ---------------------------------------------------------------------------------


def test_list_devices_works_without_cards_and_shows_the_test_pcms(alsa: AlsaTestConfig) -> None:
    listing = list_devices()
    capture = {p.name: p.description for p in listing.capture}
    playback = {p.name: p.description for p in listing.playback}
    # Our config has no IOID hints, so alsa-lib offers both PCMs in both directions.
    assert capture[alsa.capture_pcm] == alsa.capture_description
    assert playback[alsa.playback_pcm] == alsa.playback_description
    assert listing.errors == []
    text = format_device_listing(listing)
    assert alsa.capture_pcm in text and alsa.playback_description in text
    if not listing.cards:  # this test host; a Pi would list its cards instead
        assert "no sound cards found" in text
    for card in listing.cards:
        assert card.id in text

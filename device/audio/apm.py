"""The WebRTC echo canceller (AEC3 + high-pass filter) from livekit, behind one small interface.

Two callers of the same native AEC3 (livekit's `AudioProcessingModule`), giving bit-identical
audio (a test checks it):

- `PublicApiApm` goes through livekit's public Python SDK for every frame: a new `AudioFrame`,
  a protobuf request built and serialised, a ctypes call that releases the GIL, the response parsed.
  That is ~6 us of Python per call on an x86 host (~60-100 us on a Pi Zero 2 W), and with two
  audio threads each GIL release is a thread hand-over (futex wake-ups, caches refilled).
- `DirectApm` (the default) sends the very same FFI requests without the SDK
  (device/audio/livekit_ffi.py: the SDK's import alone is ~5 MB of RSS), serialised once: each
  direction owns a fixed 10 ms frame buffer whose address never changes, so the request bytes
  never change either. It calls livekit's FFI entry point through a `ctypes.PyDLL` handle on
  livekit's library, which keeps the GIL for the ~50 us native call instead of handing it to
  another thread and fighting to get it back. Per frame that is a copy into the buffer, the call,
  a comparison of the response with the known success bytes, and the release of the response.

Why hand-write this instead of using livekit's methods: they cost more CPU than the echo
cancellation itself on a Pi Zero (measured by `make bench`), and their import more memory than
the canceller. The protocol used is livekit's FFI protocol (`livekit_ffi_request` with an
`FfiRequest`), the interface all livekit SDKs share. When any of it is missing (another livekit
version), `make_apm` falls back to `PublicApiApm` and says so in the log.

Both take exactly one 10 ms frame per call: a wrong size aborts the process inside livekit (a
Rust panic), so sizes are checked here too, before every native call. Threads: `process` on the
capture thread, `reverse` on the playback thread; the native side serialises the two with its own
mutex, and `DirectApm` keeps a separate buffer per direction.
"""
from __future__ import annotations

import ctypes
import logging
from typing import Any, Final, Protocol

from device.audio import livekit_ffi
from device.audio.formats import DSP_RATE, FRAME_MS, FRAME_SAMPLES, bytes_for, samples_for

log = logging.getLogger(__name__)

INVALID_HANDLE: Final = 0
# Rates the canceller is tested with (its own list, wider than the session's: the reference is at
# whatever rate the speaker plays). 44.1 kHz frames are 441 samples, and the native side only
# promises whole 10 ms frames at the rates it knows.
SUPPORTED_RATES: Final = frozenset({8000, 16000, 24000, 32000, 48000})
# Bytes of one 10 ms frame per supported rate: looked up on every call, never recomputed.
_FRAME_BYTES: Final = {rate: bytes_for(rate, FRAME_MS) for rate in SUPPORTED_RATES}
# livekit releases whose FFI request `DirectApm` was checked against (tests/dsp/test_apm.py: the
# audio is bit-identical to livekit's own methods). Another release gets the public API until that
# test has passed on it and this tuple (and pyproject's bound) says so: a changed meaning of `size`
# or `data_ptr` would make the native side write outside our buffer.
TESTED_LIVEKIT: Final = ((1, 2),)


class EchoCanceller(Protocol):
    """One native AEC3 instance. `process` on the capture thread, `reverse` on the playback thread."""

    kind: str

    def process(self, frame: bytes) -> bytes:
        """One 10 ms mic frame (16 kHz mono PCM16) in, the echo-cancelled frame out."""
        ...

    def reverse(self, frame: bytes | bytearray | memoryview, sample_rate: int) -> None:
        """One 10 ms speaker frame (mono PCM16 at `sample_rate`): the far-end reference."""
        ...


def _bytes_view(frame: bytes | bytearray | memoryview) -> memoryview:
    """`frame` as a flat byte view: `len` of an int16 view or array counts samples, not bytes."""
    view = memoryview(frame)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def frame_bytes(sample_rate: int) -> int:
    """Bytes in one 10 ms PCM16 mono frame at `sample_rate` (ValueError for a rate not supported)."""
    size = _FRAME_BYTES.get(sample_rate)
    if size is None:
        raise ValueError(f"echo reference rate {sample_rate} Hz is not supported; the canceller takes exactly "
                         f"10 ms frames at {sorted(SUPPORTED_RATES)} Hz")
    return size


def _check(size: int, sample_rate: int) -> None:
    expected = frame_bytes(sample_rate)
    if size != expected:
        raise ValueError(f"the echo canceller takes exactly 10 ms of mono PCM16 per call "
                         f"({expected} bytes at {sample_rate} Hz), got {size} bytes")


def _new_native_apm() -> Any:
    from livekit import rtc

    # No noise suppression or AGC here: webrtc-noise-gain does those after the canceller.
    return rtc.AudioProcessingModule(echo_cancellation=True, high_pass_filter=True)


class PublicApiApm:
    """AEC3 through livekit's public Python methods, one `AudioFrame` per call (the fallback)."""

    kind = "livekit public API"

    def __init__(self) -> None:
        from livekit.rtc import AudioFrame

        self._frame_type = AudioFrame
        self._apm = _new_native_apm()

    def process(self, frame: bytes) -> bytes:
        view = _bytes_view(frame)
        _check(view.nbytes, DSP_RATE)
        # A fresh bytearray-backed frame: the APM works in place on the frame's buffer.
        audio = self._frame_type(bytearray(view), DSP_RATE, 1, FRAME_SAMPLES)
        self._apm.process_stream(audio)
        return bytes(audio.data.cast("B"))

    def reverse(self, frame: bytes | bytearray | memoryview, sample_rate: int) -> None:
        view = _bytes_view(frame)
        _check(view.nbytes, sample_rate)
        # A private copy: the APM works in place, and the caller's buffer is not ours.
        self._apm.process_reverse_stream(self._frame_type(bytearray(view), sample_rate, 1,
                                                          samples_for(sample_rate, FRAME_MS)))


class _Request:
    """One pre-serialised FFI request on a fixed frame buffer (one thread uses it at a time)."""

    def __init__(self, field: livekit_ffi.StreamKind, handle: int, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.buffer = bytearray(frame_bytes(sample_rate))
        # The buffer's address goes into the request once. This ctypes view holds an export of the
        # bytearray for the request's whole life, so any resize raises BufferError instead of
        # moving the memory the request points at.
        self._pin = (ctypes.c_char * len(self.buffer)).from_buffer(self.buffer)
        address = ctypes.addressof(self._pin)
        self.data = livekit_ffi.stream_request(field, handle, address, len(self.buffer), sample_rate)
        self.data_len = len(self.data)
        self.success = livekit_ffi.stream_success(field)
        self.field: livekit_ffi.StreamKind = field
        # Where livekit puts its response: made once, passed by reference on every call.
        self.response = ctypes.c_void_p()
        self.response_len = ctypes.c_size_t()
        self.response_args = (ctypes.byref(self.response), ctypes.byref(self.response_len))


def installed_livekit() -> str:
    """The livekit wheel's version, read from its metadata (without importing its SDK)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("livekit")
    except PackageNotFoundError as exc:
        raise ImportError("the livekit package is not installed") from exc


class DirectApm:
    """AEC3 through livekit's native FFI library with requests serialised once, the GIL kept, and
    livekit's Python SDK never imported (device/audio/livekit_ffi.py). The default.

    Built by `make_apm`; raises `ImportError`/`OSError`/`AttributeError` when this livekit lacks
    the pieces, and `make_apm` then falls back to `PublicApiApm`.
    """

    kind = "livekit FFI, direct"

    def __init__(self) -> None:
        livekit_version = installed_livekit()
        release = tuple(int(part) for part in livekit_version.split(".")[:2] if part.isdigit())
        if release not in TESTED_LIVEKIT:
            raise ImportError(f"livekit {livekit_version} is not one DirectApm was checked against "
                              f"({', '.join(f'{major}.{minor}' for major, minor in TESTED_LIVEKIT)})")
        self._library = livekit_ffi.load_library(livekit_version)
        self._call = self._library.request
        self._drop = self._library.drop_handle
        # No noise suppression or AGC here: webrtc-noise-gain does those after the canceller.
        response = self._library.call(livekit_ffi.new_apm_request(
            echo_canceller=True, gain_controller=False, high_pass_filter=True, noise_suppression=False))
        try:
            self._handle = livekit_ffi.apm_handle_from(response)
        except ValueError as exc:
            raise ImportError(str(exc)) from None
        # One request per direction (two threads), each with its own buffer and response slots.
        self._capture = _Request("apm_process_stream", self._handle, DSP_RATE)
        self._reverse: _Request | None = None

    def __del__(self) -> None:
        handle = getattr(self, "_handle", INVALID_HANDLE)
        if handle != INVALID_HANDLE and not self._library.disposed:
            self._handle = INVALID_HANDLE
            self._drop(handle)   # frees the native APM

    def _send(self, request: _Request) -> None:
        handle = self._call(request.data, request.data_len, *request.response_args)
        if handle == INVALID_HANDLE:
            raise RuntimeError(f"livekit refused the {request.field} request (its log says why)")
        length = request.response_len.value
        try:
            response = ctypes.string_at(request.response.value or 0, length) if length else b""
        finally:
            self._drop(handle)
        if response != request.success:
            error = livekit_ffi.stream_error(request.field, response)
            if error:
                raise RuntimeError(f"livekit {request.field}: {error}")

    def process(self, frame: bytes) -> bytes:
        request = self._capture
        view = _bytes_view(frame)
        _check(view.nbytes, DSP_RATE)
        request.buffer[:] = view   # same length: never a resize (which the export would refuse)
        self._send(request)
        return bytes(request.buffer)

    def reverse(self, frame: bytes | bytearray | memoryview, sample_rate: int) -> None:
        view = _bytes_view(frame)
        _check(view.nbytes, sample_rate)
        request = self._reverse
        if request is None or request.sample_rate != sample_rate:
            request = self._reverse = _Request("apm_process_reverse_stream", self._handle, sample_rate)
        request.buffer[:] = view
        self._send(request)


def make_apm(direct: bool = True) -> EchoCanceller:
    """A new AEC3 instance: `DirectApm` when this livekit supports it, else `PublicApiApm`."""
    if direct:
        try:
            return DirectApm()
        except (ImportError, AttributeError, OSError, TypeError, RuntimeError) as exc:
            log.warning("echo canceller: the direct livekit FFI path is unavailable (%s); using livekit's "
                        "public API, which costs more CPU", exc)
    return PublicApiApm()

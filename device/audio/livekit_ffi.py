"""livekit's native FFI library, called without livekit's Python SDK: just enough for AEC3.

Why hand-written: `import livekit.rtc` brings the protobuf runtime, livekit's generated modules,
asyncio and more into the service for three small messages: about 5 MB of RSS in a call (issue
16's budget is 60 MB) and a slower start. The library itself (`liblivekit_ffi.so`, from the
livekit wheel) is what does the work, through livekit's FFI protocol, the interface every livekit
SDK shares: `livekit_ffi_initialize` once per process, then `livekit_ffi_request` with a
serialised `FfiRequest` (livekit's ffi.proto, proto2) and `livekit_ffi_drop_handle` for what it
returns. The few messages are encoded and decoded here (protobuf's wire format: varints and
length-delimited fields). The field numbers are livekit 1.2's (`TESTED_LIVEKIT` in apm.py);
tests/dsp/test_livekit_ffi.py checks every request byte for byte against livekit's own generated
module and decodes responses built by it.

Process-wide by nature: the native library keeps one FFI server per process, so `load_library`
loads and initialises it once (and reuses livekit's own initialisation when the SDK got there
first). Any thread.
"""
from __future__ import annotations

import atexit
import ctypes
import functools
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator
from typing import Final, Literal

log = logging.getLogger(__name__)

LIBRARY_NAME: Final = "liblivekit_ffi.so"
SDK_NAME: Final = b"python"
StreamKind = Literal["apm_process_stream", "apm_process_reverse_stream"]

# Field numbers (livekit 1.2's ffi.proto).
REQUEST_NEW_APM: Final = 50            # FfiRequest.new_apm: NewApmRequest
REQUEST_FIELD: Final[dict[str, int]] = {"apm_process_stream": 51, "apm_process_reverse_stream": 52}
RESPONSE_NEW_APM: Final = 49           # FfiResponse.new_apm: NewApmResponse{apm: OwnedApm{handle: FfiOwnedHandle{id}}}
RESPONSE_FIELD: Final[dict[str, int]] = {"apm_process_stream": 50, "apm_process_reverse_stream": 51}
EVENT_PANIC: Final = 20                # FfiEvent.panic: Panic{message}
# NewApmRequest: echo_canceller_enabled 1, gain_controller_enabled 2, high_pass_filter_enabled 3,
# noise_suppression_enabled 4 (all required). ApmProcess(Reverse)StreamRequest: apm_handle 1,
# data_ptr 2, size 3, sample_rate 4, num_channels 5 (all required). Their responses: error 1.

_VARINT: Final = 0
_LENGTH_DELIMITED: Final = 2
_FIXED64: Final = 1
_FIXED32: Final = 5

EventCallback = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t)


# -- protobuf's wire format ----------------------------------------------------------------------
def varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("only unsigned varints are used here")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3 | _VARINT) + varint(value)


def field_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | _LENGTH_DELIMITED) + varint(len(payload)) + payload


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) for each field of one message: ints for varints and fixed-width
    fields, bytes for length-delimited ones (nested messages, strings). ValueError if malformed."""
    at = 0
    while at < len(data):
        key, at = _read_varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, at = _read_varint(data, at)
            yield number, value
        elif wire == _LENGTH_DELIMITED:
            size, at = _read_varint(data, at)
            if at + size > len(data):
                raise ValueError("truncated field")
            yield number, data[at:at + size]
            at += size
        elif wire in (_FIXED64, _FIXED32):
            width = 8 if wire == _FIXED64 else 4
            if at + width > len(data):
                raise ValueError("truncated field")
            yield number, int.from_bytes(data[at:at + width], "little")
            at += width
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _first(data: bytes, number: int) -> int | bytes | None:
    return next((value for n, value in fields(data) if n == number), None)


def _message(data: bytes, number: int) -> bytes | None:
    value = _first(data, number)
    return value if isinstance(value, bytes) else None


# -- the messages -------------------------------------------------------------------------------
def new_apm_request(echo_canceller: bool, gain_controller: bool, high_pass_filter: bool,
                    noise_suppression: bool) -> bytes:
    body = (field_varint(1, echo_canceller) + field_varint(2, gain_controller)
            + field_varint(3, high_pass_filter) + field_varint(4, noise_suppression))
    return field_bytes(REQUEST_NEW_APM, body)


def apm_handle_from(response: bytes) -> int:
    """The new APM's handle id in a `new_apm` response; ValueError if it has none."""
    owned = _message(_message(response, RESPONSE_NEW_APM) or b"", 1)
    handle = _message(owned or b"", 1)
    handle_id = _first(handle or b"", 1)
    if not isinstance(handle_id, int) or handle_id == 0:
        raise ValueError(f"no APM handle in livekit's new_apm response ({response.hex()})")
    return handle_id


def stream_request(kind: StreamKind, handle: int, data_ptr: int, size: int, sample_rate: int,
                   num_channels: int = 1) -> bytes:
    body = (field_varint(1, handle) + field_varint(2, data_ptr) + field_varint(3, size)
            + field_varint(4, sample_rate) + field_varint(5, num_channels))
    return field_bytes(REQUEST_FIELD[kind], body)


def stream_success(kind: StreamKind) -> bytes:
    """The response to a stream request that went well: its (empty) message and nothing else."""
    return field_bytes(RESPONSE_FIELD[kind], b"")


def stream_error(kind: StreamKind, response: bytes) -> str | None:
    """The error a stream response carries (None: none; a response we cannot read says so)."""
    try:
        body = _message(response, RESPONSE_FIELD[kind])
        error = _first(body, 1) if body is not None else None
    except ValueError as exc:
        return f"an unreadable response ({exc})"
    if isinstance(error, bytes) and error:
        return error.decode("utf-8", "replace")
    return None


def panic_message(event: bytes) -> str | None:
    """The message of an `FfiEvent` that is a panic (None for any other event)."""
    try:
        panic = _message(event, EVENT_PANIC)
        message = _first(panic, 1) if panic is not None else None
    except ValueError:
        return None
    if panic is None:
        return None
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else ""


# -- the library --------------------------------------------------------------------------------
def library_path() -> str:
    """Where the livekit wheel keeps its native library (`LIVEKIT_LIB_PATH` overrides, as in
    livekit's SDK). Finding `livekit` imports only its namespace package, not `livekit.rtc`."""
    override = os.environ.get("LIVEKIT_LIB_PATH", "").strip()
    if override:
        return override
    spec = importlib.util.find_spec("livekit")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the livekit package is not installed")
    for location in spec.submodule_search_locations:
        path = os.path.join(location, "rtc", "resources", LIBRARY_NAME)
        if os.path.exists(path):
            return path
    raise ImportError(f"{LIBRARY_NAME} is not in the livekit package")


class LivekitLibrary:
    """The loaded native library as a `ctypes.PyDLL` (the GIL stays held during a call; the APM
    requests used here call back into Python only on the calling thread, if at all) with the
    three entry points typed. Build it with `load_library`. Any thread."""

    def __init__(self, library: ctypes.PyDLL, callback: object | None) -> None:
        self._library = library
        self._callback = callback   # the native side keeps a pointer to it: it must outlive the process
        self.disposed = False       # after `dispose`, handles are not dropped (the server is gone)
        self.request = library.livekit_ffi_request
        self.request.argtypes = [ctypes.c_char_p, ctypes.c_size_t,
                                 ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
        self.request.restype = ctypes.c_uint64
        self.drop_handle = library.livekit_ffi_drop_handle
        self.drop_handle.argtypes = [ctypes.c_uint64]
        self.drop_handle.restype = ctypes.c_bool

    def dispose(self) -> None:
        """Stop livekit's runtime (at exit, as the SDK does); handles still alive are left alone."""
        if not self.disposed:
            self.disposed = True
            self._library.livekit_ffi_dispose()

    def call(self, request: bytes) -> bytes:
        """One request and its response (the response's handle dropped); RuntimeError if refused."""
        response, length = ctypes.c_void_p(), ctypes.c_size_t()
        handle = self.request(request, len(request), ctypes.byref(response), ctypes.byref(length))
        if handle == 0:
            raise RuntimeError("livekit refused the request")
        try:
            return ctypes.string_at(response.value or 0, length.value) if length.value else b""
        finally:
            self.drop_handle(handle)


def _on_event(data: ctypes.POINTER(ctypes.c_uint8), size: int) -> None:  # type: ignore[valid-type]
    """livekit's events (any of its threads). With its logs not captured, the only one that can
    come for an APM is a panic: the native side is then in an unrecoverable state, so say so and
    abort (systemd restarts the unit), as livekit's own SDK ends the process on one."""
    message = panic_message(ctypes.string_at(data, size))
    if message is not None:
        log.critical("the echo canceller's native library (livekit) panicked: %s; ending the process", message)
        sys.stderr.flush()
        os.abort()


@functools.cache   # one native FFI server per process: loaded and initialised once (see the module doc)
def load_library(version: str) -> LivekitLibrary:
    """The native library, initialised for this process (`version`: the livekit wheel's)."""
    sdk = sys.modules.get("livekit.rtc._ffi_client")
    client = getattr(getattr(sdk, "FfiClient", None), "_instance", None)
    if client is not None:   # livekit's SDK initialised it already: share its handle, not a second server
        loaded = client._ffi_lib
        return LivekitLibrary(ctypes.PyDLL(loaded._name, handle=loaded._handle), None)
    library = ctypes.PyDLL(library_path())
    callback = EventCallback(_on_event)
    library.livekit_ffi_initialize.argtypes = [EventCallback, ctypes.c_bool, ctypes.c_char_p, ctypes.c_char_p]
    library.livekit_ffi_initialize.restype = None
    library.livekit_ffi_initialize(callback, False, SDK_NAME, version.encode("ascii"))
    library.livekit_ffi_dispose.argtypes = []
    library.livekit_ffi_dispose.restype = None
    loaded = LivekitLibrary(library, callback)
    atexit.register(loaded.dispose)   # as the SDK does: its runtime stopped before exit
    log.debug("livekit %s FFI loaded from %s without its Python SDK", version, library._name)
    return loaded

"""The hand-written FFI messages (device/audio/livekit_ffi.py) are livekit's, byte for byte: every
request against livekit's own generated protobuf module, every response decoded from bytes that
module built. Only tests import livekit's SDK."""
from __future__ import annotations

import pytest
from livekit.rtc._proto import ffi_pb2

from device.audio import livekit_ffi as ffi

KINDS = ["apm_process_stream", "apm_process_reverse_stream"]


@pytest.mark.parametrize("flags", [(True, False, True, False), (False, True, False, True), (True, True, True, True),
                                   (False, False, False, False)])
def test_new_apm_request_is_livekits(flags: tuple[bool, bool, bool, bool]) -> None:
    echo, gain, high_pass, noise = flags
    expected = ffi_pb2.FfiRequest()
    expected.new_apm.echo_canceller_enabled = echo
    expected.new_apm.gain_controller_enabled = gain
    expected.new_apm.high_pass_filter_enabled = high_pass
    expected.new_apm.noise_suppression_enabled = noise
    assert ffi.new_apm_request(echo, gain, high_pass, noise) == expected.SerializeToString()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("handle,pointer,size,rate", [
    (1, 0x7F12_3456_7890, 320, 16000), (2 ** 40 + 7, 2 ** 63 + 12345, 960, 48000), (127, 128, 480, 24000),
    (16384, 0, 0, 8000)])
def test_stream_requests_are_livekits(kind: str, handle: int, pointer: int, size: int, rate: int) -> None:
    expected = ffi_pb2.FfiRequest()
    body = getattr(expected, kind)
    body.apm_handle, body.data_ptr, body.size, body.sample_rate, body.num_channels = handle, pointer, size, rate, 1
    assert ffi.stream_request(kind, handle, pointer, size, rate) == expected.SerializeToString()  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_stream_responses_decode(kind: str) -> None:
    ok = ffi_pb2.FfiResponse()
    getattr(ok, kind).SetInParent()
    assert ffi.stream_success(kind) == ok.SerializeToString()  # type: ignore[arg-type]
    assert ffi.stream_error(kind, ok.SerializeToString()) is None  # type: ignore[arg-type]
    failed = ffi_pb2.FfiResponse()
    getattr(failed, kind).error = "the frame was not 10 ms ✗"
    assert ffi.stream_error(kind, failed.SerializeToString()) == "the frame was not 10 ms ✗"  # type: ignore[arg-type]
    assert "unreadable" in (ffi.stream_error(kind, b"\x92\x03\x05ab") or "")  # type: ignore[arg-type]


@pytest.mark.parametrize("handle_id", [1, 300, 2 ** 33 + 1])
def test_the_new_apms_handle_is_read_from_livekits_response(handle_id: int) -> None:
    response = ffi_pb2.FfiResponse()
    response.new_apm.apm.handle.id = handle_id
    assert ffi.apm_handle_from(response.SerializeToString()) == handle_id
    with pytest.raises(ValueError, match="no APM handle"):
        ffi.apm_handle_from(ffi_pb2.FfiResponse().SerializeToString())


def test_a_panic_event_is_recognised_and_nothing_else_is() -> None:
    event = ffi_pb2.FfiEvent()
    event.panic.message = "index out of bounds"
    assert ffi.panic_message(event.SerializeToString()) == "index out of bounds"
    logs = ffi_pb2.FfiEvent()
    record = logs.logs.records.add()
    record.message, record.target, record.level = "hello", "libwebrtc", ffi_pb2.LogLevel.LOG_INFO
    assert ffi.panic_message(logs.SerializeToString()) is None
    assert ffi.panic_message(b"\xff") is None   # unreadable: not taken for a panic


def test_varints_and_unknown_fields() -> None:
    for value in (0, 1, 127, 128, 300, 2 ** 35, 2 ** 64 - 1):
        decoded = list(ffi.fields(ffi.field_varint(3, value)))
        assert decoded == [(3, value)]
    data = ffi.field_varint(1, 5) + b"\x11" + (9).to_bytes(8, "little") + b"\x1d" + (7).to_bytes(4, "little")
    assert list(ffi.fields(data)) == [(1, 5), (2, 9), (3, 7)]
    with pytest.raises(ValueError):
        list(ffi.fields(b"\x0a\x05ab"))   # a length past the end
    with pytest.raises(ValueError):
        ffi.varint(-1)

"""The two callers of livekit's AEC3 (`device/apm.py`): the direct FFI caller must be the public API,
sample for sample, only cheaper; sizes are refused before the native side sees them; an error from
the native side is an exception, never a crash; a livekit without the pieces falls back."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from device.audio import apm as apm_module
from device.audio.apm import DirectApm, PublicApiApm, make_apm
from tools.signals import FAR_TEXT, NEAR_TEXT, erle_db, run_echo_scene, speech


def _talk(apm: apm_module.EchoCanceller, far_rate: int) -> np.ndarray:
    far = speech(FAR_TEXT, far_rate, level=-20.0)[: far_rate * 3]
    near = speech(NEAR_TEXT, 16000, level=-26.0)[16000:16000 * 3]  # double talk in the middle
    run = run_echo_scene(apm.process, apm.reverse, far, far_rate, near, delay_ms=60, noise_dbfs=-70)
    return run.out


@pytest.mark.parametrize("far_rate", [16000, 24000, 48000])
def test_direct_caller_is_bit_identical_to_the_public_api(far_rate: int) -> None:
    direct, public = DirectApm(), PublicApiApm()
    out_direct, out_public = _talk(direct, far_rate), _talk(public, far_rate)
    assert np.array_equal(out_direct, out_public)
    assert np.any(out_direct)   # the comparison is of real audio, not of two silences


def test_direct_caller_cancels_echo() -> None:
    far = speech(FAR_TEXT, 16000, level=-20.0)
    apm = DirectApm()
    run = run_echo_scene(apm.process, apm.reverse, far, 16000, delay_ms=80, gain_db=0, noise_dbfs=-70)
    assert erle_db(run, start_s=1.0) >= 25.0


def test_reference_rate_change_rebuilds_the_request() -> None:
    apm = DirectApm()
    apm.reverse(bytes(320), 16000)
    apm.reverse(bytes(480), 24000)
    apm.reverse(bytes(960), 48000)
    assert len(apm.process(bytes(320))) == 320


@pytest.mark.parametrize("make", [DirectApm, PublicApiApm])
@pytest.mark.parametrize("size,rate", [(318, 16000), (640, 16000), (0, 16000), (320, 24000), (882, 44100)])
def test_wrong_sizes_are_refused_before_the_native_call(make: type, size: int, rate: int) -> None:
    # livekit aborts the whole process on a frame that is not exactly 10 ms: reaching it here
    # would end the test run, so passing means the check came first.
    apm = make()
    with pytest.raises(ValueError, match="exactly 10 ms"):
        apm.reverse(bytes(size), rate)
    if rate == 16000:
        with pytest.raises(ValueError, match="exactly 10 ms"):
            apm.process(bytes(size))


def test_a_request_the_native_side_refuses_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    apm = DirectApm()
    # A handle livekit does not know: it answers with an invalid handle (and logs why).
    monkeypatch.setattr(apm, "_capture", apm_module._Request("apm_process_stream", 987654321, 16000))
    with pytest.raises(RuntimeError, match="refused the apm_process_stream request"):
        apm.process(bytes(320))


def test_an_error_in_the_response_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    from livekit.rtc._proto import ffi_pb2  # livekit's own encoding of an error response

    apm = DirectApm()
    response = ffi_pb2.FfiResponse()
    response.apm_process_stream.error = "something broke"
    request = apm._capture
    monkeypatch.setattr(request, "success", b"not what livekit answers")
    real_string_at = apm_module.ctypes.string_at
    monkeypatch.setattr(apm_module.ctypes, "string_at",
                        lambda pointer, size: response.SerializeToString() if size else real_string_at(pointer, size))
    with pytest.raises(RuntimeError, match="something broke"):
        apm.process(bytes(320))


def test_an_unknown_but_successful_response_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    apm = DirectApm()
    monkeypatch.setattr(apm._capture, "success", b"a newer livekit may answer with more fields")
    assert len(apm.process(bytes(320))) == 320


def test_make_apm_falls_back_to_the_public_api(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    def missing() -> None:
        raise ImportError("no module named livekit.rtc._ffi_client")

    monkeypatch.setattr(apm_module, "DirectApm", missing)
    with caplog.at_level(logging.WARNING, logger="device.audio.apm"):
        apm = make_apm()
    assert isinstance(apm, PublicApiApm)
    assert "direct livekit FFI path is unavailable" in caplog.text
    assert isinstance(make_apm(), PublicApiApm)
    monkeypatch.undo()
    assert isinstance(make_apm(), DirectApm)
    assert isinstance(make_apm(direct=False), PublicApiApm)


@pytest.mark.parametrize("make", [DirectApm, PublicApiApm])
def test_int16_views_are_measured_in_bytes(make: type) -> None:
    """`len` of an int16 view counts samples: 480 samples is 20 ms at 24 kHz, not 10 ms, and must be
    refused; 240 int16 samples are a whole 10 ms frame and must be taken as such."""
    apm = make()
    with pytest.raises(ValueError, match="exactly 10 ms"):
        apm.reverse(memoryview(np.zeros(480, dtype="<i2")), 24000)
    apm.reverse(memoryview(np.zeros(240, dtype="<i2")), 24000)
    assert apm.process(np.zeros(160, dtype="<i2")) == bytes(320)   # a silent frame stays silent


def test_the_request_buffer_can_never_move() -> None:
    apm = DirectApm()
    with pytest.raises(BufferError):
        apm._capture.buffer.extend(b"\0")   # would move the memory the request points at
    assert len(apm.process(bytes(320))) == 320


def test_an_untested_livekit_release_gets_the_public_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apm_module, "installed_livekit", lambda: "9.9.0")
    with pytest.raises(ImportError, match="not one DirectApm was checked against"):
        DirectApm()
    assert isinstance(make_apm(), PublicApiApm)


def test_the_direct_caller_never_imports_livekits_sdk() -> None:
    """The point of the direct caller: livekit's Python SDK (protobuf, asyncio, ...) stays out of
    the service's memory. A fresh interpreter builds the capture DSP and cancels a frame."""
    import subprocess
    import sys

    code = ("import sys; from device.audio.dsp import make_capture_dsp; d = make_capture_dsp('webrtc', 2, 0); "
            "d.reference(bytes(320), 16000); assert len(d.process(bytes(320))) == 320; "
            "print(sorted(m for m in sys.modules if m.startswith(('livekit.', 'google.protobuf'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr

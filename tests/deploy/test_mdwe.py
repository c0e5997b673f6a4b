"""The service's native dependencies work under MemoryDenyWriteExecute=yes.

The unit sets MemoryDenyWriteExecute=yes, which makes the kernel refuse writable-and-executable
memory. A library with a JIT or an old-style libffi closure would crash the service on a Pi, far
from any test. We cannot start a systemd unit here, but Linux 6.3+ offers the same rule to any
process: prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN). systemd 252 enforces it with a seccomp
filter that is slightly stricter (it refuses every mprotect(PROT_EXEC)), so this catches the
common failures (JIT pages, W+X mappings), not every one.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP_NO_KERNEL = 77
SKIP_NO_PACKAGE = 78

PROBE = textwrap.dedent(f"""
    import ctypes, errno, mmap, sys
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        print("prctl(PR_SET_MDWE):", errno.errorcode.get(ctypes.get_errno()))
        sys.exit({SKIP_NO_KERNEL})
    try:  # the rule is really on
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("a writable+executable mapping was allowed: PR_SET_MDWE is not in force")
    except OSError:
        pass
    try:
        import numpy as np
        import soxr
        import webrtc_noise_gain
        from livekit import rtc
        from gpiozero import LED
        from gpiozero.pins.mock import MockFactory
    except ImportError as exc:
        print("missing:", exc)
        sys.exit({SKIP_NO_PACKAGE})
    import ssl
    ssl.create_default_context()
    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
    assert callback(41) == 42
    frame = np.zeros(160, dtype=np.int16)
    apm = rtc.AudioProcessingModule(echo_cancellation=True, high_pass_filter=True)
    f = rtc.AudioFrame(data=frame.tobytes(), sample_rate=16000, num_channels=1, samples_per_channel=160)
    apm.process_reverse_stream(f)
    apm.process_stream(f)
    from device.audio.apm import DirectApm   # our own FFI caller: a PyDLL function, no closures
    direct = DirectApm()
    direct.reverse(bytes(480), 24000)
    assert len(direct.process(bytes(320))) == 320
    webrtc_noise_gain.AudioProcessor(0, 2).Process10ms(bytes(320))
    resampler = soxr.ResampleStream(16000, 24000, 1, dtype="int16")
    resampler.resample_chunk(frame)
    led = LED(22, pin_factory=MockFactory())
    led.on()
    led.close()
    print("ok")
""")


def test_dependencies_run_without_writable_executable_memory() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            timeout=120, check=False, cwd=REPO)
    if result.returncode == SKIP_NO_KERNEL:
        pytest.skip(f"kernel without PR_SET_MDWE (Linux < 6.3): {result.stdout.strip()}")
    if result.returncode == SKIP_NO_PACKAGE:
        pytest.skip(f"service dependencies not installed: {result.stdout.strip()}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")

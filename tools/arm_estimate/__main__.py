"""`python -m tools.arm_estimate [--seconds S] [--rates 16000,24000]`: see tools/arm_estimate/__init__.py."""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from hw.wavio import write_wav_mono16
from tools import REPO, bench
from tools.arm_estimate.environment import ArmEnvironment
from tools.arm_estimate.meter import MeterLog
from tools.arm_estimate.report import RateFigures, section, write_section
from tools.arm_estimate.service_call import metered_call

NICENESS = 10   # a shared machine (and CI): the emulation must not starve the others


def bare_counts(arm: ArmEnvironment, audio: Path, rate: int, tmp: Path) -> tuple[float, float]:
    """Instructions per second of audio of the bare calls (public API, direct caller), emulated."""
    meter_out = tmp / f"meter-bare-{rate}.txt"
    subprocess.run([*arm.python(meter_out, "-m", "tools.arm_estimate.guest_bare", str(audio), str(rate))],
                   env=arm.env(dict(os.environ)), cwd=REPO, check=True)
    meter = MeterLog.read(meter_out)
    return meter.between_marks(1, 2) / bench.SECONDS, meter.between_marks(2, 3) / bench.SECONDS


def measure(arm: ArmEnvironment, rate: int, seconds: float, tmp: Path) -> RateFigures:
    mic, agent = bench.make_audio(rate)
    audio = tmp / f"audio-{rate}.npz"
    np.savez(audio, mic=mic, agent=agent)
    mic_file = tmp / f"mic-{rate}.wav"
    write_wav_mono16(mic_file, mic.tobytes(), bench.DSP_RATE)
    bare, bare_direct = bare_counts(arm, audio, rate, tmp)
    print(f"{rate} Hz bare: {bare / 1e6:.1f} M instructions / s of audio (direct {bare_direct / 1e6:.1f})",
          flush=True)
    emulated = metered_call(rate, mic_file, tmp, seconds, arm)
    assert emulated.instructions is not None
    service_ips = emulated.instructions / emulated.audio_s
    print(f"{rate} Hz service: {service_ips / 1e6:.1f} M instructions / s of audio "
          f"({emulated.audio_s:.1f} s of audio in {emulated.wall_s:.1f} s)", flush=True)
    native = metered_call(rate, mic_file, tmp, seconds, None)
    print(f"{rate} Hz native: user {native.utime_s / native.wall_s:.2%}, kernel {native.stime_s / native.wall_s:.2%}, "
          f"{native.switches / native.wall_s:.0f} context switches / s", flush=True)
    return RateFigures(rate=rate, bare_ips=bare, bare_direct_ips=bare_direct, service_ips=service_ips,
                       service_realtime=emulated.audio_s / emulated.wall_s,
                       native_user_share=native.utime_s / native.wall_s,
                       native_kernel_share=native.stime_s / native.wall_s,
                       switches_per_s=native.switches / native.wall_s, window_audio_s=emulated.audio_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.arm_estimate", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="seconds of audio in the measured call window (default 20)")
    parser.add_argument("--rates", default="16000,24000", help="sample rates (default 16000,24000)")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave docs/ alone")
    args = parser.parse_args(argv)
    os.nice(max(0, NICENESS - os.nice(0)))   # the children (emulation, service, simulator) inherit it
    arm = ArmEnvironment()
    arm.ensure()
    tmp = Path(tempfile.mkdtemp(prefix="atoms-arm-"))
    figures = [measure(arm, int(rate), args.seconds, tmp) for rate in args.rates.split(",")]
    host = f"{platform.machine()} host, {os.cpu_count()} cores, qemu-aarch64 user mode"
    text = section(figures, host)
    print(text)
    if not args.no_write:
        print("wrote", write_section(text), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

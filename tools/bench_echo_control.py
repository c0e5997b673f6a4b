"""CPU of the echo control stages as a ratio to the capture DSP, measured in one run on the same audio.

    python -m tools.bench_echo_control [--seconds 20] [--json out.json]

The capture DSP (AEC3 + noise suppression 2, as the service runs it) processes a reverberant echo
scene (espeak or synthetic far-end speech through `FakeRoom`); then the same frames go through each
stage alone (drift compensation at 150 ppm on the reference, the residual echo suppressor, the
adaptive half-duplex) and all of them. Process CPU time per 10 ms frame; the ratio is the stage's
over the capture DSP's. Interleaved repetitions, median kept: the machine may be shared.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from device.audio.dsp import make_capture_dsp
from device.audio.echo_control import EchoControl, EchoControlSettings
from device.audio.formats import FRAME_SAMPLES
from hw.room import FakeRoom
from tools.signals import FAR_TEXT, room_impulse_response, speech, to_pcm16

RATE = 16000


def scene(seconds: float) -> tuple[list[bytes], list[bytes]]:
    """(reference frames, mic frames) of a reverberant echo scene, PCM16 at 16 kHz."""
    far = speech(FAR_TEXT, RATE, level=-20.0)
    far = np.resize(far, int(seconds * RATE))
    room = FakeRoom(RATE, delay_ms=40, gain_db=-10, impulse_response=room_impulse_response(RATE, 0.6, seed=2),
                    noise_dbfs=-60.0)
    refs, mics = [], []
    for i in range(len(far) // FRAME_SAMPLES):
        pcm = to_pcm16(far[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES])
        room.speaker_played(pcm, RATE)
        refs.append(pcm)
        mics.append(to_pcm16(room.mic_sound(FRAME_SAMPLES) / 32768.0))
    return refs, mics


def _cpu_per_frame(run: Callable[[], None], frames: int) -> float:
    start = time.process_time()
    run()
    return (time.process_time() - start) / frames * 1e6


def measure(seconds: float, repeats: int = 3) -> dict[str, float]:
    refs, mics = scene(seconds)
    aec_out: list[bytes] = []

    def capture_dsp() -> None:
        dsp = make_capture_dsp("webrtc", 2, 0, echo=EchoControlSettings(0.0, False, False))
        aec_out.clear()
        for ref, mic in zip(refs, mics):
            dsp.reference(ref, RATE)
            aec_out.append(dsp.process(mic))
        dsp.close()

    def stage(settings: EchoControlSettings) -> Callable[[], None]:
        def run() -> None:
            control = EchoControl(settings)
            for ref, mic, out in zip(refs, mics, aec_out):
                control.reference(ref, RATE)
                control.process(mic, out)
        return run

    runs: dict[str, Callable[[], None]] = {
        "capture_dsp_us": capture_dsp,
        "drift_us": stage(EchoControlSettings(150.0, False, False)),
        "residual_echo_us": stage(EchoControlSettings(0.0, True, False)),
        "adaptive_half_duplex_us": stage(EchoControlSettings(0.0, False, True)),
        "all_stages_us": stage(EchoControlSettings(150.0, True, True)),
    }
    capture_dsp()   # the stages need AEC3's output; also warms caches
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            samples[name].append(_cpu_per_frame(run, len(refs)))
    result = {name: round(statistics.median(values), 1) for name, values in samples.items()}
    base = result["capture_dsp_us"]
    for name in list(runs)[1:]:
        result[name.replace("_us", "_ratio")] = round(result[name] / base, 3)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.seconds)
    for name, value in result.items():
        print(f"{name:28s} {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Run inside the aarch64 emulation: the bench's bare DSP calls on the host-made audio, between marks.

    python -m tools.arm_estimate.guest_bare AUDIO.npz RATE

Marks (tools.arm_estimate.meter.mark): 1-2 around livekit's public API (tools.bench.bare_cpu), 2-3
around the direct FFI caller (tools.bench.bare_direct_cpu), each on tools.bench.SECONDS of audio.
"""
from __future__ import annotations

import sys

import numpy as np

from tools import bench
from tools.arm_estimate.meter import mark


def main(argv: list[str]) -> int:
    audio = np.load(argv[0])
    rate = int(argv[1])
    mic, agent = audio["mic"], audio["agent"]
    mark(1)
    bench.bare_cpu(mic, agent, rate)
    mark(2)
    bench.bare_direct_cpu(mic, agent, rate)
    mark(3)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

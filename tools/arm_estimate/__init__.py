"""`python -m tools.arm_estimate` (`make arm-estimate`): a Pi Zero 2 W CPU figure from counted instructions.

The aarch64 build (Debian 12 arm64's Python 3.11, PyPI's aarch64 wheels of livekit,
webrtc-noise-gain, numpy, soxr...) runs under QEMU's user-mode emulation with insn_meter, a plugin
counting the guest instructions retired. Two things are counted on the same audio as `make bench`:
the bare DSP calls (tools.bench.bare_cpu: AEC + NS + resample through livekit's public API, on one
thread) and the whole service in a paced call with the simulator (fake audio, room echo, AEC + NS).
Each becomes instructions per second of audio, then a share of one Cortex-A53 core at the Zero 2 W's
clock for an assumed range of instructions per cycle (report.py says which and why). The environment
is built on first use into ~/.cache/atoms-appliance-arm (environment.py).
"""

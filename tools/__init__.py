"""Programs that run or measure the product and are not tests, and the instruments they share.

Run from the repository root (`make bench`, `make soak`, `make test-faults` call them):

- `python -m tools.bench`: CPU, latency and memory figures (docs/benchmarks.md);
- `python -m tools.bench_wake [--quick]`: the wake word detector's detection rate, false accepts,
  CPU and memory (its section of docs/benchmarks.md);
- `python -m tools.soak [--quick | --unpaced]`: one long call, resources sampled (docs/reliability.md);
- `python -m tools.fault_report`: docs/reliability.md's fault table from the fault suite's results;
- `python -m tools.plot_echo_reduction`: docs/echo-reduction.svg;
- `python -m tools.arm_estimate` (`make arm-estimate`): the Pi Zero 2 W figure from instructions
  counted under aarch64 emulation (docs/benchmarks.md).
- `python -m tools.bench_room [--quick | --cells ...]`: the room matrix (docs/echo.md, docs/room-matrix.svg).
- `python -m tools.bench_echo_control`: CPU of the echo control stages as a ratio to the capture DSP
  (docs/echo-edge.md).

Their shared instruments are modules here too: `signals` (synthetic speech, the simulated room,
echo measurements), `service_process` (the real service as a child process, watched through its
log), `fault_service` (the same plus its resources from /proc and its stats file), `polling`
(the one bounded wait on a predicate), `room_ir` (reverberant impulse responses from
pyroomacoustics), `wake_audio` (spoken wake words, real recordings, running a
detector over audio) and `wake_negatives` (the false-accept benchmark's hour of non-wake-word
audio). The tests import these; tools never import `tests` (tests/test_layers.py checks it), so
the dependencies point one way: `hw` <- `device` <- `tools` <- `tests`. Not installed with the package: like the tests, they
need the repository.
"""
from __future__ import annotations

from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parent.parent

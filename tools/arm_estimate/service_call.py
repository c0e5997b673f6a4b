"""The real service in a paced call with the simulator, measured over a window of the call.

The service runs either natively or under the aarch64 emulation with insn_meter; the simulator
always runs natively (its cost is the agent's, not the device's). The window runs from the first
stats write with audio sent to the first one `seconds` of audio later (stats every STATS_INTERVAL s): the
audio in it is the stats' `frames_sent` difference, its instructions insn_meter's count between the
two writes' times (the file's mtime, on CLOCK_MONOTONIC), its CPU time the process's utime/stime.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from device.audio.formats import FRAME_MS
from tools import REPO
from tools.arm_estimate.environment import ArmEnvironment
from tools.arm_estimate.meter import MeterLog
from tools.bench_paced import service_env

STATS_INTERVAL: Final = 2.0
START_TIMEOUT: Final = 300.0   # the service's imports under emulation, on a loaded host


@dataclass(frozen=True)
class CallWindow:
    """What one window of a paced call cost: audio, wall time, CPU time, guest instructions."""

    audio_s: float
    wall_s: float
    utime_s: float
    stime_s: float
    switches: int                # context switches of the process's threads (voluntary + forced)
    instructions: float | None   # None when run natively


def _cpu_times(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def _context_switches(pid: int) -> int:
    """Context switches so far, summed over the process's threads (one that ended is not counted)."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def _next_stats(path: Path, after_ns: int, deadline: float, proc: subprocess.Popen[bytes]) -> tuple[int, dict]:
    """The next stats write after mtime `after_ns`: (its CLOCK_MONOTONIC time in ns, its content)."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode} before the window ended")
        try:
            mtime = path.stat().st_mtime_ns
            if mtime > after_ns:
                stats = json.loads(path.read_text())
                return mtime, stats
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.05)   # polling a file another process writes: nothing to wait on
    raise TimeoutError(f"no stats write in {path} in time")


def metered_call(rate: int, mic_file: Path, tmp: Path, seconds: float,
                 arm: ArmEnvironment | None) -> CallWindow:
    sim = subprocess.Popen([sys.executable, "-m", "device", "sim", "--port", "0", "--api-key", "bench-key"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    assert sim.stdout is not None
    url = sim.stdout.readline().split(" on ", 1)[1].strip()
    # The same call as tools/bench.py's paced call (fake audio with room echo, AEC + NS).
    env = service_env(rate, url, mic_file, tmp, {"ATOMS_STATS_INTERVAL": str(STATS_INTERVAL)})
    stats_file = Path(env["ATOMS_STATS_FILE"])
    stats_file.unlink(missing_ok=True)
    meter_out = tmp / f"meter-service-{rate}.txt"
    if arm is not None:
        cmd, env = arm.python(meter_out, "-m", "device", "run"), arm.env(env)
    else:
        cmd = [sys.executable, "-m", "device", "run"]
    service = subprocess.Popen(cmd, env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        realtime_offset = time.time_ns() - time.monotonic_ns()
        deadline = time.monotonic() + START_TIMEOUT
        mtime, stats = 0, {"frames_sent": 0}
        while not stats["frames_sent"]:
            mtime, stats = _next_stats(stats_file, mtime, deadline, service)
        t0, frames0, cpu0 = mtime, stats["frames_sent"], _cpu_times(service.pid)
        switches0 = _context_switches(service.pid)
        deadline = time.monotonic() + seconds * 20 + 60
        while (stats["frames_sent"] - frames0) * FRAME_MS / 1000 < seconds:   # seconds of audio, not wall
            mtime, stats = _next_stats(stats_file, mtime, deadline, service)
        t1, frames1, cpu1 = mtime, stats["frames_sent"], _cpu_times(service.pid)
        switches1 = _context_switches(service.pid)
        time.sleep(0.2)   # let insn_meter tick past the last write
    finally:
        service.terminate()
        try:
            service.wait(60)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        sim.terminate()
        sim.wait(10)
    instructions = None
    if arm is not None:
        meter = MeterLog.read(meter_out)
        instructions = meter.at(t1 - realtime_offset) - meter.at(t0 - realtime_offset)
    return CallWindow(audio_s=(frames1 - frames0) * FRAME_MS / 1000, wall_s=(t1 - t0) / 1e9,
                      utime_s=cpu1[0] - cpu0[0], stime_s=cpu1[1] - cpu0[1],
                      switches=switches1 - switches0, instructions=instructions)

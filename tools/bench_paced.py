"""The real service in a real-time call with the local simulator, and where its CPU goes.

`paced_call` starts the simulator and the service (`python -m device run`, fake audio paced by
the real clock, room echo, the default DSP) as two processes, lets the service start up, then
measures a window of the call: the service's CPU share (/proc), per-thread CPU, wake-ups and
preemptions (tools/bench_threads.py), and, from the service's own stats file, the capture-to-send
latency and RSS. With `profile_to`, py-spy samples the service over the same window (on-CPU
samples only: py-spy stops the process for each sample, which is
what tells a running thread from a waiting one; so it runs in a call of its own, not measured) and the samples are split into the
fake devices' own cost (hw/fake_audio.py, hw/clock.py: what a real card does not cost in Python)
and the rest. With `count_gil`, perf counts each thread's GIL acquisitions (a uprobe on
libpython's `take_gil`), where perf and the symbol are available.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from device.audio.formats import DSP_RATE, FRAME_BYTES
from device.service.cpu import choose_cpus
from hw.wavio import write_wav_mono16
from tools import REPO
from tools.bench_threads import by_name, sample, table

STARTUP_TIMEOUT = 60.0  # seconds for the service to start and the call to send audio
SETTLE_SECONDS = 2.0    # after start-up (not part of the call's CPU share), for the call to come up
FAKE_FILES = ("hw/fake_audio.py", "hw/clock.py")


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_simulator() -> tuple[subprocess.Popen[str], str]:
    sim = subprocess.Popen([sys.executable, "-m", "device", "sim", "--port", "0", "--api-key", "bench-key"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    assert sim.stdout is not None
    return sim, sim.stdout.readline().split(" on ", 1)[1].strip()


def service_env(rate: int, url: str, mic_file: Path, tmp: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The service's environment for a bench call (fake audio, no GPIO, stats every 10 s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMS_")}
    env.update({
        "ATOMS_API_KEY": "bench-key", "ATOMS_AGENT_ID": "sim-agent", "ATOMS_URL": url,
        "ATOMS_SAMPLE_RATE": str(rate), "ATOMS_AUDIO_BACKEND": "fake", "ATOMS_CALL_MODE": "always",
        "ATOMS_GPIO_BACKEND": "none", "ATOMS_FAKE_CAPTURE_FILE": str(mic_file),
        "ATOMS_FAKE_ECHO_GAIN_DB": "-6", "ATOMS_FAKE_ECHO_DELAY_MS": "60",
        "ATOMS_CONTROL_SOCKET": str(tmp / f"bench-{rate}.sock"), "ATOMS_STATE_DIR": str(tmp / "state"),
        "ATOMS_STATS_FILE": str(tmp / f"stats-{rate}.json"), "ATOMS_EARCONS": "false",
        "ATOMS_LOG_LEVEL": "WARNING",
    })
    env.update(extra or {})
    return env


def _wait_in_call(service: subprocess.Popen[bytes], stats_file: Path) -> None:
    """Return once the service is up (its first stats, written at its first tick after start-up)
    and a settle time for the call to connect has passed."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline and service.poll() is None:
        try:
            if "frames_sent" in json.loads(stats_file.read_text()):
                time.sleep(SETTLE_SECONDS)
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the service did not start a call within {STARTUP_TIMEOUT:.0f} s")


def _stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 15 s (a loaded host is slow to exit)."""
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def _py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


def _start_profiler(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    spy = _py_spy()
    if spy is None:
        print("py-spy not found (pip install -e '.[bench]'): no profile", file=sys.stderr)
        return None
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
                             "--threads", "--gil", "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _gil_probe() -> str | None:
    """Add (once) a perf uprobe on libpython's take_gil; the event name, or None without one."""
    lib = Path(sysconfig.get_config_var("LIBDIR") or "") / str(sysconfig.get_config_var("INSTSONAME") or "")
    target = str(lib) if lib.is_file() else sys.executable
    if shutil.which("perf") is None:
        return None
    subprocess.run(["perf", "probe", "-q", "-x", target, "-a", "bench_take_gil=take_gil"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    listed = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True, check=False).stdout
    for line in listed.splitlines():
        if "bench_take_gil" in line:
            return line.split()[0]
    return None


def _remove_gil_probe(event: str) -> None:
    subprocess.run(["perf", "probe", "-q", "-d", event], check=False, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def _start_gil_count(pid: int, event: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["perf", "stat", "--per-thread", "-x", ",", "-e", event, "-o", str(out),
                             "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _gil_per_thread(out: Path, names: dict[int, str], seconds: float) -> dict[str, float]:
    """perf's per-thread CSV (`comm-tid,count,...`) as GIL acquisitions per second per thread name."""
    per: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        parts = line.split(",")
        if len(parts) < 2 or not parts[1].strip().isdigit():
            continue
        tid = parts[0].rsplit("-", 1)[-1]
        name = names.get(int(tid), parts[0].rsplit("-", 1)[0]) if tid.isdigit() else parts[0]
        per[name] += int(parts[1])
    return {k: round(v / seconds, 1) for k, v in per.most_common()}


def profile_summary(raw: Path) -> dict[str, Any]:
    """py-spy's raw (collapsed) stacks as shares of the on-CPU samples: per thread, the fakes'
    own frames (any stack through hw/fake_audio.py or hw/clock.py), and the top leaf functions."""
    samples: Counter[str] = Counter()
    fakes: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0]
        total += count
        samples[thread] += count
        if any(f in stack for f in FAKE_FILES):
            fakes[thread] += count
        leaves[frames[-1]] += count
    total = max(total, 1)
    return {"samples": total,
            "threads": {k: round(v / total, 3) for k, v in samples.most_common()},
            "fake_devices_share": round(sum(fakes.values()) / total, 3),
            "fake_devices_by_thread": {k: round(v / total, 3) for k, v in fakes.most_common()},
            "top_leaves": {k: round(v / total, 3) for k, v in leaves.most_common(15)}}


def paced_call(rate: int, mic: np.ndarray, tmp: Path, seconds: float = 20.0, env: dict[str, str] | None = None,
               profile_to: Path | None = None, count_gil: bool = False, repo: Path = REPO) -> dict[str, Any]:
    """A paced call of the real service (see the module docstring); the measurements as a dict.
    `repo`: the checkout whose service runs (another one measures a "before" on the same audio)."""
    sim, url = _start_simulator()
    mic_file = tmp / f"paced-mic-{rate}.wav"
    write_wav_mono16(mic_file, mic[: int((seconds + 10) * DSP_RATE)].tobytes(), DSP_RATE)
    stats_file = tmp / f"stats-{rate}.json"
    stats_file.unlink(missing_ok=True)
    service_vars = service_env(rate, url, mic_file, tmp, env)
    service_vars["PYTHONPATH"] = str(repo)
    # Pinned as the unit pins it (CPUAffinity=, before the process starts: device/service/cpu.py).
    unit_cpus = choose_cpus("auto", frozenset(os.sched_getaffinity(0)))
    service = subprocess.Popen(
        [sys.executable, "-m", "device", "run"], env=service_vars, cwd=repo, stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, unit_cpus)) if unit_cpus else None)  # noqa: PLW1509 - one syscall, no locks taken
    gil_event = _gil_probe() if count_gil else None
    try:
        _wait_in_call(service, stats_file)
        gil_out = tmp / f"gil-{rate}.csv"
        gil = _start_gil_count(service.pid, gil_event, gil_out) if gil_event else None
        profiler = _start_profiler(service.pid, seconds, profile_to) if profile_to is not None else None
        wall0, cpu0, threads0 = time.monotonic(), _process_cpu(service.pid), sample(service.pid)
        time.sleep(seconds)
        wall, used, threads1 = time.monotonic() - wall0, _process_cpu(service.pid) - cpu0, sample(service.pid)
        if gil is not None:
            gil.send_signal(2)
            gil.wait(10)
        if profiler is not None:
            profiler.wait(30)
        rss_in_call = json.loads(stats_file.read_text())["rss_mb"]   # written every 10 s: in the call
    finally:
        if gil_event:
            _remove_gil_probe(gil_event)
        _stop(service)
        _stop(sim)
    stats = json.loads(stats_file.read_text())
    per_name = by_name(threads0, threads1)
    result: dict[str, Any] = {
        "latency": stats["capture_to_send_ms"], "rss_mb": max(rss_in_call, stats["rss_mb"]),
        "cpu_share": used / wall, "threads_cpu_share": sum(c.cpu_ns for c in per_name.values()) / 1e9 / wall,
        "threads": table(per_name, wall), "frames_sent": stats["frames_sent"],
        "agent_periods": stats["counters"]["agent_periods_played"], "flushes": stats["counters"]["flushes"],
        "wakeups_per_s": round(sum(c.voluntary for c in per_name.values()) / wall, 1),
    }
    if gil_event:
        result["gil_acquisitions_per_s"] = _gil_per_thread(gil_out, {t: c.name for t, c in threads1.items()}, wall)
    if profile_to is not None and profile_to.exists():
        result["profile"] = profile_summary(profile_to)
    return result


Canceller = Callable[[bytes, bytes], bytes]   # (mic frame, speaker frame) -> echo-cancelled frame


def bare_paced_cpu(mic: np.ndarray, agent: np.ndarray, rate: int, make_cancel: Callable[[], Canceller],
                   period_ms: int, seconds: float) -> float:
    """CPU share of one core of the bare DSP calls (canceller, NS, uplink resample) done in real
    time: one thread that sleeps until each period of `period_ms` is due, as a program reading a
    card would, then makes the calls for that period's 10 ms frames. What any real-time program
    pays for these calls at this period (its wake-ups included), on the same audio and pinned to
    the CPU the service pins itself to."""
    from webrtc_noise_gain import AudioProcessor

    result: list[float] = []

    def run() -> None:
        cancel = make_cancel()
        ns = AudioProcessor(0, 2)
        rs = soxr.ResampleStream(DSP_RATE, rate, 1, dtype="int16", quality="LQ") if rate != DSP_RATE else None
        mic_b, agent_b, ref_bytes = mic.tobytes(), agent.tobytes(), rate // 100 * 2
        frames_per_period, periods = period_ms // 10, int(seconds * 1000 / period_ms)
        clock = time.clock_gettime
        cpu0, start = clock(time.CLOCK_THREAD_CPUTIME_ID), time.monotonic()
        frame = 0
        for period in range(periods):
            delay = start + (period + 1) * period_ms / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for _ in range(frames_per_period):
                out = ns.Process10ms(cancel(mic_b[frame * FRAME_BYTES:(frame + 1) * FRAME_BYTES],
                                            agent_b[frame * ref_bytes:(frame + 1) * ref_bytes])).audio
                if rs is not None:
                    rs.resample_chunk(np.frombuffer(out, "<i2"))
                frame += 1
        result.append((clock(time.CLOCK_THREAD_CPUTIME_ID) - cpu0) / (time.monotonic() - start))

    before = os.sched_getaffinity(0)
    pinned = choose_cpus("auto", frozenset(before))
    if pinned:
        os.sched_setaffinity(0, pinned)   # the thread inherits it, as the service's threads do
    try:
        thread = threading.Thread(target=run, name="bench-bare-paced")
        thread.start()
        thread.join()
    finally:
        os.sched_setaffinity(0, before)
    return result[0]


def fake_devices_cpu(mic_file: Path, rate: int, period_ms: int, seconds: float = 20.0) -> float:
    """CPU share of one core that the fake devices' own Python costs in a call (what a real card
    does not): `FakeCapture.read` with the bench's room echo and `FakePlayback.write`, one period
    each per `period_ms`, timed unpaced (`UnpacedClock`: the pacing sleep itself is not counted,
    a card's driver blocks as well) and divided by the real time those periods stand for."""
    from hw.clock import UnpacedClock
    from hw.fake_audio import FakeAudioBackend, FakeRoom

    room = FakeRoom(DSP_RATE, delay_ms=60, gain_db=-6)
    backend = FakeAudioBackend(capture_file=mic_file, clock_factory=UnpacedClock, keep_history=False, room=room)
    capture = backend.capture(DSP_RATE, DSP_RATE * period_ms // 1000)
    playback = backend.playback(rate, rate * period_ms // 1000, 3)
    capture.open()
    playback.open()
    period = (np.arange(rate * period_ms // 1000) % 200 * 50).astype("<i2").tobytes()
    periods = int(seconds * 1000 / period_ms)
    start = time.process_time()
    for _ in range(periods):
        playback.write(period)
        capture.read()
    used = time.process_time() - start
    capture.close()
    playback.close()
    backend.close()
    return used / seconds

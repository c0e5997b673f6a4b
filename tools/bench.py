"""`make bench`: the audio pipeline's cost, latency and memory against the issue's targets.

1. CPU: the full-duplex pipeline (fake mic with room echo -> AEC + NS -> resample -> uplink
   encode; agent audio decode -> jitter buffer -> fake speaker -> AEC reference) over 60 s of
   audio with unpaced fakes, against the bare library calls (AEC + NS + resample) on the same
   audio in the same run. Target: ratio <= 1.5.
2. Real time: the real service in a paced call with the local simulator (a subprocess), 20 s per
   rate: capture-to-send latency (target p99 < 5 ms), CPU share of one core, RSS (< 100 MB).
3. Interruption: 200 flushes at random phases of a paced playback; time until the device buffer
   is dropped (target p99 < one period + 5 ms).
Writes docs/benchmarks.md and exits 1 when a target is missed. Numbers are never asserted in
unit tests: timing depends on the machine.
"""
from __future__ import annotations

import base64
import gc
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import soxr

from device.audio.apm import DirectApm
from device.audio.buffers import JitterBuffer, UplinkQueue
from device.audio.dsp import make_capture_dsp
from device.audio.formats import DSP_RATE, FRAME_BYTES
from device.audio.pipeline import AudioPipeline
from device.service.cpu import choose_cpus
from device.service.settings import Settings
from device.session.protocol import ServerMessageDecoder, encode_audio
from hw.clock import LockstepClock, RealClock, UnpacedClock
from hw.fake_audio import FakeAudioBackend, FakeRoom
from hw.wavio import write_wav_mono16
from tools import signals
from tools.bench_paced import bare_paced_cpu, fake_devices_cpu, paced_call
from tools.bench_report import write_report

SECONDS = 60
FRAMES = SECONDS * 100
SERVICE_PERIOD_MS: Final[int] = Settings.model_fields["period_ms"].default   # the service's default period
PACED_SECONDS = 20.0
RATIO_TARGET = 1.5
RSS_TARGET_MB = 60.0

SENTENCES = [
    "Hello, I would like to know when the shop opens tomorrow morning.",
    "Can you tell me whether you have the blue jacket in a medium size?",
    "Thanks, and how long does delivery usually take to the city centre?",
]
ANSWERS = [
    "We open at nine in the morning and close at six in the evening on weekdays.",
    "Yes, the blue jacket is in stock in medium, and it is on the second floor.",
]


def loop_to(x: np.ndarray, n: int) -> np.ndarray:
    reps = int(np.ceil(n / max(len(x), 1)))
    return np.tile(x, reps)[:n]


def make_audio(rate: int) -> tuple[np.ndarray, np.ndarray]:
    """60 s of mic audio at 16 kHz (user speech + room echo of the agent + noise) and 60 s of
    agent speech at `rate`, both PCM16 arrays."""
    user = signals.with_pauses([signals.speech(s, DSP_RATE, level=-26) for s in SENTENCES], DSP_RATE, 1.5)
    agent = signals.with_pauses([signals.speech(s, rate, level=-20) for s in ANSWERS], rate, 0.7)
    user, agent = loop_to(user, SECONDS * DSP_RATE), loop_to(agent, SECONDS * rate)
    room = FakeRoom(DSP_RATE, delay_ms=60, gain_db=-6, impulse_response=signals.room_impulse_response(DSP_RATE))
    echo = np.zeros_like(user)
    step_in, step_out = rate // 100, DSP_RATE // 100
    for i in range(FRAMES):
        room.speaker_played(signals.to_pcm16(signals.soft_clip(agent[i * step_in:(i + 1) * step_in])), rate)
        echo[i * step_out:(i + 1) * step_out] = room.mic_echo(step_out) / 32768.0
    mic = user + echo + signals.white_noise(len(user), -60, seed=3)
    return (np.frombuffer(signals.to_pcm16(mic), "<i2").copy(),
            np.frombuffer(signals.to_pcm16(agent), "<i2").copy())


Canceller = Callable[[bytes, bytes], bytes]   # (mic frame, speaker frame) -> echo-cancelled frame


def _bare_calls_cpu(mic: np.ndarray, agent: np.ndarray, rate: int, make_cancel: Callable[[], Canceller]) -> float:
    """CPU seconds of a canceller from `make_cancel`, then NS and the uplink resample, for each
    10 ms of the audio, on one thread."""
    from webrtc_noise_gain import AudioProcessor

    cancel = make_cancel()
    ns = AudioProcessor(0, 2)
    rs = soxr.ResampleStream(DSP_RATE, rate, 1, dtype="int16", quality="LQ") if rate != DSP_RATE else None
    mic_b, agent_b, ref_bytes = mic.tobytes(), agent.tobytes(), rate // 100 * 2
    start = time.process_time()
    for i in range(FRAMES):
        out = ns.Process10ms(cancel(mic_b[i * FRAME_BYTES:(i + 1) * FRAME_BYTES],
                                    agent_b[i * ref_bytes:(i + 1) * ref_bytes])).audio
        if rs is not None:
            rs.resample_chunk(np.frombuffer(out, "<i2"))
    elapsed = time.process_time() - start
    del cancel, ns, rs  # the APM's native threads must not run on into the next measurement
    gc.collect()
    return elapsed


def livekit_canceller(rate: int) -> Callable[[], Canceller]:
    """AEC reverse + forward through livekit's public API (the issue's "bare library calls")."""
    from livekit.rtc import AudioFrame, AudioProcessingModule

    def make_cancel() -> Canceller:
        apm = AudioProcessingModule(echo_cancellation=True, high_pass_filter=True)

        def cancel(mic_frame: bytes, speaker_frame: bytes) -> bytes:
            apm.process_reverse_stream(AudioFrame(speaker_frame, rate, 1, rate // 100))
            frame = AudioFrame(mic_frame, DSP_RATE, 1, 160)
            apm.process_stream(frame)
            return bytes(frame.data)

        return cancel

    return make_cancel


def direct_canceller(rate: int) -> Callable[[], Canceller]:
    """The canceller through our direct FFI caller (`DirectApm`), the way the pipeline calls it."""

    def make_cancel() -> Canceller:
        apm = DirectApm()

        def cancel(mic_frame: bytes, speaker_frame: bytes) -> bytes:
            apm.reverse(speaker_frame, rate)
            return apm.process(mic_frame)

        return cancel

    return make_cancel


def bare_cpu(mic: np.ndarray, agent: np.ndarray, rate: int) -> float:
    """CPU seconds of the library calls alone, through livekit's public API: AEC reverse +
    forward, NS, and the uplink resample, unpaced on one thread."""
    return _bare_calls_cpu(mic, agent, rate, livekit_canceller(rate))


def bare_direct_cpu(mic: np.ndarray, agent: np.ndarray, rate: int) -> float:
    """The same calls with the canceller through `DirectApm`: the stricter baseline, with none
    of livekit's Python per call."""
    return _bare_calls_cpu(mic, agent, rate, direct_canceller(rate))


def components_cpu(mic: np.ndarray, agent: np.ndarray, rate: int, tmp: Path) -> float:
    """CPU seconds of our own classes doing the pipeline's per-frame work on one thread, in the
    order the threads interleave on a device (speaker period, then mic frame): the fake devices,
    `CaptureChain.process`/`reference`, the uplink `Resampler`, and the protocol encode/decode."""
    from device.audio.resampler import Resampler

    mic_file = tmp / f"mic1-{rate}.wav"
    write_wav_mono16(mic_file, mic.tobytes(), DSP_RATE)
    backend = FakeAudioBackend(capture_file=mic_file, clock_factory=UnpacedClock, keep_history=False)
    cap, play = backend.capture(DSP_RATE, 160), backend.playback(rate, rate // 100)
    cap.open()
    play.open()
    dsp = make_capture_dsp("webrtc", 2, 0)
    up = Resampler(DSP_RATE, rate)
    decoder = ServerMessageDecoder()
    ref_bytes, chunk = rate // 100 * 2, rate * 20 // 1000 * 2
    raw = agent.tobytes()
    deltas = [json.dumps({"type": "output_audio.delta", "audio": base64.b64encode(raw[i:i + 4 * ref_bytes]).decode()})
              for i in range(0, len(raw), 4 * ref_bytes)]
    jitter = JitterBuffer(len(raw) + 4096)
    start = time.process_time()
    for m in deltas:
        jitter.push(decoder.decode(m).pcm)  # type: ignore[union-attr]
    for _ in range(FRAMES):
        period = jitter.pop(ref_bytes) or bytes(ref_bytes)
        play.write(period)
        dsp.reference(period, rate)
        up.push(dsp.process(cap.read()))
        out = up.pop(chunk)
        if out is not None:
            encode_audio(out)
    elapsed = time.process_time() - start
    dsp.close()
    cap.close()
    play.close()
    del dsp
    gc.collect()
    return elapsed


def thread_cpu(thread: threading.Thread | None) -> float:
    assert thread is not None and thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def pipeline_cpu(mic: np.ndarray, agent: np.ndarray, rate: int, tmp: Path) -> dict[str, float]:
    """CPU seconds of our pipeline for the same 60 s, per thread, normalised to exactly 60 s."""
    mic_file = tmp / f"mic-{rate}.wav"
    write_wav_mono16(mic_file, mic.tobytes(), DSP_RATE)
    # The receiver's work: decode 40 ms output_audio.delta messages into the jitter buffer.
    chunk = rate * 40 // 1000 * 2
    raw = agent.tobytes()
    messages = [json.dumps({"type": "output_audio.delta", "audio": base64.b64encode(raw[i:i + chunk]).decode()})
                for i in range(0, len(raw), chunk)]
    jitter = JitterBuffer(len(raw) + 4096)
    decoder = ServerMessageDecoder()
    start = time.process_time()
    for m in messages:
        jitter.push(decoder.decode(m).pcm)  # type: ignore[union-attr]
    receiver = time.process_time() - start

    shared = LockstepClock()  # unpaced, but mic and speaker in step as on one sound card
    backend = FakeAudioBackend(capture_file=mic_file, clock_factory=shared.member, keep_history=False)
    uplink = UplinkQueue(100_000)
    p = AudioPipeline(backend, make_capture_dsp("webrtc", 2, 0), uplink, jitter, lambda e: None,
                      session_rate=rate, clock=RealClock())
    p.set_mic_gate(True)
    sent = [0]
    stop = threading.Event()

    def send() -> None:  # the sender's work, without a socket: base64 + JSON per 20 ms chunk
        while not stop.is_set():
            c = uplink.get(0.05)
            if c is not None:
                encode_audio(c.pcm)
                sent[0] += 1

    sender = threading.Thread(target=send, name="bench-sender")
    sender.start()
    p.start()
    while (c := p.counters())["frames_captured"] < FRAMES or c["agent_periods_played"] < FRAMES or len(uplink):
        time.sleep(0.02)
    cap = thread_cpu(p.capture._thread)
    play = thread_cpu(p.playback._thread)
    snd = thread_cpu(sender)
    c = p.counters()
    frames, periods, chunks = c["frames_captured"], c["periods_played"], max(sent[0], 1)
    stop.set()
    p.stop()
    p.join(5)
    sender.join(5)
    return {
        "capture": cap * FRAMES / frames,
        "playback": play * FRAMES / periods,
        "sender": snd * (FRAMES // 2) / chunks,
        "receiver": receiver,
    }


def interruption_latency(rate: int, flushes: int = 200, period_ms: int = SERVICE_PERIOD_MS) -> dict[str, float | None]:
    """Paced playback with agent audio; flush at random phases; time to the device drop (ms)."""
    backend = FakeAudioBackend(clock_factory=RealClock, keep_history=False)
    p = AudioPipeline(backend, make_capture_dsp("off", 0, 0), UplinkQueue(10), JitterBuffer(rate * 2 * 10),
                      lambda e: None, session_rate=rate, clock=RealClock(), period_ms=period_ms)
    p.start()
    rng = random.Random(5)
    tone = np.full(rate // 10, 3000, "<i2").tobytes()  # 100 ms of "agent audio"
    for _ in range(flushes):
        p.jitter.push(tone)
        time.sleep(0.02 + rng.random() * 0.02)
        p.flushed_event.clear()
        p.flush()
        p.flushed_event.wait(1)
    p.stop()
    p.join(5)
    return p.flush_latency.percentiles_ms(0.5, 0.99)


def pipeline_cpu_on(cpus: frozenset[int], mic: np.ndarray, agent: np.ndarray, rate: int, tmp: Path,
                    runs: int = 3) -> dict[str, float]:
    """Best of `runs` pipeline measurements with the pipeline's threads on `cpus` (they inherit the
    starting thread's affinity, as the service's threads do under the unit's `CPUAffinity=`)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        measured = [pipeline_cpu(mic, agent, rate, tmp) for _ in range(runs)]
    finally:
        os.sched_setaffinity(0, before)
    return min(measured, key=lambda r: sum(r.values()))


def paced_ratio_run(rate: int, mic: np.ndarray, agent: np.ndarray, tmp: Path, seconds: float = PACED_SECONDS,
                    period_ms: int = SERVICE_PERIOD_MS) -> dict[str, Any]:
    """The paced service call and, right after it on the same audio, the bare calls done in real
    time at the same period: the issue's whole-service / bare-DSP ratio, measured under the same
    load."""
    paced = paced_call(rate, mic, tmp, seconds, env={"ATOMS_PERIOD_MS": str(period_ms)})
    bare = bare_paced_cpu(mic, agent, rate, livekit_canceller(rate), period_ms, seconds)
    return {"paced": paced, "bare_paced_share": bare, "paced_ratio": paced["cpu_share"] / bare}


def breakdown(rate: int, mic: np.ndarray, tmp: Path, seconds: float = 10.0) -> dict[str, Any]:
    """Two more paced calls for the breakdown, each perturbing the service (not measured for CPU):
    one under py-spy (shares of the GIL-holding samples), one with perf counting GIL acquisitions."""
    out: dict[str, Any] = {}
    spied = paced_call(rate, mic, tmp, seconds, profile_to=tmp / f"profile-{rate}.txt")
    out["profile"] = spied.get("profile")
    counted = paced_call(rate, mic, tmp, seconds, count_gil=True)
    out["gil_acquisitions_per_s"] = counted.get("gil_acquisitions_per_s")
    return out


def run_all() -> int:
    sys.setswitchinterval(0.001)  # as the service does: short GIL slices for the audio threads
    allowed = frozenset(os.sched_getaffinity(0))
    # As the service runs by default (ATOMS_CPU_AFFINITY=auto): the audio threads on one CPU. Only
    # the pipeline's threads are pinned here: the simulator and service subprocesses of the paced
    # call must not inherit it (the service is started pinned as its unit pins it).
    pinned = choose_cpus("auto", allowed) or allowed
    tmp = Path(tempfile.mkdtemp(prefix="atoms-bench-"))
    results: dict[int, dict[str, Any]] = {}
    failures: list[str] = []
    for rate in (16000, 24000):
        mic, agent = make_audio(rate)
        # Best of three for each: the least disturbed run is the cost of the code.
        pipe = pipeline_cpu_on(pinned, mic, agent, rate, tmp)
        free = pipeline_cpu_on(allowed, mic, agent, rate, tmp)
        total, total_free = sum(pipe.values()), sum(free.values())
        bare = min(bare_cpu(mic, agent, rate) for _ in range(3))
        bare_direct = min(bare_direct_cpu(mic, agent, rate) for _ in range(3))
        single = min(components_cpu(mic, agent, rate, tmp) for _ in range(3))
        # Best of two paced calls (each with its own bare-paced run right after it).
        runs = [paced_ratio_run(rate, mic, agent, tmp) for _ in range(2)]
        best = min(runs, key=lambda r: r["paced_ratio"])
        paced = best["paced"]
        flush = interruption_latency(rate)
        mic_file = tmp / f"paced-mic-{rate}.wav"
        results[rate] = {"bare_s": bare, "bare_direct_s": bare_direct, "pipeline_s": total,
                         "pipeline_free_s": total_free, "single_s": single, "threads": pipe,
                         "threads_free": free, "ratio": total / bare, "share": total / SECONDS,
                         "paced": paced, "flush": flush, "bare_paced_share": best["bare_paced_share"],
                         "paced_ratio": best["paced_ratio"],
                         "paced_vs_unpaced_bare": paced["cpu_share"] / (bare / SECONDS),
                         "fake_share": fake_devices_cpu(mic_file, rate, SERVICE_PERIOD_MS)}
        if rate == 16000:
            results[rate]["breakdown"] = breakdown(rate, mic, tmp)
        print(f"{rate} Hz: pipeline {total:.2f} s CPU for {SECONDS} s audio ({total_free:.2f} s unpinned), "
              f"bare {bare:.2f} s (direct {bare_direct:.2f} s), ratio {total / bare:.2f}; paced service "
              f"{paced['cpu_share']:.2%} vs bare paced {best['bare_paced_share']:.2%} = {best['paced_ratio']:.2f}x; "
              f"latency {paced['latency']}, RSS {paced['rss_mb']} MB; interruption {flush}", flush=True)
        if total / bare > RATIO_TARGET:
            failures.append(f"{rate} Hz: pipeline/bare CPU ratio {total / bare:.2f} > {RATIO_TARGET}")
        if best["paced_ratio"] > RATIO_TARGET:
            failures.append(f"{rate} Hz: paced service / bare paced DSP {best['paced_ratio']:.2f} > {RATIO_TARGET}")
        if (paced["latency"]["p99"] or 0) > 5:
            failures.append(f"{rate} Hz: capture-to-send p99 {paced['latency']['p99']} ms > 5 ms")
        if (flush["p99"] or 0) > SERVICE_PERIOD_MS + 5:
            failures.append(f"{rate} Hz: interruption p99 {flush['p99']} ms > one period + 5 ms")
        if paced["rss_mb"] > RSS_TARGET_MB:
            failures.append(f"{rate} Hz: RSS {paced['rss_mb']} MB > {RSS_TARGET_MB:.0f} MB")
    write_report(results, failures, sorted(pinned), sorted(allowed), SERVICE_PERIOD_MS)
    for f in failures:
        print("MISSED:", f)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.bench` runs everything and writes docs/benchmarks.md; the entry points
    below run one measurement on the bench's audio and print it as JSON (nothing is written):

    - `bare --rate R [--api livekit|direct]`: the bare DSP calls, unpaced, CPU seconds for 60 s.
    - `bare-paced --rate R [--api ...] [--seconds S] [--period-ms P]`: the same calls in real
      time at period P, as a share of one core.
    - `paced --rate R [--seconds S] [--period-ms P] [--profile FILE] [--gil]`: the whole service
      in a paced call with the simulator (CPU share, per-thread table, latency, RSS); `--profile`
      adds py-spy's shares, `--gil` perf's GIL acquisitions per thread (both perturb the CPU).
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=main.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    for name in ("bare", "bare-paced", "paced"):
        one = sub.add_parser(name)
        one.add_argument("--rate", type=int, default=16000, choices=(16000, 24000))
        one.add_argument("--seconds", type=float, default=PACED_SECONDS)
        one.add_argument("--period-ms", type=int, default=SERVICE_PERIOD_MS)
        if name != "paced":
            one.add_argument("--api", choices=("livekit", "direct"), default="livekit")
        else:
            one.add_argument("--profile", type=Path, default=None)
            one.add_argument("--gil", action="store_true")
    args = parser.parse_args(argv)
    if args.command is None:
        return run_all()
    mic, agent = make_audio(args.rate)
    out: dict[str, Any]
    if args.command == "paced":
        tmp = Path(tempfile.mkdtemp(prefix="atoms-bench-"))
        out = paced_call(args.rate, mic, tmp, args.seconds, env={"ATOMS_PERIOD_MS": str(args.period_ms)},
                         profile_to=args.profile, count_gil=args.gil)
    else:
        canceller = (livekit_canceller if args.api == "livekit" else direct_canceller)(args.rate)
        if args.command == "bare":
            out = {"cpu_s": _bare_calls_cpu(mic, agent, args.rate, canceller), "audio_s": SECONDS}
        else:
            out = {"cpu_share": bare_paced_cpu(mic, agent, args.rate, canceller, args.period_ms, args.seconds)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

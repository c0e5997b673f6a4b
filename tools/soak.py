"""`make soak`: one long call with periodic reconnects; RSS, threads and file descriptors sampled.

The real service process (fake audio, no GPIO) stays in an always-on call with the local
simulator, which drops the TCP connection every `--reconnect-seconds` (so the device reconnects
all along) and greets each new session (so agent audio plays each time); the mic plays a spoken
question once, then sends silence continuously. Every `--sample-seconds` the run samples the
child's RSS, threads and file descriptors (/proc) and its counters (stats file), and checks that
`ctl status` answers. At the end it reports first vs last and the least-squares slope per hour,
writes `build/soak/results.json` and the "Soak" section of `docs/reliability.md`, and exits 1 if
something grew or broke.

Forms:
- default: 30 real minutes (`--minutes`), samples every minute, a reconnect every 3 minutes;
- `--quick`: 2 minutes, samples every 10 s, a reconnect every 30 s (to validate the run itself);
- `--unpaced`: unpaced fakes (`ATOMS_FAKE_REALTIME=false`): the audio threads run as fast as
  the CPU allows, so `--audio-hours` (default 2) of call audio go through in far fewer wall
  minutes (the network side stays real time).

Not part of `make test` or CI: it takes as long as it says.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from device.sim.server import SimOptions, Simulator
from tools import REPO
from tools.fault_report import host_line, write_soak_section
from tools.fault_service import FaultService
from tools.service_process import TEST_KEY, speech_wav

OUT = REPO / "build" / "soak"
GREETING = "Hello again. This is the soak test greeting, played at the start of every session."
# Growth limits for the verdict. RSS: the allocator keeps some slack after the first sessions;
# a leak of one buffer per reconnect or per minute shows up well above these.
MAX_RSS_GROWTH_MB = 10.0
MAX_RSS_SLOPE_MB_PER_H = 5.0
MAX_COUNT_GROWTH = 2  # threads, file descriptors


@dataclass
class Sample:
    """One look at the service, `t` seconds into the call."""

    t: float
    rss_mb: float
    threads: int
    fds: int
    call_state: str
    status_ms: float
    sessions: int
    reconnects: int
    frames_captured: int
    chunks_sent: int
    uplink_dropped_chunks: int
    agent_periods_played: int
    playback_underruns: int
    malformed: int


def slope_per_hour(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over ts (seconds), per hour; 0 with fewer than 2 points."""
    if len(ts) < 2:
        return 0.0
    mt, my = sum(ts) / len(ts), sum(ys) / len(ys)
    var = sum((t - mt) ** 2 for t in ts)
    if var == 0:
        return 0.0
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var * 3600


def take_sample(service: FaultService, t: float) -> Sample:
    # /proc first: the status request itself opens a descriptor for a moment.
    rss, threads, fds = service.rss_mb(), service.threads(), service.fds()
    start = time.monotonic()
    status = service.status()
    status_ms = (time.monotonic() - start) * 1000
    c = service.counters()
    return Sample(
        t=round(t, 1), rss_mb=round(rss, 1), threads=threads, fds=fds,
        call_state=status["call_state"], status_ms=round(status_ms, 1), sessions=c.get("sessions", 0),
        reconnects=c.get("reconnects", 0), frames_captured=c.get("frames_captured", 0),
        chunks_sent=c.get("chunks_sent", 0), uplink_dropped_chunks=c.get("uplink_dropped_chunks", 0),
        agent_periods_played=c.get("agent_periods_played", 0), playback_underruns=c.get("playback_underruns", 0),
        malformed=sum(c.get("malformed", {}).values()))


def analyse(samples: list[Sample]) -> dict[str, Any]:
    """First vs last, extremes and slope for each resource; the first sample is the baseline
    (taken once the call is up, after the libraries and the first session are loaded)."""
    ts = [s.t for s in samples]
    out: dict[str, Any] = {}
    for name in ("rss_mb", "threads", "fds"):
        ys = [float(getattr(s, name)) for s in samples]
        out[name] = {"first": ys[0], "last": ys[-1], "min": min(ys), "max": max(ys),
                     "growth": round(ys[-1] - ys[0], 1), "slope_per_h": round(slope_per_hour(ts, ys), 2)}
    return out


def verdict(samples: list[Sample], stats: dict[str, Any], exit_code: int | None, wall_s: float) -> list[str]:
    """What went wrong (empty: passed)."""
    problems = []
    if exit_code != 0:
        problems.append(f"the service exited with {exit_code} at SIGTERM")
    rss = stats["rss_mb"]
    if rss["growth"] > MAX_RSS_GROWTH_MB:
        problems.append(f"RSS grew by {rss['growth']} MB")
    # A slope over a short run is mostly noise: judge it only over half an hour or more.
    if wall_s >= 1800 and rss["slope_per_h"] > MAX_RSS_SLOPE_MB_PER_H:
        problems.append(f"RSS slope {rss['slope_per_h']} MB/h")
    for name in ("threads", "fds"):
        if stats[name]["growth"] > MAX_COUNT_GROWTH:
            problems.append(f"{name} grew by {stats[name]['growth']}")
    if any(s.call_state not in ("in_call", "reconnecting", "connecting") for s in samples):
        problems.append("the call ended: " + ", ".join(sorted({s.call_state for s in samples})))
    if samples[-1].malformed:
        problems.append(f"{samples[-1].malformed} malformed server messages")
    if max(s.status_ms for s in samples) > 1000:
        problems.append("ctl status took more than 1 s")
    return problems


def soak_body(args: argparse.Namespace, samples: list[Sample], stats: dict[str, Any], problems: list[str],
              wall_s: float, command: str) -> str:
    last = samples[-1]
    audio_s = last.frames_captured / 100
    rows = [("RSS (MB)", "rss_mb"), ("threads", "threads"), ("file descriptors", "fds")]
    lines = [
        "## Soak" + (" (unpaced fakes: a long call compressed)" if args.unpaced else ""),
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d', time.gmtime())}, {host_line()}: "
        f"{wall_s / 60:.1f} wall minutes, {audio_s / 60:.1f} minutes of call audio "
        f"({'unpaced fakes' if args.unpaced else 'real time'}), always mode, the simulator dropping "
        f"the connection every {args.reconnect_seconds:.0f} s and greeting each new session; "
        f"{len(samples)} samples, one every {args.sample_seconds:.0f} s. The first sample (call up, "
        "libraries loaded) is the baseline.",
        "",
        "| resource | first | last | min | max | growth | slope per hour |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, key in rows:
        s = stats[key]
        lines.append(f"| {label} | {s['first']:g} | {s['last']:g} | {s['min']:g} | {s['max']:g} | "
                     f"{s['growth']:+g} | {s['slope_per_h']:+g} |")
    lines += [
        "",
        f"Over the run: {last.sessions} sessions ({last.reconnects} reconnects), "
        f"{last.chunks_sent * 0.02 / 60:.1f} min of mic audio sent, "
        f"{last.agent_periods_played / 6000:.1f} min of agent audio played, {last.uplink_dropped_chunks} "
        f"uplink chunks dropped, {last.playback_underruns} playback underruns, {last.malformed} malformed "
        f"messages; `ctl status` answered in at most {max(s.status_ms for s in samples):.0f} ms."
        + (" Over a run this short the slope mostly shows the allocator warming up; judge leaks by "
           "the growth, or by the 30-minute run." if wall_s < 1800 else ""),
        "",
        "Verdict: " + ("passed (limits: RSS growth <= "
                       f"{MAX_RSS_GROWTH_MB:g} MB and, over 30 min or more, slope <= {MAX_RSS_SLOPE_MB_PER_H:g} "
                       f"MB/h; threads and descriptors <= +{MAX_COUNT_GROWTH})." if not problems
                       else "FAILED: " + "; ".join(problems) + "."),
        "",
        "Run it: `make soak` (30 real minutes), `python -m tools.soak --quick` (2 minutes), "
        "`python -m tools.soak --unpaced --audio-hours 2` (a two-hour call on unpaced fakes).",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="wall minutes to run (default 30)")
    p.add_argument("--quick", action="store_true", help="2 minutes, a sample every 10 s, a reconnect every 30 s")
    p.add_argument("--unpaced", action="store_true", help="unpaced fake audio (stops after --audio-hours)")
    p.add_argument("--audio-hours", type=float, default=2.0, help="with --unpaced: hours of call audio")
    p.add_argument("--reconnect-seconds", type=float, default=None, help="seconds between drops (default 180)")
    p.add_argument("--sample-seconds", type=float, default=None, help="seconds between samples (default 60)")
    p.add_argument("--no-doc", action="store_true", help="do not update docs/reliability.md")
    args = p.parse_args(argv)
    if args.quick:
        args.minutes = 2.0
    args.reconnect_seconds = args.reconnect_seconds or (30.0 if args.quick else 180.0)
    args.sample_seconds = args.sample_seconds or (10.0 if args.quick else 60.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m tools.soak " + " ".join(argv if argv is not None else sys.argv[1:])
    tmp = Path(tempfile.mkdtemp(prefix="atoms-soak-"))
    sim = Simulator(SimOptions(port=0, api_key=TEST_KEY, greeting=GREETING, drop_after=args.reconnect_seconds,
                               drop_count=None))
    sim.start()
    settings: dict[str, Any] = {"call_mode": "always", "fake_capture_file": speech_wav(tmp / "question.wav"),
                                "log_level": "INFO", "stats_interval": 2}
    if args.unpaced:
        settings["fake_realtime"] = "false"
    (tmp / "svc").mkdir()
    service = FaultService(tmp / "svc", sim.url, **settings)
    samples: list[Sample] = []
    exit_code: int | None = None
    tick = threading.Event()  # the sampling cadence: never set, only waited on with a timeout
    try:
        service.start()
        if service.wait_line(r"state in_call\b", 20) is None:
            print(service.output(), file=sys.stderr)
            return 1
        assert service.wait_counters(lambda c: c.get("sessions", 0) >= 1, 10) is not None
        start = time.monotonic()
        wall_limit = args.minutes * 60
        audio_limit = args.audio_hours * 3600 if args.unpaced else None
        while True:
            elapsed = time.monotonic() - start
            sample = take_sample(service, elapsed)
            samples.append(sample)
            print(f"{sample.t:8.0f} s  rss {sample.rss_mb:6.1f} MB  threads {sample.threads:3d}  "
                  f"fds {sample.fds:3d}  {sample.call_state:12s}  sessions {sample.sessions:4d}  "
                  f"audio {sample.frames_captured / 100 / 60:7.1f} min", flush=True)
            if not service.running:
                break
            done_audio = audio_limit is not None and sample.frames_captured / 100 >= audio_limit
            if elapsed >= wall_limit or done_audio:
                break
            tick.wait(min(args.sample_seconds, max(0.0, wall_limit - elapsed)))
        wall_s = time.monotonic() - start
        exit_code = service.stop(timeout=10) if service.running else service.proc.poll() if service.proc else None
    finally:
        service.close()
        sim.stop()
        sim.join(5)
    stats = analyse(samples)
    problems = verdict(samples, stats, exit_code, wall_s)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(
        {"command": command, "host": host_line(), "wall_s": round(wall_s, 1), "stats": stats,
         "problems": problems, "samples": [asdict(s) for s in samples]}, indent=2) + "\n")
    if not args.no_doc:
        # Real-time and unpaced runs have a section each, so one does not erase the other.
        write_soak_section(soak_body(args, samples, stats, problems, wall_s, command),
                           name="soak-unpaced" if args.unpaced else "soak")
    for name, s in stats.items():
        print(f"{name}: first {s['first']:g}, last {s['last']:g}, growth {s['growth']:+g}, "
              f"slope {s['slope_per_h']:+g}/h")
    print("PASSED" if not problems else "FAILED: " + "; ".join(problems))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())

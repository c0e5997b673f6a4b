"""`make bench`, second part: the wake word detector's figures (issue 17, "Measured").

1. Detection rate at each builtin model's default cutoff, on positives made here (espeak-ng saying
   the wake word: 2 spellings x 8 voices x 3 speeds x 2 pitches = 96 per model) and the package's
   real recordings (tests/data/wake), in three conditions: clean; in a small room at a talking
   level with background noise, after the capture DSP (AEC + NS, as the service feeds it); and
   farther away (10 dB quieter, 5 dB more noise), after the DSP.
2. False accepts per hour on at least an hour of negative audio (`tools.wake_negatives`: espeak-ng
   reading prose in rotating voices, music-like tones, noise), streamed through the capture DSP
   and into every builtin model without a reset, as the device listens. Target: <= 0.5 per hour.
3. False accepts while the agent talks: the agent's voice (the simulator's reply, answers, near
   misses and sentences holding every wake word) played by the fake speaker at full volume into
   the fake room (`signals.run_echo_scene`: echo path 0 dB and +6 dB, speaker soft-clipping),
   each call with a fresh echo canceller, counted on the processed mic (AEC + NS) and, for
   contrast, on the raw mic. Target: zero on the processed mic. The call mode also switches the
   detector off while the agent talks; this measures the echo canceller alone.
4. CPU: detection per second of audio next to the capture DSP's, in the same run (2.); RSS added
   by importing the runtime and loading one model (and each further one), in a fresh process.

    .venv/bin/python -m tools.bench_wake [--quick]

Writes its section of docs/benchmarks.md and exits 1 when a target is missed (not with --quick).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from device.audio.dsp import make_capture_dsp
from device.audio.formats import DSP_RATE, FRAME_BYTES
from device.sim.options import DEFAULT_REPLY
from device.wake.detector import BUILTIN_MODELS, DEFAULT_MODEL, WakeWordDetector
from tools import REPO, signals, wake_audio, wake_negatives

WAKE_SECTION: Final = "## Wake word detection (make bench: tools/bench_wake.py)"
FA_TARGET_PER_HOUR: Final = 0.5
NEGATIVE_MINUTES: Final = {"speech": 40.0, "music": 10.0, "noise": 12.0}
NS_LEVEL: Final = 2   # the settings' default noise suppression (device/service/settings.py)

# What the agent says in the echo scenes: replies, then near misses, then the wake words themselves.
AGENT_LINES: Final = (
    DEFAULT_REPLY,
    "We open at nine in the morning and close at six in the evening on weekdays.",
    "Okay, now, before you book: do you need a table for two or for four?",
    "Okay, no problem. I can also check whether the jacket is available in navy blue.",
    "Hey, jars of jam are on the second shelf, next to the honey and the nuts.",
    "Alex, say, is that the order for Alexander or for Alexandra?",
    "Hey, my craft fair starts at noon; hey, Mike, grab the soft loaf.",
    "If you want me again later, just say okay nabu, and I will be right here.",
    "Some people call me hey jarvis, others say alexa, and a few still say hey mycroft.",
    "Okay nabu. Okay nabu. That is the wake word, said twice, in the middle of a sentence.",
)
AGENT_VOICES: Final = ("en-us", "en-gb-x-rp", "en+f3", "en-us+m3", "en+klatt2")
AGENT_LEVEL_DBFS: Final = -14.0      # loud synthetic speech; the fake speaker soft-clips its peaks
ECHO_GAINS_DB: Final = (0.0, 6.0)    # mic beside the speaker at full volume, and 6 dB hotter still


@dataclass
class Listening:
    """The device's listening path over a stream: capture DSP (AEC + NS, a silent speaker
    reference each frame, as the idle playback thread gives it) then detectors, with the CPU of
    each stage. One thread (the benchmark's), audio clock from 0."""

    models: Iterable[str]
    dsp_on: bool = True
    seconds: float = 0.0
    dsp_cpu: float = 0.0
    detector_cpu: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.detectors = {m: WakeWordDetector(m) for m in self.models}
        self.detector_cpu = {m: 0.0 for m in self.detectors}
        self._dsp = make_capture_dsp("webrtc", NS_LEVEL, 0) if self.dsp_on else None

    def feed(self, pcm: bytes) -> list[tuple[str, float, float]]:
        """(model, audio time, score) of each detection in `pcm` (whole 10 ms frames only)."""
        pcm = pcm[: len(pcm) // FRAME_BYTES * FRAME_BYTES]
        if self._dsp is not None:
            silent = bytes(FRAME_BYTES)
            out = []
            start = time.process_time()
            for i in range(0, len(pcm), FRAME_BYTES):
                self._dsp.reference(silent, DSP_RATE)
                out.append(self._dsp.process(pcm[i:i + FRAME_BYTES]))
            self.dsp_cpu += time.process_time() - start
            pcm = b"".join(out)
        found = []
        for model, detector in self.detectors.items():
            start = time.process_time()
            for i in range(0, len(pcm), FRAME_BYTES):
                hit = detector.process(pcm[i:i + FRAME_BYTES], self.seconds + (i + FRAME_BYTES) / (2 * DSP_RATE))
                if hit is not None:
                    found.append((model, self.seconds + i / (2 * DSP_RATE), hit.score))
            self.detector_cpu[model] += time.process_time() - start
        self.seconds += len(pcm) / (2 * DSP_RATE)
        return found

    def close(self) -> None:
        if self._dsp is not None:
            self._dsp.close()
        for detector in self.detectors.values():
            detector.close()


# -- 1. detection rate --------------------------------------------------------------------------------
def positives(model: str, quick: bool) -> list[tuple[str, bytes]]:
    clips = [(f"recording {n}", wake_audio.recording(model, n)) for n in range(1, wake_audio.RECORDINGS_PER_MODEL + 1)]
    voices = wake_audio.VOICES[:3] if quick else wake_audio.VOICES
    for variant, voice, speed, pitch in itertools.product(range(len(wake_audio.PHRASES[model])), voices,
                                                          wake_audio.SPEEDS, wake_audio.PITCHES):
        clips.append((f"espeak {voice} {speed} wpm p{pitch} {wake_audio.PHRASES[model][variant]!r}",
                      wake_audio.wake_phrase(model, voice, speed, pitch, variant)))
    return clips


CONDITIONS: Final = {  # name: (active level dBFS or None = as recorded, room noise dBFS, through the DSP)
    "clean": (None, None, False),
    "room, -30 dBFS speech, -50 dBFS noise, after AEC + NS": (-30.0, -50.0, True),
    "far, -40 dBFS speech, -45 dBFS noise, after AEC + NS": (-40.0, -45.0, True),
}


def detection_rate(model: str, condition: str, quick: bool) -> dict[str, Any]:
    level, noise, dsp_on = CONDITIONS[condition]
    listening = Listening([model], dsp_on=dsp_on)
    ir = signals.room_impulse_response(DSP_RATE, rt60_s=0.3, seed=5)
    hits: dict[str, int] = {}
    clips = positives(model, quick)
    for index, (label, clip) in enumerate(clips):
        x = signals.from_pcm16(wake_audio.pad(clip, 0.5, 2.5))
        if level is not None:
            x = np.convolve(signals.set_active_level(x, level), ir)[: len(x)]
        if noise is not None:
            x = x + signals.white_noise(len(x), noise, seed=index)
        hits[label] = len(listening.feed(signals.to_pcm16(x)))
    listening.close()
    espeak = [v for k, v in hits.items() if k.startswith("espeak")]
    real = [v for k, v in hits.items() if k.startswith("recording")]
    return {"espeak": sum(v > 0 for v in espeak) / len(espeak), "espeak_n": len(espeak),
            "recordings": sum(v > 0 for v in real), "recordings_n": len(real),
            "double": [k for k, v in hits.items() if v > 1],
            "missed": [k for k, v in hits.items() if v == 0]}


# -- 2. false accepts and CPU ------------------------------------------------------------------------
def false_accepts(quick: bool) -> dict[str, Any]:
    scale = 0.05 if quick else 1.0
    listening = Listening(BUILTIN_MODELS)
    seconds = dict.fromkeys(NEGATIVE_MINUTES, 0.0)
    accepts: list[dict[str, Any]] = []
    wall = time.monotonic()
    streams = (wake_negatives.speech_segments(NEGATIVE_MINUTES["speech"] * 60 * scale),
               wake_negatives.music_segments(NEGATIVE_MINUTES["music"] * 60 * scale),
               wake_negatives.noise_segments(NEGATIVE_MINUTES["noise"] * 60 * scale))
    # Interleaved, so a detector's state carries from speech into music and noise as in a room.
    for segment in (s for group in itertools.zip_longest(*streams) for s in group if s is not None):
        for model, at, score in listening.feed(segment.pcm):
            accepts.append({"model": model, "kind": segment.kind, "label": segment.label,
                            "at_s": round(at, 2), "score": round(score, 3)})
        seconds[segment.kind] += segment.seconds
    wall = time.monotonic() - wall
    listening.close()
    hours = listening.seconds / 3600
    return {"hours": hours, "seconds": seconds, "accepts": accepts, "wall_s": wall,
            "per_hour": {m: sum(a["model"] == m for a in accepts) / hours for m in BUILTIN_MODELS},
            "dsp_ms_per_s": 1000 * listening.dsp_cpu / listening.seconds,
            "detector_ms_per_s": {m: 1000 * c / listening.seconds for m, c in listening.detector_cpu.items()}}


# -- 3. the agent talking --------------------------------------------------------------------------
def agent_speech(call: int) -> np.ndarray:
    """The agent's side of call `call`: every line, in a voice rotating with the call, with pauses."""
    parts = [signals.set_active_level(signals.from_pcm16(
        wake_audio.espeak(line, AGENT_VOICES[(call + i) % len(AGENT_VOICES)], 170, 50)), AGENT_LEVEL_DBFS)
        for i, line in enumerate(AGENT_LINES[call % len(AGENT_LINES):] + AGENT_LINES[:call % len(AGENT_LINES)])]
    return signals.with_pauses(parts, DSP_RATE, 0.6)


def agent_talking(quick: bool) -> dict[str, Any]:
    calls = 2 if quick else len(AGENT_VOICES)
    result: dict[str, Any] = {}
    for gain_db in ECHO_GAINS_DB:
        counts = {"processed": dict.fromkeys(BUILTIN_MODELS, 0), "raw": dict.fromkeys(BUILTIN_MODELS, 0)}
        seconds, erle = 0.0, []
        for call in range(calls):
            far = agent_speech(call)
            dsp = make_capture_dsp("webrtc", NS_LEVEL, 0)   # a fresh canceller: the call's first words count
            run = signals.run_echo_scene(dsp.process, dsp.reference, far, DSP_RATE, delay_ms=40,
                                         gain_db=gain_db, noise_dbfs=-60.0, seed=call)
            dsp.close()
            erle.append(signals.erle_db(run))
            seconds += len(run.out) / DSP_RATE
            for path, audio in (("processed", run.out), ("raw", run.mic)):
                pcm = signals.to_pcm16(audio)
                for model in BUILTIN_MODELS:
                    counts[path][model] += len(wake_audio.scan(WakeWordDetector(model), pcm).detections)
        result[f"{gain_db:+g} dB"] = {"counts": counts, "seconds": seconds, "calls": calls,
                                      "erle_db": round(float(np.mean(erle)), 1)}
    return result


# -- 4. memory ---------------------------------------------------------------------------------------
RSS_PROBE: Final = """
import json
from pathlib import Path
def rss():
    return int(next(l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmRSS')).split()[1]) / 1024
from device.audio.dsp import make_capture_dsp
dsp = make_capture_dsp('webrtc', 2, 0)
dsp.process(bytes(320))
base = rss()
from device.wake.detector import BUILTIN_MODELS, WakeWordDetector
detectors = [WakeWordDetector(BUILTIN_MODELS[0])]
detectors[0].process(bytes(32000), 1.0)
one = rss()
for m in BUILTIN_MODELS[1:]:
    detectors.append(WakeWordDetector(m))
    detectors[-1].process(bytes(32000), 1.0)
print(json.dumps({'base_mb': base, 'one_model_mb': one, 'all_models_mb': rss(), 'models': len(detectors)}))
"""


def rss_added() -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", RSS_PROBE], cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=120)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {"base_mb": r["base_mb"], "first_mb": r["one_model_mb"] - r["base_mb"],
            "each_more_mb": (r["all_models_mb"] - r["one_model_mb"]) / (r["models"] - 1)}


# -- report ------------------------------------------------------------------------------------------
def report(rates: dict[str, dict[str, dict[str, Any]]], fa: dict[str, Any], agent: dict[str, Any],
           rss: dict[str, float], failures: list[str], quick: bool) -> str:
    host = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [WAKE_SECTION, "",
             f"Written by `.venv/bin/python -m tools.bench_wake{' --quick' if quick else ''}` "
             f"({time.strftime('%Y-%m-%d')}, {host}; pymicro-wakeword's builtin models at their own cutoffs, "
             f"refractory 2 s). Targets from the wake word issue (17).", "",
             "Detection rate (share of positives with a detection; espeak-ng phrases / the package's real recordings):", "",
             "| model (cutoff) | " + " | ".join(CONDITIONS) + " |", "| --- |" + " --- |" * len(CONDITIONS)]
    for model, by_condition in rates.items():
        cutoff = WakeWordDetector(model).cutoff
        cells = [f"{r['espeak']:.0%} of {r['espeak_n']} / {r['recordings']} of {r['recordings_n']}"
                 for r in by_condition.values()]
        lines.append(f"| {model} ({cutoff:g}) | " + " | ".join(cells) + " |")
    per_speed = next(iter(rates.values()))["clean"]["espeak_n"] // len(wake_audio.SPEEDS)
    lines += ["", "Where espeak-ng misses (clean condition, by speaking rate, of "
              f"{per_speed} phrases each): " + "; ".join(
                  f"{m} " + ", ".join(f"{speed} wpm {sum(f' {speed} wpm ' in k for k in c['clean']['missed'])}"
                                      for speed in wake_audio.SPEEDS) for m, c in rates.items()) + "."]
    doubles = sorted(f"{m} {k}" for m, c in rates.items() for k in c["clean"]["double"])
    lines += ["", f"Positives with more than one detection (clean condition): {', '.join(doubles) or 'none'} "
              "(okay_nabu recording 3 says the wake word twice).", ""]
    minutes = ", ".join(f"{k} {v / 60:.0f} min" for k, v in fa["seconds"].items())
    cpu_ms = fa["dsp_ms_per_s"] + sum(fa["detector_ms_per_s"].values())
    wall = f" in {fa['wall_s']:.0f} s of wall time (making the audio included)" if fa.get("wall_s") else ""
    lines += [f"False accepts on {fa['hours']:.2f} h of negative audio ({minutes}) through AEC + NS, "
              f"streamed without a reset{wall}; the DSP and all four detectors cost {cpu_ms:.0f} ms of CPU per "
              f"second of audio, {1000 / cpu_ms:.0f}x faster than real time on one core:", "",
              "| model | false accepts | per hour | target |", "| --- | --- | --- | --- |"]
    for model, per_hour in fa["per_hour"].items():
        n = sum(a["model"] == model for a in fa["accepts"])
        target = f"<= {FA_TARGET_PER_HOUR}" if model == DEFAULT_MODEL else "(not the default)"
        lines.append(f"| {model} | {n} | {'**' if model == DEFAULT_MODEL else ''}{per_hour:.2f}"
                     f"{'**' if model == DEFAULT_MODEL else ''} | {target} |")
    if fa["accepts"]:
        lines += ["", "What they were: " + "; ".join(
            f"{a['model']} at {a['at_s']} s in {a['kind']} ({a['label']}, score {a['score']})" for a in fa["accepts"]) + "."]
    lines += ["", "While the agent talks at full volume (detector left on, which the call mode does not do; "
              "detections summed over all four models, per model in brackets):", "",
              "| echo path | agent audio | echo reduction | processed mic (AEC + NS) | raw mic (no AEC) | target |",
              "| --- | --- | --- | --- | --- | --- |"]
    for gain, r in agent.items():
        proc, raw = r["counts"]["processed"], r["counts"]["raw"]

        def cell(c: dict[str, int]) -> str:
            return f"{sum(c.values())} ({', '.join(f'{m} {n}' for m, n in c.items())})"

        lines.append(f"| {gain} | {r['calls']} calls, {r['seconds']:.0f} s | {r['erle_db']} dB | **{cell(proc)}** "
                     f"| {cell(raw)} | 0 processed |")
    share = fa["detector_ms_per_s"][DEFAULT_MODEL] / 10
    lines += ["", "CPU per second of audio, same run (the negative hour, one thread), and memory:", "",
              "| measure | value |", "| --- | --- |",
              f"| capture DSP (AEC3 + NS {NS_LEVEL}, idle speaker reference) | {fa['dsp_ms_per_s']:.2f} ms |"]
    lines += [f"| detection, {m} (features + model) | {ms:.2f} ms |" for m, ms in fa["detector_ms_per_s"].items()]
    lines += [f"| detection {DEFAULT_MODEL} / capture DSP | {fa['detector_ms_per_s'][DEFAULT_MODEL] / fa['dsp_ms_per_s']:.2f} |",
              # A Pi figure comes from counted instructions (`make arm-estimate`), not a host factor.
              f"| detection {DEFAULT_MODEL}, share of one host core | {share:.2f}% |",
              f"| RSS added by the runtime and the first model (on {rss['base_mb']:.0f} MB with the DSP loaded) "
              f"| {rss['first_mb']:.1f} MB |",
              f"| RSS added by each further model | {rss['each_more_mb']:.1f} MB |", "",
              "How the detector is kept from hearing the agent: it listens only to the processed mic, after "
              "the echo canceller has removed what the speaker played (the reference is exactly what was "
              "played, earcons included), and the wake word call mode turns it off while a call is open, so "
              "the agent's voice reaches it only through the canceller and never while it speaks in a call. "
              "The table above keeps it on through whole calls of agent speech, wake words included, with a "
              "fresh canceller each call (its first second is unconverged): the raw-mic column is what the "
              "canceller prevents.", "",
              "Method. Positives: espeak-ng (fixed output for a text, voice, speed and pitch), padded with "
              "silence, one continuous stream per condition (2.5 s after each clip, so no refractory overlap); "
              "room conditions are convolved with a 0.3 s RT60 impulse response and given white noise. "
              "Negatives: `tools/wake_negatives.py`; prose from /usr/share/common-licenses with sentences "
              "naming a wake word removed. The agent scenes use `tools.signals.run_echo_scene` (the AEC tests' "
              "room: 40 ms delay, speaker soft clip at -6 dBFS) at 16 kHz; echo reduction is ERLE over the whole "
              "call. CPU is `time.process_time` around each stage; on a busy shared host it runs high "
              "for both stages alike, so their ratio is the figure to compare.", ""]
    lines.append("All wake word targets met." if not failures else "Missed: " + "; ".join(failures))
    return "\n".join(lines) + "\n"


def write_section(text: str, target: Path = REPO / "docs" / "benchmarks.md") -> None:
    """Replace (or append) this benchmark's section of `target`, leaving the rest as it was."""
    old = target.read_text() if target.exists() else "# Benchmarks\n"
    if WAKE_SECTION in old:
        start = old.index(WAKE_SECTION)
        end = old.find("\n## ", start + len(WAKE_SECTION))
        old = old[:start].rstrip("\n") + ("\n" + old[end:] if end >= 0 else "")
    target.write_text(old.rstrip("\n") + "\n\n" + text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes of audio; nothing judged")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    if not wake_audio.espeak_available():
        print("espeak-ng is needed (apt-get install espeak-ng)", file=sys.stderr)
        return 2
    rates = {m: {c: detection_rate(m, c, args.quick) for c in CONDITIONS} for m in BUILTIN_MODELS}
    for model, by_condition in rates.items():
        print(model, {c: (round(r["espeak"], 3), r["recordings"]) for c, r in by_condition.items()}, flush=True)
    agent = agent_talking(args.quick)
    print("agent talking:", json.dumps(agent), flush=True)
    fa = false_accepts(args.quick)
    print(f"false accepts on {fa['hours']:.2f} h: {fa['per_hour']}; CPU ms/s: DSP {fa['dsp_ms_per_s']:.2f}, "
          f"detectors {fa['detector_ms_per_s']}; accepts {fa['accepts']}", flush=True)
    rss = rss_added()
    print("RSS:", rss, flush=True)
    failures = []
    if fa["hours"] < 1.0 and not args.quick:
        failures.append(f"negative audio {fa['hours']:.2f} h < 1 h")
    if fa["per_hour"][DEFAULT_MODEL] > FA_TARGET_PER_HOUR:
        failures.append(f"{DEFAULT_MODEL}: {fa['per_hour'][DEFAULT_MODEL]:.2f} false accepts per hour > {FA_TARGET_PER_HOUR}")
    for gain, r in agent.items():
        if sum(r["counts"]["processed"].values()):
            failures.append(f"{sum(r['counts']['processed'].values())} detections on the processed mic while the "
                            f"agent talks (echo path {gain})")
    text = report(rates, fa, agent, rss, failures, args.quick)
    if not args.no_write:
        write_section(text)
    print(text)
    for f in failures:
        print("MISSED:", f)
    return 1 if failures and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())

"""The room matrix: the real service and the simulator in rooms from easy to hard (issue 15).

    python -m tools.bench_room                      # every cell; writes docs/echo.md's table,
                                                    # docs/room-matrix.svg and docs/room-matrix.json
    python -m tools.bench_room --quick              # short greeting, the test slice's cells
    python -m tools.bench_room --cells baseline,far-reverb --json /tmp/after.json --no-docs
    python -m tools.bench_room --compare docs/room-matrix.json --json /tmp/after.json --no-docs
    python -m tools.bench_room --list

Design (a full factorial of 4 x 5 x 5 x 3 x 4 x 2 rooms is 2400 calls): one factor at a time
around a baseline (RT60 0.4 s, mic 0.5 m from the speaker, no drift, no distortion, noise
-60 dBFS, volume 100 %), plus the hard corners where the factors meet (far-field, reverberant,
drifting, distorted, noisy), the corners at both playback volumes. Each cell is three calls of the
service on the same audio (tools/room_scene.py): AEC off and AEC on with the near end silent, and
AEC on with a near-end talker during and after the agent's greeting; tools/room_metrics.py says
what is measured and how. Each cell is marked against issue 15's targets; today's service is the
baseline the targets are to be reached from, so failures here are the point, not a bug in the tool.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from tools import REPO
from tools import room_metrics as metrics
from tools.room_scene import GREETING, RATE, SHORT_GREETING, RoomCell, run_scene

DOC: Final = REPO / "docs" / "echo.md"
SVG: Final = REPO / "docs" / "room-matrix.svg"
JSON: Final = REPO / "docs" / "room-matrix.json"
TABLE_BEGIN: Final = "<!-- room-matrix:begin (python -m tools.bench_room) -->"
TABLE_END: Final = "<!-- room-matrix:end -->"
BASELINE: Final = RoomCell("baseline")


def _cell(name: str, **changes: Any) -> RoomCell:
    return replace(BASELINE, name=name, **changes)


def matrix() -> list[RoomCell]:
    """The cells, in table order: the baseline, one factor at a time, then the corners."""
    cells = [BASELINE]
    cells += [_cell(f"rt60-{rt}", rt60_s=rt) for rt in (0.2, 0.6, 0.9)]
    cells += [_cell(f"dist-{d}", distance_m=d) for d in (0.05, 0.2, 1.0, 2.0)]
    cells += [_cell(f"drift{ppm:+d}", drift_ppm=float(ppm)) for ppm in (50, -50, 150, -150)]
    cells += [_cell(f"clip-{level}", distortion=level) for level in ("moderate", "strong")]
    cells += [_cell(f"noise{n}", noise_dbfs=float(n)) for n in (-65, -55, -45)]
    cells += [_cell("volume-50", volume=50)]
    corners = [
        _cell("far-reverb", rt60_s=0.6, distance_m=2.0),    # the room issue 15 measured by hand
        _cell("far-reverb-drift-clip", rt60_s=0.9, distance_m=2.0, drift_ppm=150.0, distortion="strong",
              noise_dbfs=-45.0),
        _cell("far-reverb-drift-neg", rt60_s=0.9, distance_m=2.0, drift_ppm=-150.0, distortion="moderate",
              noise_dbfs=-55.0),
        _cell("mid-reverb-drift", rt60_s=0.6, distance_m=1.0, drift_ppm=-50.0, distortion="moderate",
              noise_dbfs=-50.0),
        _cell("near-loud-drift-clip", rt60_s=0.2, distance_m=0.05, drift_ppm=150.0, distortion="strong",
              noise_dbfs=-65.0),
    ]
    for corner in corners:
        cells += [corner, replace(corner, name=f"{corner.name}-vol50", volume=50)]
    return cells


QUICK_CELLS: Final = ("baseline", "far-reverb-drift-clip")   # `make test`'s slice (tests/dsp/test_room_matrix.py)


@dataclass
class CellResult:
    """One cell's numbers and marks (JSON as is)."""

    cell: dict[str, Any]
    echo_reduction_db: float | None     # AEC off vs on, from 1 s after the agent's start (None:
                                        # the echo is under the noise even without the canceller)
    echo_reduction_capped: bool         # at least this (what is left is below the noise)
    echo_reduction_whole_db: float | None   # the same over the whole greeting (convergence included)
    echo_to_noise_db: float             # the echo over the noise floor in the AEC-off output
    erle_on_db: float                   # echo at the mic over the whole output, AEC on
    self_speech_s_per_10s: float        # AEC on, near end silent
    self_speech_heard_s: float
    self_speech_off_s_per_10s: float | None   # AEC off (the VAD's view without a canceller)
    agent_speech_s: float
    double_talk_loss_db: float
    near_alone_dbfs: float
    near_during_dbfs: float
    residual_during_dbfs: float
    capture_cpu_ms_per_s: float         # the capture thread (less the room simulation) per s of audio
    dsp_cpu_ms_per_s: float             # of which the per-frame DSP call (AEC, NS, local VAD)
    mode: str                           # "full duplex", or "half duplex" where the adaptive half-duplex
                                        # ended the call in half (what it settled on for this room)
    passes: dict[str, bool]
    wall_s: float
    duplex: dict[str, Any] = field(default_factory=dict)   # what it measured, and the share it gated

    @property
    def passed(self) -> bool:
        return all(self.passes.values())


def targets(cell: RoomCell, reduction: metrics.EchoReduction, self_speech: float, loss: float,
            mode: str) -> dict[str, bool]:
    """Each target met or not. An echo under the noise without the canceller has nothing to reduce,
    and a residual under the noise (a lower bound short of the target) cannot be told from it: the
    echo-reduction target is not failed there (`noise_limited`; self-speech still says what the
    uplink holds)."""
    return {
        "self_speech": self_speech <= metrics.TARGET_SELF_SPEECH_S,
        "echo_reduction": (reduction.db is None or reduction.db >= reduction_needed(cell)
                           or reduction.at_least or mode == "half duplex"),
        "double_talk": loss <= metrics.TARGET_DOUBLE_TALK_LOSS_DB or mode != "full duplex",
    }


def reduction_needed(cell: RoomCell) -> float:
    clean = cell.drift_ppm == 0 and cell.distortion == "off"
    return metrics.TARGET_REDUCTION_CLEAN_DB if clean else metrics.TARGET_REDUCTION_DB


def noise_limited(cell: RoomCell, db: float | None, at_least: bool) -> bool:
    """The echo reduction cannot be scored against its target for the room's noise."""
    return db is None or (at_least and db < reduction_needed(cell))


def measure(cell: RoomCell, greeting: str, agent_seconds: float, agent_speech_s: float,
            off_vad: bool = True) -> CellResult:
    started = time.monotonic()
    tail = metrics.scene_tail_s()
    off = run_scene(cell, "off", greeting=greeting, agent_seconds=agent_seconds, tail_s=tail)
    on = run_scene(cell, "webrtc", greeting=greeting, agent_seconds=agent_seconds, tail_s=tail)
    dt = run_scene(cell, "webrtc", near=metrics.near_script(agent_seconds), greeting=greeting,
                   agent_seconds=agent_seconds, tail_s=tail)
    reduction = metrics.echo_reduction(off, on)
    whole = metrics.echo_reduction(off, on, from_s=0.0).db
    per10, heard, _ = metrics.self_speech_per_10s(on, agent_speech_s)
    off_per10 = metrics.self_speech_per_10s(off, agent_speech_s)[0] if off_vad else None
    talk = metrics.double_talk(dt, on, agent_seconds)
    # The adaptive half-duplex (device/audio/duplex.py) gating while the agent talks, near end silent.
    # Marked by where it settled, not by any gating: it may gate the first seconds while the
    # canceller converges and then go back to full duplex for the rest of the call.
    mode = "half duplex" if on.duplex.get("mode") == "half" and on.duplex_gated_frames > 0 else "full duplex"
    agent_frames = max(1, round(agent_seconds * 100))
    duplex = {**{k: _round(v) if isinstance(v, float) else v for k, v in on.duplex.items()},
              "gated_share_of_agent": round(on.duplex_gated_frames / agent_frames, 3)}
    return CellResult(
        cell=asdict(cell), echo_reduction_db=_round(reduction.db), echo_reduction_capped=reduction.at_least,
        echo_reduction_whole_db=_round(whole), echo_to_noise_db=round(reduction.echo_to_noise_db, 1),
        erle_on_db=round(metrics.raw_erle_db(on), 1),
        self_speech_s_per_10s=round(per10, 3), self_speech_heard_s=round(heard, 3),
        self_speech_off_s_per_10s=None if off_per10 is None else round(off_per10, 3),
        agent_speech_s=round(agent_speech_s, 3), double_talk_loss_db=round(talk.loss_db, 1),
        near_alone_dbfs=round(talk.alone_dbfs, 1), near_during_dbfs=round(talk.during_dbfs, 1),
        residual_during_dbfs=round(talk.residual_dbfs, 1),
        capture_cpu_ms_per_s=round(1000 * on.capture_cpu_s / on.audio_s, 1),
        dsp_cpu_ms_per_s=round(1000 * on.dsp_cpu_s / on.audio_s, 1), mode=mode,
        passes=targets(cell, reduction, per10, talk.loss_db, mode), wall_s=round(time.monotonic() - started, 1),
        duplex=duplex)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def agent_speech_seconds(greeting: str) -> tuple[float, float]:
    """(the greeting's length, the seconds of it the VAD calls speech), as the simulator says it."""
    import numpy as np

    from device.sim.voice import synthesize

    pcm = np.frombuffer(synthesize(greeting, RATE, "espeak"), "<i2").astype(np.float64) / 32768
    return len(pcm) / RATE, metrics.silero_speech_seconds(pcm)


def run(cells: Sequence[RoomCell], quick: bool, log: Any = sys.stderr) -> dict[str, Any]:
    greeting = SHORT_GREETING if quick else GREETING
    agent_seconds, agent_speech = agent_speech_seconds(greeting)
    results: list[CellResult] = []
    for cell in cells:
        result = measure(cell, greeting, agent_seconds, agent_speech, off_vad=not quick)
        results.append(result)
        print(f"{cell.name:28s} echo {_reduction_text(result.echo_reduction_db, result.echo_reduction_capped):>7s} dB"
              f"  self-speech "
              f"{result.self_speech_s_per_10s:5.2f} s/10 s  double talk {result.double_talk_loss_db:5.1f} dB  "
              f"dsp cpu {result.dsp_cpu_ms_per_s:5.1f} ms/s  {result.mode}  {'pass' if result.passed else 'FAIL'}  "
              f"({result.wall_s:.0f} s)", file=log, flush=True)
    cpu = [r.dsp_cpu_ms_per_s for r in results]
    return {"quick": quick, "greeting_s": round(agent_seconds, 2), "agent_speech_s": round(agent_speech, 2),
            "dsp_cpu_ms_per_s_mean": round(sum(cpu) / len(cpu), 1) if cpu else None,
            "targets": {"self_speech_s_per_10s": metrics.TARGET_SELF_SPEECH_S,
                        "echo_reduction_clean_db": metrics.TARGET_REDUCTION_CLEAN_DB,
                        "echo_reduction_db": metrics.TARGET_REDUCTION_DB,
                        "double_talk_loss_db": metrics.TARGET_DOUBLE_TALK_LOSS_DB},
            "cells": [asdict(r) | {"passed": r.passed} for r in results]}


def _reduction_text(db: float | None, at_least: bool) -> str:
    if db is None:
        return "n/a"
    return f"{'>=' if at_least else ''}{db:.1f}"


def _mark(ok: bool) -> str:
    return "pass" if ok else "**fail**"


def _reduction_mark(r: dict[str, Any]) -> str:
    if noise_limited(RoomCell(**r["cell"]), r["echo_reduction_db"], r["echo_reduction_capped"]):
        return "noise-limited"
    return _mark(r["passes"]["echo_reduction"])


def markdown_table(report: dict[str, Any]) -> str:
    head = ("| cell | RT60 s | dist m | drift ppm | distortion | noise dBFS | vol % | echo reduction dB | "
            "self-speech s/10 s | double-talk loss dB | DSP CPU ms/s | mode | result |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in report["cells"]:
        c, p = r["cell"], r["passes"]
        reduction = _reduction_text(r["echo_reduction_db"], r["echo_reduction_capped"])
        rows.append(
            f"| {c['name']} | {c['rt60_s']:g} | {c['distance_m']:g} | {c['drift_ppm']:+g} | {c['distortion']} | "
            f"{c['noise_dbfs']:g} | {c['volume']} | {reduction} ({_reduction_mark(r)}) | "
            f"{r['self_speech_s_per_10s']:.2f} ({_mark(p['self_speech'])}) | "
            f"{r['double_talk_loss_db']:.1f} ({_mark(p['double_talk'])}) | {r['dsp_cpu_ms_per_s']:.0f} | "
            f"{r['mode']} | {'pass' if r['passed'] else '**fail**'} |")
    passed = sum(r["passed"] for r in report["cells"])
    foot = (f"\n{passed} of {len(report['cells'])} cells meet every target. >=: what the canceller leaves "
            "is under the output's noise floor, so only a lower bound is known; n/a: the echo is under the "
            "room noise even without the canceller; either is noise-limited, not failed, where the bound is "
            "short of the target. Mean capture-DSP CPU "
            f"{report['dsp_cpu_ms_per_s_mean']} ms per second of audio, in this run (the stages issue 15 "
            "adds are reported as a ratio to it). Greeting "
            f"{report['greeting_s']} s, of which Silero hears {report['agent_speech_s']} s as speech.\n")
    return head + "\n".join(rows) + "\n" + foot


def write_doc_table(report: dict[str, Any], doc: Path = DOC) -> None:
    """Replace the table between the markers in docs/echo.md (the prose around it is kept)."""
    text = doc.read_text(encoding="utf-8")
    begin, end = text.index(TABLE_BEGIN) + len(TABLE_BEGIN), text.index(TABLE_END)
    doc.write_text(text[:begin] + "\n" + markdown_table(report) + text[end:], encoding="utf-8")


def write_docs(report: dict[str, Any]) -> None:
    from tools.room_plot import render

    write_doc_table(report)
    SVG.write_text(render(report), encoding="utf-8")
    print(f"wrote {DOC} (table) and {SVG}")


def remark(report: dict[str, Any]) -> dict[str, Any]:
    """The report with every cell marked again by `targets` (after a change of the marking rules)."""
    for r in report["cells"]:
        reduction = metrics.EchoReduction(r["echo_reduction_db"], r["echo_reduction_capped"], r["echo_to_noise_db"])
        r["passes"] = targets(RoomCell(**r["cell"]), reduction, r["self_speech_s_per_10s"],
                              r["double_talk_loss_db"], r["mode"])
        r["passed"] = all(r["passes"].values())
    return report


def compare(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Cell-by-cell differences of two reports (after - before), and the CPU ratio."""
    old = {c["cell"]["name"]: c for c in before["cells"]}
    lines = [f"{'cell':28s} {'echo dB':>14s} {'self-speech':>16s} {'double talk dB':>16s} {'cpu ratio':>9s}"]
    for c in after["cells"]:
        b = old.get(c["cell"]["name"])
        if b is None:
            continue

        def delta(key: str, fmt: str, b: dict[str, Any] = b, c: dict[str, Any] = c) -> str:
            def text(v: float | None) -> str:
                return "n/a" if v is None else f"{v:{fmt}}"
            return f"{text(b[key])}->{text(c[key])}"
        ratio = c["dsp_cpu_ms_per_s"] / b["dsp_cpu_ms_per_s"] if b["dsp_cpu_ms_per_s"] else math.nan
        lines.append(f"{c['cell']['name']:28s} {delta('echo_reduction_db', '.1f'):>14s} "
                     f"{delta('self_speech_s_per_10s', '.2f'):>16s} {delta('double_talk_loss_db', '.1f'):>16s} "
                     f"{ratio:9.2f}")
    return "\n".join(lines)


def select(names: str | None, quick: bool) -> list[RoomCell]:
    cells = matrix()
    if names is None:
        names = ",".join(QUICK_CELLS) if quick else None
    if names is None:
        return cells
    by_name = {c.name: c for c in cells}
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown cells: {', '.join(unknown)}; --list shows them")
    return [by_name[n] for n in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", help="comma-separated cell names (default: all; --quick: the test slice)")
    parser.add_argument("--quick", action="store_true", help="the short greeting (and the test slice's cells)")
    parser.add_argument("--list", action="store_true", help="print the cells and exit")
    parser.add_argument("--json", type=Path, help=f"write the results here (default with the docs: {JSON})")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/ (table, SVG, JSON)")
    parser.add_argument("--compare", type=Path, help="a previous --json: print the differences")
    parser.add_argument("--render", type=Path, help="re-mark a --json against the targets and rewrite the "
                        "docs from it (no calls are run)")
    args = parser.parse_args(argv)
    if args.render is not None:
        report = remark(json.loads(args.render.read_text(encoding="utf-8")))
        args.render.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        write_docs(report)
        print(markdown_table(report))
        return 0
    cells = select(args.cells, args.quick)
    if args.list:
        for c in cells:
            print(f"{c.name:28s} rt60 {c.rt60_s:g} s, {c.distance_m:g} m, drift {c.drift_ppm:+g} ppm, "
                  f"distortion {c.distortion}, noise {c.noise_dbfs:g} dBFS, volume {c.volume} %")
        return 0
    report = run(cells, args.quick)
    out = args.json or (None if args.no_docs else JSON)
    if out is not None:
        out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    if not args.no_docs:
        write_docs(report)
    print(markdown_table(report))
    if args.compare is not None:
        print(compare(json.loads(args.compare.read_text(encoding="utf-8")), report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

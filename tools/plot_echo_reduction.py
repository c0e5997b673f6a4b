"""Draw docs/echo-reduction.svg: echo reduction of the capture DSP over time, on the AEC test scene.

    python -m tools.plot_echo_reduction [--out docs/echo-reduction.svg]

The scene is the one tests/dsp/test_aec.py asserts on (espeak-ng far-end speech, soft-clipping
speaker, RT60 200 ms room, -70 dBFS mic noise: `AEC_SCENE_*` in tools/signals.py). The SVG is
written by hand, so no plotting library is needed. The numbers behind the figure are printed too.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from device.audio.dsp import make_capture_dsp
from tools import REPO
from tools.signals import (
    AEC_SCENE_ECHO_GAIN_DB,
    AEC_SCENE_NOISE_DBFS,
    FAR_TEXT,
    MIN_ERLE_DB,
    EchoRun,
    erle_db,
    erle_windows,
    frame_powers,
    run_echo_scene,
    speech,
)

DEFAULT_OUT = REPO / "docs" / "echo-reduction.svg"
WIDTH, HEIGHT = 900, 620
LEFT, RIGHT = 70, 20
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def run_scene(far_rate: int, delay_ms: float) -> EchoRun:
    dsp = make_capture_dsp("webrtc", 0, 0)
    far = speech(FAR_TEXT, far_rate, level=-20.0)
    run = run_echo_scene(dsp.process, dsp.reference, far, far_rate, delay_ms=delay_ms,
                         gain_db=AEC_SCENE_ECHO_GAIN_DB, noise_dbfs=AEC_SCENE_NOISE_DBFS)
    dsp.close()
    return run


def window_levels(x: np.ndarray, window_frames: int = 10) -> np.ndarray:
    p = frame_powers(x)
    n = len(p) // window_frames
    return 10 * np.log10(np.maximum(p[:n * window_frames].reshape(n, window_frames).mean(axis=1), 1e-12))


class Panel:
    """One plot area: data coordinates to SVG pixels, axes, grid and lines."""

    def __init__(self, top: float, height: float, x_max: float, y_min: float, y_max: float) -> None:
        self.top, self.height = top, height
        self.x_max, self.y_min, self.y_max = x_max, y_min, y_max
        self.width = WIDTH - LEFT - RIGHT
        self.parts: list[str] = []

    def px(self, x: float) -> float:
        return LEFT + x / self.x_max * self.width

    def py(self, y: float) -> float:
        y = min(max(y, self.y_min), self.y_max)
        return self.top + (self.y_max - y) / (self.y_max - self.y_min) * self.height

    def axes(self, y_step: float, y_label: str, x_label: str | None) -> None:
        bottom = self.top + self.height
        for y in np.arange(self.y_min, self.y_max + 1e-9, y_step):
            self.parts.append(f'<line x1="{LEFT}" y1="{self.py(y):.1f}" x2="{LEFT + self.width}" '
                              f'y2="{self.py(y):.1f}" stroke="#e5e5e5"/>')
            self.parts.append(f'<text x="{LEFT - 6}" y="{self.py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
        for x in range(int(self.x_max) + 1):
            self.parts.append(f'<line x1="{self.px(x):.1f}" y1="{self.top}" x2="{self.px(x):.1f}" '
                              f'y2="{bottom}" stroke="#f0f0f0"/>')
            self.parts.append(f'<text x="{self.px(x):.1f}" y="{bottom + 16}" text-anchor="middle">{x}</text>')
        self.parts.append(f'<rect x="{LEFT}" y="{self.top}" width="{self.width}" height="{self.height}" '
                          'fill="none" stroke="#333"/>')
        mid = self.top + self.height / 2
        self.parts.append(f'<text x="18" y="{mid:.1f}" text-anchor="middle" '
                          f'transform="rotate(-90 18 {mid:.1f})">{escape(y_label)}</text>')
        if x_label:
            self.parts.append(f'<text x="{LEFT + self.width / 2:.1f}" y="{bottom + 36}" '
                              f'text-anchor="middle">{escape(x_label)}</text>')

    def line(self, xs: Iterable[float], ys: Iterable[float], color: str, dash: str = "",
             width: float = 1.6) -> None:
        """A polyline broken wherever y is NaN (windows with no echo to measure)."""
        segment: list[str] = []
        for x, y in [*zip(xs, ys, strict=True), (math.nan, math.nan)]:
            if math.isnan(y):
                if len(segment) > 1:
                    self.parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="{width}" '
                                      f'stroke-dasharray="{dash}" points="{" ".join(segment)}"/>')
                segment = []
            else:
                segment.append(f"{self.px(x):.1f},{self.py(y):.1f}")

    def legend(self, entries: Sequence[tuple[str, str, str]], x: float, y: float) -> None:
        longest = max(len(label) for label, _, _ in entries)
        self.parts.append(f'<rect x="{x - 6}" y="{y - 11}" width="{longest * 6.6 + 44:.0f}" '
                          f'height="{17 * len(entries) + 5}" fill="white" fill-opacity="0.9" stroke="#ccc"/>')
        for i, (label, color, dash) in enumerate(entries):
            yy = y + i * 17
            self.parts.append(f'<line x1="{x}" y1="{yy}" x2="{x + 24}" y2="{yy}" stroke="{color}" '
                              f'stroke-width="2" stroke-dasharray="{dash}"/>')
            self.parts.append(f'<text x="{x + 30}" y="{yy + 4}">{escape(label)}</text>')


def render(runs: dict[tuple[int, int], EchoRun]) -> str:
    first = runs[next(iter(runs))]
    seconds = len(first.echo) / 16000
    x_max = float(math.ceil(seconds - 0.1))   # whole seconds, no near-empty last one
    levels = Panel(top=78, height=200, x_max=x_max, y_min=-100, y_max=-10)
    levels.axes(10, "level (dBFS)", None)
    t = np.arange(len(window_levels(first.echo))) * 0.1 + 0.05
    levels.line(t, window_levels(first.echo), "#7f7f7f")
    levels.line(t, window_levels(first.out), COLORS[0])
    levels.line([0, x_max], [AEC_SCENE_NOISE_DBFS, AEC_SCENE_NOISE_DBFS], "#999", dash="4 3", width=1)
    (rate, delay), = [key for key in runs if runs[key] is first]
    levels.legend([(f"echo at the mic ({rate // 1000} kHz reference, {delay} ms)", "#7f7f7f", ""),
                   ("after the canceller", COLORS[0], ""), ("mic noise floor", "#999", "4 3")],
                  levels.px(2.6), levels.py(-75) + 11)   # the corner the far end's speech leaves empty

    erle = Panel(top=322, height=236, x_max=x_max, y_min=0, y_max=60)
    erle.axes(10, "echo reduction (dB)", "time (s)")
    erle.line([0, x_max], [MIN_ERLE_DB, MIN_ERLE_DB], "#555", dash="6 4", width=1)
    erle.line([1, 1], [0, 60], "#555", dash="2 3", width=1)
    entries = []
    for (rate, delay), run, color in zip(runs, runs.values(), COLORS, strict=False):
        starts, values = erle_windows(run)
        erle.line(starts + 0.05, values, color)
        label = f"{rate // 1000} kHz reference, {delay} ms bulk delay: {erle_db(run, 1.0):.0f} dB after 1 s"
        entries.append((label, color, ""))
    entries.append((f"test threshold {MIN_ERLE_DB:.0f} dB (scored after 1 s)", "#555", "6 4"))
    erle.legend(entries, erle.px(4.4), erle.py(0) - 17 * len(entries) + 6)

    title = "Echo reduction of the capture DSP (WebRTC AEC3 via livekit), 100 ms windows"
    subtitle = (f"espeak-ng speech at -20 dBFS, speaker soft-clipping at -6 dBFS, room RT60 200 ms, "
                f"echo path {AEC_SCENE_ECHO_GAIN_DB:+.0f} dB, mic noise {AEC_SCENE_NOISE_DBFS:.0f} dBFS; "
                "gaps: far end silent")
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">')
    head = [svg,
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
            f'<text x="{WIDTH / 2}" y="28" text-anchor="middle" font-size="17">{escape(title)}</text>',
            f'<text x="{WIDTH / 2}" y="50" text-anchor="middle" fill="#555">{escape(subtitle)}</text>']
    footer = (f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end" fill="#888" font-size="10">'
              "Generated by python -m tools.plot_echo_reduction</text>")
    tail = [footer, "</svg>"]
    return "\n".join(head + levels.parts + erle.parts + tail) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    runs = {(rate, delay): run_scene(rate, delay) for rate, delay in ((16000, 40), (24000, 140))}
    for (rate, delay), run in runs.items():
        _, values = erle_windows(run)
        print(f"{rate} Hz reference, {delay} ms: ERLE 0-0.5 s {erle_db(run, 0, 0.5):.1f} dB, "
              f"0.5-1 s {erle_db(run, 0.5, 1.0):.1f} dB, after 1 s {erle_db(run, 1.0):.1f} dB, "
              f"steady (after 5 s) {erle_db(run, 5.0):.1f} dB, worst 100 ms window after 1 s "
              f"{np.nanmin(values[10:]):.1f} dB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(runs), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

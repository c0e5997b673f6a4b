"""docs/room-matrix.svg: the room matrix (tools/bench_room.py) as three bar charts, one bar per cell.

Echo reduction, self-speech and double-talk loss, each bar green where the cell meets issue 15's
target and red where it does not, the targets drawn as dashed lines. Written by hand, as
tools/plot_echo_reduction.py is, so no plotting library is needed.
"""
from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

from tools import room_metrics as metrics

WIDTH = 1100
LEFT, RIGHT, TOP = 70, 20, 64
PANEL_H, GAP = 150, 34
LABELS_H = 150
PASS, FAIL, TARGET = "#2ca02c", "#d62728", "#444"


def _panel(parts: list[str], top: float, cells: list[dict[str, Any]], key: str, pass_key: str,
           y_max: float, step: float, title: str, target_lines: list[tuple[float, str]]) -> None:
    width = WIDTH - LEFT - RIGHT
    slot = width / max(len(cells), 1)

    def py(v: float) -> float:
        return top + PANEL_H - min(max(v, 0.0), y_max) / y_max * PANEL_H

    y = 0.0
    while y <= y_max + 1e-9:
        parts.append(f'<line x1="{LEFT}" y1="{py(y):.1f}" x2="{LEFT + width}" y2="{py(y):.1f}" stroke="#e8e8e8"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
        y += step
    for i, c in enumerate(cells):
        x = LEFT + i * slot + slot * 0.15
        if c[key] is None:   # not measurable (an echo under the noise even without the canceller)
            parts.append(f'<text x="{x + slot * 0.35:.1f}" y="{top + PANEL_H - 4}" text-anchor="middle" '
                         'font-size="9" fill="#888">n/a</text>')
            continue
        value = float(c[key])
        color = PASS if c["passes"][pass_key] else FAIL
        parts.append(f'<rect x="{x:.1f}" y="{py(value):.1f}" width="{slot * 0.7:.1f}" '
                     f'height="{top + PANEL_H - py(value):.1f}" fill="{color}"><title>{escape(c["cell"]["name"])}: '
                     f'{value:g}</title></rect>')
        if value > y_max:
            parts.append(f'<text x="{x + slot * 0.35:.1f}" y="{top - 3}" text-anchor="middle" font-size="9">'
                         f'{value:.1f}</text>')
    for value, label in target_lines:
        parts.append(f'<line x1="{LEFT}" y1="{py(value):.1f}" x2="{LEFT + width}" y2="{py(value):.1f}" '
                     f'stroke="{TARGET}" stroke-dasharray="6 4"/>')
        parts.append(f'<text x="{LEFT + width - 4}" y="{py(value) - 4:.1f}" text-anchor="end" fill="{TARGET}" '
                     f'font-size="10">{escape(label)}</text>')
    parts.append(f'<rect x="{LEFT}" y="{top}" width="{width}" height="{PANEL_H}" fill="none" stroke="#333"/>')
    mid = top + PANEL_H / 2
    parts.append(f'<text x="18" y="{mid:.1f}" text-anchor="middle" transform="rotate(-90 18 {mid:.1f})">'
                 f'{escape(title)}</text>')


def render(report: dict[str, Any]) -> str:
    cells = report["cells"]
    height = TOP + 3 * PANEL_H + 2 * GAP + LABELS_H
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
             f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
             f'<text x="{WIDTH / 2}" y="24" text-anchor="middle" font-size="16">Echo in the room matrix: the '
             'service with the simulator, one bar per room</text>',
             f'<text x="{WIDTH / 2}" y="44" text-anchor="middle" fill="#555">green: meets the issue 15 target, '
             'red: does not; dashed: the targets (python -m tools.bench_room)</text>']
    _panel(parts, TOP, cells, "echo_reduction_db", "echo_reduction", 60, 10, "echo reduction dB",
           [(metrics.TARGET_REDUCTION_CLEAN_DB, "35 dB (no drift, no distortion)"),
            (metrics.TARGET_REDUCTION_DB, "30 dB")])
    top2 = TOP + PANEL_H + GAP
    _panel(parts, top2, cells, "self_speech_s_per_10s", "self_speech", 2.0, 0.5, "self-speech s / 10 s",
           [(metrics.TARGET_SELF_SPEECH_S, "0.25 s")])
    top3 = top2 + PANEL_H + GAP
    _panel(parts, top3, cells, "double_talk_loss_db", "double_talk", 30, 5, "double-talk loss dB",
           [(metrics.TARGET_DOUBLE_TALK_LOSS_DB, "6 dB")])
    slot = (WIDTH - LEFT - RIGHT) / max(len(cells), 1)
    base = top3 + PANEL_H + 8
    for i, c in enumerate(cells):
        x = LEFT + i * slot + slot / 2
        parts.append(f'<text x="{x:.1f}" y="{base}" text-anchor="end" transform="rotate(-60 {x:.1f} {base})">'
                     f'{escape(c["cell"]["name"])}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"

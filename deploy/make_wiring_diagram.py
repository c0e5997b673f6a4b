#!/usr/bin/env python3
"""Draw docs/wiring.svg: the Raspberry Pi header with the appliance's buttons, LEDs and I2S audio.

Pure Python writing SVG by hand, so the drawing is reproducible anywhere and reviewable as a
diff: `python3 deploy/make_wiring_diagram.py` rewrites docs/wiring.svg, `--check` fails when the
committed file is stale. Pin numbers follow the default settings (BCM numbering): call button
GPIO17, mute button GPIO27, status LED GPIO22, mute LED GPIO23 (red), speaking LED GPIO24, and
the i2s-mems-max98357a profile's INMP441 microphone and MAX98357A amplifier.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from xml.sax.saxutils import escape

DEFAULT_OUT: Final = Path(__file__).resolve().parent.parent / "docs" / "wiring.svg"

WIDTH: Final = 1180
HEIGHT: Final = 960

# The 40-pin header, physical pin -> name (same on every 40-pin Pi, Zero 2 W to Pi 5).
PINS: Final[dict[int, str]] = {
    1: "3V3", 2: "5V", 3: "GPIO2 SDA", 4: "5V", 5: "GPIO3 SCL", 6: "GND",
    7: "GPIO4", 8: "GPIO14 TXD", 9: "GND", 10: "GPIO15 RXD", 11: "GPIO17", 12: "GPIO18 PCM CLK",
    13: "GPIO27", 14: "GND", 15: "GPIO22", 16: "GPIO23", 17: "3V3", 18: "GPIO24",
    19: "GPIO10 MOSI", 20: "GND", 21: "GPIO9 MISO", 22: "GPIO25", 23: "GPIO11 SCLK",
    24: "GPIO8 CE0", 25: "GND", 26: "GPIO7 CE1", 27: "ID_SD", 28: "ID_SC", 29: "GPIO5",
    30: "GND", 31: "GPIO6", 32: "GPIO12", 33: "GPIO13", 34: "GND", 35: "GPIO19 PCM FS",
    36: "GPIO16", 37: "GPIO26", 38: "GPIO20 PCM DIN", 39: "GND", 40: "GPIO21 PCM DOUT",
}

# Geometry of the header: odd pins in the left column, even pins in the right one.
ROW0_Y: Final = 130
ROW_STEP: Final = 26
LEFT_X: Final = 600
RIGHT_X: Final = 632

# Wire colours by signal, as people colour jumper wires.
COLORS: Final[dict[str, str]] = {
    "3V3": "#e67e22", "5V": "#c0392b", "GND": "#222222",
    "GPIO17": "#2e86c1", "GPIO27": "#8e44ad", "GPIO22": "#16a085", "GPIO23": "#d35400",
    "GPIO24": "#27ae60", "GPIO18": "#b7950b", "GPIO19": "#1abc9c", "GPIO20": "#5d6d7e",
    "GPIO21": "#7d3c98",
}


def pin_xy(pin: int) -> tuple[int, int]:
    """Centre of a physical pin."""
    row = (pin - 1) // 2
    return (LEFT_X if pin % 2 else RIGHT_X), ROW0_Y + row * ROW_STEP


@dataclass(frozen=True)
class Wire:
    """A polyline from a header pin to a component terminal, in one net's colour."""

    net: str
    points: tuple[tuple[int, int], ...]


class Svg:
    """A tiny SVG writer: elements are appended as strings in drawing order."""

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.parts: list[str] = []

    def add(self, element: str) -> None:
        self.parts.append(element)

    def text(self, x: float, y: float, s: str, size: int = 12, anchor: str = "start",
             weight: str = "normal", color: str = "#222") -> None:
        self.add(f'<text x="{x:g}" y="{y:g}" font-size="{size}" text-anchor="{anchor}" '
                 f'font-weight="{weight}" fill="{color}">{escape(s)}</text>')

    def line(self, points: Sequence[tuple[float, float]], color: str, width: float = 2.5) -> None:
        pts = " ".join(f"{x:g},{y:g}" for x, y in points)
        # A white halo under every wire: where two wires cross, the crossing stays readable.
        self.add(f'<polyline points="{pts}" fill="none" stroke="#fff" stroke-width="{width + 4:g}" '
                 'stroke-linejoin="round"/>')
        self.add(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="{width:g}" '
                 'stroke-linejoin="round" stroke-linecap="round"/>')

    def render(self) -> str:
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" '
                f'height="{self.height}" viewBox="0 0 {self.width} {self.height}" '
                'font-family="DejaVu Sans, Helvetica, Arial, sans-serif">')
        body = "\n".join(self.parts)
        return f'<?xml version="1.0" encoding="UTF-8"?>\n{head}\n{body}\n</svg>\n'


# -- symbols ----------------------------------------------------------------------------------

def ground(svg: Svg, x: float, y: float) -> None:
    """Ground symbol hanging below (x, y): connect to any GND pin."""
    svg.add(f'<path d="M{x:g},{y:g} v8 M{x - 10:g},{y + 8:g} h20 M{x - 6:g},{y + 12:g} h12 '
            f'M{x - 2:g},{y + 16:g} h4" stroke="{COLORS["GND"]}" stroke-width="2" fill="none"/>')


def resistor(svg: Svg, x1: float, x2: float, y: float, label: str) -> None:
    """A horizontal resistor body between x1 and x2."""
    svg.add(f'<rect x="{x1:g}" y="{y - 7:g}" width="{x2 - x1:g}" height="14" rx="2" fill="#f5deb3" '
            'stroke="#7e5109" stroke-width="1.5"/>')
    svg.text((x1 + x2) / 2, y - 11, label, size=11, anchor="middle")


def led(svg: Svg, anode: float, cathode: float, y: float, fill: str, label: str) -> None:
    """An LED between two x positions (current flows anode -> cathode), with a label."""
    svg.add(f'<path d="M{anode:g},{y - 10:g} L{cathode:g},{y:g} L{anode:g},{y + 10:g} Z" '
            f'fill="{fill}" stroke="#222" stroke-width="1.5"/>')
    svg.add(f'<path d="M{cathode:g},{y - 10:g} v20" stroke="#222" stroke-width="2"/>')
    mid = (anode + cathode) / 2
    # Light arrows.
    svg.add(f'<path d="M{mid - 4:g},{y - 13:g} l7,-9 M{mid + 2:g},{y - 13:g} l7,-9" stroke="#222" '
            'stroke-width="1.2"/>')
    svg.text(mid, y + 26, label, size=11, anchor="middle")


def button(svg: Svg, x1: float, x2: float, y: float, label: str) -> None:
    """A normally-open push button between terminals x1 and x2."""
    mid = (x1 + x2) / 2
    svg.add(f'<circle cx="{x1:g}" cy="{y:g}" r="3.5" fill="#222"/>')
    svg.add(f'<circle cx="{x2:g}" cy="{y:g}" r="3.5" fill="#222"/>')
    svg.add(f'<path d="M{x1 - 2:g},{y - 12:g} H{x2 + 2:g} M{mid:g},{y - 12:g} v-10 '
            f'M{mid - 8:g},{y - 22:g} h16" stroke="#222" stroke-width="2" fill="none"/>')
    svg.text(mid, y + 20, label, size=12, anchor="middle", weight="bold")


def chip(svg: Svg, x: float, y: float, w: float, h: float, title: str, subtitle: str,
         left: Iterable[tuple[str, float]] = (), right: Iterable[tuple[str, float]] = ()) -> None:
    """A breakout board: a box with named terminals on its left and right edges."""
    svg.add(f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}" rx="6" fill="#1f618d" '
            'fill-opacity="0.10" stroke="#1f618d" stroke-width="2"/>')
    svg.text(x + w / 2, y + h - 26, title, size=14, anchor="middle", weight="bold")
    svg.text(x + w / 2, y + h - 10, subtitle, size=10, anchor="middle", color="#555")
    for name, ty in left:
        svg.add(f'<circle cx="{x:g}" cy="{ty:g}" r="3.5" fill="#1f618d"/>')
        svg.text(x + 8, ty + 4, name, size=11)
    for name, ty in right:
        svg.add(f'<circle cx="{x + w:g}" cy="{ty:g}" r="3.5" fill="#1f618d"/>')
        svg.text(x + w - 8, ty + 4, name, size=11, anchor="end")


def junction(svg: Svg, x: float, y: float, net: str) -> None:
    """A dot where one wire branches into two (a real connection)."""
    svg.add(f'<circle cx="{x:g}" cy="{y:g}" r="4.5" fill="{COLORS[net]}"/>')


# -- the drawing ------------------------------------------------------------------------------

def used_pins(wires: Iterable[Wire]) -> set[int]:
    """Physical pins that have a wire on them."""
    used = set()
    for wire in wires:
        for pin in PINS:
            if pin_xy(pin) == wire.points[0]:
                used.add(pin)
    return used


def wires() -> list[Wire]:
    """Every wire, as a route of orthogonal segments from its pin."""
    def w(net: str, pin: int, *rest: tuple[int, int]) -> Wire:
        return Wire(net, (pin_xy(pin), *rest))

    y17, y27, y22 = pin_xy(11)[1], pin_xy(13)[1], pin_xy(15)[1]
    y23, y24 = pin_xy(16)[1], pin_xy(18)[1]
    y18, y19, y20, y21 = pin_xy(12)[1], pin_xy(35)[1], pin_xy(38)[1], pin_xy(40)[1]
    return [
        # Buttons: GPIO to one side, GND to the other; the internal pull-ups do the rest.
        w("GPIO17", 11, (470, y17), (470, 190), (380, 190)),
        w("GPIO27", 13, (380, y27)),
        # LEDs: GPIO -> resistor -> LED -> GND.
        w("GPIO22", 15, (430, y22), (430, 380), (420, 380)),
        w("GPIO23", 16, (800, y23)),
        w("GPIO24", 18, (770, y24), (770, 400), (800, 400)),
        # Power for the breakouts.
        w("3V3", 1, (60, ROW0_Y), (60, 700), (110, 700)),
        w("5V", 2, (1130, ROW0_Y), (1130, 700), (1060, 700)),
        # I2S: the bit clock and word clock go to both chips, data one way each.
        w("GPIO18", 12, (790, y18), (790, 740), (280, 740)),
        w("GPIO18", 12, (790, y18), (790, 740), (890, 740)),
        w("GPIO19", 35, (490, y19), (490, 700), (280, 700)),
        w("GPIO19", 35, (490, y19), (490, 880), (870, 880), (870, 840), (890, 840)),
        w("GPIO20", 38, (850, y20), (850, 780), (280, 780)),
        w("GPIO21", 40, (830, y21), (830, 800), (890, 800)),
    ]


def draw_header(svg: Svg, used: set[int]) -> None:
    """The 2x20 header with pin numbers and names; unused pins are grey."""
    top = ROW0_Y - 16
    bottom = pin_xy(40)[1] + 16
    svg.add(f'<rect x="{LEFT_X - 16}" y="{top}" width="{RIGHT_X - LEFT_X + 32}" '
            f'height="{bottom - top}" rx="5" fill="#2c3e50"/>')
    svg.text((LEFT_X + RIGHT_X) / 2, top - 10, "Raspberry Pi 40-pin header", size=13,
             anchor="middle", weight="bold")
    svg.text((LEFT_X + RIGHT_X) / 2, bottom + 16, "pin 1: square pad, the end away from the USB ports", size=10,
             anchor="middle", color="#555")
    for pin, name in PINS.items():
        x, y = pin_xy(pin)
        power = {"3V3": COLORS["3V3"], "5V": COLORS["5V"], "GND": "#111"}.get(name)
        fill = power or ("#f1c40f" if pin in used else "#bdc3c7")
        svg.add(f'<circle cx="{x}" cy="{y}" r="8" fill="{fill}" stroke="#ecf0f1" stroke-width="1"/>')
        svg.text(x, y + 3, str(pin), size=8, anchor="middle",
                 color="#fff" if name == "GND" else "#111", weight="bold")
        color = "#111" if pin in used or power else "#999"
        weight = "bold" if pin in used else "normal"
        # Names sit above the wire that leaves the pin, on the wire's side of the header.
        if pin % 2:
            svg.text(x - 22, y - 4, name, size=10, anchor="end", color=color, weight=weight)
        else:
            svg.text(x + 22, y - 4, name, size=10, color=color, weight=weight)


def draw() -> str:
    """The whole diagram as SVG text."""
    svg = Svg(WIDTH, HEIGHT)
    svg.add(f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>')
    svg.text(24, 36, "atoms-appliance wiring (default pins, BCM numbering)", size=20, weight="bold")
    svg.text(24, 58, "Buttons need no resistor (internal pull-ups). Each LED has a 330 ohm series "
             "resistor. The audio part is the i2s-mems-max98357a profile; skip it for USB audio.",
             size=12, color="#444")

    all_wires = wires()
    for wire in all_wires:
        svg.line(wire.points, COLORS[wire.net])
    draw_header(svg, used_pins(all_wires))

    # Branch points of the shared I2S clocks.
    junction(svg, 790, 740, "GPIO18")
    junction(svg, 490, 700, "GPIO19")

    # Left: buttons and the status LED.
    button(svg, 300, 380, 190, "CALL (GPIO17)")
    svg.line([(300, 190), (270, 190), (270, 200)], COLORS["GND"], 2)
    ground(svg, 270, 200)
    button(svg, 300, 380, y := pin_xy(13)[1], "MUTE (GPIO27)")
    svg.line([(300, y), (270, y), (270, y + 10)], COLORS["GND"], 2)
    ground(svg, 270, y + 10)
    resistor(svg, 350, 420, 380, "330 Ω")
    svg.line([(350, 380), (330, 380)], COLORS["GPIO22"], 2)
    led(svg, 330, 312, 380, "#2ecc71", "status (green)")
    svg.line([(312, 380), (250, 380), (250, 390)], COLORS["GND"], 2)
    ground(svg, 250, 390)

    # Right: the mute (red) and speaking LEDs.
    y23 = pin_xy(16)[1]
    for y, net, fill, label in ((y23, "GPIO23", "#e74c3c", "mute (red)"),
                                (400, "GPIO24", "#f4d03f", "speaking (yellow)")):
        resistor(svg, 800, 870, y, "330 Ω")
        svg.line([(870, y), (900, y)], COLORS[net], 2)
        led(svg, 900, 918, y, fill, label)
        svg.line([(918, y), (980, y), (980, y + 10)], COLORS["GND"], 2)
        ground(svg, 980, y + 10)

    # Bottom: the I2S microphone and amplifier.
    chip(svg, 110, 670, 170, 190, "INMP441", "I2S MEMS microphone",
         left=[("VDD", 700), ("GND", 740), ("L/R", 780)],
         right=[("WS", 700), ("SCK", 740), ("SD", 780)])
    for ty in (740, 780):
        svg.line([(110, ty), (86, ty), (86, ty + 6)], COLORS["GND"], 2)
        ground(svg, 86, ty + 6)
    svg.text(90, 836, "L/R to GND:", size=10, anchor="end", color="#555")
    svg.text(90, 849, "left channel", size=10, anchor="end", color="#555")
    chip(svg, 890, 670, 170, 230, "MAX98357A", "I2S class-D amplifier",
         left=[("BCLK", 740), ("DIN", 800), ("LRC", 840)],
         right=[("Vin", 700), ("GND", 740), ("GAIN", 800), ("SD", 840)])
    svg.line([(1060, 740), (1090, 740), (1090, 750)], COLORS["GND"], 2)
    ground(svg, 1090, 750)
    svg.text(1068, 820, "open: 9 dB", size=10, color="#555")
    svg.text(1068, 860, "open: on", size=10, color="#555")
    # The speaker.
    svg.add('<path d="M940,920 h20 l16,-14 v40 l-16,-14 h-20 Z" fill="#d5d8dc" stroke="#222" '
            'stroke-width="1.5"/>')
    svg.add('<path d="M940,926 v-26 M960,926 v-26" stroke="#222" stroke-width="1"/>')
    svg.text(990, 934, "4-8 Ω speaker on + / -", size=11)

    # Legend.
    svg.text(24, HEIGHT - 44, "Wires that cross without a dot are not connected. "
             "The ground symbol means any GND pin (6, 9, 14, 20, 25, 30, 34, 39).", size=11, color="#444")
    svg.text(24, HEIGHT - 26, "GPIO16 is driven by the googlevoicehat overlay as the amplifier's "
             "enable: keep it free (or wire it to SD).", size=11, color="#444")
    return svg.render()


def main(argv: list[str] | None = None) -> int:
    """Write the diagram, or with --check report whether the file on disk is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="exit 1 if OUT differs from the drawing")
    args = parser.parse_args(argv)
    text = draw()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

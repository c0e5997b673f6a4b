"""From counted instructions to a share of a Pi Zero 2 W core, and the docs/benchmarks.md section."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tools import REPO

PI_CLOCK_HZ: Final = 1.0e9   # Raspberry Pi Zero 2 W: four Cortex-A53 at 1 GHz
# Instructions per cycle assumed for a Cortex-A53 on this code. The A53 is an in-order core that
# issues at most two instructions a cycle, with 32 KB L1 caches and a small branch predictor
# (Chips and Cheese, "ARM's Cortex A53: Tiny But Important", 2023-05-28,
# https://chipsandcheese.com/2023/05/28/arms-cortex-a53-tiny-but-important): half the peak for
# the NEON DSP loops at best, and less for CPython's interpreter loop (indirect branches, pointer
# chasing), whence 0.5-1.0. An assumption, not a measurement: only `perf stat` on a Zero 2 W replaces it.
IPC_RANGE: Final = (0.5, 1.0)
# What a wake-up costs a Zero 2 W beyond the user-space instructions QEMU counts (the syscall, the
# scheduler, the caches and TLB refilled afterwards): assumed 5-20 us on a 1 GHz in-order core.
# Counted per context switch of the same call run natively (each blocking read, sleep, futex wait).
WAKEUP_COST_S: Final = (5e-6, 20e-6)
TARGET_SHARE: Final = 0.25
SECTION: Final = "## Pi Zero 2 W: instructions counted under aarch64 emulation (make arm-estimate)"


@dataclass(frozen=True)
class RateFigures:
    """One sample rate's counts: per second of audio, bare DSP and whole service, and the kernel share."""

    rate: int
    bare_ips: float          # instructions per second of audio, bare calls (livekit's public API)
    bare_direct_ips: float   # the same with our direct FFI caller
    service_ips: float       # whole service in the paced call
    service_realtime: float  # audio seconds the emulated service processed per wall second
    native_user_share: float
    native_kernel_share: float
    switches_per_s: float    # context switches per second of the same call run natively
    window_audio_s: float    # the audio in the emulated call's measured window

    def share(self, ips: float, ipc: float) -> float:
        return ips / (ipc * PI_CLOCK_HZ)

    def wakeup_share(self, cost_s: float) -> float:
        return self.switches_per_s * cost_s

    def service_total(self, ipc: float, cost_s: float) -> float:
        return self.share(self.service_ips, ipc) + self.wakeup_share(cost_s)


def section(figures: list[RateFigures], host: str) -> str:
    lo, hi = IPC_RANGE
    head = "| measure | " + " | ".join(f"{f.rate // 1000} kHz" for f in figures) + " |"
    lines = [SECTION, "",
             f"Written by `make arm-estimate` ({time.strftime('%Y-%m-%d')}, on {host}): the aarch64 build "
             f"under qemu-aarch64 with an instruction-counting plugin; Pi Zero 2 W share = instructions "
             f"per second of audio / (IPC x {PI_CLOCK_HZ / 1e9:.0f} GHz), IPC {lo}-{hi}.", "",
             head, "| --- |" + " --- |" * len(figures)]

    def row(name: str, cell: object) -> None:
        lines.append(f"| {name} | " + " | ".join(cell(f) for f in figures) + " |")  # type: ignore[operator]

    row("bare AEC + NS + resample, livekit's public API (M instructions / s of audio)", lambda f: f"{f.bare_ips / 1e6:.1f}")
    row("bare, direct FFI caller (M instructions / s of audio)", lambda f: f"{f.bare_direct_ips / 1e6:.1f}")
    row("whole service in a paced call (M instructions / s of audio)", lambda f: f"{f.service_ips / 1e6:.1f}")
    row("audio in the emulated call's window (s)", lambda f: f"{f.window_audio_s:.1f}")
    row("**service / bare instructions**", lambda f: f"**{f.service_ips / f.bare_ips:.2f}**")
    row("emulated service: audio processed per wall second", lambda f: f"{f.service_realtime:.2f}")
    row("bare DSP, share of one Zero 2 W core", lambda f: f"{f.share(f.bare_ips, hi):.1%} - {f.share(f.bare_ips, lo):.1%}")
    row("service user space, share of one Zero 2 W core", lambda f: f"{f.share(f.service_ips, hi):.1%} - "
        f"{f.share(f.service_ips, lo):.1%}")
    row("host kernel / user time of the same call run natively", lambda f: f"{f.native_kernel_share:.2%} / "
        f"{f.native_user_share:.2%}")
    cheap, dear = WAKEUP_COST_S
    row("context switches per second, same call run natively", lambda f: f"{f.switches_per_s:.0f}")
    row(f"wake-ups at {cheap * 1e6:.0f}-{dear * 1e6:.0f} us each (kernel, caches; not counted by QEMU)",
        lambda f: f"{f.wakeup_share(cheap):.1%} - {f.wakeup_share(dear):.1%}")
    row(f"**whole service on a Zero 2 W, share of one core** (target <= {TARGET_SHARE:.0%})",
        lambda f: f"**{f.service_total(hi, cheap):.0%} - {f.service_total(lo, dear):.0%}**")
    worst = max(f.service_total(lo, dear) for f in figures)
    best = max(f.service_total(hi, cheap) for f in figures)
    if worst <= TARGET_SHARE:
        verdict = f"Target met over the whole range (worst {worst:.0%})."
    elif best <= TARGET_SHARE:
        verdict = (f"Target met only at the optimistic end of the range ({best:.0%} at IPC {hi} and "
                   f"{cheap * 1e6:.0f} us a wake-up, {worst:.0%} at IPC {lo} and {dear * 1e6:.0f} us).")
    else:
        verdict = f"Target missed: {best:.0%} even at the optimistic end."
    lines += ["", verdict, ""]
    lines += Path(__file__).with_name("method.md").read_text().rstrip().splitlines()
    return "\n".join(lines) + "\n"


def write_section(text: str) -> Path:
    """Replace (or append) this section of docs/benchmarks.md; the rest of the file stays."""
    target = REPO / "docs" / "benchmarks.md"
    old = target.read_text() if target.exists() else "# Benchmarks\n"
    if SECTION in old:
        start = old.index(SECTION)
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + (old[end:] if end >= 0 else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    target.write_text(new)
    return target

"""tools/arm_estimate's arithmetic: insn_meter's log read back, counts turned into Pi shares, the docs
section replaced in place. (The emulated runs themselves are `make arm-estimate`, not a test.)"""
from __future__ import annotations

from pathlib import Path

import pytest

from tools.arm_estimate import report
from tools.arm_estimate.meter import MeterLog
from tools.arm_estimate.report import IPC_RANGE, PI_CLOCK_HZ, WAKEUP_COST_S, RateFigures


def test_meter_log_marks_and_interpolated_ticks(tmp_path: Path) -> None:
    log = tmp_path / "meter.txt"
    log.write_text("tick 1000 0\nmark 1 1500 40\ntick 2000 100\nmark 2 2500 130\ntick 3000 300\nexit 3100 310\n"
                   "garbage line\n")
    meter = MeterLog.read(log)
    assert meter.between_marks(1, 2) == 90
    assert meter.at(1500) == pytest.approx(50)
    assert meter.at(2500) == pytest.approx(200)
    assert meter.at(3050) == pytest.approx(305)
    with pytest.raises(ValueError):
        meter.at(10_000)


def figures(rate: int = 16000, service_ips: float = 150e6, switches: float = 400.0) -> RateFigures:
    return RateFigures(rate=rate, bare_ips=100e6, bare_direct_ips=90e6, service_ips=service_ips,
                       service_realtime=0.8, native_user_share=0.03, native_kernel_share=0.01,
                       switches_per_s=switches, window_audio_s=30.0)


def test_share_is_instructions_over_ipc_times_clock_plus_wakeups() -> None:
    f = figures()
    lo, hi = IPC_RANGE
    cheap, dear = WAKEUP_COST_S
    assert f.service_total(lo, dear) == pytest.approx(150e6 / (lo * PI_CLOCK_HZ) + 400 * dear)
    assert f.service_total(hi, cheap) < f.service_total(lo, dear)


@pytest.mark.parametrize("service_ips, verdict", [(50e6, "Target met over the whole range"),
                                                  (180e6, "Target met only at the optimistic end"),
                                                  (400e6, "Target missed")])
def test_the_verdict_follows_the_range(service_ips: float, verdict: str) -> None:
    text = report.section([figures(service_ips=service_ips), figures(24000, service_ips)], "test host")
    assert text.startswith(report.SECTION)
    assert verdict in text
    assert "| 16 kHz | 24 kHz |" in text


def test_the_section_is_replaced_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "docs").mkdir()
    target = tmp_path / "docs" / "benchmarks.md"
    target.write_text(f"# Benchmarks\n\nbench table\n\n{report.SECTION}\n\nold figures\n\n## Later\n\nkept\n")
    monkeypatch.setattr(report, "REPO", tmp_path)
    report.write_section(f"{report.SECTION}\n\nnew figures\n")
    text = target.read_text()
    assert "old figures" not in text and "new figures" in text
    assert text.startswith("# Benchmarks\n\nbench table") and text.endswith("## Later\n\nkept\n")
    report.write_section(f"{report.SECTION}\n\nnewer\n")
    assert target.read_text().count(report.SECTION) == 1

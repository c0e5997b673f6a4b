"""The start-up breakdown the service logs at READY."""
from __future__ import annotations

from pathlib import Path

from device.service.startup import StartupClock, process_age


def test_phases_add_up_and_read_as_one_line() -> None:
    clock = StartupClock(now=10.0)
    clock.phases = [("python and imports", 1.5)]
    clock.mark("settings", now=10.25)
    clock.mark("controls (GPIO)", now=11.0)
    assert clock.phases == [("python and imports", 1.5), ("settings", 0.25), ("controls (GPIO)", 0.75)]
    assert clock.total == 2.5
    assert clock.summary() == "start-up took 2.50 s: python and imports 1.50, settings 0.25, controls (GPIO) 0.75"


def test_process_age_of_this_process_is_plausible() -> None:
    age = process_age()
    assert age is not None and 0 <= age < 24 * 3600


def test_process_age_survives_odd_command_names_and_missing_files(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # A command name with spaces and a parenthesis; starttime (field 22) = 0 ticks: age = uptime.
    stat.write_text("42 (a b) c) S " + " ".join(["0"] * 18) + " 0 0 0\n")
    age = process_age(stat)
    assert age is not None and age > 0
    assert process_age(tmp_path / "missing") is None

"""`ATOMS_CPU_AFFINITY`: parsing, the choice of CPU, and pinning a real process with its threads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from device.service.cpu import choose_cpus, parse_affinity
from device.service.settings import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("spec,expected", [
    ("auto", "auto"), (" AUTO ", "auto"), ("off", "off"), ("3", frozenset({3})), ("2, 3", frozenset({2, 3})),
])
def test_parse(spec: str, expected: object) -> None:
    assert parse_affinity(spec) == expected


@pytest.mark.parametrize("spec", ["", "on", "-1", "1-3", "2,", "cpu2", "1;2"])
def test_parse_refuses_nonsense(spec: str) -> None:
    with pytest.raises(ValueError, match="'auto', 'off' or a comma-separated list"):
        parse_affinity(spec)


def test_choose() -> None:
    four = frozenset({0, 1, 2, 3})
    assert choose_cpus("auto", four) == {3}            # the last CPU: a Pi routes every IRQ to CPU 0
    assert choose_cpus("auto", frozenset({5})) is None  # one CPU: nothing to choose
    assert choose_cpus("off", four) is None
    assert choose_cpus("1,2", four) == {1, 2}
    with pytest.raises(ValueError, match="CPU 7 is not available to this process"):
        choose_cpus("2,7", four)


def test_a_bad_setting_names_the_variable_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOMS_CPU_AFFINITY", "fast")
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    assert "ATOMS_CPU_AFFINITY" in str(info.value)
    assert "'auto', 'off' or a comma-separated list" in str(info.value)


PROBE = """
import json, os, threading
from device.service.cpu import pin_process
started = threading.Event(); stop = threading.Event()
def idle():
    started.set(); stop.wait(10)
early = threading.Thread(target=idle); early.start(); started.wait(5)
pinned = pin_process({spec!r})
late = threading.Thread(target=stop.wait, args=(10,)); late.start()
report = {{"pinned": sorted(pinned) if pinned else None,
          "main": sorted(os.sched_getaffinity(0)),
          "early": sorted(os.sched_getaffinity(early.native_id)),
          "late": sorted(os.sched_getaffinity(late.native_id))}}
stop.set(); early.join(); late.join()
print(json.dumps(report))
"""


def _probe(spec: str) -> dict[str, list[int] | None]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(spec=spec)], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_auto_pins_the_process_and_every_thread_to_the_last_cpu() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    report = _probe("auto")
    if len(allowed) == 1:
        assert report == {"pinned": None, "main": allowed, "early": allowed, "late": allowed}
    else:
        last = [allowed[-1]]
        assert report == {"pinned": last, "main": last, "early": last, "late": last}


def test_off_and_an_unavailable_cpu_leave_the_process_free() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    free = {"pinned": None, "main": allowed, "early": allowed, "late": allowed}
    assert _probe("off") == free
    assert _probe(str(max(allowed) + 64)) == free   # one log line, never a crash


def test_a_sandbox_that_refuses_the_call_leaves_the_service_running_unpinned(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Under a seccomp filter without sched_setaffinity (SystemCallErrorNumber=EPERM) the call
    fails with EPERM: one log line naming the fix, no exception."""
    import logging

    from device.service import cpu

    def refused(pid: int, cpus: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(cpu.os, "sched_setaffinity", refused)
    with caplog.at_level(logging.ERROR, logger="device.service.cpu"):
        assert cpu.pin_process("auto") is None
    assert "was refused" in caplog.text and "SystemCallFilter" in caplog.text

    def unreadable(pid: int) -> set[int]:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(cpu.os, "sched_getaffinity", unreadable)
    assert cpu.pin_process("auto") is None


def test_the_unit_lets_the_service_pin_itself() -> None:
    """The unit's syscall filter drops @resources, which holds sched_setaffinity: it must be allowed
    again after that line (systemd applies SystemCallFilter= lines in order)."""
    lines = [line.strip() for line in (REPO / "systemd" / "atoms-appliance.service").read_text().splitlines()]
    filters = [line.split("=", 1)[1] for line in lines if line.startswith("SystemCallFilter=")]
    deny = next(i for i, f in enumerate(filters) if f.startswith("~") and "@resources" in f)
    assert any(i > deny and not f.startswith("~") and "sched_setaffinity" in f.split()
               for i, f in enumerate(filters))

"""`ATOMS_CPU_AFFINITY`: parsing, the choice of CPU, and the check of what the unit's CPUAffinity= gave."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from device.service.cpu import choose_cpus, judge_affinity, parse_affinity
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


def test_judge() -> None:
    """What the process got against what the setting expects (pure)."""
    assert judge_affinity("auto", frozenset({3}), 4).problem is None
    assert judge_affinity("auto", frozenset({0}), 1).problem is None           # one CPU: nothing to pin
    assert judge_affinity("auto", frozenset({0, 1, 2, 3}), 4).problem == "not pinned: runs on CPUs 0,1,2,3 of 4"
    assert judge_affinity("off", frozenset({0, 1}), 2).problem is None
    assert judge_affinity("2,3", frozenset({2, 3}), 4).problem is None
    assert judge_affinity("2,3", frozenset({3}), 4).problem == "ATOMS_CPU_AFFINITY=2,3 but the process runs on CPU 3"
    assert judge_affinity("3", frozenset({0, 1, 2, 3}), 4).cpus == {0, 1, 2, 3}


PROBE = """
import json, logging, os, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
before = sorted(os.sched_getaffinity(0))
from device.service.cpu import check_affinity
result = check_affinity({spec!r})
print(json.dumps({{"before": before, "after": sorted(os.sched_getaffinity(0)),
                  "cpus": sorted(result.cpus), "problem": result.problem}}))
"""


def _probe(spec: str, cpus: set[int] | None, under_systemd: bool) -> tuple[dict[str, object], str]:
    """A real process started on `cpus` (as systemd's CPUAffinity= starts it) checks itself."""
    env = {k: v for k, v in os.environ.items() if k != "INVOCATION_ID"}
    if under_systemd:
        env["INVOCATION_ID"] = "0" * 32
    out = subprocess.run([sys.executable, "-c", PROBE.format(spec=spec)], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True, env=env,
                         preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    return json.loads(out.stdout), out.stderr


def test_the_service_checks_what_it_got_and_never_moves_itself() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    last = {allowed[-1]}
    report, log = _probe("auto", last, under_systemd=True)
    assert report == {"before": sorted(last), "after": sorted(last), "cpus": sorted(last), "problem": None}
    assert f"CPU affinity: CPU {allowed[-1]} (ATOMS_CPU_AFFINITY=auto)" in log
    report, log = _probe("auto", None, under_systemd=True)
    assert report["after"] == report["before"] == allowed   # not pinned by the process itself
    if len(allowed) > 1 and (os.cpu_count() or 1) > 1:
        assert report["problem"] == f"not pinned: runs on CPUs {','.join(map(str, allowed))} of {os.cpu_count()}"
        assert "WARNING CPU affinity: not pinned" in log and "CPUAffinity=" in log
        _, by_hand = _probe("auto", None, under_systemd=False)
        assert "INFO CPU affinity: not pinned" in by_hand and "taskset" in by_hand


def test_no_affinity_system_call_left_in_the_product() -> None:
    """Pinning is the unit's job: nothing the service runs may call sched_setaffinity (the unit's
    syscall filter refuses it)."""
    offenders = [str(path.relative_to(REPO)) for folder in ("device", "hw") for path in (REPO / folder).rglob("*.py")
                 if "sched_setaffinity(" in path.read_text(encoding="utf-8")]
    assert offenders == []


def _unit_lines() -> list[str]:
    return [line.strip() for line in (REPO / "systemd" / "atoms-appliance.service").read_text().splitlines()]


def test_the_unit_refuses_sched_setaffinity() -> None:
    """@resources (which holds sched_setaffinity) is denied and nothing allows it back."""
    filters = [line.split("=", 1)[1] for line in _unit_lines() if line.startswith("SystemCallFilter=")]
    assert any(f.startswith("~") and "@resources" in f.split() for f in filters)
    assert not any("sched_setaffinity" in f for f in filters)


def test_the_installer_pins_the_unit_to_the_last_cpu(tmp_path: Path) -> None:
    """deploy/install.sh's drop-in: CPUAffinity= the last online CPU; none with one CPU."""
    script = (REPO / "deploy" / "install.sh").read_text(encoding="utf-8")
    body = script[script.index("install_cpu_affinity() {"):]
    body = body[: body.index("\n}\n") + 3]
    for online, expected in (("0-3", "CPUAffinity=3"), ("0,2", "CPUAffinity=2"), ("0", None)):
        sysfs = tmp_path / f"online-{expected}"
        sysfs.write_text(online + "\n")
        dropin = tmp_path / f"dropin-{online}.conf"
        harness = "\n".join([
            f"ROOT=''; APP=atoms-appliance; AFFINITY_DROPIN={dropin}",
            "log() { echo \"$*\" >&2; }",
            "install_file() { cp \"$1\" \"$2\"; }",
            "record() { :; }",
            body.replace("/sys/devices/system/cpu/online", str(sysfs)),
            "install_cpu_affinity"])
        subprocess.run(["bash", "-c", harness], check=True, timeout=30)
        if expected is None:
            assert not dropin.exists()
        else:
            assert [line for line in dropin.read_text().splitlines() if line.startswith("CPUAffinity")] == [expected]

""".ci/run's exit status: `make test` decides CI; a red system test fails CI only in strict mode.

`make` is replaced by a stub on PATH that records its arguments and fails where a case says, so
these run the real script in well under a second and never boot a guest.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

STUB = """#!/bin/bash
echo "$*" >> "$STUB_LOG"
case "$*" in
  test) exit "${STUB_TEST_RC:-0}" ;;
  *test-system*) exit "${STUB_SYSTEM_RC:-0}" ;;
  *) exit 0 ;;
esac
"""


def _run(tmp_path: Path, **env: str) -> tuple[int, list[str], str]:
    checkout = tmp_path / "checkout"
    (checkout / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", checkout / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "make"
    stub.write_text(STUB)
    stub.chmod(0o755)
    log = tmp_path / "make.log"
    full_env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path / "home"),
        "STUB_LOG": str(log),
        **env,
    }
    proc = subprocess.run(["bash", str(checkout / ".ci" / "run")], env=full_env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    calls = log.read_text().splitlines() if log.exists() else []
    return proc.returncode, calls, proc.stdout + proc.stderr


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason=".ci/run runs the system test only as root")


def test_a_failing_make_test_fails_ci(tmp_path: Path) -> None:
    rc, calls, _ = _run(tmp_path, STUB_TEST_RC="2")
    assert rc != 0
    assert calls == ["test"], "nothing runs after a failed `make test`"


def test_without_the_system_test_ci_passes(tmp_path: Path) -> None:
    rc, calls, out = _run(tmp_path, ATOMS_CI_SYSTEM="0")
    assert rc == 0, out
    assert calls == ["test"]
    assert "system test skipped: ATOMS_CI_SYSTEM=0" in out


@needs_root
def test_a_red_system_test_is_reported_but_does_not_fail_ci(tmp_path: Path) -> None:
    rc, calls, out = _run(tmp_path, STUB_SYSTEM_RC="2")
    assert rc == 0, out
    assert any("test-system" in c for c in calls), calls
    assert "SYSTEM TEST FAILED (exit 2)" in out


@needs_root
def test_strict_mode_fails_ci_on_a_red_system_test(tmp_path: Path) -> None:
    rc, _, out = _run(tmp_path, STUB_SYSTEM_RC="2", ATOMS_CI_SYSTEM_STRICT="1")
    assert rc == 2, out


@needs_root
def test_a_green_system_test_passes_ci(tmp_path: Path) -> None:
    rc, calls, out = _run(tmp_path)
    assert rc == 0, out
    assert "SYSTEM TEST FAILED" not in out
    system = [c for c in calls if "test-system" in c]
    assert len(system) == 1 and "SYSTEM_RELEASES=bookworm" in system[0], calls


@needs_root
def test_too_little_budget_skips_the_system_test(tmp_path: Path) -> None:
    rc, calls, out = _run(tmp_path, ATOMS_CI_BUDGET_S="100")
    assert rc == 0, out
    assert not any("test-system" in c for c in calls), calls
    assert "system test skipped" in out


@needs_root
def test_a_short_budget_runs_the_slice(tmp_path: Path) -> None:
    rc, calls, out = _run(tmp_path, ATOMS_CI_BUDGET_S="1200")
    assert rc == 0, out
    system = [c for c in calls if "test-system" in c]
    assert len(system) == 1 and "SYSTEM_ARGS=-k" in system[0], calls
    assert "CI slice only" in out

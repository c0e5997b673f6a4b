"""deploy/install.sh and `make` refuse an unsupported platform before they touch anything.

The architecture probes are overridden two ways: ATOMS_PLATFORM_MACHINE (replaces every probe) and
fake `uname` / `dpkg` programs first on PATH (what a 32-bit Raspberry Pi OS on a 64-bit kernel
answers: uname aarch64, dpkg armhf).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.deploy.test_install import INSTALL, REPO, run_install, snapshot

REQUIREMENT = "64-bit Raspberry Pi OS or Debian arm64 (aarch64), or Debian amd64 (x86_64)"


def fake_programs(tmp_path: Path, **answers: str) -> str:
    """A PATH whose first folder has `name` programs printing `answer` (uname=..., dpkg=...)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    for name, answer in answers.items():
        program = bin_dir / name
        program.write_text(f"#!/bin/sh\necho {answer}\n")
        program.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"


def assert_refused(result: subprocess.CompletedProcess[str], machine: str) -> None:
    assert result.returncode == 78, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert f"unsupported platform: {machine}" in lines[0]
    assert REQUIREMENT in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("machine, shown", [("armhf", "armv7l"), ("armv6l", "armv6l"), ("riscv64", "riscv64")])
def test_refuses_an_unsupported_machine_and_changes_nothing(tmp_path: Path, machine: str, shown: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "etc").mkdir()
    before = snapshot(root)
    result = run_install("--root", str(root), "--no-venv", "--hardware", "respeaker-2mic",
                         env={"ATOMS_PLATFORM_MACHINE": machine}, check=False)
    assert_refused(result, shown)
    assert "nothing was installed" in result.stderr
    assert snapshot(root) == before


def test_refuses_before_creating_the_staging_tree(tmp_path: Path) -> None:
    root = tmp_path / "not-yet"
    result = run_install("--root", str(root), "--no-venv", env={"ATOMS_PLATFORM_MACHINE": "armv7l"}, check=False)
    assert_refused(result, "armv7l")
    assert not root.exists()


def test_32_bit_userland_on_a_64_bit_kernel_is_refused(tmp_path: Path) -> None:
    # 32-bit Raspberry Pi OS on a Pi 3/4/Zero 2 W: the kernel says aarch64, dpkg says armhf.
    path = fake_programs(tmp_path, uname="aarch64", dpkg="armhf")
    result = run_install("--root", str(tmp_path / "root"), "--no-venv", env={"PATH": path}, check=False)
    assert_refused(result, "armv7l")
    assert not (tmp_path / "root").exists()


def test_a_32_bit_kernel_is_refused(tmp_path: Path) -> None:
    path = fake_programs(tmp_path, uname="armv7l")
    result = run_install("--root", str(tmp_path / "root"), "--no-venv", env={"PATH": path}, check=False)
    assert_refused(result, "armv7l")


def test_a_supported_machine_installs(tmp_path: Path) -> None:
    # (x86_64, the CI's machine, is every other install test; tests/test_platform_support.py the names.)
    root = tmp_path / "root"
    result = run_install("--root", str(root), "--no-venv", env={"ATOMS_PLATFORM_MACHINE": "aarch64"})
    assert "unsupported" not in result.stderr
    assert (root / "opt/atoms-appliance/install-manifest").exists()


def test_uninstall_is_not_refused(tmp_path: Path) -> None:
    # What an older install left on a board is removable there (nothing installed here: a no-op).
    result = run_install("--root", str(tmp_path / "root"), "--uninstall", env={"ATOMS_PLATFORM_MACHINE": "armv7l"})
    assert "unsupported" not in result.stderr


def test_help_still_works_on_an_unsupported_machine() -> None:
    result = run_install("--help", env={"ATOMS_PLATFORM_MACHINE": "armv7l"})
    assert "Usage:" in result.stdout
    assert INSTALL.exists()


@pytest.mark.parametrize("target", ["demo", "test"])
def test_make_refuses_before_installing(tmp_path: Path, target: str) -> None:
    env = {**os.environ, "ATOMS_PLATFORM_MACHINE": "armv7l", "MAKEFLAGS": ""}
    # VENV elsewhere: were the check to pass, nothing in the checkout would be touched by the venv.
    result = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), target, f"VENV={tmp_path / 'venv'}"],
                            capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode != 0
    assert "unsupported platform: armv7l" in result.stderr
    assert REQUIREMENT in result.stderr
    assert not (tmp_path / "venv").exists()

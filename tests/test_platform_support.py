"""device/platform_support.py: the userland probe, the one-line refusal, and the CLI's exit 78."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from device import cli, platform_support
from device.platform_support import EXIT_UNSUPPORTED, check, unsupported, userland_machine
from tools import REPO


def probe(monkeypatch: pytest.MonkeyPatch, machine: str, pointer_bytes: int) -> str:
    monkeypatch.setattr(platform_support.platform, "machine", lambda: machine)
    monkeypatch.setattr(platform_support.struct, "calcsize", lambda fmt: pointer_bytes)
    return userland_machine({})


def test_a_32_bit_python_on_a_64_bit_kernel_is_armv7l(monkeypatch: pytest.MonkeyPatch) -> None:
    assert probe(monkeypatch, "aarch64", 4) == "armv7l"
    assert unsupported(probe(monkeypatch, "aarch64", 4)) is not None


@pytest.mark.parametrize("machine, expected", [("aarch64", "aarch64"), ("arm64", "aarch64"), ("x86_64", "x86_64"),
                                               ("AMD64", "x86_64"), ("armv7l", "armv7l")])
def test_64_bit_userlands_keep_their_name(monkeypatch: pytest.MonkeyPatch, machine: str, expected: str) -> None:
    assert probe(monkeypatch, machine, 8) == expected


def test_a_32_bit_x86_userland_is_i686(monkeypatch: pytest.MonkeyPatch) -> None:
    assert probe(monkeypatch, "x86_64", 4) == "i686"


@pytest.mark.parametrize("machine", ["aarch64", "arm64", "x86_64", "amd64"])
def test_supported(machine: str) -> None:
    assert unsupported(machine) is None


@pytest.mark.parametrize("machine", ["armv7l", "armhf", "armv6l", "armel", "i686", "i386", "riscv64", "ppc64le"])
def test_the_refusal_is_one_line_naming_platform_and_requirement(machine: str) -> None:
    reason = unsupported(machine)
    assert reason is not None and "\n" not in reason
    assert reason.startswith("unsupported platform: ")
    assert "64-bit Raspberry Pi OS" in reason and "arm64" in reason and "amd64" in reason


def test_the_override_replaces_every_probe() -> None:
    assert check(["armv7l"], {"ATOMS_PLATFORM_MACHINE": "aarch64"}) is None
    refused = check(["x86_64"], {"ATOMS_PLATFORM_MACHINE": "armv7l"})
    assert refused is not None and "armv7l" in refused


def test_any_unsupported_probe_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform_support.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(platform_support.struct, "calcsize", lambda fmt: 8)
    assert check(["aarch64", "arm64"], {}) is None
    refused = check(["aarch64", "armhf"], {})   # dpkg's answer on 32-bit Raspberry Pi OS
    assert refused is not None and "armv7l" in refused


@pytest.mark.parametrize("command", [["run"], ["doctor"], ["demo"]])
def test_the_cli_exits_78_with_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                        command: list[str]) -> None:
    monkeypatch.setenv("ATOMS_PLATFORM_MACHINE", "armv7l")
    assert cli.main(command) == EXIT_UNSUPPORTED
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unsupported platform: armv7l" in err and "64-bit Raspberry Pi OS" in err


def test_the_service_process_exits_78() -> None:
    env = {**os.environ, "ATOMS_PLATFORM_MACHINE": "armhf"}
    result = subprocess.run([sys.executable, "-m", "device", "run"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 78
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "unsupported platform: armv7l" in result.stderr


def test_the_override_is_a_known_environment_name() -> None:
    from device.service.settings import environment_warnings

    assert environment_warnings({"ATOMS_PLATFORM_MACHINE": "aarch64"}) == []

"""`doctor` shows its own lines, not alsa-lib's or gpiozero's raw warnings (issue 13, item 7)."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from device.doctor.core import quiet_libraries

REPO = Path(__file__).resolve().parents[2]


def test_quiet_libraries_keeps_fd2_and_warnings_for_the_debug_log(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="device.doctor.core"), quiet_libraries("probing"):
        os.write(2, b"ALSA lib pcm.c:2666:(snd_pcm_open_noupdate) Unknown PCM nowhere\n")
        warnings.warn("Falling back from lgpio", UserWarning, stacklevel=1)
    assert "ALSA lib" not in capfd.readouterr().err
    assert "Unknown PCM nowhere" in caplog.text and "Falling back from lgpio" in caplog.text
    os.write(2, b"after\n")   # fd 2 is back
    assert capfd.readouterr().err == "after\n"


def test_doctor_with_a_missing_sound_card_prints_only_its_own_lines(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ATOMS_API_KEY": "sk-quiet-test-1234",
           "ATOMS_AGENT_ID": "a", "ATOMS_URL": "ws://127.0.0.1:9/x",
           "ATOMS_CAPTURE_DEVICE": "hw:CARD=NoSuchCard", "ATOMS_PLAYBACK_DEVICE": "no_such_pcm",
           "ATOMS_GPIO_BACKEND": "gpiozero"}
    result = subprocess.run([sys.executable, "-m", "device", "doctor"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert "FAIL  microphone" in result.stdout and "FAIL  speaker" in result.stdout
    assert "ALSA lib" not in result.stderr and "PinFactoryFallback" not in result.stderr, result.stderr
    assert "warnings.warn" not in result.stderr

"""The commands: `doctor` (human and --json) against the simulator, and `ctl status` (table and --json)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device.cli import format_status
from device.cli import main as cli_main
from device.service.control import ControlServer
from device.sim.server import SimOptions, Simulator

from . import TEST_KEY, closed_port, isolate_settings

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]
EXPECTED = ["settings", "clock", "dns", "tcp", "agent", "microphone", "speaker", "gpio", "dsp"]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    simulator = Simulator(SimOptions(port=0, api_key=TEST_KEY))
    simulator.start()
    yield simulator
    simulator.stop()
    assert simulator.join(5)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sim: Simulator) -> dict[str, str]:
    """The doctor's settings, as a person would export them (also set in this process)."""
    isolate_settings(monkeypatch, tmp_path)
    values = {"ATOMS_URL": sim.url, "ATOMS_API_KEY": TEST_KEY, "ATOMS_AGENT_ID": "sim-agent",
              "ATOMS_AUDIO_BACKEND": "fake", "ATOMS_GPIO_BACKEND": "none"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli_main(["doctor", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_python_m_device_doctor_json_passes_against_the_simulator(env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "device", "doctor", "--json"], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == EXPECTED
    assert all(c["status"] == "pass" for c in report["checks"]), report
    assert TEST_KEY not in proc.stdout + proc.stderr


def test_a_rejected_key_fails_with_a_non_zero_exit(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ATOMS_API_KEY", "wrong-" + TEST_KEY)
    code, out, err = doctor(capsys, "--json")
    assert code == 1
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["agent"]["status"] == "fail" and "HTTP 401" in checks["agent"]["detail"]
    assert checks["settings"]["status"] == "pass"
    assert TEST_KEY not in out + err


def test_an_unreachable_endpoint_fails_and_skips_the_agent(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ATOMS_URL", f"ws://127.0.0.1:{closed_port()}/atoms/v1/agent/connect")
    code, out, _ = doctor(capsys, "--json")
    assert code == 1
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["tcp"]["status"] == "fail" and "refused" in checks["tcp"]["detail"]
    assert checks["agent"]["status"] == "skip"


def test_a_bad_setting_is_named_and_the_rest_is_skipped(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ATOMS_SAMPLE_RATE", "1234")
    code, out, err = doctor(capsys)
    assert code == 1
    first = out.splitlines()[0]
    assert first.startswith("FAIL  settings") and "ATOMS_SAMPLE_RATE" in first
    assert "skip  agent           not tried: the settings are invalid" in out
    assert "1 failed" in out.splitlines()[-1]
    assert "\r" not in out          # not a terminal: no live lines
    assert TEST_KEY not in out + err


def test_the_human_checklist_passes_with_fixes_only_for_problems(env: dict[str, str],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = doctor(capsys)
    assert code == 0, out
    lines = out.splitlines()
    assert [line.split()[1] for line in lines[:-1]] == EXPECTED
    assert all(line.startswith("PASS") for line in lines[:-1])
    assert "fix:" not in out
    assert lines[-1].startswith("9 passed in ")


def test_doctor_audio_on_the_fake_room(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in {"ATOMS_FAKE_ECHO_DELAY_MS": "37", "ATOMS_FAKE_ECHO_GAIN_DB": "-12",
                        "ATOMS_FAKE_REALTIME": "false"}.items():
        monkeypatch.setenv(name, value)
    code, out, _ = doctor(capsys, "--json", "--audio", "--seconds", "0.5")
    report = json.loads(out)
    assert code == 0, report
    assert abs(report["audio"]["echo"]["delay_ms"] - 37) <= 2
    names = [c["name"] for c in report["checks"]]
    assert names[-7:] == ["mic level", "echo", "reverberation", "speaker distortion", "clock drift",
                          "echo reduction", "echo handling"]


# -- ctl status -----------------------------------------------------------------------------------
STATUS: dict[str, Any] = {
    "call_state": "in_call", "muted": True, "agent_speaking": False, "talking": False, "call_mode": "button",
    "hardware_faults": [], "session_id": "s-1", "call_id": None, "sample_rate": 16000, "last_error": None,
    "leds": {"status": "on", "mute": True, "speaking": False, "indicator": "muted"},
    "counters": {"frames_captured": 1200, "reconnects": 0, "malformed": {"unknown_type": 2}},
}


@pytest.fixture
def control(tmp_path: Path) -> Iterator[Path]:
    server = ControlServer(tmp_path / "control.sock", lambda event: None, lambda: STATUS)
    server.bind()
    server.start()
    yield server.path
    server.stop()
    assert server.join(3)


def test_ctl_status_prints_a_table(control: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["ctl", "status", "--socket", str(control)]) == 0
    rows = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert rows["call_state"] == "in_call" and rows["muted"] == "yes" and rows["talking"] == "no"
    assert rows["call_id"] == "-" and rows["hardware_faults"] == "-"
    assert rows["led.status"] == "on" and rows["counter.frames_captured"] == "1200"
    assert rows["counter.malformed"] == "unknown_type=2"


def test_ctl_status_json_is_the_status_for_scripts(control: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["ctl", "status", "--json", "--socket", str(control)]) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True, "status": STATUS}


def test_ctl_without_a_service_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["ctl", "status", "--socket", str(tmp_path / "none.sock")]) == 1
    assert "cannot reach the service" in capsys.readouterr().err


def test_format_status_aligns_keys() -> None:
    lines = format_status({"a": 1, "long_name": ["x", "y"]}).splitlines()
    assert lines == ["a          1", "long_name  x, y"]

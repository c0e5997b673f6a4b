"""The machine checks of `doctor`: settings, clock, GPIO, the DSP probe, and crash-proof running."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from gpiozero import Button
from gpiozero.pins.mock import MockFactory

from device.doctor.checks import (
    check_clock,
    check_dsp,
    check_gpio,
    check_settings,
    package_build_time,
    time_synchronized,
)
from device.doctor.core import CheckResult, Redactor, Status, format_result, run_check
from device.service.settings import load_settings
from device.session.connection import MIN_SANE_TIME
from hw.gpio import MockGpioControls, RecordingPWMPin

from . import TEST_KEY, isolate_settings

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_settings(monkeypatch, tmp_path)


# -- settings -------------------------------------------------------------------------------------
def test_valid_settings_pass_without_showing_the_key() -> None:
    result, settings = check_settings(lambda: load_settings(api_key=TEST_KEY, agent_id="sim-agent"))
    assert result.status is Status.PASS, result
    assert settings is not None
    assert "key set" in result.detail and "sim-agent" in result.detail
    assert TEST_KEY not in format_result(result) + str(result.to_json())


def test_a_bad_setting_fails_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOMS_SAMPLE_RATE", "1234")
    monkeypatch.setenv("ATOMS_API_KEY", TEST_KEY)
    result, settings = check_settings(load_settings)
    assert result.status is Status.FAIL
    assert settings is None
    assert "ATOMS_SAMPLE_RATE" in result.detail and "1234" in result.detail
    assert result.fix
    assert TEST_KEY not in result.detail + result.fix


def test_a_missing_key_fails_and_says_where_to_put_it() -> None:
    result, settings = check_settings(lambda: load_settings(agent_id="sim-agent"))
    assert result.status is Status.FAIL
    assert settings is not None   # the rest of the checklist can still use the other settings
    assert "ATOMS_API_KEY" in result.detail
    assert "atoms_api_key" in result.fix


def test_a_world_readable_config_file_warns() -> None:
    result, _ = check_settings(lambda: load_settings(api_key=TEST_KEY, agent_id="a"),
                               lambda: ["/etc/x.toml is readable by every user; fix: chmod 640 /etc/x.toml"])
    assert result.status is Status.WARN
    assert "chmod 640" in result.fix


# -- clock ----------------------------------------------------------------------------------------
def test_a_sane_clock_passes() -> None:
    now = MIN_SANE_TIME + 300 * 86400
    result = check_clock(lambda: now, lambda: now - 86400, lambda: True)
    assert result.status is Status.PASS
    assert "synchronized" in result.detail


def test_a_clock_from_1970_fails_with_the_time_sync_fix() -> None:
    result = check_clock(lambda: 0.0, lambda: MIN_SANE_TIME, lambda: False)
    assert result.status is Status.FAIL
    assert "1970-01-01" in result.detail
    assert "time sync" in result.fix and "RTC" in result.fix


def test_a_clock_before_the_install_fails() -> None:
    built = MIN_SANE_TIME + 200 * 86400
    result = check_clock(lambda: built - 3 * 86400, lambda: built, lambda: None)
    assert result.status is Status.FAIL
    assert "before this software was installed" in result.detail


def test_real_clock_and_build_time_are_consistent(tmp_path: Path) -> None:
    assert package_build_time() > MIN_SANE_TIME
    assert time_synchronized(tmp_path / "nothing" / "synchronized") is None
    (tmp_path / "timesync").mkdir()
    assert time_synchronized(tmp_path / "timesync" / "synchronized") is False
    (tmp_path / "timesync" / "synchronized").touch()
    assert time_synchronized(tmp_path / "timesync" / "synchronized") is True


# -- GPIO -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("backend", "why"), [("none", "no buttons or LEDs"), ("keyboard", "terminal keys")])
def test_gpio_without_pins_passes_with_a_note(backend: str, why: str) -> None:
    result = check_gpio(backend, lambda: pytest.fail("no controls must be built"))
    assert result.status is Status.PASS
    assert "skipped" in result.detail and why in result.detail


def test_gpio_mock_claims_reads_and_releases_every_pin() -> None:
    factory = MockFactory(pin_class=RecordingPWMPin)
    result = check_gpio("mock", lambda: MockGpioControls(pin_factory=factory))
    assert result.status is Status.PASS, result
    assert result.data["pins"] == {"call": 17, "mute": 27, "status_led": 22, "mute_led": 23, "speaking_led": 24}
    # Released: the same pins can be claimed again at once.
    MockGpioControls(pin_factory=factory).close()


def test_a_pin_already_claimed_fails_naming_it() -> None:
    factory = MockFactory(pin_class=RecordingPWMPin)
    holder = Button(17, pin_factory=factory)
    try:
        result = check_gpio("mock", lambda: MockGpioControls(pin_factory=factory))
    finally:
        holder.close()
    assert result.status is Status.FAIL
    assert "GPIO17" in result.detail
    assert "another program holds the pin" in result.fix


def test_a_button_low_at_rest_warns() -> None:
    factory = MockFactory(pin_class=RecordingPWMPin)

    def controls() -> MockGpioControls:
        c = MockGpioControls(pin_factory=factory)
        c.press()
        return c

    result = check_gpio("mock", controls)
    assert result.status is Status.WARN
    assert "call (GPIO17)" in result.detail and "wiring" in result.fix


# -- DSP libraries --------------------------------------------------------------------------------
def test_the_real_dsp_libraries_load_in_a_child_process() -> None:
    result = check_dsp("webrtc", True)
    assert result.status is Status.PASS, result
    assert "livekit" in result.detail and "webrtc-noise-gain" in result.detail


def test_an_import_error_fails_the_dsp_check() -> None:
    code = 'print(\'{"step": "aec", "state": "error", "error": "ImportError: no module livekit"}\')'
    result = check_dsp("webrtc", True, probe_code=code)
    assert result.status is Status.FAIL
    assert "ImportError" in result.detail and "not reached" in result.detail   # noise never ran
    assert "reinstall" in result.fix


def test_a_sigill_names_the_library_and_the_cpu() -> None:
    def runner(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        out = '{"step": "aec", "state": "start"}\n'
        return subprocess.CompletedProcess(argv, -4, out, "")

    result = check_dsp("webrtc", False, runner)
    assert result.status is Status.FAIL
    assert "AEC (livekit) killed the process: SIGILL" in result.detail
    assert "aec = off" in result.fix


def test_a_broken_library_that_is_not_used_only_warns() -> None:
    def runner(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        out = ('{"step": "aec", "state": "start"}\n{"step": "aec", "state": "error", "error": "OSError: x"}\n'
               '{"step": "noise", "state": "start"}\n{"step": "noise", "state": "ok", "version": "1.3"}\n')
        return subprocess.CompletedProcess(argv, 0, out, "")

    result = check_dsp("off", True, runner)
    assert result.status is Status.WARN
    assert "not used" in result.detail


def test_a_probe_that_hangs_fails() -> None:
    def runner(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(argv, timeout)

    assert check_dsp("webrtc", True, runner, timeout=1).status is Status.FAIL


# -- running checks -------------------------------------------------------------------------------
def test_a_check_that_raises_becomes_a_fail_line_without_the_key() -> None:
    def broken() -> CheckResult:
        raise RuntimeError(f"boom with {TEST_KEY} inside")

    result = run_check("broken", broken, Redactor([TEST_KEY]))
    assert result.status is Status.FAIL
    assert "RuntimeError: boom with *** inside" in result.detail
    assert TEST_KEY not in str(result.to_json())


def test_redaction_covers_url_forms_and_data() -> None:
    redactor = Redactor(["a key/with+signs"])
    result = redactor.result(CheckResult.fail("x", "token=a+key%2Fwith%2Bsigns", "a key/with+signs",
                                              url="?token=a%20key%2Fwith%2Bsigns"))
    assert "key" not in result.detail + result.fix + result.data["url"]

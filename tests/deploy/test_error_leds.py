"""deploy/error_leds.py, the OnFailure= handler's LED pattern, on gpiozero's MockFactory."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tools.polling import wait_until

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "error_leds.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("error_leds", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


error_leds = _load()


def test_defaults_without_config(tmp_path: Path) -> None:
    settings = error_leds.load_settings(tmp_path / "missing.toml", {})
    assert settings == {"status_led_pin": 22, "mute_led_pin": 23, "speaking_led_pin": 24,
                        "gpio_backend": "gpiozero"}


def test_config_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('status_led_pin = 5\n[gpio]\nmute_led_pin = 6\n', encoding="utf-8")
    settings = error_leds.load_settings(config, {"ATOMS_SPEAKING_LED_PIN": "7",
                                                 "ATOMS_STATUS_LED_PIN": "8"})
    assert settings["status_led_pin"] == "8"     # environment wins over the file
    assert settings["mute_led_pin"] == 6         # a [gpio] table is read too
    assert settings["speaking_led_pin"] == "7"


def test_broken_config_falls_back_to_defaults(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "config.toml"
    config.write_text("status_led_pin = [oops\n", encoding="utf-8")
    settings = error_leds.load_settings(config, {})
    assert settings["status_led_pin"] == 22
    assert "default LED pins" in caplog.text


@pytest.mark.parametrize(("value", "expected"),
                         [(17, 17), ("17", 17), (" 4 ", 4), (-1, None), (None, None), (True, None),
                          ("", None), ("GPIO4", None)])
def test_pin_number(value: Any, expected: int | None) -> None:
    assert error_leds.pin_number(value) == expected


def test_pattern_on_mock_pins_until_stopped() -> None:
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    stop = threading.Event()
    settings = {"status_led_pin": 22, "mute_led_pin": 23, "speaking_led_pin": 24,
                "gpio_backend": "gpiozero"}
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(error_leds.run(settings, stop, factory)))
    worker.start()
    try:
        status, mute, speaking = factory.pin(22), factory.pin(23), factory.pin(24)
        # Bounded wait for the blinking to show: at least on, off, on again.
        assert wait_until(lambda: sum(1 for s in status.states if s.state) >= 2, 3, interval=0.02), \
            status.states
        assert mute.state is True       # red: no audio leaves the device
        assert speaking.state is False
    finally:
        stop.set()
        worker.join(timeout=5)
    assert not worker.is_alive()
    assert result == [0]
    # Stopping frees the lines for the service, which must start from dark LEDs.
    assert factory.pin(23).state is False


def test_disabled_led_and_none_backend() -> None:
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    stop = threading.Event()
    stop.set()  # returns at once after setting the pattern
    settings = {"status_led_pin": None, "mute_led_pin": 23, "speaking_led_pin": -1,
                "gpio_backend": "gpiozero"}
    assert error_leds.run(settings, stop, factory) == 0
    assert error_leds.run({"gpio_backend": "none"}, stop) == 0
    keys = MockFactory()
    assert error_leds.run({"gpio_backend": "keyboard", "mute_led_pin": 23}, stop, keys) == 0
    assert not keys.pins   # terminal keys (`run --keys`): no LED pin is claimed


def test_script_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('gpio_backend = "mock"\n', encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--config", str(config)],
                            stderr=subprocess.PIPE, text=True,
                            env={"MONITOR_EXIT_STATUS": "78", "PATH": "/usr/bin:/bin"})
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()   # the "failed" line, then the pattern line
        assert "MONITOR_EXIT_STATUS=78" in line
        assert "LED pattern" in proc.stderr.readline()
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

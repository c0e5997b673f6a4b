"""The wake word mode's settings and its start-up failures: a bad model name or file is a config
error naming the field and the choices; a wake word runtime that cannot load stops `run` with
one line naming the platform and exit 78, never a traceback (the load is made to fail by a
`pymicro_wakeword` on PYTHONPATH that raises ImportError, as a platform without its wheel would)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from device.service.settings import EXIT_CONFIG, ConfigError, load_settings
from device.service.wake_word import build_detector
from device.wake.detector import BUILTIN_MODELS, platform_name
from tools import REPO
from tools.service_process import ServiceProcess


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ATOMS_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


def test_defaults_and_builtin_models() -> None:
    s = load_settings(call_mode="wake_word")
    assert (s.wake_word_model, s.wake_word_model_file, s.wake_word_cutoff, s.wake_word_refractory_seconds) \
        == ("okay_nabu", None, None, 2.0)
    for model in BUILTIN_MODELS:
        assert load_settings(wake_word_model=model).wake_word_model == model


def test_an_unknown_model_names_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(wake_word_model="hey_computer")
    message = str(info.value)
    assert "ATOMS_WAKE_WORD_MODEL" in message and "hey_computer" in message
    assert all(model in message for model in BUILTIN_MODELS) and message.count("\n") == 0


@pytest.mark.parametrize(("name", "value"), [("wake_word_cutoff", 1.5), ("wake_word_cutoff", 0),
                                             ("wake_word_refractory_seconds", -1)])
def test_out_of_range_numbers(name: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"ATOMS_{name.upper()}"):
        load_settings(**{name: value})


def test_a_custom_model_needs_both_files(tmp_path: Path) -> None:
    tflite = tmp_path / "hey_kiosk.tflite"
    tflite.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"ATOMS_WAKE_WORD_MODEL_FILE.*hey_kiosk\.json"):
        load_settings(wake_word_model_file=tflite)
    (tmp_path / "hey_kiosk.json").write_text("{}")
    assert load_settings(wake_word_model_file=tflite).wake_word_model_file == tflite
    assert load_settings(wake_word_model_file=tmp_path / "hey_kiosk.json").wake_word_model_file is not None
    with pytest.raises(ConfigError, match="ATOMS_WAKE_WORD_MODEL_FILE"):
        load_settings(wake_word_model_file=tmp_path / "hey_kiosk.onnx")


def run_service(tmp_path: Path, extra_env: dict[str, str], **settings: str) -> subprocess.CompletedProcess[str]:
    env = ServiceProcess(tmp_path, "ws://127.0.0.1:9/", call_mode="wake_word", **settings).env
    env.update(extra_env)
    return subprocess.run([sys.executable, "-m", "device", "run"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_no_wake_word_runtime_exits_78_naming_the_platform(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "pymicro_wakeword"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("no wheel for this platform")\n')
    pythonpath = os.pathsep.join(filter(None, [str(shadow.parent), os.environ.get("PYTHONPATH")]))
    result = run_service(tmp_path, {"PYTHONPATH": pythonpath})
    assert result.returncode == EXIT_CONFIG, result.stderr
    errors = [line for line in result.stderr.splitlines() if "config error" in line]
    assert len(errors) == 1, result.stderr
    assert "ATOMS_CALL_MODE" in errors[0] and platform_name() in errors[0] and "fix:" in errors[0]
    assert "Traceback" not in result.stderr and "ready:" not in result.stderr
    assert not (tmp_path / "control.sock").exists()


def test_a_custom_model_that_does_not_load_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    model = tmp_path / "broken.tflite"
    model.write_bytes(b"not a model" * 100)
    (tmp_path / "broken.json").write_text(
        '{"type": "micro", "wake_word": "hey kiosk", "model": "broken.tflite", '
        '"micro": {"probability_cutoff": 0.9, "sliding_window_size": 5, "feature_step_size": 10}}')
    settings = load_settings(call_mode="wake_word", wake_word_model_file=model)
    with pytest.raises(ConfigError) as info:
        build_detector(settings)
    message = str(info.value)
    assert "ATOMS_WAKE_WORD_MODEL_FILE" in message and "broken.tflite" in message and "\n" not in message


def test_doctor_loads_the_wake_word_detector(tmp_path: Path) -> None:
    from device.doctor.checks import check_wake_word
    from device.doctor.core import Status

    good = check_wake_word(load_settings(call_mode="wake_word", wake_word_model="hey_jarvis"))
    assert good.status is Status.PASS and "hey_jarvis" in good.detail

    def unavailable(settings: object) -> object:
        raise ConfigError("config error: ATOMS_CALL_MODE (config.toml: call_mode) is wake_word but wake word "
                          f"detection is unavailable on {platform_name()}: no wheel; fix: use call_mode button")

    bad = check_wake_word(load_settings(call_mode="wake_word"), unavailable)
    assert bad.status is Status.FAIL and platform_name() in bad.detail and "call_mode button" in bad.fix

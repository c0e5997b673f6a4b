"""Settings: sources and their order, the environment names users rely on, clear errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from device.service.settings import EXIT_CONFIG, ConfigError, load_settings

REQUIRED_ENV_NAMES = [
    "ATOMS_API_KEY", "ATOMS_AGENT_ID", "ATOMS_URL", "ATOMS_SAMPLE_RATE", "ATOMS_VARIABLES",
    "ATOMS_CALL_MODE", "ATOMS_AUDIO_BACKEND", "ATOMS_CAPTURE_DEVICE", "ATOMS_PLAYBACK_DEVICE",
    "ATOMS_FAKE_CAPTURE_FILE", "ATOMS_FAKE_PLAYBACK_FILE", "ATOMS_GPIO_BACKEND", "ATOMS_CONTROL_SOCKET",
    "ATOMS_LOG_FORMAT", "ATOMS_STATS_FILE", "ATOMS_AEC", "ATOMS_NOISE_SUPPRESSION",
    "ATOMS_AUTO_GAIN_DBFS", "ATOMS_HALF_DUPLEX", "ATOMS_FAKE_ECHO_DELAY_MS", "ATOMS_FAKE_ECHO_GAIN_DB",
    "ATOMS_FAKE_ECHO_IR_FILE", "ATOMS_FAKE_ECHO_DRIFT_PPM", "ATOMS_FAKE_SPEAKER_CLIP_DBFS",
    "ATOMS_FAKE_NOISE_DBFS", "ATOMS_DEBUG_RECORD_DIR",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ATOMS_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("ATOMS_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.delenv("ATOMS_CONFIG")


@pytest.mark.parametrize("name", REQUIRED_ENV_NAMES)
def test_documented_environment_names_exist(name: str) -> None:
    from device.service.settings import Settings

    assert name.removeprefix("ATOMS_").lower() in Settings.model_fields


def test_defaults() -> None:
    s = load_settings()
    assert s.url == "wss://api.smallest.ai/atoms/v1/agent/connect"
    assert s.sample_rate == 16000 and s.call_mode == "button" and s.auth == "header"


def test_environment_overrides_toml_and_credentials_override_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "config.toml"
    toml.write_text('agent_id = "from-toml"\nsample_rate = 24000\napi_key = "toml-key"\n'
                    'variables = { name = "Ada", vip = true }\n')
    s = load_settings(toml)
    assert (s.agent_id, s.sample_rate, s.variables) == ("from-toml", 24000, {"name": "Ada", "vip": True})
    monkeypatch.setenv("ATOMS_AGENT_ID", "from-env")
    monkeypatch.setenv("ATOMS_API_KEY", "env-key")
    s = load_settings(toml)
    assert s.agent_id == "from-env" and s.api_key is not None and s.api_key.get_secret_value() == "env-key"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "atoms_api_key").write_text("cred-key")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    s = load_settings(toml)
    assert s.api_key is not None and s.api_key.get_secret_value() == "cred-key"


def test_variables_from_environment_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOMS_VARIABLES", '{"customer_name": "Tanay", "tier": 2}')
    assert load_settings().variables == {"customer_name": "Tanay", "tier": 2}


@pytest.mark.parametrize("name, value, fragment", [
    ("ATOMS_SAMPLE_RATE", "44100", "ATOMS_SAMPLE_RATE"),
    ("ATOMS_CALL_MODE", "sometimes", "ATOMS_CALL_MODE"),
    ("ATOMS_AUDIO_BACKEND", "pulse", "ATOMS_AUDIO_BACKEND"),
    ("ATOMS_VARIABLES", "[1, 2]", "ATOMS_VARIABLES"),
    ("ATOMS_NOISE_SUPPRESSION", "9", "ATOMS_NOISE_SUPPRESSION"),
    ("ATOMS_URL", "https://example.invalid/x", "ATOMS_URL"),
    ("ATOMS_PERIOD_MS", "15", "ATOMS_PERIOD_MS"),
])
def test_bad_values_name_the_field_and_the_fix(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                               fragment: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert fragment in text and "fix:" in text


def test_unknown_toml_key_and_bad_toml(tmp_path: Path) -> None:
    toml = tmp_path / "config.toml"
    toml.write_text('agent_idd = "typo"\n')
    with pytest.raises(ConfigError, match="agent_idd"):
        load_settings(toml)
    toml.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="TOML"):
        load_settings(toml)


def test_missing_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ATOMS_API_KEY"):
        load_settings().require_agent()


def test_the_key_never_appears_in_errors_or_redacted_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOMS_API_KEY", "sk-super-secret-123")
    monkeypatch.setenv("ATOMS_SAMPLE_RATE", "1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "sk-super-secret-123" not in str(info.value)
    monkeypatch.setenv("ATOMS_SAMPLE_RATE", "16000")
    s = load_settings()
    assert "sk-super-secret-123" not in repr(s) and "sk-super-secret-123" not in str(s.redacted())


def test_cli_exits_78_with_the_field_name(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "ATOMS_CALL_MODE": "nope", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "device", "config"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == EXIT_CONFIG
    assert "ATOMS_CALL_MODE" in result.stderr and "fix:" in result.stderr
    assert result.stderr.count("\n") <= 2


def test_kiosk_settings_defaults_and_checks() -> None:
    s = load_settings(api_key="k", agent_id="a")
    assert (s.idle_hangup_seconds, s.max_call_seconds, s.call_warning_seconds) == (60.0, 900.0, 10.0)
    assert (s.volume, s.volume_floor_db, s.volume_step, s.volume_mixer) == (100, -30.0, 10, None)
    assert s.conversation_keep == 0
    together = "ATOMS_VOLUME_ENCODER_A_PIN and ATOMS_VOLUME_ENCODER_B_PIN go together"
    with pytest.raises(ConfigError, match=together):
        load_settings(api_key="k", agent_id="a", volume_encoder_a_pin=20)
    with pytest.raises(ConfigError, match="ATOMS_VOLUME .*config.toml: volume"):
        load_settings(api_key="k", agent_id="a", volume=120)
    with pytest.raises(ConfigError, match="ATOMS_IDLE_HANGUP_SECONDS"):
        load_settings(api_key="k", agent_id="a", idle_hangup_seconds=-1)

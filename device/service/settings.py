"""Settings: defaults < config.toml < environment (`ATOMS_*`) < systemd credentials.

Loaded once at start by `load_settings`; a bad value raises `ConfigError`, whose message names
each field (as the environment variable and the TOML key) with a fix, and the CLI exits 78.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from device.audio.formats import DEFAULT_SESSION_RATE, SESSION_RATES
from device.core.events import CallMode

if TYPE_CHECKING:
    from hw.settings import HwSettings

DEFAULT_URL: Final = "wss://api.smallest.ai/atoms/v1/agent/connect"
DEFAULT_CONFIG_FILE: Final = Path("/etc/atoms-appliance/config.toml")
ENV_PREFIX: Final = "ATOMS_"
EXIT_CONFIG: Final = 78  # EX_CONFIG from sysexits.h; systemd's RestartPreventExitStatus uses it

class ConfigError(Exception):
    """A setting is missing or invalid. The message is meant for a person and names the fix."""


class Settings(BaseSettings):
    """Every setting of the appliance. Immutable after load; read by any thread."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, case_sensitive=False,
        validate_default=True,
    )

    # -- the agent --------------------------------------------------------------------------
    api_key: SecretStr | None = Field(None, description="Atoms API key (prefer the systemd credential)")
    agent_id: str = Field("", description="the Atoms agent to call")
    url: str = Field(DEFAULT_URL, description="the Agent WebSocket connect endpoint (wss:// or ws://)")
    auth: Literal["header", "query"] = Field(
        "header", description="'header' sends Authorization: Bearer; 'query' puts the key in the URL")
    sample_rate: int = Field(DEFAULT_SESSION_RATE, description="audio rate requested from the agent: "
                             f"{', '.join(map(str, SESSION_RATES[:-1]))} or {SESSION_RATES[-1]} Hz")
    variables: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="per-call prompt variables, a JSON object")
    call_mode: CallMode = Field(CallMode.BUTTON, description="button | push_to_talk | always")

    # -- network --------------------------------------------------------------------------------
    connect_timeout: float = Field(10.0, gt=0, le=120, description="seconds for TCP+TLS+upgrade")
    ping_interval: float = Field(20.0, gt=0, le=600, description="seconds between WebSocket pings")
    ping_timeout: float = Field(10.0, gt=0, le=600, description="seconds to wait for a pong")
    backoff_initial: float = Field(1.0, gt=0, le=60, description="first reconnect delay, seconds")
    backoff_max: float = Field(30.0, gt=0, le=3600, description="reconnect delay cap, seconds")
    uplink_queue_ms: int = Field(2000, ge=100, le=60000, description="mic audio held while the network is slow")
    max_message_bytes: int = Field(1 << 20, ge=1024, description="larger server messages are dropped")

    # -- audio ----------------------------------------------------------------------------------
    audio_backend: Literal["alsa", "fake"] = Field("alsa", description="alsa | fake")
    capture_device: str = Field("default", description="ALSA PCM name of the microphone")
    playback_device: str = Field("default", description="ALSA PCM name of the speaker")
    period_ms: int = Field(10, ge=10, le=100, description="device period, a multiple of 10 ms")
    playback_buffer_periods: int = Field(
        3, ge=2, le=32,
        description="periods in the playback buffer: 3 keeps 2 to 3 periods queued (never fewer than 2)")
    jitter_buffer_seconds: float = Field(
        60.0, gt=0, le=600, description="agent audio buffered ahead of the speaker at most")
    aec: Literal["webrtc", "off"] = Field("webrtc", description="echo cancellation: webrtc | off")
    noise_suppression: int = Field(2, ge=0, le=4, description="WebRTC noise suppression level 0-4")
    auto_gain_dbfs: int = Field(0, ge=0, le=31, description="auto gain target -dBFS, 0 = off")
    half_duplex: bool = Field(False, description="gate the mic while the agent talks")
    earcons: bool = Field(True, description="short sounds for connect, hang-up, mute, error")
    debug_record_dir: Path | None = Field(None, description="keep the last seconds of audio here")
    debug_record_seconds: float = Field(30.0, gt=0, le=600, description="seconds kept for debugging")

    # -- fakes (host development, demo, tests) ---------------------------------------------------
    fake_capture_file: Path | None = Field(None, description="WAV the fake mic plays once")
    fake_playback_file: Path | None = Field(None, description="WAV the fake speaker records to")
    fake_realtime: bool = Field(True, description="pace the fakes in real time (false: as fast as possible)")
    fake_echo_delay_ms: float = Field(0.0, ge=0, le=1000, description="simulated room echo delay")
    fake_echo_gain_db: float | None = Field(None, le=20, description="simulated echo gain; unset: no echo")
    fake_echo_ir_file: Path | None = Field(None, description="impulse-response WAV for the room echo")

    # -- controls -------------------------------------------------------------------------------
    gpio_backend: Literal["gpiozero", "mock", "keyboard", "none"] = Field(
        "gpiozero",
        description="buttons and LEDs: gpiozero | mock | keyboard (terminal keys, `run --keys`) | none")
    gpio_chip: int | None = Field(
        None, ge=0, le=63,
        description="the /dev/gpiochipN of the pins; unset: gpiozero's choice on a Pi (4 on a Pi 5 "
        "with an older kernel, else 0), 0 on other boards")
    gpio_board: Literal["auto", "pi", "generic"] = Field(
        "auto", description="auto: gpiozero's detection of a Raspberry Pi, and on any other board "
        "line N of the chip as GPIO N (with a warning) | pi: refuse other boards | generic: always "
        "line N as GPIO N")
    call_pin: int | None = Field(17, ge=0, le=27, description="BCM pin of the call/talk button")
    mute_pin: int | None = Field(27, ge=0, le=27, description="BCM pin of the mute button")
    status_led_pin: int | None = Field(22, ge=0, le=27, description="BCM pin of the status LED")
    mute_led_pin: int | None = Field(23, ge=0, le=27, description="BCM pin of the red mute LED")
    speaking_led_pin: int | None = Field(24, ge=0, le=27, description="BCM pin of the agent-speaking LED")
    button_bounce_ms: int = Field(30, ge=0, le=1000, description="button debounce time")
    long_press_seconds: float = Field(2.0, gt=0, le=30, description="hold time that ends a call")

    # -- service --------------------------------------------------------------------------------
    control_socket: Path = Field(Path("/run/atoms-appliance/control.sock"), description="control socket path")
    state_dir: Path = Field(Path("/var/lib/atoms-appliance"), description="persistent state (mute)")
    log_format: Literal["text", "json"] = Field("text", description="text | json")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    stats_file: Path | None = Field(None, description="JSON stats written every stats_interval")
    stats_interval: float = Field(10.0, gt=0, le=3600, description="seconds between stats writes")
    cpu_affinity: str = Field(
        "auto", description="auto (the last CPU when there are several) | off | CPU list such as 3 or 2,3")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("wss://", "ws://")):
            raise ValueError("must start with wss:// (or ws:// for a local simulator)")
        if "token=" in value:
            raise ValueError("must not contain the key; set ATOMS_API_KEY and ATOMS_AUTH=query instead")
        return value

    @field_validator("sample_rate")
    @classmethod
    def _check_rate(cls, value: int) -> int:
        if value not in SESSION_RATES:
            raise ValueError(f"must be one of {', '.join(map(str, SESSION_RATES))}")
        return value

    @field_validator("period_ms")
    @classmethod
    def _check_period(cls, value: int) -> int:
        if value % 10:
            raise ValueError("must be a multiple of 10 (the echo canceller works in 10 ms frames)")
        return value

    @field_validator("cpu_affinity")
    @classmethod
    def _check_affinity(cls, value: str) -> str:
        from device.service.cpu import parse_affinity

        parse_affinity(value)
        return value.strip().lower()

    @field_validator("variables")
    @classmethod
    def _check_variables(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not key:
                raise ValueError("variable names must not be empty")
        return value

    @model_validator(mode="after")
    def _check_relations(self) -> Settings:
        if self.ping_interval <= self.ping_timeout:
            raise ValueError(f"{env_name('ping_interval')} must be greater than {env_name('ping_timeout')}")
        if self.backoff_max < self.backoff_initial:
            raise ValueError(f"{env_name('backoff_max')} must be at least {env_name('backoff_initial')}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: explicit arguments, systemd credentials, environment, then the TOML file.
        sources: list[PydanticBaseSettingsSource] = [init_settings]
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if creds and Path(creds).is_dir():
            # systemd puts LoadCredential= files here; `atoms_api_key` maps to the api_key field.
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=creds))
        sources.append(env_settings)
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    # -- helpers --------------------------------------------------------------------------------
    def require_agent(self) -> None:
        """Raise ConfigError unless the key and agent are set (needed to call, not for `sim`)."""
        missing = []
        if self.api_key is None or not self.api_key.get_secret_value().strip():
            missing.append(("api_key", "set it in the systemd credential atoms_api_key or ATOMS_API_KEY"))
        if not self.agent_id.strip():
            missing.append(("agent_id", "set ATOMS_AGENT_ID or agent_id in config.toml to your agent's id"))
        if missing:
            raise ConfigError("\n".join(
                f"config error: {env_name(f)} (config.toml: {f}) is not set; fix: {hint}" for f, hint in missing))

    def redacted(self) -> dict[str, Any]:
        """Effective settings with secrets replaced: safe for logs, `config` and `ctl status`."""
        data = self.model_dump(mode="json")
        data["api_key"] = "<set>" if self.api_key is not None else "<not set>"
        return data


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _describe(error: Any) -> str:  # a pydantic ErrorDetails
    loc = [str(part) for part in error.get("loc", ())]
    field = loc[0] if loc else ""
    if field in Settings.model_fields:
        info = Settings.model_fields[field]
        where = f"{env_name(field)} (config.toml: {field})"
        what = info.description or ""
    else:
        where = ".".join(loc) or "settings"
        what = ""
    value = error.get("input")
    shown = "" if field == "api_key" or isinstance(value, dict) else f" (got {value!r:.60})"
    if error.get("type") == "extra_forbidden":
        return f"config error: unknown setting {'.'.join(loc)!r}; fix: remove it or check the spelling"
    hint = f"; expected: {what}" if what else ""
    return f"config error: {where}: {error.get('msg', 'invalid')}{shown}; fix: set a valid value{hint}"


def resolve_config_file(config_file: Path | None) -> Path | None:
    """The TOML file in use: `--config`, else `ATOMS_CONFIG`, else the default if it exists."""
    if config_file is not None:
        return config_file
    env_path = os.environ.get("ATOMS_CONFIG")
    if env_path:
        return Path(env_path)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None


def config_file_warnings(config_file: Path | None = None) -> list[str]:
    """Warnings about the config file itself: readable by others (it may hold the key)."""
    path = resolve_config_file(config_file)
    if path is None:
        return []
    try:
        mode = path.stat().st_mode
    except OSError:
        return []
    if mode & 0o004:
        return [f"{path} is readable by every user (mode {mode & 0o777:o}); fix: chmod 640 {path} "
                "(and keep the API key in the systemd credential, not in this file)"]
    return []


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings from the TOML file (if any), the environment and systemd credentials.

    `config_file` None means `/etc/atoms-appliance/config.toml` when it exists (or the path in
    `ATOMS_CONFIG`). Raises ConfigError with one line per bad field.
    """
    path = resolve_config_file(config_file)
    if config_file is not None and not config_file.exists():
        raise ConfigError(f"config error: config file {path} does not exist; fix: create it or pass another --config")
    if path is not None:
        try:
            tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config error: cannot read {path}: {exc}; fix: correct the TOML syntax") from None
    cls: type[Settings] = type(
        "Settings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path}})
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe(e) for e in exc.errors())) from None


if TYPE_CHECKING:
    def _settings_are_hw_settings(settings: Settings) -> HwSettings:
        # mypy's check that Settings has every field the hw backends read, with a fitting type
        # (hw.settings.HwSettings); hw cannot import this module, so the assertion lives here.
        return settings

"""Settings: defaults < config.toml < environment (`ATOMS_*`) < systemd credentials.

Loaded once at start by `load_settings`; a bad value raises `ConfigError`, whose message names
each field (as the environment variable and the TOML key) with a fix, and the CLI exits 78.
"""
from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from device.audio.formats import DEFAULT_SESSION_RATE, SESSION_RATES
from device.core.events import CallMode
from device.platform_support import EXIT_UNSUPPORTED, MACHINE_ENV
from device.service.redact import SecretScrubber, redact_url
from device.wake.detector import BUILTIN_MODELS

if TYPE_CHECKING:
    from hw.settings import HwSettings

DEFAULT_URL: Final = "wss://api.smallest.ai/atoms/v1/agent/connect"
DEFAULT_CONFIG_FILE: Final = Path("/etc/atoms-appliance/config.toml")
ENV_PREFIX: Final = "ATOMS_"
EXIT_CONFIG: Final = EXIT_UNSUPPORTED  # 78, EX_CONFIG from sysexits.h; systemd's RestartPreventExitStatus uses it

# sun_path is 108 bytes on Linux, one of them the terminating NUL.
MAX_SOCKET_PATH_BYTES: Final = 107
# Environment names read by the program that are not settings fields.
OTHER_ENV_NAMES: Final = frozenset({"ATOMS_CONFIG", MACHINE_ENV})
# A pin setting with one of these values means "not wired" (docs/hardware.md).
NO_PIN_VALUES: Final = frozenset({"", "none", "off", "-1", "no"})
PIN_FIELDS: Final = ("call_pin", "mute_pin", "status_led_pin", "mute_led_pin", "speaking_led_pin",
                     "volume_up_pin", "volume_down_pin", "volume_encoder_a_pin", "volume_encoder_b_pin")


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
    call_mode: CallMode = Field(CallMode.BUTTON, description="button | push_to_talk | always | wake_word")
    wake_word_model: str = Field(
        "okay_nabu", description=f"wake_word: the built-in wake word, {' | '.join(BUILTIN_MODELS)}")
    wake_word_model_file: Path | None = Field(
        None, description="wake_word: a custom microWakeWord model (.tflite with its .json beside it, "
        "or the .json); overrides wake_word_model")
    wake_word_cutoff: float | None = Field(
        None, gt=0, lt=1, description="wake_word: detection probability cutoff 0-1; unset: the model's own")
    wake_word_refractory_seconds: float = Field(
        2.0, ge=0, le=60, description="wake_word: no second detection this soon after one")
    idle_hangup_seconds: float = Field(
        60.0, ge=0, le=86400,
        description="button, wake_word: hang up after this long with no speech and no agent audio; "
                    "push_to_talk: close the session after this long without a press; 0 = never")
    max_call_seconds: float = Field(
        900.0, ge=0, le=86400, description="button, wake_word: hang up after this long; 0 = no limit")
    call_warning_seconds: float = Field(
        10.0, ge=0, le=600, description="the warning sound comes this long before either limit; 0 = none")

    # -- network --------------------------------------------------------------------------------
    connect_timeout: float = Field(10.0, gt=0, le=120, description="seconds for TCP+TLS+upgrade")
    ping_interval: float = Field(20.0, gt=0, le=600, description="seconds between WebSocket pings")
    ping_timeout: float = Field(10.0, gt=0, le=600, description="seconds to wait for a pong")
    backoff_initial: float = Field(1.0, gt=0, le=60, description="first reconnect delay, seconds")
    backoff_max: float = Field(30.0, gt=0, le=3600, description="reconnect delay cap, seconds")
    first_words_seconds: float = Field(
        3.0, ge=0, le=10,
        description="mic audio held from a call press until the session exists, then sent first; 0 = off")
    uplink_queue_ms: int = Field(2000, ge=100, le=60000, description="mic audio held while the network is slow")
    max_message_bytes: int = Field(1 << 20, ge=1024, description="larger server messages are dropped")

    # -- audio ----------------------------------------------------------------------------------
    audio_backend: Literal["alsa", "fake"] = Field("alsa", description="alsa | fake")
    capture_device: str = Field("default", description="ALSA PCM name of the microphone")
    playback_device: str = Field("default", description="ALSA PCM name of the speaker")
    # 20 ms: half the audio threads' wake-ups of 10 ms, which cost more than the work (docs/benchmarks.md)
    period_ms: int = Field(20, ge=10, le=100, description="device period, a multiple of 10 ms")
    playback_buffer_periods: int = Field(
        3, ge=2, le=32,
        description="periods in the playback buffer: 3 keeps 2 to 3 periods queued (never fewer than 2)")
    jitter_buffer_seconds: float = Field(
        60.0, gt=0, le=600, description="agent audio buffered ahead of the speaker at most")
    aec: Literal["webrtc", "off"] = Field("webrtc", description="echo cancellation: webrtc | off")
    noise_suppression: int = Field(2, ge=0, le=4, description="WebRTC noise suppression level 0-4")
    auto_gain_dbfs: int = Field(0, ge=0, le=31, description="auto gain target -dBFS, 0 = off")
    half_duplex: bool = Field(False, description="gate the mic while the agent talks")
    echo_drift_ppm: float = Field(
        0.0, ge=-2000, le=2000,
        description="mic/speaker clock drift to take off the echo reference, ppm as `doctor --audio` prints it")
    residual_echo: bool = Field(
        False, description="suppress the echo AEC3 leaves (reverberant tail, a distorting speaker); off: it did "
                           "not pay for its CPU in the room matrix (docs/echo-edge.md)")
    adaptive_half_duplex: bool = Field(
        True, description="where the canceller leaves the agent's echo audible, gate it while the agent talks, "
                         "or turn it down after NS (a person talking gets through); false: always full duplex")
    volume: int = Field(
        100, ge=0, le=100, description="speaker level 0-100 % at first start (then the saved one)")
    volume_floor_db: float = Field(
        -30.0, ge=-60, le=-3,
        description="the gain at 1 % in dB (100 % is 0 dB, steps even in dB, 0 % silent)")
    volume_step: int = Field(10, ge=1, le=50, description="percent per volume button press or encoder detent")
    volume_mixer: str | None = Field(
        None, description="hardware mixer control for the volume (e.g. PCM, Speaker); unset: software gain")
    volume_mixer_device: str = Field(
        "default", description="ALSA mixer device of volume_mixer (e.g. hw:CARD=x)")
    earcons: bool = Field(True, description="short sounds for connect, hang-up, mute, error")
    debug_record_dir: Path | None = Field(None, description="keep the last seconds of audio here")
    debug_record_seconds: float = Field(30.0, gt=0, le=600, description="seconds kept for debugging")

    # -- fakes (host development, demo, tests) ---------------------------------------------------
    fake_capture_file: Path | None = Field(None, description="WAV the fake mic plays")
    fake_capture_start: Literal["open", "call"] = Field(
        "open", description="when the fake mic plays its file: open (once, when the mic opens) | "
        "call (from the start of each call: a laptop session where you press c and get an answer)")
    fake_playback_file: Path | None = Field(None, description="WAV the fake speaker records to")
    fake_playback_max_silence_seconds: float = Field(
        2.0, ge=0, le=3600, description="silence runs longer than this are left out of the fake speaker's "
        "recording, which then stays small in a long run (0: record all silence)")
    fake_realtime: bool = Field(True, description="pace the fakes in real time (false: as fast as possible)")
    fake_echo_delay_ms: float = Field(0.0, ge=0, le=1000, description="simulated room echo delay")
    fake_echo_gain_db: float | None = Field(None, le=20, description="simulated echo gain; unset: no echo")
    fake_echo_ir_file: Path | None = Field(None, description="impulse-response WAV for the room echo")
    fake_echo_drift_ppm: float = Field(
        0.0, ge=-1000, le=1000, description="simulated clock drift of the speaker against the mic, ppm "
        "(positive: the speaker runs fast and the echo comes earlier; 0: one clock)")
    fake_speaker_clip_dbfs: float | None = Field(
        None, ge=-40, le=0, description="simulated speaker saturation: soft clipping at this level, "
        "harmonics growing with volume (unset: a linear speaker)")
    fake_noise_dbfs: float | None = Field(
        None, ge=-120, le=0, description="simulated ambient noise at the fake mic, RMS dBFS (unset: none)")

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
    volume_up_pin: int | None = Field(None, ge=0, le=27, description="BCM pin of a volume-up button")
    volume_down_pin: int | None = Field(None, ge=0, le=27, description="BCM pin of a volume-down button")
    volume_encoder_a_pin: int | None = Field(
        None, ge=0, le=27, description="BCM pin of the rotary encoder's A contact")
    volume_encoder_b_pin: int | None = Field(
        None, ge=0, le=27, description="BCM pin of the rotary encoder's B contact")
    button_bounce_ms: int = Field(30, ge=0, le=1000, description="button debounce time")
    long_press_seconds: float = Field(2.0, gt=0, le=30, description="hold time that ends a call")

    # -- service --------------------------------------------------------------------------------
    control_socket: Path = Field(Path("/run/atoms-appliance/control.sock"), description="control socket path")
    state_dir: Path = Field(Path("/var/lib/atoms-appliance"), description="persistent state (mute)")
    log_format: Literal["text", "json"] = Field("text", description="text | json")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    stats_file: Path | None = Field(None, description="JSON stats written every stats_interval")
    conversation_keep: int = Field(
        0, ge=0, le=10000,
        description="save each finished call's conversation record under state_dir/conversations, "
                    "keeping this many (oldest removed first); 0 = off")
    conversation_max_bytes: int = Field(
        262144, ge=1024, le=16 << 20, description="a saved conversation record larger than this is skipped")
    event_stream_buffer_bytes: int = Field(
        65536, ge=1024, le=16 << 20,
        description="event stream bytes a subscriber may fall behind by before it is disconnected")
    stats_interval: float = Field(10.0, gt=0, le=3600, description="seconds between stats writes")
    cpu_affinity: str = Field(
        "auto", description="the CPUs the unit's CPUAffinity= should have given the process, checked at "
                            "start: auto (one CPU when there are several) | off | CPU list such as 3 or 2,3")

    @field_validator("api_key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        for index, char in enumerate(value.get_secret_value()):
            if ord(char) < 32 or ord(char) == 127:
                # It goes into an HTTP header (or the URL): CR/LF would inject headers.
                raise ValueError(
                    f"contains a control character ({_char_name(char)}) at position {index + 1}; "
                    "a key is one line of printable characters (a file written with `echo` ends in a "
                    "newline inside quotes: use printf '%s' KEY)")
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("wss://", "ws://")):
            raise ValueError("must start with wss:// (or ws:// for a local simulator)")
        try:
            parts = urllib.parse.urlsplit(value)
            port_ok = parts.port is None or parts.port > 0   # .port raises on a non-numeric port
        except ValueError:
            port_ok = False
        if not port_ok or not parts.hostname:
            # e.g. a password with an unescaped "/" that splits the URL before its "@"
            raise ValueError("is not a valid URL (check the host and port; characters such as / @ : "
                             "in a user name or password must be percent-encoded)")
        if redact_url(value) != value:
            raise ValueError("must not contain the key or a password; set ATOMS_API_KEY "
                             "(and ATOMS_AUTH=query if the server wants it in the URL) instead")
        if any(ord(c) < 33 or ord(c) == 127 for c in value):
            raise ValueError("must not contain spaces or control characters")
        return value

    @field_validator(*PIN_FIELDS, mode="before")
    @classmethod
    def _no_pin(cls, value: Any) -> Any:
        # `call_pin = "none"` (or -1) leaves a button or LED out: TOML has no null.
        if value is None or (isinstance(value, (str, int)) and not isinstance(value, bool)
                             and str(value).strip().lower() in NO_PIN_VALUES):
            return None
        return value

    @field_validator("sample_rate")
    @classmethod
    def _check_rate(cls, value: int) -> int:
        if value not in SESSION_RATES:
            raise ValueError(f"must be one of {', '.join(map(str, SESSION_RATES))}")
        return value

    @field_validator("wake_word_model")
    @classmethod
    def _check_wake_model(cls, value: str) -> str:
        if value not in BUILTIN_MODELS:
            raise ValueError(f"is not a built-in wake word; choose one of {', '.join(BUILTIN_MODELS)} "
                             "(or give your own in wake_word_model_file)")
        return value

    @field_validator("wake_word_model_file")
    @classmethod
    def _check_wake_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return value
        if value.suffix not in (".tflite", ".json"):
            raise ValueError("must be a microWakeWord model: the .tflite file (its .json beside it) or the .json")
        missing = [p for p in (value.with_suffix(".tflite"), value.with_suffix(".json")) if not p.is_file()]
        if missing:
            raise ValueError(f"needs {' and '.join(str(p) for p in missing)}: a model is the .tflite and its "
                             ".json config, side by side with the same name")
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

    @field_validator("variables", mode="before")
    @classmethod
    def _check_variables(cls, value: Any) -> Any:
        # Checked before pydantic's own validation so a nested value gives one line naming its
        # key, not one line per member of the union type.
        if not isinstance(value, dict):
            raise ValueError(f"must be a JSON object of name: value pairs, not {_json_kind(value)}")  # noqa: TRY004 - pydantic turns only ValueError into a field error
        for key, item in value.items():
            if not str(key).strip():
                raise ValueError("variable names must not be empty")
            if item is None or isinstance(item, (dict, list, tuple)):
                raise ValueError(f"variable {str(key)[:40]!r} is {_json_kind(item)}; each value must be "
                                 "a string, a number or true/false")
        return value

    @field_validator("control_socket")
    @classmethod
    def _check_socket(cls, value: Path) -> Path:
        size = len(os.fsencode(str(value)))
        if size > MAX_SOCKET_PATH_BYTES:
            raise ValueError(f"is {size} bytes long; a Unix socket path may have at most "
                             f"{MAX_SOCKET_PATH_BYTES} (use a short path such as /run/atoms-appliance/control.sock)")
        try:
            mode = os.lstat(value).st_mode
        except FileNotFoundError:
            mode = None
        except OSError as exc:
            raise ValueError(f"cannot be checked ({exc.strerror})") from None
        if mode is not None and not stat.S_ISSOCK(mode):
            raise ValueError("exists and is not a socket (a regular file, folder or link is never "
                             "replaced); remove it or choose another path")
        parent = value.parent
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"its folder {parent} is not a folder")
        return value

    @model_validator(mode="after")
    def _check_fake_files(self) -> Settings:
        if self.audio_backend != "fake":
            return self
        from hw.wavio import wav_problem

        for field, path in (("fake_capture_file", self.fake_capture_file),
                            ("fake_echo_ir_file", self.fake_echo_ir_file)):
            problem = wav_problem(path) if path is not None else None
            if problem is not None:
                raise ValueError(f"{env_name(field)} (config.toml: {field}) {path}: {problem}; "
                                 "fix: give a 16-bit PCM WAV (sox in.wav -b 16 out.wav) or unset it")
        out = self.fake_playback_file
        if out is not None:
            folder = out.parent
            if out.is_dir():
                problem = "is a folder"
            elif folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
                problem = f"cannot be written: {folder} is not writable by this user"
            elif out.exists() and not os.access(out, os.W_OK):
                problem = "cannot be written by this user"
            else:
                problem = None
            if problem is not None:
                raise ValueError(f"{env_name('fake_playback_file')} (config.toml: fake_playback_file) "
                                 f"{out} {problem}; fix: choose a writable file path")
        return self

    @model_validator(mode="after")
    def _check_relations(self) -> Settings:
        if self.ping_interval <= self.ping_timeout:
            raise ValueError(f"{env_name('ping_interval')} must be greater than {env_name('ping_timeout')}")
        if (self.volume_encoder_a_pin is None) != (self.volume_encoder_b_pin is None):
            raise ValueError(f"{env_name('volume_encoder_a_pin')} and {env_name('volume_encoder_b_pin')} "
                             "go together: set both (the encoder's A and B contacts) or neither")
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
        """Effective settings with secrets replaced: safe for logs, `config` and `ctl status`.

        The key is scrubbed from every value (whatever field it was put in) and URLs lose
        their credentials (device/service/redact.py)."""
        data = self.model_dump(mode="json")
        del data["api_key"]
        scrubbed: dict[str, Any] = self.scrubber().data(data)
        scrubbed["api_key"] = "<set>" if self.api_key is not None else "<not set>"
        return scrubbed

    def scrubber(self) -> SecretScrubber:
        """The redaction for this configuration's key."""
        return SecretScrubber([self.api_key.get_secret_value()] if self.api_key is not None else [])


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _char_name(char: str) -> str:
    return {"\r": "CR", "\n": "LF", "\t": "TAB", "\x00": "NUL"}.get(char, f"U+{ord(char):04X}")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a nested object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _shown(value: Any, scrub: SecretScrubber) -> str:
    """A bad value as it may be shown: scrubbed of the key and URL credentials *before* it is
    cut to length (a cut could otherwise leave part of the key), on one line."""
    if isinstance(value, (dict, list, tuple)) or value is None:
        return ""
    text = scrub.text(str(value))
    text = repr(text)  # escapes CR/LF: the message stays one line
    if len(text) > 60:
        text = text[:57] + "..."
    return f" (got {text})"


def _describe(error: Any, scrub: SecretScrubber) -> str:  # a pydantic ErrorDetails
    loc = [str(part) for part in error.get("loc", ())]
    field = loc[0] if loc else ""
    if field in Settings.model_fields:
        info = Settings.model_fields[field]
        where = f"{env_name(field)} (config.toml: {field})"
        what = info.description or ""
    else:
        where = ".".join(loc) or "settings"
        what = ""
    if error.get("type") == "extra_forbidden":
        name = scrub.text(".".join(loc))
        near = difflib.get_close_matches(field, Settings.model_fields, n=1)
        guess = f"; did you mean {near[0]!r}?" if near else ""
        return f"config error: unknown setting {name!r}{guess}; fix: remove it or check the spelling"
    shown = "" if field == "api_key" else _shown(error.get("input"), scrub)
    msg = scrub.text(str(error.get("msg", "invalid"))).removeprefix("Value error, ")
    if not loc:  # a model-level check: its message already names the field and the fix
        return f"config error: {msg}" if "fix:" in msg else f"config error: {msg}; fix: correct these settings"
    hint = f"; expected: {what}" if what else ""
    return f"config error: {where}: {msg}{shown}; fix: set a valid value{hint}"


def resolve_config_file(config_file: Path | None) -> Path | None:
    """The TOML file in use: `--config`, else `ATOMS_CONFIG`, else the default if it exists."""
    if config_file is not None:
        return config_file
    env_path = os.environ.get("ATOMS_CONFIG")
    if env_path:
        return Path(env_path)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None


def environment_warnings(environ: dict[str, str] | None = None) -> list[str]:
    """A warning for each `ATOMS_*` variable that is no setting, naming the nearest real one
    (the environment cannot forbid extras the way the TOML file does: other tools may set them)."""
    env = os.environ if environ is None else environ
    known = {env_name(f) for f in Settings.model_fields} | OTHER_ENV_NAMES
    warnings = []
    for name in sorted(env):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            near = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
            guess = f"did you mean {near[0]}?" if near else "see `atoms-appliance config` for the names"
            warnings.append(f"environment variable {name} is not a setting and is ignored; {guess}")
    return warnings


def setting_warnings(config_file: Path | None = None) -> list[str]:
    """Everything worth a warning at start: the config file's mode, misspelt environment names."""
    return config_file_warnings(config_file) + environment_warnings()


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
    toml_data: dict[str, Any] = {}
    if path is not None:
        toml_data = _read_toml(path, "--config" if config_file is not None else "ATOMS_CONFIG")
    cls: type[Settings] = type(
        "Settings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path}})
    scrub = SecretScrubber(_candidate_keys(toml_data, overrides))
    try:
        return cls(**overrides)
    except ValidationError as exc:
        lines = dict.fromkeys(_describe(e, scrub) for e in exc.errors())  # one line per distinct problem
        raise ConfigError("\n".join(lines)) from None
    except SettingsError as exc:
        # A source could not parse a value: today only JSON for dict fields (ATOMS_VARIABLES).
        raise ConfigError(_describe_source_error(exc, scrub)) from None


def _read_toml(path: Path, given_by: str) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config error: config file {path} does not exist; fix: create it or "
                          f"correct {given_by}") from None
    except IsADirectoryError:
        raise ConfigError(f"config error: config file {path} is a folder; fix: give the path of "
                          f"config.toml in {given_by}") from None
    except OSError as exc:
        raise ConfigError(f"config error: cannot read config file {path}: {exc.strerror}; fix: check "
                          "its permissions (the service user must be able to read it)") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config error: config file {path} is not UTF-8 text (byte {exc.start + 1}); "
                          "fix: save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message names line and column, never the value.
        raise ConfigError(f"config error: {path} is not valid TOML: {exc}; fix: correct the TOML "
                          "syntax") from None


def _candidate_keys(toml_data: dict[str, Any], overrides: dict[str, Any]) -> list[str]:
    """Every value given for `api_key` in any source, before validation: scrubbed from errors."""
    found = [os.environ[n] for n in os.environ if n.upper() == env_name("api_key")]
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        try:
            found.append((Path(creds) / "atoms_api_key").read_text(errors="replace").strip())
        except OSError:
            pass
    for source in (toml_data, overrides):
        value = source.get("api_key")
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            found.append(value)
    # Each line of a multi-line key too: an error may show one of them.
    return [*found, *(line for value in found for line in re.split(r"[\r\n]+", value))]


def _describe_source_error(exc: SettingsError, scrub: SecretScrubber) -> str:
    match = re.search(r'field "(\w+)"', str(exc))
    field = match.group(1) if match else ""
    cause = exc.__cause__
    detail = f": {scrub.text(str(cause))}" if cause is not None else ""
    if field in Settings.model_fields:
        return (f"config error: {env_name(field)} (config.toml: {field}) is not valid JSON{detail}; "
                'fix: a JSON object such as {"customer_name": "Ada", "tier": 2}')
    return f"config error: {scrub.text(str(exc))}; fix: correct that value"


if TYPE_CHECKING:
    def _settings_are_hw_settings(settings: Settings) -> HwSettings:
        # mypy's check that Settings has every field the hw backends read, with a fitting type
        # (hw.settings.HwSettings); hw cannot import this module, so the assertion lives here.
        return settings

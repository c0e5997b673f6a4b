"""Config mistakes and secrets (issue 13, items 1 and 2): one line, exit 78, never the key.

- the one redaction helper (device/service/redact.py) on URLs and free text;
- each mistake the issue lists, through the real CLI in-process (`device.cli.main`) so the exit
  status and the exact stderr are what a user sees;
- a hypothesis fuzz: the key set in ATOMS_API_KEY and also put, in many shapes, into another
  setting; whatever happens the exit is 0 (a plain string field took it) or 78, there is no
  traceback, and the key appears nowhere in stdout or stderr.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.cli import main as cli_main
from device.service.redact import SecretScrubber, redact_url, redact_urls
from device.service.settings import EXIT_CONFIG, ConfigError, environment_warnings, load_settings

KEY = "sk-live-0123456789abcdef"


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """os.environ with every ATOMS_* and CREDENTIALS_DIRECTORY removed, then `values` set; restored after.
    (Not monkeypatch: hypothesis runs many examples inside one test function.)"""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.upper().startswith("ATOMS_") or name == "CREDENTIALS_DIRECTORY":
            del os.environ[name]
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_cli(*argv: str, **env: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with environment(**env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(list(argv))
    return code, out.getvalue(), err.getvalue()


def write_wav(path: Path, width: int = 2, frames: int = 1600, fmt_float: bool = False) -> Path:
    if fmt_float:  # wave cannot write a float WAV: build the 'fmt ' chunk by hand (format tag 3)
        data = np.zeros(frames, dtype="<f4").tobytes()
        fmt = (3).to_bytes(2, "little") + (1).to_bytes(2, "little") + (16000).to_bytes(4, "little") \
            + (64000).to_bytes(4, "little") + (4).to_bytes(2, "little") + (32).to_bytes(2, "little")
        body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" \
            + len(data).to_bytes(4, "little") + data
        path.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
        return path
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(width)
        wav.setframerate(16000)
        wav.writeframes(b"\x00" * width * frames)
    return path


# -- the redaction helper -----------------------------------------------------------------------------
@pytest.mark.parametrize("url, shown", [
    ("wss://h/x?token=abc&agent_id=7", "wss://h/x?token=***&agent_id=7"),
    ("wss://u:pw@h:443/x", "wss://u:***@h:443/x"),
    ("wss://justatoken@h/x", "wss://***@h/x"),
    ("ws://h/x?API_KEY=1&Signature=2&mode=webcall", "ws://h/x?API_KEY=***&Signature=***&mode=webcall"),
    ("wss://h/x?a=1#access_token=zz", "wss://h/x?a=1#access_token=***"),
    ("wss://h/x", "wss://h/x"),
    ("wss://[::1/x?token=abc", "wss://[::1/x?token=***"),  # does not parse: still redacted
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_urls_in_text_and_the_scrubber() -> None:
    text = "connect to wss://a:b@h/x?token=t1 failed; retry ws://h2/?key=t2."
    assert redact_urls(text) == "connect to wss://a:***@h/x?token=*** failed; retry ws://h2/?key=***."
    scrub = SecretScrubber(["k e/y+", "abc"])   # "abc": too short to scrub from free text
    assert scrub.text("x k e/y+ k%20e%2Fy%2B k+e%2Fy%2B abc") == "x *** *** *** abc"
    assert scrub.data({"k e/y+": ["k e/y+"]}) == {"***": ["***"]}


# -- item 1: secrets ------------------------------------------------------------------------------------
def test_a_token_in_the_url_is_a_config_error_that_does_not_show_it() -> None:
    code, out, err = run_cli("config", ATOMS_URL=f"wss://user:{KEY}@h/x?token={KEY}")
    assert code == EXIT_CONFIG and KEY not in out + err and "ATOMS_URL" in err and err.count("\n") == 1


@pytest.mark.parametrize("bad", ["\r\nX-Injected: 1", "\n", "\t", "\x7f", "\x1b[2J"])
def test_a_key_with_control_characters_is_a_config_error(bad: str) -> None:
    code, out, err = run_cli("config", ATOMS_API_KEY=f"{KEY}{bad}tail")
    assert code == EXIT_CONFIG, err
    assert "ATOMS_API_KEY" in err and "control character" in err and KEY not in out + err
    assert err.count("\n") == 1


def test_a_nul_in_the_key_from_the_toml_file(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"   # the environment cannot hold a NUL; TOML can (\u0000)
    toml.write_text(f'api_key = "{KEY}\\u0000x"\n')
    code, out, err = run_cli("config", "--config", str(toml))
    assert code == EXIT_CONFIG and "NUL" in err and KEY not in out + err


def test_the_key_in_any_field_is_scrubbed_from_errors_and_from_config(tmp_path: Path) -> None:
    code, out, err = run_cli("config", ATOMS_API_KEY=KEY, ATOMS_SAMPLE_RATE=KEY, ATOMS_PERIOD_MS=f"x{KEY}")
    assert code == EXIT_CONFIG and KEY not in err and err.count("\n") == 2 and "***" in err
    code, out, err = run_cli("config", ATOMS_API_KEY=KEY, ATOMS_AGENT_ID=KEY,
                             ATOMS_VARIABLES=json.dumps({"note": f"key is {KEY}"}))
    assert code == 0 and KEY not in out
    shown = json.loads(out)
    assert shown["agent_id"] == "***" and shown["variables"] == {"note": "key is ***"}
    # The key in the TOML file and in the systemd credential is known to the scrubber too.
    toml = tmp_path / "c.toml"
    toml.write_text(f'api_key = "{KEY}"\nsample_rate = "{KEY}"\n')
    code, _, err = run_cli("config", "--config", str(toml))
    assert code == EXIT_CONFIG and KEY not in err
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "atoms_api_key").write_text(KEY + "\n")
    code, _, err = run_cli("config", CREDENTIALS_DIRECTORY=str(creds), ATOMS_CALL_MODE=KEY)
    assert code == EXIT_CONFIG and KEY not in err


def test_a_long_value_is_scrubbed_before_it_is_cut() -> None:
    # The value is cut to 60 characters for display: a cut through the key must not leave its start.
    code, _, err = run_cli("config", ATOMS_API_KEY=KEY, ATOMS_SAMPLE_RATE="y" * 50 + KEY)
    assert code == EXIT_CONFIG and KEY[:10] not in err


# -- item 2: every config mistake is one line and exit 78 --------------------------------------------
@pytest.mark.parametrize("env, fragment", [
    ({"ATOMS_VARIABLES": "{not json"}, "ATOMS_VARIABLES (config.toml: variables) is not valid JSON"),
    ({"ATOMS_VARIABLES": '{"tier": {"level": 2}}'}, "variable 'tier' is a nested object"),
    ({"ATOMS_VARIABLES": '{"tags": [1, 2]}'}, "variable 'tags' is a list"),
    ({"ATOMS_VARIABLES": '{"x": null}'}, "variable 'x' is null"),
    ({"ATOMS_VARIABLES": "[1, 2]"}, "must be a JSON object"),
    ({"ATOMS_CONTROL_SOCKET": "/tmp/" + "s" * 120 + ".sock"}, "a Unix socket path may have at most 107"),
    ({"ATOMS_CALL_PIN": "28"}, "ATOMS_CALL_PIN"),
])
def test_config_mistakes_are_one_line_and_exit_78(env: dict[str, str], fragment: str) -> None:
    code, out, err = run_cli("config", **env)
    assert code == EXIT_CONFIG and fragment in err and "Traceback" not in err
    assert err.count("\n") == 1 and out == "", err


def test_a_socket_path_that_is_a_regular_file_or_under_one(tmp_path: Path) -> None:
    plain = tmp_path / "control.sock"
    plain.write_text("important")
    for path in (plain, plain / "control.sock"):
        code, _, err = run_cli("config", ATOMS_CONTROL_SOCKET=str(path))
        assert code == EXIT_CONFIG and "ATOMS_CONTROL_SOCKET" in err and err.count("\n") == 1
    assert plain.read_text() == "important"


def test_config_file_problems(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    code, _, err = run_cli("config", "--config", str(missing))
    assert code == EXIT_CONFIG and "does not exist" in err and "TOML syntax" not in err
    code, _, err = run_cli("config", ATOMS_CONFIG=str(missing))
    assert code == EXIT_CONFIG and "does not exist" in err and "ATOMS_CONFIG" in err
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('agent_id = "caf\xe9"\n'.encode("latin-1"))
    code, _, err = run_cli("config", "--config", str(latin1))
    assert code == EXIT_CONFIG and "is not UTF-8" in err and err.count("\n") == 1
    code, _, err = run_cli("config", "--config", str(tmp_path))
    assert code == EXIT_CONFIG and "is a folder" in err
    typo = tmp_path / "typo.toml"
    typo.write_text('sample_rat = 16000\n')
    code, _, err = run_cli("config", "--config", str(typo))
    assert code == EXIT_CONFIG and "did you mean 'sample_rate'" in err


def test_a_misspelt_environment_name_is_warned_about_with_the_nearest_real_one() -> None:
    assert environment_warnings({"ATOMS_SAMPEL_RATE": "1", "ATOMS_URL": "x", "ATOMS_CONFIG": "y"}) == [
        "environment variable ATOMS_SAMPEL_RATE is not a setting and is ignored; did you mean ATOMS_SAMPLE_RATE?"]
    code, _, err = run_cli("config", ATOMS_CALLMODE="always")
    assert code == 0 and "did you mean ATOMS_CALL_MODE?" in err


@pytest.mark.parametrize("kind, problem", [
    ("text", "not a usable WAV"), ("8bit", "8-bit"), ("float", "floating-point"), ("empty", "no audio"),
    ("missing", "does not exist"), ("folder", "is a directory"),
])
def test_unusable_fake_capture_files_are_config_errors(tmp_path: Path, kind: str, problem: str) -> None:
    path = tmp_path / "mic.wav"
    if kind == "text":
        path.write_text("not a wav")
    elif kind == "8bit":
        write_wav(path, width=1)
    elif kind == "float":
        write_wav(path, fmt_float=True)
    elif kind == "empty":
        write_wav(path, frames=0)
    elif kind == "folder":
        path.mkdir()
    code, _, err = run_cli("config", ATOMS_AUDIO_BACKEND="fake", ATOMS_FAKE_CAPTURE_FILE=str(path))
    assert code == EXIT_CONFIG and "ATOMS_FAKE_CAPTURE_FILE" in err and problem in err, err
    assert err.count("\n") == 1
    # A usable file passes; the same file with the ALSA backend is not even looked at.
    assert run_cli("config", ATOMS_AUDIO_BACKEND="alsa", ATOMS_FAKE_CAPTURE_FILE=str(path))[0] == 0


def test_fake_playback_file_must_be_writable(tmp_path: Path) -> None:
    good = write_wav(tmp_path / "ok.wav")
    assert run_cli("config", ATOMS_AUDIO_BACKEND="fake", ATOMS_FAKE_CAPTURE_FILE=str(good),
                   ATOMS_FAKE_PLAYBACK_FILE=str(tmp_path / "out.wav"))[0] == 0
    code, _, err = run_cli("config", ATOMS_AUDIO_BACKEND="fake", ATOMS_FAKE_PLAYBACK_FILE=str(tmp_path))
    assert code == EXIT_CONFIG and "ATOMS_FAKE_PLAYBACK_FILE" in err and "is a folder" in err


@pytest.mark.parametrize("value", ["none", "None", "off", "-1", ""])
def test_a_pin_can_be_left_out(value: str, tmp_path: Path) -> None:
    with environment(ATOMS_MUTE_PIN=value):
        assert load_settings().mute_pin is None
    toml = tmp_path / "c.toml"
    toml.write_text('call_pin = "none"\nspeaking_led_pin = -1\n')
    with environment():
        s = load_settings(toml)
    assert s.call_pin is None and s.speaking_led_pin is None and s.mute_pin == 27
    with environment(ATOMS_CALL_PIN="-2"), pytest.raises(ConfigError, match="ATOMS_CALL_PIN"):
        load_settings()


def test_ctl_into_a_closed_pipe_ends_without_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    # `config | head -c 1`: the reader goes away after one byte.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(f"{sys.executable} -m device config | head -c 1", shell=True, env=env,
                            capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout == "{" and "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


# -- the fuzz --------------------------------------------------------------------------------------------
KEY_ALPHABET = st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="*")
INT_FIELDS = ["ATOMS_SAMPLE_RATE", "ATOMS_PERIOD_MS", "ATOMS_NOISE_SUPPRESSION", "ATOMS_CALL_PIN",
              "ATOMS_UPLINK_QUEUE_MS"]
CHOICE_FIELDS = ["ATOMS_CALL_MODE", "ATOMS_AUTH", "ATOMS_AUDIO_BACKEND", "ATOMS_LOG_LEVEL", "ATOMS_AEC",
                 "ATOMS_HALF_DUPLEX", "ATOMS_CPU_AFFINITY", "ATOMS_CONNECT_TIMEOUT"]
STRING_FIELDS = ["ATOMS_AGENT_ID", "ATOMS_CAPTURE_DEVICE", "ATOMS_PLAYBACK_DEVICE"]


@st.composite
def leaks(draw: st.DrawFn) -> tuple[str, dict[str, str], bool]:
    """(key, environment, must_fail): the key in ATOMS_API_KEY and in one other setting."""
    key = "sk-" + draw(st.text(KEY_ALPHABET, min_size=6, max_size=40))
    bad_key = draw(st.booleans())
    if bad_key:   # a control character somewhere inside: the key itself is the config error
        at = draw(st.integers(1, len(key) - 1))
        key = key[:at] + draw(st.sampled_from(["\r\n", "\n", "\r", "\t", "\x1b"])) + key[at:]
    shape = draw(st.sampled_from(["plain", "url_token", "url_userinfo", "url_path", "json", "json_nested",
                                  "padded"]))
    base = key.splitlines()[0] if bad_key else key
    value = {
        "plain": base,
        "url_token": f"wss://h.example/x?token={base}",
        "url_userinfo": f"wss://me:{base}@h.example/x",
        "url_path": f"https://h.example/{base}",
        "json": json.dumps({"k": base}),
        "json_nested": json.dumps({"k": {"deep": base}}),
        "padded": draw(st.text(KEY_ALPHABET, max_size=70)) + base,
    }[shape]
    field = draw(st.sampled_from([*INT_FIELDS, *CHOICE_FIELDS, *STRING_FIELDS, "ATOMS_URL", "ATOMS_VARIABLES"]))
    env = {"ATOMS_API_KEY": key, field: value}
    must_fail = bad_key or field in INT_FIELDS or field == "ATOMS_URL" or (
        field == "ATOMS_VARIABLES" and shape != "json")
    return key, env, must_fail


@settings(max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(leaks())
def test_fuzz_config_values_never_show_the_key(case: tuple[str, dict[str, str], bool]) -> None:
    key, env, must_fail = case
    code, out, err = run_cli("config", **env)
    assert code in (0, EXIT_CONFIG) and "Traceback" not in err
    if must_fail:
        assert code == EXIT_CONFIG, err
    # The whole key, and its first line (the part that looks like a key: after a CR/LF comes
    # arbitrary text, which may be any word of the messages themselves, such as "ATOMS_").
    for part in {key, key.splitlines()[0]}:
        if len(part) >= 6:
            assert part not in out and part not in err, (env, err)
    if code == EXIT_CONFIG:
        assert out == "" and all(line.startswith("config error: ") for line in err.splitlines()), err


def test_the_session_log_url_goes_through_the_same_redaction() -> None:
    from device.session.config import SessionConfig

    config = SessionConfig(url="wss://me:pw-secret@h.example/x", api_key=KEY, agent_id="a", auth="query")
    shown = config.log_url()
    assert KEY not in shown and "pw-secret" not in shown and "token=***" in shown and "me:***@" in shown
    assert KEY in config.connect_url()   # only the shown form is redacted

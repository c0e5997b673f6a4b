"""The real service process against the local agent simulator over loopback."""
from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device.sim.voice import synthesize
from tools import REPO
from tools.service_process import TEST_KEY, played_agent_seconds, sound_span_seconds, speech_wav

pytestmark = pytest.mark.slow


def test_button_call_reply_recorded_and_hangup_sends_session_close(start_sim, start_service) -> None:
    greeting = "Welcome to the kiosk. Ask me anything."
    sim = start_sim(greeting=greeting)
    service = start_service(sim.url, call_mode="button")
    assert service.status()["call_state"] == "idle"
    assert sim.connections == []  # button mode: nothing until the button
    assert service.ctl("call")["ok"]
    assert sim.wait_for_event("created", 10)
    assert service.wait_for_log(r"state in_call", 10)
    reply = sim.wait_for_event("reply_start", 10)
    assert reply is not None
    assert sim.wait_for_event("reply_end", 20)
    assert service.wait_for_log(r"state in_call$", 10, count=2), service.output()  # agent stopped talking
    status = service.status()
    assert status["session_id"] and status["call_id"] and status["sample_rate"] == 16000
    assert service.ctl("hangup")["ok"]
    assert sim.wait_for(lambda: sim.session_closes == 1, 5), sim.events
    assert service.wait_for_log(r"state idle", 5)
    assert service.stop() == 0
    # The greeting, played in full by the fake speaker at the negotiated rate.
    expected = sound_span_seconds(synthesize(greeting, 16000), 16000)
    assert abs(played_agent_seconds(service.playback_file) - expected) <= 0.03
    stats = json.loads(service.stats_file.read_text())
    assert stats["bytes_down"] > 0 and stats["malformed"] == {}


def test_always_mode_question_answer_and_sigterm_closes_the_session(start_sim, start_service,
                                                                    tmp_path: Path) -> None:
    sim = start_sim()
    mic = speech_wav(tmp_path / "question.wav")
    service = start_service(sim.url, call_mode="always", fake_capture_file=mic)
    utterance = sim.wait_for_event("utterance", 20)
    assert utterance is not None, sim.events
    assert service.wait_for_log(r"transcript user: \(heard", 10)
    assert service.wait_for_log(r"transcript agent: Hello, this is the Atoms simulator", 20)
    assert sim.audio_bytes_received > 16000 * 2 * 2  # at least the 2 s question went up
    sigterm_at = time.monotonic()
    service.signal(signal.SIGTERM)
    assert sim.wait_for(lambda: sim.session_closes == 1, 5), "no session.close on SIGTERM"
    assert service.stop(timeout=3) == 0
    assert time.monotonic() - sigterm_at < 2.0  # systemd's stop: session closed, devices closed, exit 0
    assert service.wait_for_log(r"STOPPING|stopped", 1)
    stats = json.loads(service.stats_file.read_text())
    assert stats["capture_to_send_ms"]["p50"] is not None and stats["frames_sent"] > 100
    assert stats["frames_dropped"] == 0


def test_reconnects_after_the_server_drops_the_socket(start_sim, start_service) -> None:
    sim = start_sim(drop_after=0.5, drop_count=2)
    service = start_service(sim.url, call_mode="always")
    assert sim.wait_for_event("created", 20, count=3), sim.events
    assert service.wait_for_log(r"connection lost .*retrying in", 5, count=2)
    assert service.wait_for_log(r"state in_call", 5, count=3)
    assert service.status()["counters"]["reconnects"] == 2
    assert service.stop() == 0


def test_401_is_tried_once_then_waits_for_a_user_action(start_sim, start_service) -> None:
    sim = start_sim(reject_status=401)
    service = start_service(sim.url, call_mode="always")
    assert service.wait_for_log(r"refused the credentials", 10)
    assert service.wait_for_log(r"state auth_error", 5)
    # No retry, shown without waiting out a backoff: the status published with auth_error has
    # the link idle, a state only a connect() leaves (tests/test_link.py, and tests/test_session.py
    # steps a ManualClock an hour on there to show that no time does).
    status = service.wait_status(call_state="auth_error")
    assert status["leds"]["status"] == "auth_error"
    assert status["link"] == "idle" and len(sim.connections) == 1
    service.signal(signal.SIGHUP)  # the operator fixed the key
    assert sim.wait_for(lambda: len(sim.connections) == 2, 5)
    assert service.wait_for_log(r"refused the credentials", 10, count=2)
    assert service.wait_for_log(r"state auth_error", 5, count=2)  # the machine saw it too
    assert service.wait_status(call_state="auth_error")["link"] == "idle" and len(sim.connections) == 2
    assert service.ctl("call")["ok"]  # a button press (here: the control socket) retries too
    assert sim.wait_for(lambda: len(sim.connections) == 3, 5)
    assert service.wait_for_log(r"state auth_error", 5, count=3)
    assert service.wait_status(call_state="auth_error")["link"] == "idle"
    assert service.stop() == 0
    assert len(sim.connections) == 3   # and none more while the service ran on


def test_503_is_retried_with_backoff_and_retry_after(start_sim, start_service) -> None:
    sim = start_sim(reject_status=503, reject_count=3, retry_after=1)
    service = start_service(sim.url, call_mode="always")
    assert sim.wait_for_event("created", 20), sim.events
    attempts = [e["t"] for e in sim.events if e["kind"] in ("reject", "connect")]
    assert len(attempts) == 4
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(gap >= 0.95 for gap in gaps), gaps  # Retry-After: 1 is a floor
    assert service.count_log(r"connection lost \(HTTP 503\)") == 3
    assert service.stop() == 0


def test_garbage_from_the_server_is_ignored_while_audio_flows(start_sim, start_service) -> None:
    sim = start_sim(garbage=True, greeting="Still here despite the garbage.")
    service = start_service(sim.url, call_mode="always")
    assert sim.wait_for_event("reply_end", 20), sim.events
    assert service.wait_for_log(r"state in_call$", 10, count=2)
    counters = service.status()["counters"]
    malformed = counters["malformed"]
    for kind in ("invalid_json", "not_an_object", "unknown_type", "invalid_session.created", "bad_base64",
                 "odd_audio_length", "binary_frame", "oversized"):
        assert malformed.get(kind, 0) >= 1, malformed
    assert counters["agent_periods_played"] > 50
    before = sim.audio_bytes_received
    assert sim.wait_for(lambda: sim.audio_bytes_received > before + 16000, 5)  # the uplink still flows
    assert service.count_log(r"ignoring malformed server message \(invalid_json\)") == 1
    assert service.stop() == 0


@pytest.mark.parametrize("auth", ["header", "query"])
def test_the_key_is_in_no_log_line_and_not_in_status(start_sim, start_service, auth: str) -> None:
    sim = start_sim(api_key=TEST_KEY, greeting="Hi.")
    service = start_service(sim.url, call_mode="always", auth=auth)
    assert sim.wait_for_event("reply_end", 20)
    status = service.ctl("status")
    service.ctl("hangup")
    assert service.stop() == 0
    text = service.output()
    assert "connected to ws://" in text  # the URL is logged: with the key redacted in query mode
    assert TEST_KEY not in text and TEST_KEY not in json.dumps(status)
    assert TEST_KEY not in service.stats_file.read_text()


def test_config_error_exits_78() -> None:
    result = subprocess.run([sys.executable, "-m", "device", "run"], cwd=REPO, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "ATOMS_SAMPLE_RATE": "11025", "HOME": "/nonexistent"},
                            timeout=60)
    assert result.returncode == 78
    assert "ATOMS_SAMPLE_RATE" in result.stderr


def test_make_demo_command_runs_and_saves_the_answer(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    result = subprocess.run([sys.executable, "-m", "device", "demo", "--out", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "agent: Hello, this is the Atoms simulator" in result.stdout
    assert played_agent_seconds(out / "agent.wav") > 2.0


@pytest.mark.parametrize("code", [4401, 4403])
def test_auth_close_codes_are_not_retried(start_sim, start_service, code: int) -> None:
    sim = start_sim(close_code=code, close_after=0.3)
    service = start_service(sim.url, call_mode="always")
    # Bounds, not waits: generous, because a loaded 2-core machine starts the service slowly.
    assert service.wait_for_log(rf"refused the credentials \(close code {code}", 30), service.output()
    assert service.wait_for_log(r"state auth_error", 15)
    # Published with auth_error: the link is idle (only a connect() leaves it), no retry can come.
    assert service.wait_status(call_state="auth_error")["link"] == "idle"
    assert len(sim.connections) == 1
    assert service.stop() == 0
    assert len(sim.connections) == 1


def test_close_code_1011_is_retried(start_sim, start_service) -> None:
    sim = start_sim(close_code=1011, close_after=0.3)
    service = start_service(sim.url, call_mode="always")
    assert sim.wait_for_event("created", 10, count=2), sim.events
    assert service.wait_for_log(r"connection lost \(server closed the connection \(code 1011", 5)
    assert service.stop() == 0


def test_session_timeout_in_always_mode_starts_a_new_session(start_sim, start_service) -> None:
    sim = start_sim(session_timeout=0.5)
    service = start_service(sim.url, call_mode="always")
    assert sim.wait_for_event("created", 10, count=2), sim.events
    assert service.wait_for_log(r"session closed by the server: timeout", 5)
    assert service.count_log(r"connection lost") == 0  # a clean end, not a network error
    assert service.stop() == 0


def test_run_keys_makes_the_keyboard_the_buttons(start_sim, start_service) -> None:
    """`run --keys` sets gpio_backend = keyboard, which hw.registry builds like any backend: keys
    typed on the service's stdin are its call button (the harness's ATOMS_GPIO_BACKEND=none loses)."""
    sim = start_sim()
    service = start_service(sim.url, "--keys", call_mode="button")
    assert service.wait_for_log(r"keys: c/space = call", 5), service.output()   # the keyboard's help
    service.keys("c")
    assert sim.wait_for_event("created", 10), service.output()
    assert service.wait_for_log(r"state in_call", 10)
    service.keys("c")
    assert sim.wait_for(lambda: sim.session_closes == 1, 5), sim.events
    assert service.wait_for_log(r"state idle", 5)
    assert service.stop() == 0

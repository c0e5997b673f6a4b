"""Call limits with the real service process against the simulator: an abandoned call is warned
then ended, speech keeps it up, a long call ends at its limit, push-to-talk closes its idle session
and the next press opens a new one. Waits are on log lines and simulator events, all bounded."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tools.service_process import speech_wav

pytestmark = pytest.mark.slow

DEAF = {"vad_threshold_dbfs": 0.0}  # the simulator never hears an utterance, so it never replies


def _log_time(line: str | None) -> float:
    """Seconds since the service started, from a log line's timestamp (HH:MM:SS,mmm)."""
    assert line is not None
    match = re.search(r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d)", line)
    assert match, line
    h, m, s, ms = (int(g) for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def test_an_idle_call_is_warned_then_ended(start_sim, start_service) -> None:
    sim = start_sim(**DEAF)
    service = start_service(sim.url, call_mode="button", idle_hangup_seconds=3, call_warning_seconds=1,
                            max_call_seconds=0, earcons="true")
    assert service.ctl("call")["ok"]
    started = service.wait_for_log(r"call started: session", 10)
    warned = service.wait_for_log(r"earcon warning", 10)
    ended = service.wait_for_log(r"call ended: reason idle after", 10)
    assert started and warned and ended, service.output()
    assert sim.wait_for(lambda: sim.session_closes == 1, 5)
    # The warning comes one second before the end, two seconds into the silent call.
    assert 1.8 <= _log_time(warned) - _log_time(started) <= 2.8
    assert 0.8 <= _log_time(ended) - _log_time(warned) <= 1.3
    status = service.wait_status_where(lambda st: st["last_call"] is not None)
    assert status["call_state"] == "idle" and status["last_call"]["reason"] == "idle"
    assert 2.8 <= status["last_call"]["duration_s"] <= 4.0 and status["timers"] == {}
    assert status["counters"]["calls_ended"] == {"idle": 1}
    assert service.stop() == 0
    stats = json.loads(service.stats_file.read_text())
    assert stats["last_call"]["reason"] == "idle" and stats["counters"]["calls_ended"] == {"idle": 1}


def test_speech_keeps_the_call_up(start_sim, start_service, tmp_path: Path) -> None:
    # 1.5 s of silence, the ~2 s question, silence: idle would end it at 2.5 s; speech restarts it.
    mic = speech_wav(tmp_path / "question.wav", lead_s=1.5, tail_s=10.0)
    sim = start_sim(**DEAF)
    service = start_service(sim.url, call_mode="button", idle_hangup_seconds=2.5, call_warning_seconds=0,
                            max_call_seconds=0, fake_capture_file=mic)
    assert service.ctl("call")["ok"]
    assert service.wait_for_log(r"call ended: reason idle after", 15), service.output()
    duration = service.wait_status_where(lambda st: st["last_call"] is not None)["last_call"]["duration_s"]
    assert duration >= 1.5 + 1.5 + 2.5  # lead + at least the bulk of the question + the idle limit
    assert sim.events_of("utterance") == []  # no agent reply could have reset it
    assert service.stop() == 0


def test_a_long_call_ends_at_the_limit_after_a_warning(start_sim, start_service) -> None:
    sim = start_sim(**DEAF)
    service = start_service(sim.url, call_mode="button", idle_hangup_seconds=0, max_call_seconds=2.5,
                            call_warning_seconds=1, earcons="true")
    assert service.ctl("call")["ok"]
    warned = service.wait_for_log(r"earcon warning", 10)
    ended = service.wait_for_log(r"call ended: reason max_duration after", 10)
    assert warned and ended, service.output()
    assert sim.wait_for(lambda: sim.session_closes == 1, 5)
    status = service.wait_status_where(lambda st: st["last_call"] is not None)
    assert status["last_call"]["reason"] == "max_duration"
    assert service.stop() == 0


def test_push_to_talk_closes_an_idle_session_and_a_press_reopens_it(start_sim, start_service) -> None:
    sim = start_sim(**DEAF)
    service = start_service(sim.url, call_mode="push_to_talk", idle_hangup_seconds=1.5)
    assert sim.wait_for_event("created", 10)
    assert service.wait_for_log(r"call ended: reason idle after", 10), service.output()
    assert sim.wait_for(lambda: sim.session_closes == 1, 5)
    assert service.wait_for_log(r"state idle", 5)
    assert len(sim.events_of("created")) == 1  # closed, not reconnecting by itself
    assert service.ctl("talk_start")["ok"]
    assert sim.wait_for_event("created", 10, count=2), sim.events
    assert service.wait_for_log(r"state in_call talking", 10), service.output()
    service.wait_status_where(lambda st: st["talking"] and st["timers"] == {})  # no idle limit while held
    assert service.ctl("talk_stop")["ok"]
    assert service.wait_for_log(r"call ended: reason idle after", 10, count=2)
    assert service.stop() == 0

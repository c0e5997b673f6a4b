"""Calls on the real stack: the gpio-sim button, speech through the loopback card to the agent and
its reply back out, the LEDs in each state, and mute as a privacy promise.

Live audio runs with the lighter DSP of appliance.LIGHT_DSP (AEC and noise suppression off, 20 ms
periods): under software emulation the default chain does not keep up in real time.
`test_speech_round_trip_default_dsp` runs the same call on the default settings.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.system.appliance import CALL_PIN, LIGHT_DSP, LIGHT_DSP_DROPIN, MUTE_PIN, UNIT, Appliance
from tests.system.conftest import Report

QUESTION = "/tmp/question.wav"
REPLY = "/tmp/speaker.wav"


@pytest.fixture
def idle(appliance: Appliance) -> Iterator[Appliance]:
    appliance.guest.run("ip link set atoms0 up")
    appliance.idle()
    yield appliance
    appliance.guest.run("ip link set atoms0 up")


def test_button_starts_a_call(idle: Appliance) -> None:
    """A press of the call button (gpio-sim line 17 pulled low) connects to the agent."""
    mark = idle.sim_mark()
    idle.press(CALL_PIN)
    created = idle.wait_sim("created", mark, 30)
    assert created[0]["sample_rate"] == 16000
    idle.wait_status(lambda s: s["call_state"] == "in_call", 20, "in a call after the press")
    idle.press(CALL_PIN)   # and a second press hangs up
    idle.wait_sim("close_requested", mark, 20)
    idle.wait_status(lambda s: s["call_state"] == "idle", 20, "idle after the second press")


def _cpu_sample(app: Appliance, pid: int) -> list[str]:
    """utime, stime (clock ticks) of `pid` and the guest's time now."""
    return app.guest.sh(f"cut -d' ' -f14,15 /proc/{pid}/stat; date +%s.%N").split()


def _cpu_share(app: Appliance, pid: int, before: list[str]) -> float:
    """The share of one core `pid` used since `before` (a `_cpu_sample`)."""
    after = _cpu_sample(app, pid)
    ticks = int(app.guest.sh("getconf CLK_TCK"))
    used = (int(after[0]) + int(after[1]) - int(before[0]) - int(before[1])) / ticks
    return used / (float(after[2]) - float(before[2]))


def _round_trip(app: Appliance, report: Report, label: str) -> None:
    app.speech_wav("What is the answer to everything?", QUESTION)
    app.ctl("call")
    mark = app.sim_mark()
    app.wait_status(lambda s: s["call_state"] == "in_call", 30, "in a call")
    recorder = app.record_speaker(25, REPLY)
    pid = app.main_pid()
    before = _cpu_sample(app, pid)
    app.say(QUESTION)
    try:
        utterance = app.wait_sim("utterance", mark, 30)
    except AssertionError as exc:
        # Say why: a capture that fell behind real time (overruns, a full core) reads differently
        # from audio that never left the device (uplink counters) or a VAD that heard nothing.
        load = app.guest.sh("cat /proc/loadavg", check=False)
        raise AssertionError(f"{exc}; the service used {_cpu_share(app, pid, before):.2f} of a core since "
                             f"the call began, guest load {load}; its status: {app.status()}") from None
    app.wait_sim("reply_start", mark, 20)
    cpu_share = _cpu_share(app, pid, before)
    rss_kb = int(app.guest.sh(f"awk '/^VmRSS/ {{print $2}}' /proc/{pid}/status"))
    app.guest.run(f"while kill -0 {recorder} 2>/dev/null; do sleep 0.5; done", timeout=60)
    loud = app.loud_seconds(REPLY)
    name = app.guest.image.release.name
    report.add(name, f"call_cpu_share_{label}", round(cpu_share, 3))
    report.add(name, f"call_rss_mb_{label}", round(rss_kb / 1024, 1))
    report.add(name, f"reply_loud_s_{label}", loud)
    app.ctl("hangup")
    assert utterance[0]["source"] == "vad", utterance
    # The simulator's reply is ~2 s of espeak-ng speech; the speaker must have played most of it.
    assert loud >= 1.0, f"only {loud:.1f} s of the reply reached the speaker"


def test_speech_round_trip(idle: Appliance, report: Report) -> None:
    """Speech played into the loopback mic reaches the agent (its VAD hears an utterance) and the
    agent's reply is recorded from the loopback speaker. Also measures the service's CPU share of
    one core and its RSS during the call (lighter DSP, under emulation)."""
    _round_trip(idle, report, "light_dsp")


def test_speech_round_trip_default_dsp(idle: Appliance, report: Report) -> None:
    """The same call on the default settings (AEC3 + noise suppression, 10 ms periods)."""
    idle.guest.run(f"rm -f {LIGHT_DSP_DROPIN} && systemctl daemon-reload && systemctl restart {UNIT}")
    try:
        idle.idle()
        _round_trip(idle, report, "default_dsp")
    finally:
        idle.guest.put(LIGHT_DSP.encode(), LIGHT_DSP_DROPIN)
        idle.guest.run(f"systemctl daemon-reload && systemctl restart {UNIT}")
        idle.idle()


def test_leds_follow_the_call(idle: Appliance) -> None:
    """Status LED blinks while connecting, is solid in a call; the speaking LED lights while the
    agent talks; the red LED is on while muted; all dark when idle."""
    assert idle.led_patterns(2) == {"status": "off", "mute": "off", "speaking": "off"}
    idle.guest.run("ip link set atoms0 down")   # the agent unreachable: stays connecting
    idle.ctl("call")
    idle.wait_status(lambda s: s["call_state"] in ("connecting", "reconnecting"), 10, "connecting")
    connecting = idle.led_patterns(3)
    assert connecting["status"] == "blink", connecting   # the slow 0.5 s blink, not the error one
    mark = idle.sim_mark()
    idle.guest.run("ip link set atoms0 up")
    idle.wait_sim("created", mark, 30)
    idle.wait_status(lambda s: s["call_state"] == "in_call", 20, "in a call")
    in_call = idle.led_patterns(2)
    assert in_call == {"status": "on", "mute": "off", "speaking": "off"}, in_call
    idle.speech_wav("Tell me something.", QUESTION)
    # The reply lasts about two seconds: sample the LEDs in the guest for the whole exchange.
    idle.guest.run("rm -f /tmp/leds.log")
    idle.start_led_log(20, "/tmp/leds.log")
    idle.say(QUESTION, trailing_silence=1.0)
    idle.wait_sim("reply_end", mark, 30)
    time.sleep(1.0)
    speaking = idle.read_led_log("/tmp/leds.log")["speaking"]
    assert speaking.on > 0, f"the speaking LED stayed dark while the agent talked ({len(speaking.values)} samples)"
    idle.ctl("mute")
    idle.wait_status(lambda s: s["muted"], 10, "muted")
    muted = idle.led_patterns(1)
    assert muted["mute"] == "on", muted
    idle.ctl("hangup")
    idle.ctl("unmute")
    idle.wait_status(lambda s: s["call_state"] == "idle" and not s["muted"], 20, "idle")
    assert idle.led_patterns(2) == {"status": "off", "mute": "off", "speaking": "off"}


def test_mute_button_sends_no_audio(idle: Appliance) -> None:
    """Muted with the button, a whole call with speech into the mic sends the agent zero audio
    bytes (the simulator counts every byte it receives, per session)."""
    idle.press(MUTE_PIN)
    idle.wait_status(lambda s: s["muted"], 10, "muted by the button")
    idle.speech_wav("This must never leave the device.", QUESTION)
    mark = idle.sim_mark()
    idle.press(CALL_PIN)
    idle.wait_sim("created", mark, 30)
    idle.wait_status(lambda s: s["call_state"] == "in_call", 20, "in a call")
    idle.say(QUESTION, trailing_silence=1.0)
    time.sleep(1.0)   # let any audio that did leave arrive before the count is taken
    idle.ctl("hangup")
    ended = idle.wait_sim("disconnect", mark, 20)
    assert ended[0]["audio_bytes"] == 0, ended
    assert not idle.sim_events(mark, "speech_start")
    idle.press(MUTE_PIN)
    idle.wait_status(lambda s: not s["muted"], 10, "unmuted by the button")
    # The same call unmuted does send audio: the count above is not zero by accident.
    mark = idle.sim_mark()
    idle.ctl("call")
    idle.wait_status(lambda s: s["call_state"] == "in_call", 20, "in a call")
    idle.say(QUESTION, trailing_silence=1.0)
    idle.ctl("hangup")
    ended = idle.wait_sim("disconnect", mark, 20)
    assert ended[0]["audio_bytes"] > 16000, ended

"""The wake word call mode end to end: the real service (in this process, so the test can speak
into the fake mic when it chooses), the real detector (pymicro-wakeword) on the processed mic,
gpiozero MockFactory buttons, and the local agent simulator over loopback.

"okay nabu" followed in the same breath by a question: the question (and not the wake word)
reaches the simulator, the answer is played, the call ends on the idle limit, and the next wake
word starts a new call. Before the detection not a byte reaches the simulator; muted, the wake
word does nothing (the detector is not even given the audio).
"""
from __future__ import annotations

import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from device.audio.formats import FRAME_BYTES
from hw.controls import ButtonName, Indicator, StatusPattern
from hw.gpio import MockGpioControls
from tests.e2e.inprocess import InProcessService, InProcessServices
from tools import REPO
from tools.polling import wait_until
from tools.service_process import sound_span_seconds
from tools.wake_audio import espeak, espeak_available, silence, wake_phrase

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not espeak_available(), reason="espeak-ng speaks the wake word")]

RATE = 16000
REPLY = "We open at nine."


def question() -> bytes:
    with wave.open(str(REPO / "device" / "assets" / "question.wav"), "rb") as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1
        return w.readframes(w.getnframes())


def one_breath() -> bytes:
    """"okay nabu, <question>": a quarter second between them, then silence."""
    return wake_phrase("okay_nabu") + silence(0.25) + question() + silence(0.5)


@pytest.fixture
def run_service(tmp_path: Path) -> Iterator[Callable[..., InProcessService]]:
    with InProcessServices(tmp_path, lambda: MockGpioControls(hold_seconds=0.5)) as services:
        yield services.start


def wake(svc: InProcessService) -> dict[str, object]:
    """The status's wake word part ({} until the service published its first status)."""
    status = svc.service.status()
    return status["wake_word"] if status else {}


def spoken_through(svc: InProcessService, pcm: bytes) -> bool:
    """Speak `pcm` into the fake mic and wait until the capture thread has read all of it."""
    start = svc.service.pipeline.counters()["frames_captured"]
    svc.backend.inject(pcm)
    return wait_until(lambda: svc.service.pipeline.counters()["frames_captured"] >= start + len(pcm) // FRAME_BYTES,
                      len(pcm) / 2 / RATE + 10)


def press(svc: InProcessService, button: ButtonName) -> None:
    svc.controls.press(button)
    svc.controls.release(button)


def test_wake_word_question_answer_idle_end_and_a_second_call(start_sim, run_service) -> None:
    sim = start_sim(reply=REPLY, keep_audio_seconds=10.0)
    svc = run_service(sim.url, call_mode="wake_word", idle_hangup_seconds=2.0, call_warning_seconds=0.0)
    assert wait_until(lambda: wake(svc).get("listening"), 10)
    leds = svc.service.leds
    assert (leds.status, leds.indicator) == (StatusPattern.WAKE_LISTENING, Indicator.WAKE_LISTENING)
    assert sim.connections == []                       # listening is local: nothing is connected

    breath = one_breath()
    svc.backend.inject(breath)
    created = sim.wait_for_event("created", 15)
    assert created is not None, sim.events
    # (the status is published right after the detection's actions: wait, the main thread may lag)
    assert wait_until(lambda: wake(svc).get("detections") == 1, 5), wake(svc)
    last = wake(svc)["last_detection"]
    assert isinstance(last, dict) and last["model"] == "okay_nabu" and 0.5 < last["score"] <= 1
    utterance = sim.wait_for_event("utterance", 15)
    assert utterance is not None, sim.events
    assert sim.wait_for_event("reply_end", 20), sim.events
    # The call ends on the idle limit once the answer has played, and the device listens again.
    assert wait_until(lambda: (svc.service.last_call or {}).get("reason") == "idle", 20), svc.service.last_call
    assert svc.wait_state(call="idle") and wait_until(lambda: wake(svc).get("listening"), 5)
    assert svc.service.leds.status is StatusPattern.WAKE_LISTENING

    # What the agent heard: the question, held from the end of the wake word and sent first,
    # in one utterance; not the wake word (the audio before the detection never left).
    heard = sim.audio_of(created["session_id"])
    asked = sound_span_seconds(question(), RATE)
    span = sound_span_seconds(heard, RATE)
    print(f"question {asked:.2f} s, session audio {span:.2f} s, utterance {utterance.get('seconds')} s")
    assert asked - 0.3 <= span <= asked + 0.4, (span, asked)
    counters = svc.service.counters()
    assert counters["first_words_frames_sent"] > 0 and counters["uplink_dropped_chunks"] == 0
    # The answer reached the speaker.
    assert svc.service.pipeline.playback.counters.agent_periods_played > 0

    # A second wake word: a new call (ended here by the call button, back to listening).
    svc.backend.inject(wake_phrase("okay_nabu") + silence(0.5))
    assert sim.wait_for_event("created", 15, count=2), sim.events
    assert svc.wait_state(call="in_call")
    press(svc, ButtonName.CALL)
    assert svc.wait_state(call="idle") and wait_until(lambda: wake(svc).get("listening"), 5)
    assert svc.service.last_call is not None and svc.service.last_call["reason"] == "person"
    assert wake(svc)["detections"] == 2 and len(sim.connections) == 2
    svc.stop()


def test_nothing_leaves_before_the_wake_word_and_muted_it_does_nothing(start_sim, run_service) -> None:
    sim = start_sim(reply=REPLY)
    svc = run_service(sim.url, call_mode="wake_word")
    assert wait_until(lambda: wake(svc).get("listening"), 10)
    # Speech that is not the wake word: heard by the detector, nothing connects or is sent.
    other = espeak("hello, is anybody there?") + silence(0.3)
    assert spoken_through(svc, other)
    assert wake(svc)["detections"] == 0 and sim.connections == [] and sim.audio_bytes_received == 0
    assert svc.service.counters()["wake_frames_heard"] >= len(other) // FRAME_BYTES - 10

    press(svc, ButtonName.MUTE)
    assert svc.wait_state(muted=True) and wait_until(lambda: not wake(svc).get("listening"), 5)
    assert svc.service.leds.mute and svc.service.leds.status is StatusPattern.OFF
    heard = svc.service.counters()["wake_frames_heard"]
    assert spoken_through(svc, wake_phrase("okay_nabu") + silence(0.5))
    assert svc.service.counters()["wake_frames_heard"] == heard   # the detector got nothing
    assert wake(svc)["detections"] == 0 and sim.connections == [] and svc.service.state.call.value == "idle"

    press(svc, ButtonName.MUTE)                         # unmuted: the wake word works again
    assert wait_until(lambda: wake(svc).get("listening"), 5)
    svc.backend.inject(wake_phrase("okay_nabu") + silence(0.5))
    assert sim.wait_for_event("created", 15), sim.events
    svc.stop()

"""The agent must never hear itself: with the simulated room echo on, the agent's own voice comes
back into the fake mic, and only the echo canceller stops the server from taking it for the user
(a barge-in that would cut every answer short)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow
GREETING = "Thanks for calling. Our shop is open from nine to six, Monday to Saturday, and on Sunday from ten."


@pytest.mark.parametrize("aec, echo_heard", [("webrtc", False), ("off", True)])
def test_agent_echo_is_not_taken_for_the_user(start_sim, start_service, aec: str, echo_heard: bool) -> None:
    sim = start_sim(greeting=GREETING)
    service = start_service(sim.url, call_mode="always", aec=aec, noise_suppression=2,
                            fake_echo_delay_ms=60, fake_echo_gain_db=-6)
    assert sim.wait_for_event("reply_start", 10)
    ended = sim.wait_for(lambda: bool(sim.events_of("reply_end") or sim.events_of("interrupt")), 20)
    assert ended
    interrupted = bool(sim.events_of("interrupt") or sim.events_of("speech_start"))
    assert interrupted is echo_heard, sim.events
    assert service.stop() == 0


def test_renegotiated_rate_end_to_end(start_sim, start_service) -> None:
    sim = start_sim(force_rate=24000, greeting="Now at twenty four kilohertz.")
    service = start_service(sim.url, call_mode="always", sample_rate=16000)
    assert sim.wait_for_event("reply_end", 15)
    assert service.wait_for_log(r"session rate 24000 Hz \(was 16000\)", 5)
    assert service.wait_for_log(r"playback open: 24000 Hz", 5)
    status = service.status()
    assert status["sample_rate"] == 24000
    before = sim.audio_bytes_received
    assert sim.wait_for(lambda: sim.audio_bytes_received >= before + 24000 * 2, 5)  # 1 s at 24 kHz
    assert service.stop() == 0

"""Network faults against the real service process: each one must leave the process running,
recover without a restart and keep the user's state (mute, call mode), and each recovery is timed.

The service runs with fake audio and no GPIO (`FaultService`, a `ServiceProcess`); the agent is
the local simulator with its fault flags. Mute is set with `ctl mute` before the fault, so "state
kept" also means "nothing was sent while muted" across every reconnect.
"""
from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from device.sim.server import Simulator
from tests.faults import BACKOFF_MAX, FULL, NO_RETRY_CAP, free_port, pick
from tools.fault_service import POLL_INTERVAL, FaultService
from tools.polling import wait_until
from tools.service_process import speech_wav

pytestmark = pytest.mark.slow

IN_CALL = r"state in_call\b"
SimFactory = Callable[..., Simulator]
ServiceFactory = Callable[..., FaultService]
RecordFault = Callable[..., None]


def mute(service: FaultService) -> None:
    """`ctl mute`, and wait until the service has applied it (the state line is logged)."""
    assert service.ctl("mute")["ok"]
    assert service.wait_line(r"state \w+ muted", 5), service.output()


def assert_kept(service: FaultService, mode: str, call_state: str = "in_call", muted: bool = True) -> None:
    """Still running, in `call_state`, with the mute and the call mode it had before the fault."""
    assert service.running, service.output()
    # The main loop logs the state line before it publishes the status (same step, microseconds
    # apart): a status read right after the line may be the one before it, so wait for it.
    status = service.wait_status(call_state=call_state)
    assert (status["call_state"], status["muted"], status["call_mode"]) == (call_state, muted, mode), status
    assert status["leds"]["mute"] is muted


def assert_not_retrying(service: FaultService, sim: Simulator) -> None:
    """After an auth rejection: one connection, and the link idle, which only a connect() leaves
    (tests/test_link.py; tests/test_session.py shows on a ManualClock that no time does). The
    status published with auth_error already has it, so nothing is waited out to show absence."""
    status = service.wait_status(call_state="auth_error")
    assert status["link"] == "idle", status
    assert len(sim.connections) == 1, sim.connections


def muted_call(sim: Simulator, start_service: ServiceFactory, **settings: object) -> FaultService:
    """A button-mode service, muted first, then asked to call (the fault comes after)."""
    service = start_service(sim.url, call_mode="button", **settings)
    mute(service)
    assert service.ctl("call")["ok"]
    return service


def test_server_unreachable_at_start_then_reachable(start_sim: SimFactory, start_service: ServiceFactory,
                                                    record_fault: RecordFault) -> None:
    port = free_port()
    service = start_service(f"ws://127.0.0.1:{port}/atoms/v1/agent/connect", call_mode="always")
    mute(service)
    # Enough refusals for the backoff to grow (in the full form up to its cap).
    failures = pick(2, 5)
    assert service.wait_line(r"connection lost \(ConnectionRefusedError", 15, count=failures), service.output()
    assert_kept(service, "always", call_state="reconnecting")
    up = time.time()
    sim = start_sim(port=port)
    connected = service.wait_line(IN_CALL, BACKOFF_MAX + 5, after=up)
    assert connected is not None, service.output()
    recovery = connected - up
    # The next attempt comes within one backoff ceiling (at most the cap) plus the connect itself.
    assert recovery <= BACKOFF_MAX + 1.0
    assert_kept(service, "always")
    assert sim.audio_bytes_received == 0  # muted before the first session: nothing ever left
    assert service.stop() == 0
    record_fault("unreachable_at_start", recovery, refused_attempts=failures)


def test_http_503_three_times_then_accepted(start_sim: SimFactory, start_service: ServiceFactory,
                                            record_fault: RecordFault) -> None:
    sim = start_sim(reject_status=503, reject_count=3)
    service = muted_call(sim, start_service)
    third = sim.wait_for_event("reject", 15, count=3)
    assert third is not None, sim.events
    connected = service.wait_line(IN_CALL, BACKOFF_MAX + 5)
    assert connected is not None, service.output()
    assert service.count_log(r"connection lost \(HTTP 503\)") == 3
    assert len(sim.connections) == 4
    assert_kept(service, "button")
    assert service.stop() == 0
    record_fault("http_503", connected - third["t"], refusals=3)


def test_http_401_is_tried_once_and_the_state_survives(start_sim: SimFactory, start_service: ServiceFactory,
                                                       record_fault: RecordFault) -> None:
    sim = start_sim(reject_status=401, reject_count=1)
    service = muted_call(sim, start_service, backoff_initial=0.1, backoff_max=NO_RETRY_CAP)
    assert service.wait_line(r"state auth_error", 10), service.output()
    assert_not_retrying(service, sim)
    assert_kept(service, "button", call_state="auth_error")
    assert service.status()["leds"]["status"] == "auth_error"
    hup = time.time()
    service.signal(signal.SIGHUP)  # the operator fixed the key: one new attempt
    connected = service.wait_line(IN_CALL, 10, after=hup)
    assert connected is not None, service.output()
    assert len(sim.connections) == 2
    assert_kept(service, "button")
    assert service.stop() == 0
    record_fault("http_401", connected - hup, attempts_before_sighup=1)


def test_connection_dropped_repeatedly_reconnects_without_leaking(
        start_sim: SimFactory, start_service: ServiceFactory, record_fault: RecordFault) -> None:
    drops = pick(3, 10)
    sim = start_sim(drop_after=0.3, drop_count=drops)
    service = muted_call(sim, start_service)
    assert service.wait_line(IN_CALL, 10), service.output()
    recoveries: list[float] = []
    first: tuple[int, int] | None = None
    for n in range(1, drops + 1):
        drop = sim.wait_for_event("drop", 10, count=n)
        assert drop is not None, sim.events
        back = service.wait_line(IN_CALL, BACKOFF_MAX + 5, count=n + 1)
        assert back is not None, service.output()
        recoveries.append(back - drop["t"])
        if n == 1:
            first = (service.fds(), service.threads())  # after the 1st reconnect
    assert first is not None
    # After the last reconnect the session stays up: let the old socket's close finish.
    assert sim.wait_for_event("created", 5, count=drops + 1)
    last = (service.fds(), service.threads())
    assert last[0] <= first[0] + 2, f"file descriptors grew: {first[0]} -> {last[0]}"
    assert last[1] <= first[1] + 2, f"threads grew: {first[1]} -> {last[1]}"
    counters = service.wait_counters(lambda c: c["sessions"] == drops + 1, 5)
    assert counters is not None, service.counters()
    assert counters["reconnects"] >= drops
    assert sim.audio_bytes_received == 0  # muted before the call: not one byte in any session
    assert_kept(service, "button")
    assert service.stop() == 0
    record_fault("drops", recoveries, drops=drops, fds_after_1st_and_last=f"{first[0]} -> {last[0]}",
                 threads_after_1st_and_last=f"{first[1]} -> {last[1]}")


@pytest.mark.parametrize("code", [4401, 4403, 1011, 1006])
def test_close_codes(code: int, start_sim: SimFactory, start_service: ServiceFactory,
                     record_fault: RecordFault) -> None:
    if code == 1006:
        # A server cannot send 1006: it is what the client sees when the socket just vanishes.
        sim = start_sim(drop_after=0.3, drop_count=1)
    else:
        sim = start_sim(close_code=code, close_after=0.3, close_count=1)
    service = muted_call(sim, start_service, backoff_initial=0.1, backoff_max=NO_RETRY_CAP)
    assert service.wait_line(IN_CALL, 10), service.output()
    if code in (4401, 4403):
        assert service.wait_line(rf"refused the credentials \(close code {code}", 10), service.output()
        assert service.wait_line(r"state auth_error", 5)
        assert_not_retrying(service, sim)
        assert_kept(service, "button", call_state="auth_error")
        start = time.time()
        service.signal(signal.SIGHUP)
    else:
        fault = sim.wait_for_event("drop" if code == 1006 else "close_fault", 10)
        assert fault is not None, sim.events
        start = fault["t"]
        assert service.wait_line(r"connection lost", 5), service.output()
    connected = service.wait_line(IN_CALL, 10, after=start)
    assert connected is not None, service.output()
    assert len(sim.connections) == 2
    assert_kept(service, "button")
    assert service.stop() == 0
    record_fault(f"close_{code}", connected - start)


def test_session_timeout_in_always_mode_keeps_mute(start_sim: SimFactory, start_service: ServiceFactory,
                                                    record_fault: RecordFault) -> None:
    sim = start_sim(session_timeout=1.0)
    service = start_service(sim.url, call_mode="always")
    mute(service)
    muted_at = time.time()
    # The first timeout after mute took effect, and the session that replaces it.
    assert sim.wait_for(lambda: any(e["t"] > muted_at for e in sim.events_of("timeout")), 10), sim.events
    timeout = next(e for e in sim.events_of("timeout") if e["t"] > muted_at)
    connected = service.wait_line(IN_CALL, 5, after=timeout["t"])
    assert connected is not None, service.output()
    assert service.wait_line(r"session closed by the server: timeout", 1)
    assert service.count_log(r"connection lost") == 0  # a clean end, not a network error
    assert_kept(service, "always")
    assert service.stop() == 0
    record_fault("session_timeout", connected - timeout["t"])


def test_server_that_stops_reading(start_sim: SimFactory, start_service: ServiceFactory,
                                   record_fault: RecordFault) -> None:
    """The kernel's send buffers fill; the service must drop old audio, stay small and responsive.

    Short form: unpaced fake audio fills the buffers in about a second. Full form: real-time audio
    at 48 kHz, the realistic case (about 20 s until the buffers are full). Keepalive pings are
    pushed out of the way so the stall lasts for the whole test.
    """
    sim = start_sim(stop_reading=True)
    settings: dict[str, object] = {"ping_interval": 300, "ping_timeout": 10}
    # 48 kHz in both: unpaced, the capture thread is a busy loop and the sender gets the GIL only
    # now and then, so the bytes per chunk decide how soon the buffers fill (at 16 kHz it took
    # 12 to over 20 s once the capture DSP had the adaptive half-duplex to run too).
    settings.update({"sample_rate": 48000} if FULL else {"sample_rate": 48000, "fake_realtime": "false"})
    service = start_service(sim.url, call_mode="button", **settings)
    assert service.ctl("call")["ok"]
    assert service.wait_line(IN_CALL, 10), service.output()
    assert sim.wait_for_event("stop_reading", 5)
    rss_before = service.rss_mb()
    stalled = service.wait_counters(lambda c: c["send_errors"] > 0 and c["uplink_dropped_chunks"] > 50,
                                    pick(40, 60))   # a bound: ~8 s here, more on a loaded machine
    assert stalled is not None, service.counters()
    # Let the stall go on for a while with the queue full, then look.
    dropped = stalled["uplink_dropped_chunks"]
    assert service.wait_counters(lambda c: c["uplink_dropped_chunks"] > dropped + 100, 10)
    stats = service.stats()
    assert service.running
    rss_growth = service.rss_mb() - rss_before
    assert rss_growth < 20, f"RSS grew by {rss_growth:.1f} MB while the server did not read"
    # Audio that did get sent was at most the queue bound (2 s) old.
    p99 = stats["capture_to_send_ms"]["p99"]
    assert p99 is not None and p99 < 2000 + 500, stats["capture_to_send_ms"]
    reply, answered_in = service.timed_ctl("status")
    assert reply["ok"] and reply["status"]["call_state"] == "in_call" and answered_in < 1.0
    assert service.connections_to(sim.port) == 1
    hangup = time.time()
    assert service.ctl("hangup")["ok"]
    idle = service.wait_line(r"state idle", 5, after=hangup)
    assert idle is not None, service.output()
    # The socket is closed after the close wait (no session.closed can come back; the simulator
    # cannot see the close either, as it does not read)...
    assert wait_until(lambda: service.connections_to(sim.port) == 0, 5, interval=POLL_INTERVAL), \
        service.output()
    closed = time.time()
    # ... and it recovers without a restart: a new call gets a new session. (Calling before the
    # old socket is gone loses the call: see test_hangup_then_call_back_to_back_starts_a_new_call.)
    assert service.ctl("call")["ok"]
    connected = service.wait_line(IN_CALL, 10, after=idle)
    assert connected is not None, service.output()
    assert sim.wait_for_event("created", 5, count=2)
    assert_kept(service, "button", muted=False)
    assert service.stop() == 0
    record_fault("stop_reading", connected - hangup, idle_after_s=round(idle - hangup, 3),
                 socket_closed_after_s=round(closed - hangup, 2), rss_growth_mb=round(rss_growth, 1),
                 uplink_dropped_chunks=service_counter(stats, "uplink_dropped_chunks"),
                 send_errors=service_counter(stats, "send_errors"), sent_latency_p99_ms=p99)


def service_counter(stats: dict[str, object], name: str) -> object:
    counters = stats.get("counters")
    return counters.get(name) if isinstance(counters, dict) else None


def test_flood_of_agent_audio_is_bounded(start_sim: SimFactory, start_service: ServiceFactory,
                                         record_fault: RecordFault, tmp_path: Path) -> None:
    flood_seconds = pick(60.0, 300.0)
    jitter_seconds = 2.0
    sim = start_sim(flood_seconds=flood_seconds)
    mic = speech_wav(tmp_path / "question.wav", lead_s=1.0)
    service = start_service(sim.url, call_mode="always", fake_capture_file=mic,
                            jitter_buffer_seconds=jitter_seconds)
    assert service.wait_line(IN_CALL, 10), service.output()
    rss_before = service.rss_mb()
    reply = sim.wait_for_event("reply_start", 20)
    assert reply is not None and reply["flood"], sim.events
    end = sim.wait_for_event("reply_end", 30)
    assert end is not None, sim.events
    # agent_stop_talking comes after the last delta on the same socket: when the service has
    # left agent-speaking, it has received (and accounted for) the whole flood.
    caught_up = service.wait_line(r"state in_call$", 30, after=reply["t"])
    assert caught_up is not None, service.output()
    flood_bytes = int(flood_seconds * 16000) * 2
    bound = int(jitter_seconds * 48000 * 2)  # the service sizes the buffer for 48 kHz
    expected = flood_bytes - bound - 16000 * 2 * 10
    # The stats file is written every few seconds: an earlier snapshot can hold a partial count,
    # so wait for the one that has accounted for the whole flood (it must come).
    counters = service.wait_counters(lambda c: c["jitter_overflow_bytes"] >= expected, 10)
    assert counters is not None, (expected, service.counters())
    peak_growth = service.peak_rss_mb() - rss_before
    assert peak_growth < 40, f"peak RSS grew by {peak_growth:.1f} MB during the flood"
    assert_kept(service, "always", muted=False)
    assert service.stop() == 0
    record_fault("flood", max(0.0, caught_up - end["t"]), flood_audio_s=flood_seconds,
                 sent_in_s=round(end["t"] - reply["t"], 2),
                 jitter_buffer_s=jitter_seconds, overflow_mb=round(counters["jitter_overflow_bytes"] / 1e6, 1),
                 peak_rss_growth_mb=round(peak_growth, 1))


def test_ctl_status_counters_are_current_during_a_call(start_sim: SimFactory,
                                                       start_service: ServiceFactory) -> None:
    sim = start_sim()
    service = start_service(sim.url, call_mode="always")
    assert service.wait_line(IN_CALL, 10), service.output()
    assert sim.wait_for(lambda: sim.audio_bytes_received > 0, 5)
    first = service.status()["counters"]["chunks_sent"]
    # 50 chunks a second go out: within 2 s an operator's `ctl status` must show some of them.
    assert wait_until(lambda: service.status()["counters"]["chunks_sent"] > first + 10, 2.0,
                      interval=POLL_INTERVAL)


def test_hangup_then_call_back_to_back_starts_a_new_call(start_sim: SimFactory,
                                                         start_service: ServiceFactory) -> None:
    sim = start_sim()
    service = start_service(sim.url, call_mode="button")
    assert service.ctl("call")["ok"]
    assert service.wait_line(IN_CALL, 10), service.output()
    # A person hangs up and presses call again before the server's session.closed is back.
    replies = service.ctl_lines("hangup", "call")
    assert [r["ok"] for r in replies] == [True, True]
    sent = time.time()
    assert service.wait_line(IN_CALL, 5, after=sent), service.status()

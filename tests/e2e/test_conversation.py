"""The conversation afterwards, end to end: a real call through the service process, then
`atoms-appliance conversation last` (a second process, as a person would run it) fetches the
simulator's record of it; with `conversation_keep` the service saves the record itself."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tools import REPO
from tools.service_process import TEST_KEY

pytestmark = pytest.mark.slow

GREETING = "Welcome to the kiosk. Ask me anything."


def _conversation(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "device", "conversation", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("auth", ["header", "query"])
def test_conversation_last_prints_the_call_just_made(start_sim, start_service, auth: str) -> None:
    sim = start_sim(greeting=GREETING, vad_threshold_dbfs=0.0)
    service = start_service(sim.url, call_mode="button", auth=auth, conversation_keep=3)
    assert _conversation(service.env, "last").returncode == 1  # no call yet
    assert service.ctl("call")["ok"]
    assert sim.wait_for_event("reply_end", 20), sim.events
    assert service.wait_for_log(r"transcript agent: Welcome", 10)
    call_id = service.status()["call_id"]
    assert service.ctl("hangup")["ok"]
    assert service.wait_for_log(r"call ended: reason person", 5)
    saved = service.wait_for_log(r"conversation of \S+ saved to", 10)
    assert saved is not None and call_id in saved, service.output()

    printed = _conversation(service.env, "last")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines() == [f"call {call_id}", f"agent: {GREETING}"]
    raw = _conversation(service.env, call_id, "--json")
    assert raw.returncode == 0, raw.stderr
    record = json.loads(raw.stdout)
    assert record["data"]["callId"] == call_id and record["data"]["status"] == "completed"
    stored = json.loads((service.tmp / "state" / "conversations" / f"{call_id}.json").read_text())
    assert stored["data"]["transcript"] == record["data"]["transcript"]
    requests = sim.events_of("conversation_request")
    assert [r["auth_query"] for r in requests] == [auth == "query"] * 3
    assert TEST_KEY not in printed.stdout + printed.stderr + raw.stderr + service.output()
    service.wait_status_where(lambda st: st["counters"]["conversations_saved"] == 1)
    assert service.stop() == 0


def test_unknown_call_is_a_clear_error(start_sim, start_service) -> None:
    sim = start_sim()
    service = start_service(sim.url, call_mode="button")
    result = _conversation(service.env, "CALL-nope")
    assert result.returncode == 1 and "HTTP 404" in result.stderr and TEST_KEY not in result.stderr
    assert service.stop() == 0

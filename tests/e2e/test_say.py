"""`ctl say` with the real service process: typed text reaches the agent as input_text.send during
a call (and the agent answers it); outside a call it is refused with a reason and exit status 1."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tools import REPO

pytestmark = pytest.mark.slow


def _ctl_say(service, text: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "device", "ctl", "say", text], env=service.env, cwd=REPO,
                          capture_output=True, text=True, timeout=30)


def test_say_in_and_out_of_a_call(start_sim, start_service) -> None:
    sim = start_sim(vad_threshold_dbfs=0.0, reply="We are open from nine to five.")
    service = start_service(sim.url, call_mode="button")
    refused = _ctl_say(service, "Anyone there?")
    assert refused.returncode == 1 and "not in a call (call state idle)" in refused.stdout
    assert service.ctl("call")["ok"]
    assert sim.wait_for_event("created", 10) and service.wait_for_log(r"state in_call", 10)
    said = _ctl_say(service, "What are your opening hours?")
    assert said.returncode == 0, said.stdout + said.stderr
    utterance = sim.wait_for_event("utterance", 10, source="text")
    assert utterance is not None and utterance["text"] == "What are your opening hours?"
    assert sim.received.get("input_text.send") == 1
    assert service.wait_for_log(r"transcript agent: We are open from nine to five", 20), service.output()
    service.wait_status_where(lambda st: st["counters"]["texts_sent"] == 1)
    assert service.ctl("hangup")["ok"]
    assert service.wait_for_log(r"state idle", 5)
    after = _ctl_say(service, "Hello?")
    assert after.returncode == 1 and "not in a call" in after.stdout
    assert sim.received.get("input_text.send") == 1
    assert service.stop() == 0

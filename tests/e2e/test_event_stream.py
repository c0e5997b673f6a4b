"""The live event stream with the real service process: two subscribers, one never reads; the other
gets every event of a call in order, each valid against the schema, and the stalled one is
disconnected and counted. `ctl watch --json` prints the same stream."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from typing import Any

import pytest

from device.service.event_schema import parse_event
from tools import REPO
from tools.polling import wait_until

pytestmark = pytest.mark.slow
SAYS = 20


class Reader:
    """A subscriber that reads everything on its own thread."""

    def __init__(self, path: str, levels: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.sock.sendall(json.dumps({"cmd": "subscribe", "levels": levels}).encode() + b"\n")
        self.items: list[dict[str, Any]] = []
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            with self.sock.makefile("rb") as lines:
                for line in lines:
                    self.items.append(json.loads(line))
        except OSError:
            pass
        self.closed.set()

    def types(self) -> list[str]:
        return [e.get("type", "") for e in self.items[1:]]

    def close(self) -> None:
        self.sock.close()
        self._thread.join(5)


def _in_order(seen: list[str], wanted: list[str]) -> bool:
    it = iter(seen)
    return all(any(s == w for s in it) for w in wanted)


def test_two_subscribers_one_stalled_the_other_gets_every_event_in_order(start_sim, start_service) -> None:
    sim = start_sim(greeting="Welcome to the kiosk.")
    service = start_service(sim.url, call_mode="button", event_stream_buffer_bytes=4096)
    reader = Reader(str(service.socket), levels=True)
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    stalled.connect(str(service.socket))
    stalled.sendall(b'{"cmd": "subscribe"}\n')  # and never reads
    assert wait_until(lambda: service.status()["counters"]["event_subscribers"] == 2, 5, interval=0.02)
    assert service.ctl("call")["ok"]
    assert service.wait_for_log(r"transcript agent: Welcome", 20), service.output()
    for cmd, fields in (("mute", {}), ("unmute", {}), ("volume", {"level": "40"})):
        assert service.ctl(cmd, **fields)["ok"]
    # Echoed back as user transcripts: ~36 KB, past what the stalled one's kernel buffer (~32 KB)
    # and its 4 KB allowance hold.
    for i in range(SAYS):  # one at a time: a new turn cancels a reply that has not started yet
        assert service.ctl("say", text=f"question {i} " + "please " * 255)["ok"]
        assert service.wait_for_log(rf"transcript user: question {i} ", 10)
    assert service.ctl("hangup")["ok"]
    assert wait_until(lambda: "call_ended" in reader.types()
                      and "idle" in [e.get("state") for e in reader.items], 10, interval=0.02)
    dropped = lambda: service.status()["counters"]["event_subscribers_dropped"] == 1
    assert wait_until(dropped, 10, interval=0.02), (
        service.status()["counters"], len(reader.items), sum(len(json.dumps(e)) for e in reader.items))
    assert service.stop() == 0
    assert reader.closed.wait(5)

    first, events = reader.items[0], reader.items[1:]
    assert first["ok"] and first["v"] == 1 and first["snapshot"]["call_state"] == "idle"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # nothing lost, in order
    for event in events:
        parse_event(event)  # every line the service emitted fits the documented schema
    plain = [e for e in events if e["type"] != "levels"]
    summary = [(e["type"], e.get("state", e.get("muted", e.get("level", e.get("role", e.get("reason"))))))
               for e in plain]
    assert _in_order(summary, [
        ("call_state", "connecting"), ("call_started", None), ("call_state", "in_call"),
        ("transcript", "agent"), ("muted", True), ("muted", False), ("volume", 40),
        ("call_ended", "person"), ("call_state", "idle"),
    ]), json.dumps(summary)
    # The said texts come back from the agent's thread, so the first may overtake the volume event
    # (the main thread's); all of them arrive, in the order said.
    said = [e["text"].split()[1] for e in plain if e["type"] == "transcript" and e["role"] == "user"]
    assert said == [str(i) for i in range(SAYS)], said
    started = next(e for e in plain if e["type"] == "call_started")
    assert started["call_id"].startswith("CALL-SIM-") and started["resumed"] is False
    ended = next(e for e in plain if e["type"] == "call_ended")
    assert ended["call_id"] == started["call_id"] and ended["duration_s"] > 0
    levels = [e for e in events if e["type"] == "levels"]
    assert len(levels) >= 10 and any(e["speaker_dbfs"] > -60 for e in levels)  # the greeting played
    stalled.close()
    reader.close()


def test_ctl_watch_json_prints_the_stream(start_sim, start_service) -> None:
    sim = start_sim()
    service = start_service(sim.url, call_mode="button")
    watch = subprocess.Popen([sys.executable, "-m", "device", "ctl", "watch", "--json"], env=service.env,
                             cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert watch.stdout is not None
    first = json.loads(watch.stdout.readline())
    assert first["cmd"] == "subscribe" and "snapshot" in first
    assert service.ctl("mute")["ok"]
    event = json.loads(watch.stdout.readline())
    assert (event["type"], event["muted"], event["seq"]) == ("muted", True, 1)
    assert service.stop() == 0
    assert watch.wait(10) == 0  # the stream ends with the service

"""The event stream's fan-out (device/service/event_hub.py) through a real ControlServer: a
snapshot then every event in order for a reader; a subscriber that stops reading is disconnected
and counted while publish() never blocks and the reader keeps getting everything."""
from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device.service.control import ControlServer, send_command
from device.service.event_hub import EventHub
from device.service.event_schema import LevelsEvent, MutedEvent, TranscriptEvent, parse_event
from tools.polling import wait_until


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ControlServer, EventHub]]:
    hub = EventHub(max_buffer_bytes=4096)
    srv = ControlServer(tmp_path / "c.sock", lambda e: None, lambda: {"call_state": "idle"}, hub=hub)
    srv.bind()
    srv.start()
    yield srv, hub
    srv.stop()
    assert srv.join(3)


def _subscribe(path: Path, levels: bool = False, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(str(path))
    sock.sendall(json.dumps({"cmd": "subscribe", "levels": levels}).encode() + b"\n")
    return sock


def _lines(sock: socket.socket) -> Iterator[dict[str, Any]]:
    with sock.makefile("rb") as f:
        for line in f:
            yield json.loads(line)


def test_snapshot_then_events_in_order_and_a_stalled_subscriber_is_dropped(  # type: ignore[no-untyped-def]
        served) -> None:
    srv, hub = served
    reader = _subscribe(srv.path)
    stalled = _subscribe(srv.path, rcvbuf=1024)
    lines = _lines(reader)
    first = next(lines)
    assert first == {"ok": True, "cmd": "subscribe", "v": 1, "levels": False,
                     "snapshot": {"call_state": "idle"}}
    assert wait_until(lambda: hub.subscribers == 2, 5)
    sent = 0
    text = "x" * 500
    received: list[dict[str, Any]] = []
    # Far more than the stalled one's kernel buffers and its 4 KB allowance; read as we go.
    while sent < 400:
        hub.publish(TranscriptEvent(role="agent", text=f"{sent} {text}"))
        hub.publish(MutedEvent(muted=sent % 2 == 0))
        sent += 2
        received.append(next(lines))
        received.append(next(lines))
    assert wait_until(lambda: hub.dropped_subscribers == 1 and hub.subscribers == 1, 5)
    assert [e["seq"] for e in received] == list(range(1, sent + 1))  # no gap, in order
    for event in received:
        parse_event(event)  # every line fits the schema
    assert received[0]["text"].startswith("0 ") and received[-1]["muted"] is True
    stalled.settimeout(5)
    assert b"".join(iter(lambda: stalled.recv(65536), b""))  # it got some, then the service hung up
    assert send_command(srv.path, "status")["ok"]  # other clients are served as before
    reader.close()
    stalled.close()


def test_levels_only_for_who_asked(served) -> None:  # type: ignore[no-untyped-def]
    srv, hub = served
    plain, metered = _subscribe(srv.path), _subscribe(srv.path, levels=True)
    a, b = _lines(plain), _lines(metered)
    assert next(a)["levels"] is False and next(b)["levels"] is True
    assert wait_until(lambda: hub.subscribers == 2 and hub.wants_levels, 5)
    hub.publish(LevelsEvent(mic_dbfs=-40.0, speaker_dbfs=-120.0))
    hub.publish(MutedEvent(muted=True))
    assert next(b)["type"] == "levels" and next(b) == {**next(a), "seq": 2}
    plain.close()
    metered.close()


def test_without_a_hub_subscribe_is_refused(tmp_path: Path) -> None:
    srv = ControlServer(tmp_path / "c.sock", lambda e: None, dict)
    assert srv.handle(b'{"cmd": "subscribe"}')["error"].startswith("subscribe")


def test_the_docs_list_every_event_type_and_field() -> None:
    from device.service.event_schema import EVENT_TYPES
    from tools import REPO

    doc = (REPO / "docs" / "control-api.md").read_text()
    for model in EVENT_TYPES:
        kind = model.model_fields["type"].default
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{kind}` |")), None)
        assert row is not None, kind
        for name in model.model_fields:
            if name not in ("v", "seq", "t", "type"):
                assert f"`{name}`" in row, (kind, name)

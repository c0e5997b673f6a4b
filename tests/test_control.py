"""The control socket: JSON lines, mode 0660, commands become events, status never has the key."""
from __future__ import annotations

import os
import queue
import stat
from pathlib import Path

import pytest

from device.control import ControlServer, send_command
from device.events import Command, Event


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    srv = ControlServer(tmp_path / "run" / "control.sock", events.put,
                        lambda: {"call_state": "idle", "muted": False})
    srv.bind()
    srv.start()
    yield srv, events
    srv.stop()
    assert srv.join(3)


def test_socket_mode_is_0660(server) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    assert stat.S_IMODE(os.stat(srv.path).st_mode) == 0o660


@pytest.mark.parametrize("cmd", ["call", "hangup", "mute", "unmute", "talk_start", "talk_stop"])
def test_commands_become_events(server, cmd: str) -> None:  # type: ignore[no-untyped-def]
    srv, events = server
    assert send_command(srv.path, cmd) == {"ok": True, "cmd": cmd}
    assert events.get(timeout=2) == Command(cmd)  # type: ignore[arg-type]


def test_status_and_bad_requests(server) -> None:  # type: ignore[no-untyped-def]
    srv, events = server
    assert send_command(srv.path, "status") == {"ok": True, "status": {"call_state": "idle", "muted": False}}
    reply = send_command(srv.path, "self-destruct")
    assert reply["ok"] is False and "unknown command" in reply["error"]
    assert srv.bad_requests == 1 and events.empty()


def test_stale_socket_is_replaced_and_removed_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    first = ControlServer(path, lambda e: None, dict)
    first.bind()
    second = ControlServer(path, lambda e: None, dict)  # the previous run died without cleaning up
    second.bind()
    second.start()
    assert send_command(path, "status")["ok"]
    second.stop()
    assert second.join(3)
    assert not path.exists()


def test_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    path.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        ControlServer(path, lambda e: None, dict).bind()

"""The control socket: JSON lines, mode 0660, commands become events, status never has the key."""
from __future__ import annotations

import json
import os
import queue
import socket
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from device.cli import main as cli_main
from device.core.events import Command, Event
from device.service.control import DUMP_AUDIO_TIMEOUT, ControlServer, send_command


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
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a previous run that died uncleanly
    dead.bind(str(path))
    dead.close()
    assert path.exists()
    second = ControlServer(path, lambda e: None, dict)
    second.bind()
    second.start()
    assert send_command(path, "status")["ok"]
    second.stop()
    assert second.join(3)
    assert not path.exists()


def test_a_live_socket_is_never_deleted(tmp_path: Path) -> None:
    from device.service.control import ControlSocketError

    path = tmp_path / "c.sock"
    first = ControlServer(path, lambda e: None, dict)
    first.bind()   # bound and listening: connections queue even before its thread runs
    with pytest.raises(ControlSocketError, match="another running process"):
        ControlServer(path, lambda e: None, dict).bind()
    first.start()
    assert send_command(path, "status")["ok"]   # the first one still answers on its socket
    first.stop()
    assert first.join(3)


def test_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    path.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):   # ControlSocketError is an OSError
        ControlServer(path, lambda e: None, dict).bind()


# -- dump_audio: the reply is the service's, built on the control thread ----------------------------
DUMPED = {"ok": True, "cmd": "dump_audio", "directory": "/rec",
          "files": [{"stream": "raw", "path": "/rec/mic-raw.wav", "seconds": 30.0, "sample_rate": 16000}]}
OFF = {"ok": False, "error": "debug recording is off: set ATOMS_DEBUG_RECORD_DIR"}


@pytest.fixture
def dump_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    replies: list[dict[str, Any]] = [DUMPED]
    calls: list[str] = []

    def dump_audio() -> dict[str, Any]:
        calls.append(threading.current_thread().name)
        return replies[0]

    srv = ControlServer(tmp_path / "c.sock", lambda e: None, dict, dump_audio)
    srv.bind()
    srv.start()
    yield srv, replies, calls
    srv.stop()
    assert srv.join(3)


def test_dump_audio_replies_with_what_the_service_wrote(dump_server) -> None:  # type: ignore[no-untyped-def]
    srv, _, calls = dump_server
    assert send_command(srv.path, "dump_audio") == DUMPED
    assert calls == ["control-slow_0"] and srv.bad_requests == 0   # not the socket thread


def test_without_a_dump_callback_dump_audio_is_refused() -> None:
    reply = ControlServer(Path("/nonexistent.sock"), lambda e: None, dict).handle(b'{"cmd": "dump_audio"}')
    assert reply["ok"] is False and "not available" in reply["error"]


def test_unknown_command_error_lists_dump_audio(server) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    assert "dump_audio" in send_command(srv.path, "dump-it-all")["error"]


def test_ctl_dump_audio_prints_the_files_and_exits_0(dump_server, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    srv, _, _ = dump_server
    assert cli_main(["ctl", "dump-audio", "--socket", str(srv.path)]) == 0
    assert json.loads(capsys.readouterr().out) == DUMPED


def test_ctl_dump_audio_with_recording_off_exits_1(dump_server, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    srv, replies, _ = dump_server
    replies[0] = OFF
    assert cli_main(["ctl", "dump-audio", "--socket", str(srv.path)]) == 1
    assert json.loads(capsys.readouterr().out) == OFF


def test_the_client_waits_for_a_slow_dump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client gives dump_audio longer than the service does (so it reads the service's answer)
    and other commands the short TIMEOUT; a dump still being written holds the reply back."""
    from device.service import control

    timeouts: list[float | None] = []

    class RecordingSocket(socket.socket):   # records the timeout of each client connection
        def connect(self, address: Any) -> None:
            timeouts.append(self.gettimeout())
            super().connect(address)

    monkeypatch.setattr(control.socket, "socket", RecordingSocket)
    entered, release = threading.Event(), threading.Event()

    def slow_dump() -> dict[str, Any]:   # a dump on a slow SD card: done when the test says so
        entered.set()
        assert release.wait(5)
        return DUMPED

    srv = ControlServer(tmp_path / "c.sock", lambda e: None, dict, slow_dump)
    srv.bind()
    srv.start()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            reply = pool.submit(send_command, srv.path, "dump_audio")
            assert entered.wait(5)
            assert not reply.done()   # the client is still waiting for the files
            release.set()
            assert reply.result(5) == DUMPED
        assert send_command(srv.path, "status")["ok"]
    finally:
        srv.stop()
        assert srv.join(3)
    assert timeouts == [control.CLIENT_TIMEOUTS["dump_audio"], control.TIMEOUT]
    assert control.CLIENT_TIMEOUTS["dump_audio"] > DUMP_AUDIO_TIMEOUT


# -- say -------------------------------------------------------------------------------------------
@pytest.fixture
def say_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    said: list[tuple[str, str]] = []

    def say(text: str) -> dict[str, Any]:
        said.append((threading.current_thread().name, text))
        return {"ok": True, "cmd": "say", "chars": len(text)}

    srv = ControlServer(tmp_path / "c.sock", lambda e: None, dict, say=say)
    srv.bind()
    srv.start()
    yield srv, said
    srv.stop()
    assert srv.join(3)


def test_say_hands_the_text_to_the_service(say_server) -> None:  # type: ignore[no-untyped-def]
    srv, said = say_server
    reply = send_command(srv.path, "say", text="Où est la sortie ?")
    assert reply == {"ok": True, "cmd": "say", "chars": 18}
    assert said == [("control-socket", "Où est la sortie ?")]


@pytest.mark.parametrize(("request_line", "error"), [
    (b'{"cmd": "say"}', "non-empty string"),
    (b'{"cmd": "say", "text": "   "}', "non-empty string"),
    (b'{"cmd": "say", "text": 42}', "non-empty string"),
    (b'{"cmd": "say", "text": "' + b"x" * 2001 + b'"}', "longer than 2000"),
])
def test_say_refuses_bad_text(say_server, request_line: bytes,  # type: ignore[no-untyped-def]
                              error: str) -> None:
    srv, said = say_server
    reply = srv.handle(request_line)
    assert reply["ok"] is False and error in reply["error"] and said == []


def test_ctl_say_joins_the_words(say_server,  # type: ignore[no-untyped-def]
                                 capsys: pytest.CaptureFixture[str]) -> None:
    srv, said = say_server
    assert cli_main(["ctl", "--socket", str(srv.path), "say", "hello", "there"]) == 0
    assert said[-1][1] == "hello there"
    assert cli_main(["ctl", "say", "--socket", str(srv.path)]) == 2
    assert "needs the text" in capsys.readouterr().err

"""device.service.sdnotify against a real unix datagram socket standing in for systemd."""
from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.service.sdnotify import SystemdNotifier


def _receive(sock: socket.socket) -> str:
    data = sock.recv(4096)  # the socket has a timeout: a lost message fails, never hangs
    return data.decode()


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket on a file path, as systemd's /run/systemd/notify."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket in the abstract namespace, named '@...' as systemd writes it."""
    name = f"atoms-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    yield sock, "@" + name
    sock.close()


@pytest.mark.parametrize("which", ["path_socket", "abstract_socket"])
def test_messages_arrive(which: str, request: pytest.FixtureRequest) -> None:
    sock, address = request.getfixturevalue(which)
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready()
    assert _receive(sock) == "READY=1"
    assert notifier.status("connecting to agent")
    assert _receive(sock) == "STATUS=connecting to agent"
    assert notifier.watchdog()
    assert _receive(sock) == "WATCHDOG=1"
    assert notifier.reloading()
    assert _receive(sock) == "RELOADING=1"
    assert notifier.stopping()
    assert _receive(sock) == "STOPPING=1"
    notifier.close()
    notifier.close()  # idempotent


def test_status_is_one_line(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    with SystemdNotifier(environ={"NOTIFY_SOCKET": address}) as notifier:
        notifier.status("line one\nREADY=1")
        # A newline would have smuggled a second assignment into the datagram.
        assert _receive(sock) == "STATUS=line one READY=1"


def test_several_assignments_in_one_datagram(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    with SystemdNotifier(environ={"NOTIFY_SOCKET": address}) as notifier:
        assert notifier.notify("READY=1", "STATUS=idle")
        assert _receive(sock) == "READY=1\nSTATUS=idle"


def test_unset_socket_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    for notifier in (SystemdNotifier(), SystemdNotifier(environ={})):
        assert not notifier.enabled
        assert notifier.ready() is False
        assert notifier.status("x") is False
        assert notifier.watchdog() is False
        assert notifier.stopping() is False
        assert notifier.watchdog_interval() is None
        notifier.close()


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch,
                                     path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    with SystemdNotifier() as notifier:
        assert notifier.watchdog_interval() == 15.0
        assert notifier.watchdog()
        assert _receive(sock) == "WATCHDOG=1"


def test_unsupported_address_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="device.service.sdnotify"):
        notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert "vsock" in caplog.text


def test_send_failure_never_raises_and_logs_once(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.WARNING, logger="device.service.sdnotify"):
        for _ in range(5):
            assert notifier.watchdog() is False
    assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 1
    notifier.close()


def test_recovers_when_the_socket_appears(tmp_path: Path) -> None:
    path = str(tmp_path / "late")
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": path})
    assert notifier.ready() is False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        sock.settimeout(2)
        assert notifier.ready()
        assert _receive(sock) == "READY=1"
    finally:
        sock.close()
        notifier.close()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),                      # no PID: it is ours
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    notifier = SystemdNotifier(environ=environ, pid=4242)
    assert notifier.watchdog_interval() == expected


def test_the_same_status_is_sent_once(path_socket: tuple[socket.socket, str]) -> None:
    """STATUS= is refreshed on every state change; an unchanged line is not sent again."""
    sock, address = path_socket
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": address})
    assert notifier.status("idle")
    assert notifier.status("idle")
    assert notifier.status("in call")
    assert notifier.status("idle")
    assert [_receive(sock) for _ in range(3)] == ["STATUS=idle", "STATUS=in call", "STATUS=idle"]
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)
    notifier.close()
